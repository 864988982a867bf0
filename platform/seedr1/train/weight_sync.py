"""The sending side of weight sync: the trainer's weights, gathered bucket by bucket, to every rollout engine.

Runs on every trainer rank (gathering ZeRO-3 shards is collective); rank 0 alone talks to the engines. Built on
vLLM's weight-transfer API: a ``WeightSource`` over the DeepSpeed module, and a trainer engine from
``WeightTransferTrainerFactory``-style classes: vLLM's ``NCCLTrainerWeightTransferEngine`` where rank 0 holds its
weights on a GPU (``collective``), else seedr1's (``rollout.weight_transfer``: gloo, or the Ray object store). The
backend is decided here, by the process that owns the tensors, and checked against each engine's at connect time.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import torch

from seedr1.rollout import weight_transfer as wire


def _source_base():
    from vllm.distributed.weight_transfer.base import WeightSource

    return WeightSource


class ZeroWeightSource(_source_base()):
    """The policy's parameters in their own dtype, one layer group gathered at a time (ZeRO-3: a collective every
    rank runs in the same order), never the whole model at once."""

    def __init__(self, module: torch.nn.Module, trainable_only: bool = True, clone: bool = True):
        """``clone``: yield copies under ZeRO-3 (the gathered storage is released when the group's context ends;
        vLLM's packed NCCL producer keeps views past that). A consumer done with each group before asking for the
        next one needs none."""
        from vllm.distributed.weight_transfer.base import layerwise_groups

        self.clone = clone

        params = dict((n, p) for n, p in module.named_parameters() if p.requires_grad or not trainable_only)
        # in group order (vLLM's layerwise_groups moves un-numbered tensors after the stacks): metadata and
        # iteration must enumerate the same names in the same order
        self.params = [(n, params[n]) for group in layerwise_groups(list(params)) for n in group]
        self.zero3 = any(hasattr(p, "ds_id") for _, p in self.params)

    def metadata(self):
        from vllm.distributed.weight_transfer.base import ParamMeta

        return [ParamMeta(n, p.dtype, tuple(p.ds_shape) if self.zero3 else tuple(p.shape)) for n, p in self.params]

    def iter_groups(self) -> Iterator[tuple[list[str], list[torch.Tensor]]]:
        import deepspeed

        by_name = dict(self.params)
        for names in self.groups():
            params = [by_name[n] for n in names]
            if not self.zero3:
                yield names, [p.detach() for p in params]
                continue
            with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
                yield names, [p.detach().clone() if self.clone else p.detach() for p in params]

    def __iter__(self):
        for names, tensors in self.iter_groups():
            yield from zip(names, tensors)


class SeedR1TrainerEngine:
    """Trainer side of the ``seedr1`` engine (gloo broadcast, or buckets through the object store): one weight
    update per sync, buckets cut by ``wire.bucket_bounds`` exactly as the engines cut them."""

    def __init__(self, client, source, is_sender: bool, wire_kind: str, bucket_bytes: int, timeout_s: float,
                 host: str | None = None):
        """``host``: the address the engines reach this process at for gloo (default: this Ray node's)."""
        self.client, self.source, self.is_sender = client, source, is_sender
        self.wire, self.bucket_bytes, self.timeout_s, self.host = wire_kind, bucket_bytes, timeout_s, host
        self.pg = None

    def connect(self) -> None:
        if not self.is_sender:
            return
        info = {"transport": self.wire, "bucket_bytes": self.bucket_bytes, "timeout_s": self.timeout_s}
        if self.wire != "gloo":
            self.client.init_weight_transfer_engine(info)
            return
        import ray
        from vllm.utils.network_utils import get_open_port

        host, port = self.host or ray.util.get_node_ip_address(), get_open_port()
        info.update(master_address=host, master_port=port, world_size=self.client.world_size)
        with ThreadPoolExecutor(max_workers=1) as pool:  # the engines wait in the rendezvous, as this rank does
            joining = pool.submit(self.client.init_weight_transfer_engine, info)
            self.pg = wire.join_group(host, port, 0, self.client.world_size, self.timeout_s)
            joining.result()

    def send_weights(self, stats: dict) -> None:
        meta = self.source.metadata()
        if not self.is_sender:
            for _ in self.source.iter_groups():  # the gathers are collective: stay in step with rank 0
                pass
            return
        names = [m.name for m in meta]
        dtypes = [str(m.dtype).removeprefix("torch.") for m in meta]
        shapes = [list(m.shape) for m in meta]
        sizes = [wire.tensor_nbytes(s, d) for s, d in zip(shapes, dtypes)]
        self.client.start_weight_update()
        pool = ThreadPoolExecutor(max_workers=1)
        receiving = None
        if self.wire == "gloo":  # the engines receive every bucket inside one update_weights call
            receiving = pool.submit(self.client.update_weights, {"names": names, "dtype_names": dtypes,
                                                                "shapes": shapes})
        error = None
        try:
            for start, end, buffer in self._buckets(names, sizes):
                stats["bytes"] += buffer.numel()
                stats["largest_message"] = max(stats["largest_message"], buffer.numel())
                stats["buckets"] += 1
                if error is not None:
                    continue  # keep gathering with the other ranks; nothing more is sent
                try:
                    if self.wire == "gloo":
                        self.pg.broadcast(buffer, 0).wait()
                    else:
                        import ray

                        self.client.update_weights({"names": names[start:end], "dtype_names": dtypes[start:end],
                                                    "shapes": shapes[start:end],
                                                    "ref": ray.put(buffer.numpy())})
                except Exception as e:  # a dead engine: drain the gathers, then raise
                    error = e
            if receiving is not None and error is None:
                receiving.result(timeout=self.timeout_s)
        finally:
            pool.shutdown(wait=False)
        if error is not None:
            raise error
        self.client.finish_weight_update()

    def _buckets(self, names: list[str], sizes: list[int]):
        """(start, end, packed uint8 buffer) per bucket: each tensor is copied into the bucket's buffer while its
        layer group is gathered, so beyond the model this rank holds one bucket and one gathered group."""
        bounds = wire.bucket_bounds(sizes, self.bucket_bytes)
        index, b, offset, buffer = 0, 0, 0, None
        for group_names, tensors in self.source.iter_groups():
            for name, t in zip(group_names, tensors):
                if name != names[index]:
                    raise RuntimeError(f"weight source order changed: {name!r} where {names[index]!r} was declared")
                if buffer is None:
                    buffer, offset = torch.empty(sum(sizes[bounds[b][0]:bounds[b][1]]), dtype=torch.uint8), 0
                buffer[offset:offset + sizes[index]].copy_(t.contiguous().view(-1).view(torch.uint8))
                offset += sizes[index]
                index += 1
                if index == bounds[b][1]:
                    yield bounds[b][0], bounds[b][1], buffer
                    buffer, b = None, b + 1

    def shutdown(self) -> None:
        if self.pg is not None:
            wire.leave_group(self.pg)
            self.pg = None


class WeightSync:
    """One per trainer rank: sends the policy to the rollout engines. ``send`` on every rank at the same point."""

    def __init__(self, module: torch.nn.Module, rank: int, weight_sync: str, bucket_bytes: int, timeout_s: float,
                 actors: list | None = None):
        self.rank, self.weight_sync, self.bucket_bytes, self.timeout_s = rank, weight_sync, bucket_bytes, timeout_s
        self.gpu = torch.cuda.is_available() and any(p.is_cuda for p in module.parameters())
        self.backend, self.wire = wire.trainer_backend(weight_sync, self.gpu)
        self.source = ZeroWeightSource(module, clone=self.wire == "nccl")
        self.actors = actors  # rank 0 only
        self.client = None  # rank 0: rollout.weight_transfer.RolloutActorsClient
        self.engine = None

    def connect(self) -> None:
        """Form the transfer group with the engines (rank 0; after an actor restart, again)."""
        self.close()
        client = None
        if self.rank == 0:
            client = self.client = wire.RolloutActorsClient(self.actors, self.timeout_s)
            theirs = client.backends()
            wrong = [(k, b) for k, b in enumerate(theirs) if b != self.backend]
            if wrong:
                k, b = wrong[0]
                where = "a GPU" if self.gpu else "the CPU"
                raise RuntimeError(
                    f"weight sync: trainer rank 0 holds its weights on {where} and needs engines with weight-transfer "
                    f"backend {self.backend!r} for rollout.weight_sync={self.weight_sync}, but rollout actor {k}'s "
                    f"engine has {b!r}: put the trainer and the rollout engines on the same kind of device "
                    "(trainer.gpus_per_worker, rollout.gpus_per_actor) or use rollout.weight_sync=object_store")
        if self.wire == "nccl":
            from vllm.distributed.weight_transfer.factory import WeightTransferTrainerFactory
            from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo

            if self.rank == 0:
                import ray
                from vllm.utils.network_utils import get_open_port

                info = NCCLTrainerInitInfo(master_address=ray.util.get_node_ip_address(), master_port=get_open_port(),
                                           world_size=client.world_size, rank=0, packed=True,
                                           packed_buffer_size_bytes=self.bucket_bytes)
            else:
                info = NCCLTrainerInitInfo(master_address="", master_port=0, world_size=0, rank=self.rank)
            self.engine = WeightTransferTrainerFactory.trainer_init(info, client=client, source=self.source)
        else:
            self.engine = SeedR1TrainerEngine(client, self.source, self.rank == 0, self.wire, self.bucket_bytes,
                                              self.timeout_s)
            self.engine.connect()

    def send(self, version: int) -> dict:
        """Every rank, at the same point: the engines then hold weights ``version``. Returns rank 0's figures:
        seconds, bytes, largest message, buckets, the slowest engine's seconds in the update."""
        t0 = time.perf_counter()
        if self.engine is None:
            self.connect()
        if self.client is not None:
            self.client.version = version
        stats = {"bytes": 0, "largest_message": 0, "buckets": 0}
        if isinstance(self.engine, SeedR1TrainerEngine):
            self.engine.send_weights(stats)
        else:  # vLLM's NCCL engine packs buffers of packed_buffer_size_bytes (a tensor may overrun one)
            self.engine.send_weights()
            stats["bytes"] = sum(wire.tensor_nbytes(m.shape, str(m.dtype).removeprefix("torch."))
                                 for m in self.source.metadata())
            stats["largest_message"] = min(stats["bytes"], self.bucket_bytes)
        stats["seconds"] = time.perf_counter() - t0
        stats["engine_seconds"] = self.client.engine_seconds if self.client is not None else 0.0
        return stats

    def close(self) -> None:
        if self.engine is not None:
            self.engine.shutdown()
            self.engine = None
