"""The sending side of weight sync: the backend is decided by the process that holds the trainer's tensors, and a
trainer and engines that cannot talk fail at connect time with an error naming the keys, not after a timeout."""
import time

import pytest
import ray
import torch

from seedr1.rollout.weight_transfer import engine_backend, trainer_backend
from seedr1.train.weight_sync import WeightSync, ZeroWeightSource


def test_each_side_decides_its_backend_from_where_its_tensors_are():
    assert trainer_backend("collective", gpu=True) == ("nccl", "nccl")  # vLLM's NCCL engines
    assert trainer_backend("collective", gpu=False) == ("seedr1", "gloo")
    assert trainer_backend("object_store", gpu=True) == trainer_backend("object_store", gpu=False) == \
        ("seedr1", "object_store")
    assert engine_backend("collective", gpu=True) == "nccl" and engine_backend("collective", gpu=False) == "seedr1"
    assert engine_backend("object_store", gpu=True) == "seedr1"
    # a sync built from a CPU module (a process that sees no GPU) picks gloo; nothing is decided by a driver
    sync = WeightSync(torch.nn.Linear(2, 2), 0, "collective", 1 << 20, 5.0, actors=[])
    assert (sync.backend, sync.wire) == ("seedr1", "gloo")


def test_weight_source_declares_what_it_yields_in_group_order():
    model = torch.nn.ModuleDict({"emb": torch.nn.Embedding(4, 2),
                                 "layers": torch.nn.ModuleList([torch.nn.Linear(2, 2) for _ in range(2)]),
                                 "head": torch.nn.Linear(2, 3)})
    model["emb"].weight.requires_grad_(False)  # frozen: not synced
    source = ZeroWeightSource(model)
    names = [m.name for m in source.metadata()]
    assert names == ["layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias", "head.weight",
                     "head.bias"]
    assert [n for n, _ in source] == names
    assert [g for g, _ in source.iter_groups()] == [names[:2], names[2:4], names[4:]]
    assert all(torch.equal(t, dict(model.named_parameters())[n]) for n, t in source)


class GPUEngineActor:
    """Answers as a rollout actor whose engine sits on a GPU and was built for a collective sync."""

    def weight_group_size(self):
        return 1

    def weight_transfer_backend(self):
        return "nccl"

    def init_weight_transfer(self, info):
        time.sleep(600)  # never reached: the mismatch is caught before any rendezvous


def test_a_cpu_trainer_and_a_gpu_engine_fail_at_connect_naming_the_keys(ray_cluster):
    actor = ray.remote(GPUEngineActor).options(num_cpus=0).remote()
    ray.get(actor.weight_group_size.remote())  # started: what is timed below is the connect alone
    sync = WeightSync(torch.nn.Linear(2, 2), 0, "collective", 1 << 20, 600.0, actors=[actor])
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match="holds its weights on the CPU.*backend 'seedr1'.*actor 0's engine has "
                                           "'nccl'.*trainer.gpus_per_worker, rollout.gpus_per_actor"):
        sync.send(version=1)
    assert time.perf_counter() - t0 < 30
    ray.kill(actor)


def test_layer_groups_keep_each_unnumbered_module_apart():
    from seedr1.train.policy import layer_groups

    names = ["visual.blocks.0.a", "visual.blocks.0.b", "visual.merger.mlp.w", "model.embed.w", "model.layers.0.q",
             "model.layers.1.q", "model.norm.w", "lm_head.w"]
    # vLLM's layerwise_groups would put merger, embeddings, norm and head into one last group
    assert layer_groups(names) == [["visual.blocks.0.a", "visual.blocks.0.b"], ["visual.merger.mlp.w"],
                                   ["model.embed.w"], ["model.layers.0.q"], ["model.layers.1.q"], ["model.norm.w"],
                                   ["lm_head.w"]]


def test_nccl_message_sizes_follow_vllms_packing_rule():
    """vLLM's packed producer closes a message once it exceeds the buffer: a message can be buffer + one tensor."""
    from seedr1.train.weight_sync import nccl_chunks

    assert nccl_chunks([40, 30, 50, 10], 64) == [70, 60]
    assert nccl_chunks([100], 64) == [100] and nccl_chunks([10, 10], 64) == [20] and nccl_chunks([], 64) == []


class CountingActor:
    def __init__(self, workers):
        self.workers, self.info = workers, None

    def weight_group_size(self):
        return self.workers

    def init_weight_transfer(self, info):
        self.info = info

    def seen(self):
        return self.info


def test_each_engine_gets_its_own_ranks_in_the_transfer_group(ray_cluster):
    """vLLM's Ray client sends every engine the same init info; independent engines (2 workers, then 1) need
    rank offsets 1 and 3 in a group of 4 (rank 0: the trainer)."""
    from seedr1.rollout.weight_transfer import RolloutActorsClient

    actors = [ray.remote(CountingActor).options(num_cpus=0).remote(n) for n in (2, 1)]
    client = RolloutActorsClient(actors, timeout_s=600)  # the actors start within it, however busy the box
    assert client.world_size == 4 and client.rank_offsets() == [1, 3]
    client.init_weight_transfer_engine({"transport": "gloo", "rank_offset": 1, "world_size": 4})
    assert [ray.get(a.seen.remote())["rank_offset"] for a in actors] == [1, 3]
    for a in actors:
        ray.kill(a)
