"""The receiving side of weight sync, as a vLLM worker extension (``worker_extension_cls``).

The model's own ``load_weights`` fails on vLLM's CPU backend (it repacks Linear weights), so we go through the
worker's ``reload_weights`` with checkpoint-format names, which works on both backends.
"""
from __future__ import annotations


class WeightReceiver:
    def seedr1_load_safetensors(self, payload: bytes) -> int:
        from safetensors.torch import load

        state = load(payload)
        self.reload_weights(weights_iterator=iter(state.items()), is_checkpoint_format=True)
        return len(state)
