"""The receiving side of weight sync, as a vLLM worker extension (``worker_extension_cls``).

Checkpoint-format tensors go through the worker's ``reload_weights``, which works on every backend; on a CPU engine
built to keep its Linear weights (``vllm_cpu_weights``) they load in place and the layers are packed again, which
is about twice as fast. Two transports reach it: safetensors bytes (through the Ray object store) and broadcast
buckets over a collective group (``weight_sync``).
"""
from __future__ import annotations

from seedr1.rollout import vllm_cpu_weights, weight_sync


class WeightReceiver:
    def _seedr1_load(self, tensors: list, repack: bool = True) -> set | None:
        """Load checkpoint-format ``(name, tensor)`` pairs; ``repack=False`` while more buckets of one sync follow.
        Returns the model's names of what loaded in place (None: all, or unknown)."""
        model = self.model_runner.model
        if not vllm_cpu_weights.kept(model):
            # a layer must get all of its tensors in one reload (``weight_sync.layer_of``)
            self.reload_weights(weights_iterator=iter(tensors), is_checkpoint_format=True)
            return None
        from vllm.config import set_current_vllm_config

        loaded = None
        try:
            with set_current_vllm_config(self.vllm_config):
                loaded = model.load_weights(weights=iter(tensors))
        finally:  # after a failure too (then every layer): the packs match whatever weights did load
            if repack:
                vllm_cpu_weights.repack(model, loaded)
        return loaded

    def seedr1_load_safetensors(self, payload: bytes) -> int:
        from safetensors.torch import load

        state = load(payload)
        self._seedr1_load(list(state.items()))
        return len(state)

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
        count, names, loaded = 0, set(), None
        try:
            for bucket in buckets:
                flat = weight_sync.empty_bucket(bucket, device)
                weight_sync.broadcast(self._seedr1_pg, flat)
                tensors = weight_sync.unflatten(flat, bucket)
                got = self._seedr1_load(tensors, repack=False)
                names = None if got is None or names is None else names | got
                count += len(tensors)
            loaded = names  # all buckets in: re-pack what loaded; a failure part-way re-packs every layer
        finally:  # once per sync, after the last bucket or a failure
            if vllm_cpu_weights.kept(self.model_runner.model):
                vllm_cpu_weights.repack(self.model_runner.model, loaded)
        return count
