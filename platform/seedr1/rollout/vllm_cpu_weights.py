"""In-place weight updates on vLLM's CPU backend.

vLLM's CPU backend packs each Linear weight into a oneDNN handle and drops the weight itself, so the model's own
``load_weights`` has nothing to load into and ``reload_weights`` rebuilds every layer: ~30 ms a sync for the tiny
model, a cost per module, not per byte. An engine built under ``keep_linear_weights()`` keeps each Linear weight
beside its packed copy (twice the Linear weight memory, on CPU only), so a sync loads in place and then re-packs:
~17 ms for the tiny model. Where the weights were not kept (a GPU, another vLLM, an engine core in another process),
``kept`` is false and the receiver reloads as before.
"""
from __future__ import annotations

import contextlib


def _dispatch_module():
    try:
        from vllm.model_executor.layers import utils
    except ImportError:
        return None
    return utils if hasattr(utils, "dispatch_cpu_unquantized_gemm") else None


@contextlib.contextmanager
def keep_linear_weights():
    """While a CPU engine loads its model in this process, packed Linear layers keep their weights."""
    utils = _dispatch_module()
    if utils is None:
        yield
        return
    pack = utils.dispatch_cpu_unquantized_gemm
    utils.dispatch_cpu_unquantized_gemm = lambda layer, remove_weight: pack(layer, remove_weight=False)
    try:
        yield
    finally:
        utils.dispatch_cpu_unquantized_gemm = pack


def _packed_layers(model) -> list:
    # layers vLLM gave a CPU GEMM (``cpu_linear``); those it marked to skip packing compute from the weight itself
    return [m for m in model.modules()
            if hasattr(m, "cpu_linear") and not getattr(m, "_cpu_skip_gemm_dispatch", False)]


def kept(model) -> bool:
    """Whether ``model`` is a CPU model whose packed Linear layers still hold their weights."""
    layers = _packed_layers(model)
    return bool(layers) and _dispatch_module() is not None and all(m.weight.numel() > 0 for m in layers)


def repack(model) -> None:
    """Pack the (updated) weights again: oneDNN's handle holds a copy, not a view."""
    utils = _dispatch_module()
    for layer in _packed_layers(model):
        utils.dispatch_cpu_unquantized_gemm(layer, remove_weight=False)
