"""The receiving side of weight sync on vLLM's own weight-transfer API, and the wire both sides share.

Every sync is one vLLM weight update on each engine: ``start_weight_update``, one or more ``update_weights`` calls
that carry the weights bucket by bucket, ``finish_weight_update`` (vLLM's worker methods, which the CPU worker
inherits). The engine side is a ``WeightTransferEngine`` chosen by the engine's ``weight_transfer_config``:

- ``nccl`` (vLLM's own): on GPUs, for ``rollout.weight_sync=collective``; trainer rank 0 drives it with vLLM's
  ``NCCLTrainerWeightTransferEngine``.
- ``seedr1`` (this module, registered with vLLM's ``WeightTransferEngineFactory``): the same protocol for what vLLM's
  engines cannot do: a broadcast over gloo (CPU engines, ``collective``), or buckets handed over inline from the
  Ray object store (``object_store``, CPU or GPU). A CPU engine whose Linear layers compute from their own weights
  (``vllm_cpu_weights``) loads each bucket in place; any other engine runs vLLM's layerwise reload, once per update.

Buckets: tensors in order, packed into one uint8 buffer of at most ``bucket_bytes`` (a larger tensor goes alone);
both sides cut the same buckets from the update's metadata (``bucket_bounds``), so no message is larger than that.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import torch

# vLLM's factory key for this module's engine, and the keys a trainer uses to say how it sends.
SEEDR1_BACKEND = "seedr1"
TRANSPORTS = ("gloo", "object_store")


def trainer_backend(weight_sync: str, gpu: bool) -> tuple[str, str]:
    """(engine backend it needs, wire) for trainer rank 0, decided where the trainer's tensors live."""
    if weight_sync == "collective":
        return ("nccl", "nccl") if gpu else (SEEDR1_BACKEND, "gloo")
    return SEEDR1_BACKEND, "object_store"


def engine_backend(weight_sync: str, gpu: bool) -> str:
    """The engine's ``weight_transfer_config.backend`` for a transport, decided where the engine's tensors live: the
    same rule as the trainer's, so a trainer and engines on the same kind of device always agree."""
    return trainer_backend(weight_sync, gpu)[0]


def bucket_bounds(nbytes: list[int], bucket_bytes: int) -> list[tuple[int, int]]:
    """Consecutive index ranges ``[start, end)`` of at most ``bucket_bytes`` each (a larger tensor alone)."""
    bounds, start, size = [], 0, 0
    for i, n in enumerate(nbytes):
        if i > start and size + n > bucket_bytes:
            bounds.append((start, i))
            start, size = i, 0
        size += n
    if start < len(nbytes):
        bounds.append((start, len(nbytes)))
    return bounds


def tensor_nbytes(shape, dtype_name: str) -> int:
    return int(torch.Size(shape).numel()) * torch.empty(0, dtype=getattr(torch, dtype_name)).element_size()


def unpack(buffer: torch.Tensor, names: list, shapes: list, dtype_names: list) -> list[tuple[str, torch.Tensor]]:
    """The named tensors of one packed uint8 bucket, as views of it."""
    out, offset = [], 0
    for name, shape, dtype_name in zip(names, shapes, dtype_names):
        n = tensor_nbytes(shape, dtype_name)
        out.append((name, buffer[offset:offset + n].view(getattr(torch, dtype_name)).view(list(shape))))
        offset += n
    return out


def unpack_bytes(packed: bytes, names: list, shapes: list, dtype_names: list) -> list[tuple[str, torch.Tensor]]:
    """The named tensors of one bucket that came inline (object store): copied once into a writable buffer."""
    return unpack(torch.frombuffer(bytearray(packed), dtype=torch.uint8), names, shapes, dtype_names)


def join_group(host: str, port: int, rank: int, world_size: int, timeout_s: float):
    """A gloo process group of its own (no global state touched): vLLM's stateless init."""
    from vllm.distributed.utils import stateless_init_torch_distributed_process_group

    return stateless_init_torch_distributed_process_group(host, port, rank, world_size, "gloo",
                                                          timeout=timedelta(seconds=timeout_s))


