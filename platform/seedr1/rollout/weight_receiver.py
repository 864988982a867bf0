"""The receiving side of weight sync, as a vLLM worker extension (``worker_extension_cls``).

Checkpoint-format tensors go through the worker's ``reload_weights``, which works on every backend; on a CPU engine
whose Linear layers compute from their own weights (``vllm_cpu_weights``) they load in place, several times faster.
Two transports reach it: a payload through the Ray object store (numpy arrays or safetensors bytes,
``engine.named_tensors``) and broadcast buckets over a collective group (``weight_sync``).
"""
from __future__ import annotations

from seedr1.rollout import vllm_cpu_weights, weight_sync


class WeightReceiver:
    def _seedr1_load(self, tensors: list) -> None:
        """Load checkpoint-format ``(name, tensor)`` pairs."""
        model = self.model_runner.model
        if not vllm_cpu_weights.loads_in_place(model):
            # a layer must get all of its tensors in one reload (``weight_sync.layer_of``)
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

    def seedr1_join_weight_group(self, host: str, port: int, offset: int, world_size: int, backend: str,
                                 timeout_s: float) -> int:
        """Join the trainer's weight group as rank ``offset`` + this worker's rank (a new group replaces an old one)."""
        self.seedr1_leave_weight_group()
        rank = offset + getattr(self, "rank", 0)
        self._seedr1_pg = weight_sync.join_group(host, port, rank, world_size, backend, timeout_s)
        return rank

    def seedr1_leave_weight_group(self) -> None:
        if getattr(self, "_seedr1_pg", None) is not None:
            weight_sync.leave_group(self._seedr1_pg)
            self._seedr1_pg = None

    def seedr1_receive_buckets(self, buckets: list) -> int:
        """Receive each bucket rank 0 broadcasts and load it (one bucket in memory at a time)."""
        device = str(getattr(self, "device", "cpu"))
        count = 0
        for bucket in buckets:
            flat = weight_sync.empty_bucket(bucket, device)
            weight_sync.broadcast(self._seedr1_pg, flat)
            tensors = weight_sync.unflatten(flat, bucket)
            self._seedr1_load(tensors)
            count += len(tensors)
        return count
