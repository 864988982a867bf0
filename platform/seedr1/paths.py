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