def leave_group(pg) -> None:
    from vllm.distributed.utils import stateless_destroy_torch_distributed_process_group

    try:
        stateless_destroy_torch_distributed_process_group(pg)
    except Exception:  # a peer already gone: nothing left to tear down cleanly
        pass


@dataclass
class SeedR1InitInfo:
    """Engine-side init info: how this sync's buckets arrive (gloo needs the rendezvous)."""

    transport: str = "object_store"
    master_address: str | None = None
    master_port: int | None = None
    rank_offset: int = 1
    world_size: int = 0
    bucket_bytes: int = 256 << 20
    timeout_s: float = 600.0

    def __post_init__(self):
        if self.transport not in TRANSPORTS:
            raise ValueError(f"transport {self.transport!r}: one of {TRANSPORTS}")


@dataclass
class SeedR1UpdateInfo:
    """One ``update_weights`` call: tensors' metadata, and for the object store the bucket's bytes themselves."""

    names: list
    dtype_names: list
    shapes: list
    packed: bytes | None = None  # object store: exactly one bucket, inline


def _engine_base():
    from vllm.distributed.weight_transfer.base import WeightTransferEngine

    return WeightTransferEngine


class SeedR1WeightTransferEngine(_engine_base()):
    """vLLM worker-side engine: buckets over gloo or inline, loaded in place or by one layerwise reload."""

    init_info_cls = SeedR1InitInfo
    update_info_cls = SeedR1UpdateInfo
    supports_draft_weight_update = False

    def __init__(self, config, vllm_config, device, model):
        super().__init__(config, vllm_config, device, model)
        self.info: SeedR1InitInfo | None = None
        self.pg = None
        self.replay = None  # vllm_cpu_weights.LoaderReplay, for in-place loads
        self.layerwise = False
        self.received = {"updates": 0, "buckets": 0, "largest_bucket": 0}  # of the current weight update

    def init_transfer_engine(self, init_info: SeedR1InitInfo) -> None:
        self.shutdown()  # a new trainer connection replaces the old one
        self.info = init_info
        if init_info.transport == "gloo":  # unique across data-parallel engines too, as vLLM's NCCL engine counts
            pc = self.parallel_config
            rank = init_info.rank_offset + pc.data_parallel_index * pc.world_size + pc.rank
            self.pg = join_group(init_info.master_address, init_info.master_port, rank, init_info.world_size,
                                 init_info.timeout_s)

    def start_weight_update(self) -> None:
        from seedr1.rollout import vllm_cpu_weights

        self.received = {"updates": 0, "buckets": 0, "largest_bucket": 0}
        self.layerwise = not vllm_cpu_weights.loads_in_place(self.model)
        if self.layerwise:  # once per update: a reload per bucket would rebuild the whole model each time
            from vllm.model_executor.model_loader.reload import initialize_layerwise_reload

            self.replay = None  # the reload replaces parameters a recorded replay would write into
            initialize_layerwise_reload(self.model)

    def finish_weight_update(self) -> None:
        if self.layerwise:
            from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

            finalize_layerwise_reload(self.model, self.model_config)
            self.layerwise = False

    def update_weights(self, update_info: dict) -> None:
        self.receive_weights(self.parse_update_info(update_info))  # CPU: nothing asynchronous to wait for

    def receive_weights(self, update_info: SeedR1UpdateInfo) -> None:
        if self.info is None:
            raise RuntimeError("seedr1 weight transfer not initialised: call init_weight_transfer_engine first")
        try:
            self._receive(update_info)
        except BaseException:
            if self.layerwise:  # vLLM's worker ends the update: put the layers back as they were, not on meta
                self.finish_weight_update()
            raise

    def _receive(self, update_info: SeedR1UpdateInfo) -> None:
        names, shapes, dtypes = update_info.names, update_info.shapes, update_info.dtype_names
        self.received["updates"] += 1
        if update_info.packed is not None:
            self._load(unpack_bytes(update_info.packed, names, shapes, dtypes))
            return
        if self.pg is None:
            raise RuntimeError("this update carries no bytes and no gloo group is joined (transport "
                               f"{self.info.transport!r})")
        sizes = [tensor_nbytes(s, d) for s, d in zip(shapes, dtypes)]
        for start, end in bucket_bounds(sizes, self.info.bucket_bytes):
            buffer = torch.empty(sum(sizes[start:end]), dtype=torch.uint8)
            self.pg.broadcast(buffer, 0).wait()
            self._load(unpack(buffer, names[start:end], shapes[start:end], dtypes[start:end]))

    def _load(self, tensors: list) -> None:
        self.received["buckets"] += 1
        self.received["largest_bucket"] = max(self.received["largest_bucket"],
                                              sum(t.numel() * t.element_size() for _, t in tensors))
        if self.layerwise:
            self.model.load_weights(weights=iter(tensors))
            return
        from seedr1.rollout import vllm_cpu_weights

        if self.replay is None:
            self.replay = vllm_cpu_weights.LoaderReplay()
        self.replay.load(self.model, tensors, lambda weights: self.model.load_weights(weights=weights))

    def shutdown(self) -> None:
        if self.pg is not None:
            leave_group(self.pg)
            self.pg = None
        self.info = None


