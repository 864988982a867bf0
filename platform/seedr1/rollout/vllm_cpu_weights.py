"""In-place weight updates on vLLM's CPU backend.

vLLM's CPU backend packs each Linear weight into a oneDNN handle and drops the weight itself, so the model's own
``load_weights`` has nothing to load into and ``reload_weights`` rebuilds every layer: ~30 ms a sync for the tiny
model, a cost per module, not per byte. An engine built under ``keep_linear_weights()`` keeps each Linear weight
beside its packed copy (twice the Linear weight memory, on CPU only), so a sync loads in place and then re-packs:
~17 ms for the tiny model.

Only for the architectures whose in-place load we test (``in_place_capable``): unquantized Qwen2-VL / Qwen2.5-VL.
Elsewhere weights derived at load time (quantized or MoE packs, MLA's absorbed matrices) would go stale, so those
engines are built as vLLM builds them and reload. ``kept`` tells the two apart at sync time.
"""
from __future__ import annotations

import contextlib
import json
import threading
from pathlib import Path

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


@contextlib.contextmanager
def keep_linear_weights():
    """While a CPU engine loads its model in this process, packed layers keep their weights. Builds in other
    threads of the process wait for this one (the patched function is a module attribute)."""
    utils = _dispatch_module()
    if utils is None:
        yield
        return
    with _PATCH_LOCK:
        pack = utils.dispatch_cpu_unquantized_gemm

        def pack_and_keep(layer, remove_weight=True, *args, **kwargs):
            pack(layer, False, *args, **kwargs)
            layer._seedr1_kept = True

        utils.dispatch_cpu_unquantized_gemm = pack_and_keep
        try:
            yield
        finally:
            utils.dispatch_cpu_unquantized_gemm = pack


def _packed_layers(model) -> list:
    """(name, layer) of the layers vLLM gave a CPU GEMM (``cpu_linear``); those it marked to skip packing compute
    from the weight itself."""
    return [(name, m) for name, m in model.named_modules()
            if hasattr(m, "cpu_linear") and not getattr(m, "_cpu_skip_gemm_dispatch", False)]


def kept(model) -> bool:
    """Whether ``model`` was built under ``keep_linear_weights``: every packed layer still holds its weight."""
    layers = _packed_layers(model)
    return bool(layers) and all(getattr(m, "_seedr1_kept", False) for _, m in layers)


def repack(model, loaded: set | None = None) -> None:
    """Pack the updated weights again (oneDNN's handle holds a copy, not a view): the layers holding a parameter
    named in ``loaded`` (vLLM's names, as ``load_weights`` returns them; a frozen vision tower is not sent, so its
    packs stay), or every layer when that is not known."""
    from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead, VocabParallelEmbedding

    utils = _dispatch_module()
    owners = None if loaded is None else {name.rpartition(".")[0] for name in loaded}
    for name, layer in _packed_layers(model):
        if isinstance(layer, VocabParallelEmbedding) and not isinstance(layer, ParallelLMHead):
            continue  # an input embedding is a lookup in its weight; its pack is never used (a tied head has its own)
        if owners is None or name in owners:
            utils.dispatch_cpu_unquantized_gemm(layer, remove_weight=False)
