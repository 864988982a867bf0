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
from seedr1.train.policy import layer_groups


def _source_base():
    from vllm.distributed.weight_transfer.base import WeightSource

    return WeightSource


class ZeroWeightSource(_source_base()):
    """The policy's parameters in their own dtype, one layer group gathered at a time (ZeRO-3: a collective every
    rank runs in the same order), never the whole model at once. ``drain`` finishes a pass cut short, so a rank
    whose sending failed still takes part in every gather the other ranks make."""

    def __init__(self, module: torch.nn.Module, trainable_only: bool = True, clone: bool = True):
        """``clone``: yield copies under ZeRO-3 (the gathered storage is released when the group's context ends;
        vLLM's packed NCCL producer keeps views past that). A consumer done with each group before asking for the
        next one needs none."""
        self.clone = clone
        params = dict((n, p) for n, p in module.named_parameters() if p.requires_grad or not trainable_only)
        self._groups = layer_groups(list(params))
        # metadata and iteration enumerate the same names in the same order: the groups'
        self.params = [(n, params[n]) for group in self._groups for n in group]
        self.zero3 = any(hasattr(p, "ds_id") for _, p in self.params)
        self.gathered = 0  # groups gathered in the current pass

    def groups(self) -> list[list[str]]:
        return self._groups

    def metadata(self):
        from vllm.distributed.weight_transfer.base import ParamMeta

        return [ParamMeta(n, p.dtype, tuple(p.ds_shape) if self.zero3 else tuple(p.shape)) for n, p in self.params]

    def iter_groups(self, start: int = 0) -> Iterator[tuple[list[str], list[torch.Tensor]]]:
        import deepspeed

        by_name = dict(self.params)
        self.gathered = start
        for names in self._groups[start:]:
            params = [by_name[n] for n in names]
            self.gathered += 1
            if not self.zero3:
                yield names, [p.detach() for p in params]
                continue
            with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
                yield names, [p.detach().clone() if self.clone else p.detach() for p in params]

    def __iter__(self):
        for names, tensors in self.iter_groups():
            yield from zip(names, tensors)

    def drain(self) -> None:
        """Gather the groups the current pass has not reached yet (none if it ended)."""
        if self.zero3:
            for _ in self.iter_groups(self.gathered):
                pass


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
        self.client.start_weight_update()  # a failure here: WeightSync.send drains the gathers
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
                    if receiving is not None and receiving.done():  # an engine refused the update: no peer waits
                        receiving.result()
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


def nccl_chunks(sizes: list[int], buffer_bytes: int) -> list[int]:
    """Bytes of each message vLLM's packed NCCL producer sends (``packed_tensor.pack_tensors``): tensors are added
    until the total exceeds the buffer, so a message can be the buffer plus one tensor."""
    chunks, total = [], 0
    for n in sizes:
        total += n
        if total > buffer_bytes:
            chunks.append(total)
            total = 0
    return chunks + ([total] if total else [])


class WeightSync:
    """One per trainer rank: sends the policy to the rollout engines. ``send`` on every rank at the same point."""

    def __init__(self, module: torch.nn.Module, rank: int, weight_sync: str, bucket_bytes: int, timeout_s: float,
                 actors: list | None = None):
        self.rank, self.weight_sync, self.bucket_bytes, self.timeout_s = rank, weight_sync, bucket_bytes, timeout_s
        self.gpu = torch.cuda.is_available() and any(p.is_cuda for p in module.parameters())
        self.backend, self.wire = wire.trainer_backend(weight_sync, self.gpu)
        # clones for vLLM's NCCL producer, which keeps views: on the sender only (the others never read them)
        self.source = ZeroWeightSource(module, clone=self.wire == "nccl" and rank == 0)
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
        stats = {"bytes": 0, "largest_message": 0, "buckets": 0}
        self.source.gathered = 0
        try:
            if self.engine is None:
                self.connect()
            if self.client is not None:
                self.client.version = version
            if isinstance(self.engine, SeedR1TrainerEngine):
                self.engine.send_weights(stats)
            else:
                self.engine.send_weights()
                sizes = [wire.tensor_nbytes(m.shape, str(m.dtype).removeprefix("torch.")) for m in self.source.metadata()]
                chunks = nccl_chunks(sizes, self.bucket_bytes)
                stats.update(bytes=sum(sizes), largest_message=max(chunks, default=0), buckets=len(chunks))
        except BaseException:
            self.source.drain()  # rank 0 failed before or while gathering: the other ranks gather every group
            raise
        stats["seconds"] = time.perf_counter() - t0
        stats["engine_seconds"] = self.client.engine_seconds if self.client is not None else 0.0
        return stats

    def close(self) -> None:
        if self.engine is not None:
            self.engine.shutdown()
            self.engine = None
