"""seedr1's vLLM worker extension (``worker_extension_cls``) of an engine that receives synced weights.

Importing it registers the ``seedr1`` weight-transfer backend (``rollout.weight_transfer``) in the engine core's
process, before vLLM builds the worker's transfer engine; syncs then go through vLLM's own worker methods
(``start_weight_update``, ``update_weights``, ``finish_weight_update``). Beside them, a whole payload (numpy arrays or
safetensors bytes, ``engine.named_tensors``) loads in one call, and a few questions about the loaded model help tests.
"""
from __future__ import annotations

from seedr1.rollout import vllm_cpu_weights, weight_transfer

weight_transfer.register()


class WeightReceiver:
    def _seedr1_load(self, tensors: list) -> None:
        """Load checkpoint-format ``(name, tensor)`` pairs (a whole model's, or whole layers')."""
        model = self.model_runner.model
        if not vllm_cpu_weights.loads_in_place(model):
            self._seedr1_replay = None  # a reload may replace parameters a recorded replay would write into
            self.reload_weights(weights_iterator=iter(tensors), is_checkpoint_format=True)
            return
        from vllm.config import set_current_vllm_config

        if getattr(self, "_seedr1_replay", None) is None:
            self._seedr1_replay = vllm_cpu_weights.LoaderReplay()
        with set_current_vllm_config(self.vllm_config):
            self._seedr1_replay.load(model, tensors, lambda weights: model.load_weights(weights=weights))

    def seedr1_load_payload(self, payload) -> int:
        from seedr1.rollout.engine import named_tensors

        tensors = named_tensors(payload)
        self._seedr1_load(tensors)
        return len(tensors)

    def seedr1_loads_in_place(self) -> bool:
        """Whether this worker's Linear layers compute from their own weights (``vllm_cpu_weights``)."""
        return vllm_cpu_weights.loads_in_place(self.model_runner.model)

    def seedr1_transfer_stats(self) -> dict:
        """The last weight update as this worker's transfer engine saw it: calls, buckets, largest bucket, and
        whether it replayed recorded loader calls (in place) or ran vLLM's layerwise reload."""
        engine = self.weight_transfer_engine
        replay = getattr(engine, "replay", None)
        return {**getattr(engine, "received", {}), "backend": type(engine).__name__,
                "replays": bool(replay is not None and replay.enabled and replay.plan)}