def register() -> None:
    """Make the ``seedr1`` backend known to vLLM's factory in this process (engine cores import this through the
    worker extension before they build their transfer engine). Idempotent."""
    from vllm.distributed.weight_transfer.factory import WeightTransferEngineFactory

    if SEEDR1_BACKEND not in WeightTransferEngineFactory._registry:
        WeightTransferEngineFactory.register_engine(SEEDR1_BACKEND, SeedR1WeightTransferEngine)


class RolloutActorsClient:
    """vLLM's ``VLLMWeightSyncClient`` protocol over seedr1's rollout actors, one engine each.

    vLLM's own Ray client sends every engine the same init info; independent engines need their own ranks in the
    transfer group, so each actor's ``rank_offset`` is set here from the worker counts before it."""

    def __init__(self, actors: list, timeout_s: float = 600.0):
        import ray

        self.actors, self.timeout_s = actors, timeout_s
        self.engine_seconds = 0.0  # the slowest engine's time in the last weight update
        self.version: int | None = None  # what the next finish_weight_update tells the actors they hold
        self.workers = ray.get([a.weight_group_size.remote() for a in actors], timeout=timeout_s)

    @property
    def world_size(self) -> int:
        return 1 + sum(self.workers)

    def backends(self) -> list[str]:
        import ray

        return ray.get([a.weight_transfer_backend.remote() for a in self.actors], timeout=self.timeout_s)

    def _all(self, method: str, *args) -> None:
        import ray

        ray.get([getattr(a, method).remote(*args) for a in self.actors], timeout=self.timeout_s)

    def init_weight_transfer_engine(self, init_info: dict) -> None:
        import ray

        ray.get([a.init_weight_transfer.remote({**init_info, "rank_offset": off})
                 for a, off in zip(self.actors, self.rank_offsets())], timeout=self.timeout_s)

    def rank_offsets(self) -> list[int]:
        """Each engine's first rank in the transfer group (rank 0: the trainer)."""
        return [1 + sum(self.workers[:k]) for k in range(len(self.actors))]

    def start_weight_update(self) -> None:
        self._all("start_weight_update")

    def update_weights(self, update_info) -> None:
        self._all("update_weight_chunk", update_info)

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        import ray

        version = self.version if weight_version is None else int(weight_version)
        self.engine_seconds = max(ray.get([a.finish_weight_update.remote(version) for a in self.actors],
                                          timeout=self.timeout_s))
