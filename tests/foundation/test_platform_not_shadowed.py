"""`platform/` is the source root; the stdlib `platform` module must stay importable everywhere."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_platform_folder_is_not_a_package():
    assert not (REPO / "platform" / "__init__.py").exists()


def test_stdlib_platform_from_repo_root():
    # sys.path[0] is the repo root for `python -c` run there: the folder platform/ must not win.
    code = "import platform, seedr1; print(platform.system(), platform.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    system, path = out.split()
    assert system == "Linux"
    assert not path.startswith(str(REPO))


def test_stdlib_platform_inside_ray_worker(ray_cluster):
    import ray

    @ray.remote
    def probe():
        import platform

        return platform.system(), platform.__file__

    system, path = ray.get(probe.remote())
    assert system == "Linux" and "/platform/" not in path
