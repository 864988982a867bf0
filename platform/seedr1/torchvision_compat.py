"""Make the public-index torchvision importable beside the CPU build of torch.

Why: PyPI's Linux torchvision wheels are CUDA builds. Beside ``torch==2.13.0+cpu`` their compiled ops library fails
to load, and ``import torchvision`` then dies registering fake kernels for ops that do not exist
(``RuntimeError: operator torchvision::nms does not exist``). transformers' Qwen2-VL video processor imports
torchvision, so every process that builds a processor needs it to import. Only the pure-Python transforms are used.

What: a one-shot import hook. The first time anything imports ``torchvision`` we try to load its compiled
``_C*.so`` with ``torch.ops.load_library``; only if that fails do we declare the two op schemas torchvision's
meta registrations expect (``nms`` and ``qnms``), so the import succeeds. Nothing happens (and torch is not even
imported) in processes that never import torchvision. ``import seedr1`` installs the hook, so the driver, Ray
workers, vLLM actors and train functions all get it.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

_state = {"applied": False, "mode": None}


def _nms_defined(torch) -> bool:
    try:
        torch.ops.torchvision.nms  # noqa: B018 - raises when the op was never defined
        return True
    except (AttributeError, RuntimeError):
        return False


def _declare_missing_ops() -> str:
    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return "absent"
    pkg_dir = Path(list(spec.submodule_search_locations)[0])
    for lib in sorted(pkg_dir.glob("_C*.so")):
        try:
            torch.ops.load_library(str(lib))
        except (OSError, RuntimeError):
            continue
        if _nms_defined(torch):
            return "compiled"
    if _nms_defined(torch):  # defined by someone else already
        return "compiled"
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _state["library"] = lib  # keep the registration alive
    return "declared"


def apply() -> str:
    """Run the fix now (idempotent); returns 'compiled', 'declared' or 'absent'."""
    if not _state["applied"]:
        _state["applied"] = True
        _state["mode"] = _declare_missing_ops()
    return _state["mode"]


class _Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):  # noqa: D401
        if name == "torchvision":
            sys.meta_path.remove(self)
            apply()
        return None  # let the regular finders import it


def install() -> None:
    """Apply before the first ``import torchvision`` in this process."""
    if "torchvision" in sys.modules or _state["applied"]:
        return
    if not any(isinstance(f, _Hook) for f in sys.meta_path):
        sys.meta_path.insert(0, _Hook())
