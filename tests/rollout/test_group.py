"""RolloutGroup survives a dead actor: Ray restarts it, the group has the latest weights sent again (``resync``, the
GRPO loop's: the same weight sync every trainer rank runs) and generates again."""
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

    def held_version(self):
        return self.weights_version


def _resync(g: RolloutGroup, weights: bytes):
    """What the GRPO loop's resync does for the group: every actor gets the current weights and their version."""
    def resync():
        ray.get([a.update_weights.remote(weights, g.version) for a in g.actors])
        g.resyncs += 1
    g.resyncs = 0
    g.resync = resync


def _sync(g: RolloutGroup, weights: bytes) -> None:
    g.version += 1
    ray.get([a.update_weights.remote(weights, g.version) for a in g.actors])
    _resync(g, weights)


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
    _sync(g, b"v1")
    os.kill(ray.get(g.actors[1].pid.remote()), signal.SIGKILL)  # restarted by Ray with the start weights
    out, _ = g.generate(records(3), seed=0)
    assert out == [f"p{i}@v1#{seeds[i]}" for i in range(3)]  # the stale actor was noticed and resynced
    assert g.restarts == 1 == g.resyncs and events[0][0] == "rollout_actor_restarted" and events[0][1]["actor"] == 1


def test_actor_killed_mid_generation_regenerates_its_prompts(group):
    g, events = group
    _sync(g, b"v1")
    pid = ray.get(g.actors[0].pid.remote())  # asked first: the actor runs one call at a time
    pending = g.launch(records(8), seed=0)  # ~0.2 s per actor
    time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    out, _ = g.collect(pending)
    seeds = prompt_seeds(Sampling(seed=0), records(8))
    assert out == [f"p{i}@v1#{seeds[i]}" for i in range(8)]  # regenerated with the seeds first given
    assert g.restarts == 1 == g.resyncs
    assert events[0][1]["error"] in ("ActorDiedError", "RayActorError", "ActorUnavailableError")


def test_a_restart_before_any_sync_needs_no_weights(group):
    g, _ = group
    os.kill(ray.get(g.actors[0].pid.remote()), signal.SIGKILL)
    out, _ = g.generate(records(2), seed=0)
    assert [o.split("@")[1].split("#")[0] for o in out] == ["start", "start"] and g.restarts == 1


def test_a_restart_after_a_sync_without_a_resync_is_an_error(group):
    g, _ = group
    g.version += 1
    ray.get([a.update_weights.remote(b"v1", g.version) for a in g.actors])
    os.kill(ray.get(g.actors[1].pid.remote()), signal.SIGKILL)
    with pytest.raises(RuntimeError, match="no way to send it weights version 1"):
        g.generate(records(2), seed=0)


def test_a_restart_seen_by_a_failed_sync_is_counted_once_in_that_step(group):
    """The GRPO loop's failed-sync path: the restarted actor is counted when the sync fails (its step), and the stale
    weights the next call finds are resent without counting it again."""
    g, events = group
    g.pids = ray.get([a.pid.remote() for a in g.actors])
    _sync(g, b"v1")
    os.kill(g.pids[1], signal.SIGKILL)
    g.wait_for_restarts(RuntimeError("sync failed"))
    assert g.restarts == 1 and [e[1]["actor"] for e in events] == [1] and events[0][1]["error"] == "RuntimeError"
    out, _ = g.generate(records(2), seed=0)
    assert all("@v1#" in o for o in out) and g.resyncs == 1  # resent
    assert g.restarts == 1 and len(events) == 1  # not counted twice
