"""Where seedr1 keeps caches (built tiny models, downloaded checkpoints, DeepSpeed's compiled extension)."""
from __future__ import annotations

import os
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    """``$SEEDR1_CACHE``, else ``<repo>/.cache`` for a source checkout, else ``~/.cache/seedr1``."""
    if os.environ.get("SEEDR1_CACHE"):
        return Path(os.environ["SEEDR1_CACHE"])
    if (_REPO_ROOT / "pyproject.toml").exists() and (_REPO_ROOT / "platform" / "seedr1").is_dir():
        return _REPO_ROOT / ".cache"
    return Path.home() / ".cache" / "seedr1"


def set_default_env() -> None:
    """Process-wide defaults every seedr1 process wants; explicit settings win."""
    # DeepSpeed JIT-compiles a C++ op on CPU on first use (~80 s): keep it in the project's cache.
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(cache_dir() / "torch_extensions"))
    quiet_logs()


# Library notes that say nothing a seedr1 user acts on, in every process of a job (the engine-core processes that vLLM
# spawns read them from the environment): a readable job log. Errors always show; set the variable to see more
# (VLLM_LOGGING_LEVEL=INFO shows vLLM's start-up notes).
QUIET_ENV = {
    "VLLM_LOGGING_LEVEL": "ERROR",  # start-up notes, CPU-backend tips, once per engine process
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' "Loading weights" / "Writing model shards" bars
    # library deprecations, and read-only arrays from Ray's object store handed to torch (never written)
    "PYTHONWARNINGS": "ignore::FutureWarning,ignore:The given NumPy array is not writable:UserWarning",
}


def quiet_logs() -> None:
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    import logging
    import warnings

    # vLLM configures its loggers only once imported in full; its first notes (Triton checks) go to the root logger
    logging.getLogger("vllm").setLevel(os.environ["VLLM_LOGGING_LEVEL"].upper())
    if os.environ["PYTHONWARNINGS"] == QUIET_ENV["PYTHONWARNINGS"]:  # this process too (the variable is read at start)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)
    if not any(Path("/dev").glob("nvidia[0-9]*")):  # DeepSpeed would warn in every process that it found no GPU
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
