"""RolloutGroup survives a dead actor: Ray restarts it, the group reloads the latest weights and generates again."""
import os
import signal
import time

import pytest
import ray

from seedr1.data.pipeline import PromptRecord
from seedr1.rollout.actor import StaleWeightsError
from seedr1.rollout.engine import Sampling, prompt_seeds
from seedr1.rollout.group import RolloutGroup


def records(count: int) -> list[PromptRecord]:
    return [PromptRecord(sample_id=f"p{i}", kind="validation", messages=[], video=None, image=None, gold_letter="A")
            for i in range(count)]


class EchoWorker:
    """Stands in for RolloutWorker (same method contract) without an engine: completions name the weights and the
    prompt's seed."""

    def __init__(self):
        self.weights_version, self.weights = 0, b"start"

    def generate(self, prompts, seed, weights_version=0):
        if weights_version != self.weights_version:
            raise StaleWeightsError(f"{self.weights_version} != {weights_version}")
        time.sleep(0.05 * len(prompts))
        return [f"{p.sample_id}@{self.weights.decode()}#{s}" for p, s in zip(prompts, seed)], 0.05 * len(prompts)

    def update_weights(self, payload, version=None):
        self.weights, self.weights_version = payload, version
        return 0.0

    def pid(self):
        return os.getpid()

    def version(self):
        return self.weights_version


@pytest.fixture()
def group(ray_cluster):
    actors = [ray.remote(EchoWorker).options(num_cpus=0, max_restarts=2, max_task_retries=0).remote()
              for _ in range(2)]
    events = []
    g = RolloutGroup(actors, max_recoveries=2, on_event=lambda kind, **f: events.append((kind, f)))
    yield g, events
    for a in actors:
        ray.kill(a)


def test_actor_killed_between_calls_gets_weights_back(group):
    g, events = group
    seeds = prompt_seeds(Sampling(seed=0), records(3))
    assert g.generate(records(3), seed=0)[0] == [f"p{i}@start#{seeds[i]}" for i in range(3)]
    g.sync(b"v1")
    os.kill(ray.get(g.actors[1].pid.remote()), signal.SIGKILL)  # restarted by Ray with the start weights
    out, _ = g.generate(records(3), seed=0)
    assert out == [f"p{i}@v1#{seeds[i]}" for i in range(3)]  # the stale actor was noticed and reloaded
    assert g.restarts == 1 and events[0][0] == "rollout_actor_restarted" and events[0][1]["actor"] == 1


def test_actor_killed_mid_generation_regenerates_its_prompts(group):
    g, events = group
    g.sync(b"v1")
    pid = ray.get(g.actors[0].pid.remote())  # asked first: the actor runs one call at a time
    pending = g.launch(records(8), seed=0)  # ~0.2 s per actor
    time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    out, _ = g.collect(pending)
    seeds = prompt_seeds(Sampling(seed=0), records(8))
    assert out == [f"p{i}@v1#{seeds[i]}" for i in range(8)]  # regenerated with the seeds first given
    assert g.restarts == 1 and events[0][1]["error"] in ("ActorDiedError", "RayActorError", "ActorUnavailableError")


class BrokenSender:
    """A collective sender whose broadcast fails (as when a peer died in it)."""

    def __init__(self):
        self.closed = 0

    def send(self, state, version):
        raise RuntimeError("Connection closed by peer")

    def close(self):
        self.closed += 1


def test_failed_collective_sync_falls_back_to_the_object_store(ray_cluster):
    import numpy as np
    import torch

    actors = [ray.remote(EchoWorker).options(num_cpus=0).remote() for _ in range(2)]
    events, sender = [], BrokenSender()
    g = RolloutGroup(actors, on_event=lambda kind, **f: events.append((kind, f)), sender=sender)
    state = {"w": torch.arange(4, dtype=torch.float32)}
    g.sync(state)
    assert sender.closed == 1 and events[0][0] == "weight_sync_fallback" and "peer" in events[0][1]["error"]
    assert ray.get([a.version.remote() for a in actors]) == [1, 1]
    received = ray.get(actors[1].__ray_call__.remote(lambda self: self.weights))
    # numpy arrays (engine.array_state), not safetensors bytes: no serialisation on either side
    assert list(received) == ["w"] and isinstance(received["w"], np.ndarray)
    np.testing.assert_array_equal(received["w"], state["w"].numpy())
    for a in actors:
        ray.kill(a)


class SlowLoadWorker(EchoWorker):
    """Loading weights takes a while and records when it ran."""

    def update_weights(self, payload, version=None):
        start = time.time()
        time.sleep(0.5)
        self.weights, self.weights_version, self.loaded = payload, version, (start, time.time())
        return 0.5


def test_object_store_sync_loads_every_engine_at_once(ray_cluster):
    actors = [ray.remote(SlowLoadWorker).options(num_cpus=0, max_restarts=1, max_task_retries=0).remote()
              for _ in range(2)]
    ray.get([a.pid.remote() for a in actors])  # both processes up: a slow actor start is not a serial load
    g = RolloutGroup(actors, max_recoveries=1)
    g.sync(b"v1")
    (s0, e0), (s1, e1) = ray.get([a.__ray_call__.remote(lambda self: self.loaded) for a in actors])
    assert s1 < e0 and s0 < e1, ((s0, e0), (s1, e1))  # the two loads overlapped
    # an actor that died since the last call is restarted and still gets this sync's weights
    os.kill(ray.get(actors[0].pid.remote()), signal.SIGKILL)
    g.sync(b"v2")
    assert ray.get([a.version.remote() for a in actors]) == [2, 2] and g.restarts == 1
    for a in actors:
        ray.kill(a)
