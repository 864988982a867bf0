"""In-place weight updates on vLLM's CPU backend.

vLLM's CPU backend packs each Linear weight into a oneDNN handle and drops the weight itself, so the model's own
``load_weights`` has nothing to load into and ``reload_weights`` rebuilds every layer: ~30 ms a sync for the tiny
model, a cost per module, not per byte. An engine built under ``plain_linear_weights()`` keeps each Linear weight
and computes the layer with ``torch.nn.functional.linear`` on it, with no packed copy: a sync loads in place and is
done (~5 ms for the tiny model; keeping the pack beside the weight and re-packing after each load took ~10 ms and
twice the Linear memory). Generation is as fast on the tiny model: 8 rounds alternating in one engine, 4920 vs
4934 and 5218 vs 4711 tokens/s at 8 prompts, 7373 vs 6946 at 32 (F.linear first).

Only for the architectures whose in-place load we test (``in_place_capable``): unquantized Qwen2-VL / Qwen2.5-VL.
Elsewhere weights derived at load time (quantized or MoE packs, MLA's absorbed matrices) would go stale, so those
engines are built as vLLM builds them and reload. ``loads_in_place`` tells the two apart at sync time.
"""
from __future__ import annotations

import contextlib
import json
import threading
from pathlib import Path

import torch

# A sync into each is checked: tests/rollout/test_weight_sync.py (Qwen2-VL), tests/rollout/test_qwen25_vl.py (2.5).
IN_PLACE_ARCHITECTURES = ("Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration")
# The patch is process-wide: engines built at once in threads of one process take turns, so each restores the
# function it found (re-entrant: a build inside a build of the same thread does not deadlock).
_PATCH_LOCK = threading.RLock()


