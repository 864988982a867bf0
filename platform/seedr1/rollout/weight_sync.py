"""Weight sync over a collective group: trainer rank 0 broadcasts the weights in flat buckets to every engine worker.

The group is a stateless torch.distributed process group of its own (rank 0 the trainer, ranks 1.. the engines'
workers), so it touches neither DeepSpeed's group nor vLLM's. Backend gloo on CPU and NCCL on GPU: one code path,
the one the CPU tests run. The other transport, numpy arrays through the object store, is ``RolloutGroup``'s
fallback (and what a restarted actor gets before the group is formed again).
"""
from __future__ import annotations

from datetime import timedelta
from typing import NamedTuple

import torch


class TensorMeta(NamedTuple):
    """One tensor of a bucket; a plain tuple on the wire (vLLM's RPC to its workers may not keep classes)."""

    name: str
    shape: tuple
    dtype: str  # e.g. "float32"


def layer_of(name: str) -> str:
    """The module a checkpoint tensor loads into, at the granularity vLLM's in-place reload needs.

    vLLM fuses checkpoint tensors (q/k/v into qkv_proj, gate/up into gate_up_proj) and processes a layer when it
    is reloaded; a layer that got only part of its tensors in one reload is left partly uninitialised. So a whole
    numbered block (``...layers.3``, ``...blocks.0``) is one unit, else the tensor's own module.
    """
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part.isdigit():
            return ".".join(parts[:i + 1])
    return ".".join(parts[:-1])


def plan_buckets(state: dict[str, torch.Tensor], bucket_bytes: int) -> list[list[TensorMeta]]:
    """Whole layers (``layer_of``) packed into buckets of at most ``bucket_bytes``; a larger layer goes alone."""
    layers: dict[str, list[str]] = {}
    for name in state:
        layers.setdefault(layer_of(name), []).append(name)
    buckets, current, size = [], [], 0
    for names in layers.values():
        nbytes = sum(state[n].numel() * state[n].element_size() for n in names)
        if current and size + nbytes > bucket_bytes:
            buckets.append(current)
            current, size = [], 0
        current += [TensorMeta(n, tuple(state[n].shape), str(state[n].dtype).removeprefix("torch.")) for n in names]
        size += nbytes
    if current:
        buckets.append(current)
    return buckets


def _wire_dtype(bucket: list) -> torch.dtype:
    """One flat buffer per bucket: the widest dtype in it, so no tensor loses precision on the way."""
    return max((getattr(torch, TensorMeta(*m).dtype) for m in bucket), key=lambda d: torch.empty(0, dtype=d).element_size())


def flatten(state: dict[str, torch.Tensor], bucket: list[TensorMeta], device: str) -> torch.Tensor:
    dtype = _wire_dtype(bucket)
    return torch.cat([state[m.name].reshape(-1).to(dtype) for m in bucket]).to(device)


def unflatten(flat: torch.Tensor, bucket: list) -> list[tuple[str, torch.Tensor]]:
    out, offset = [], 0
    for m in map(lambda m: TensorMeta(*m), bucket):
        n = int(torch.Size(m.shape).numel())
        out.append((m.name, flat[offset:offset + n].view(m.shape).to(getattr(torch, m.dtype))))
        offset += n
    return out


def empty_bucket(bucket: list, device: str) -> torch.Tensor:
    numel = sum(int(torch.Size(TensorMeta(*m).shape).numel()) for m in bucket)
    return torch.empty(numel, dtype=_wire_dtype(bucket), device=device)


def backend_for_device() -> tuple[str, str]:
    """(backend, device) of this process: NCCL on a GPU, gloo on CPU."""
    return ("nccl", "cuda") if torch.cuda.is_available() else ("gloo", "cpu")


def join_group(host: str, port: int, rank: int, world_size: int, backend: str, timeout_s: float):
    """A process group of its own (no global state touched): vLLM's stateless init, which covers gloo and NCCL."""
    from vllm.distributed.utils import stateless_init_torch_distributed_process_group

    return stateless_init_torch_distributed_process_group(host, port, rank, world_size, backend,
                                                          timeout=timedelta(seconds=timeout_s))


def leave_group(pg) -> None:
    from vllm.distributed.utils import stateless_destroy_torch_distributed_process_group

    try:
        stateless_destroy_torch_distributed_process_group(pg)
    except Exception:  # a peer already gone: nothing left to tear down cleanly
        pass


def broadcast(pg, tensor: torch.Tensor) -> None:
    """From group rank 0 (the process group object's own broadcast: it takes group ranks)."""
    pg.broadcast(tensor, 0).wait()


class CollectiveSender:
    """Trainer rank 0's side: forms the group with the actors, then broadcasts each sync's buckets to them."""

    def __init__(self, actors: list, bucket_bytes: int, timeout_s: float = 600.0):
        self.actors, self.bucket_bytes, self.timeout_s = actors, bucket_bytes, timeout_s
        self.backend, self.device = backend_for_device()
        self.pg = None

    def connect(self) -> None:
        import ray
        from vllm.utils.network_utils import get_open_port

        host, port = ray.util.get_node_ip_address(), get_open_port()
        workers = ray.get([a.weight_group_size.remote() for a in self.actors])
        world, offset, joins = 1 + sum(workers), 1, []
        for actor, n in zip(self.actors, workers):
            joins.append(actor.join_weight_group.remote(host, port, offset, world, self.backend, self.timeout_s))
            offset += n
        self.pg = join_group(host, port, 0, world, self.backend, self.timeout_s)  # returns once all joined
        ray.get(joins)

    def close(self) -> None:
        if self.pg is not None:
            leave_group(self.pg)
            self.pg = None

    def send(self, state: dict[str, torch.Tensor], version: int) -> float:
        """Broadcast ``state``; returns the slowest actor's receive-and-load seconds."""
        import ray

        if self.pg is None:
            self.connect()
        buckets = plan_buckets(state, self.bucket_bytes)
        receiving = [a.receive_weights.remote(buckets, version) for a in self.actors]
        for bucket in buckets:
            broadcast(self.pg, flatten(state, bucket, self.device))
        return max(ray.get(receiving), default=0.0)