def in_place_capable(model_dir: str) -> bool:
    """Whether the checkpoint folder holds an unquantized architecture whose weights can be loaded in place."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError):  # a hub id, or no readable config: vLLM's own way
        return False
    return bool(set(config.get("architectures") or []) & set(IN_PLACE_ARCHITECTURES)) and \
        not config.get("quantization_config")


def _dispatch_module():
    try:
        from vllm.model_executor.layers import utils
    except ImportError:
        return None
    return utils if hasattr(utils, "dispatch_cpu_unquantized_gemm") else None


def _torch_linear(x, weight, bias):
    # the weight vLLM passes is the layer's own parameter, so what a sync loads into it is used at once
    return torch.nn.functional.linear(x, weight, bias)


def _plain_dispatch(dispatch):
    def plain(layer, remove_weight=True, *args, **kwargs):
        if layer.weight.is_meta or layer.weight.ndim != 2:  # not a Linear weight: vLLM's own handling
            return dispatch(layer, remove_weight, *args, **kwargs)
        layer.cpu_linear = _torch_linear
    return plain


@contextlib.contextmanager
def plain_linear_weights():
    """While a CPU engine loads its model in this process, its 2-D Linear layers keep their weights and compute
    with ``F.linear`` (no packed copy). Builds in other threads of the process wait for this one (the patched
    function is a module attribute)."""
    utils = _dispatch_module()
    if utils is None:
        yield
        return
    with _PATCH_LOCK:
        dispatch = utils.dispatch_cpu_unquantized_gemm
        utils.dispatch_cpu_unquantized_gemm = _plain_dispatch(dispatch)
        try:
            yield
        finally:
            utils.dispatch_cpu_unquantized_gemm = dispatch


def install_plain_linear_weights() -> None:
    """``plain_linear_weights`` for the rest of this process: for an engine core process of its own, which loads
    exactly one model (``rollout.weight_receiver_in_place`` calls it when vLLM imports the worker extension)."""
    utils = _dispatch_module()
    if utils is not None and not getattr(utils.dispatch_cpu_unquantized_gemm, "seedr1_plain", False):
        utils.dispatch_cpu_unquantized_gemm = _plain_dispatch(utils.dispatch_cpu_unquantized_gemm)
        utils.dispatch_cpu_unquantized_gemm.seedr1_plain = True


def loads_in_place(model) -> bool:
    """Whether ``model`` was built under ``plain_linear_weights``: every layer vLLM gave a CPU GEMM (``cpu_linear``;
    those it marked to skip it compute from the weight itself) computes with ``F.linear`` on its own weight. Asks
    what each layer computes with, not how it was built: a layer vLLM dispatched again since (its layerwise reload
    does) holds a pack again."""
    layers = [m for m in model.modules()
              if hasattr(m, "cpu_linear") and not getattr(m, "_cpu_skip_gemm_dispatch", False)]
    return bool(layers) and all(m.cpu_linear is _torch_linear for m in layers)


class LoaderReplay:
    """In-place loads without vLLM's generic ``load_weights`` walk after the first.

    ``load_weights`` maps every checkpoint name to its parameter by walking the module tree in Python (~2/3 of a
    tiny model's in-place load). Each name ends in calls of parameters' ``weight_loader`` with the checkpoint
    tensor or a view of it (the q/k/v shards of a fused projection). The first load of a name goes through
    ``load_weights`` with those calls recorded; later loads of it repeat them on the new tensor's same views. A load
    that leaves a name without a call, or that hands a loader anything but a view of its tensor (a converted copy),
    turns the replay off for good: ``load_weights`` every time, as before.
    """

    def __init__(self):
        self.plan: dict[str, list] = {}
        self.enabled = True

    def load(self, model, tensors: list, load_weights) -> None:
        if not self.enabled:
            load_weights(iter(tensors))
            return
        # replayed views stay inside a tensor of the recorded shape, dtype and layout only
        if tensors and all(self.plan.get(name, (None,))[0] == _layout(t) for name, t in tensors):
            for name, tensor in tensors:
                for loader, param, offset, size, stride, args, kwargs in self.plan[name][1]:
                    loader(param, tensor.as_strided(size, stride, tensor.storage_offset() + offset), *args, **kwargs)
            return
        calls = _recorded_loader_calls(model, tensors, load_weights)
        plan = _plan(tensors, calls) if calls is not None else None
        if plan is None:
            self.enabled, self.plan = False, {}
        else:
            self.plan.update(plan)


def _recorded_loader_calls(model, tensors: list, load_weights) -> list | None:
    """``load_weights(iter(tensors))`` with every parameter's loader calls recorded: (loader, param, weight, args,
    kwargs); None when a loader cannot be wrapped (the load itself still happens)."""
    from vllm.model_executor.model_loader.weight_utils import default_weight_loader

    calls, wrapped, complete = [], [], True

    def recording(loader):
        def record(param, loaded_weight, *args, **kwargs):
            calls.append((loader, param, loaded_weight, args, kwargs))
            return loader(param, loaded_weight, *args, **kwargs)
        return record

    try:
        for param in model.parameters():
            own = hasattr(param, "weight_loader")  # an attribute, or a property of vLLM's parameter classes
            loader = getattr(param, "weight_loader", default_weight_loader)
            param.weight_loader = recording(loader)
            wrapped.append((param, own, loader))
    except (AttributeError, TypeError):  # e.g. a read-only loader property: no replay (the wrapped still record)
        complete = False
    try:
        load_weights(iter(tensors))
    finally:
        for param, own, loader in wrapped:
            if own:
                param.weight_loader = loader
            else:
                del param.weight_loader
    return calls if complete else None


def _plan(tensors: list, calls: list) -> dict | None:
    """Each name's layout (shape, stride, dtype) and loader calls, with the weight as a view (offset, size, stride)
    of the name's tensor; None when a call's weight is no view of any tensor or a name had no call."""
    plan: dict[str, list] = {name: [] for name, _ in tensors}
    spans = [(t.untyped_storage().data_ptr(), t.data_ptr(), t.data_ptr() + max(t.nbytes, 1), name, t)
             for name, t in tensors]
    for loader, param, weight, args, kwargs in calls:
        storage, ptr = weight.untyped_storage().data_ptr(), weight.data_ptr()
        source = next(((name, t) for s, lo, hi, name, t in spans
                       if s == storage and lo <= ptr < hi and t.dtype == weight.dtype), None)
        if source is None:
            return None
        name, tensor = source
        plan[name].append((loader, param, weight.storage_offset() - tensor.storage_offset(), tuple(weight.shape),
                           weight.stride(), args, kwargs))
    return {name: (_layout(t), plan[name]) for name, t in tensors} if all(plan.values()) else None


def _layout(tensor) -> tuple:
    return tuple(tensor.shape), tensor.stride(), tensor.dtype
