"""The rollout actor's side of a weight update: an update cut short does not block the next one."""
import pytest

from seedr1.rollout.actor import RolloutWorker


class FlakyEngine:
    """Records the update calls; its first chunk raises (a receive that timed out), as vLLM's worker then ends the
    update itself, a later finish without a start raises."""

    def __init__(self):
        self.calls, self.active, self.fail_next = [], False, True

    def start_weight_update(self):
        if self.active:
            raise RuntimeError("start_weight_update called while a weight update is already active")
        self.active = True
        self.calls.append("start")

    def update_weight_chunk(self, info):
        if self.fail_next:
            self.fail_next, self.active = False, False
            raise TimeoutError("receive timed out")
        self.calls.append("update")

    def finish_weight_update(self):
        if not self.active:
            raise RuntimeError("finish_weight_update called without a matching start_weight_update")
        self.active = False
        self.calls.append("finish")


def _worker(engine) -> RolloutWorker:
    worker = RolloutWorker.__new__(RolloutWorker)  # no model: the engine is the stand-in above
    worker.engine, worker.weights_version, worker.update_s, worker.updating = engine, 0, 0.0, False
    return worker


def test_a_failed_chunk_leaves_the_actor_ready_for_the_next_update():
    engine = FlakyEngine()
    worker = _worker(engine)
    worker.start_weight_update()
    with pytest.raises(TimeoutError):
        worker.update_weight_chunk({"names": []})
    assert not worker.updating and worker.weights_version == 0
    worker.start_weight_update()  # the resync
    worker.update_weight_chunk({"names": []})
    worker.finish_weight_update(version=3)
    assert engine.calls == ["start", "start", "update", "finish"] and worker.held_version() == 3


def test_an_update_cut_short_by_the_trainer_is_ended_before_the_next():
    engine = FlakyEngine()
    engine.fail_next = False
    worker = _worker(engine)
    worker.start_weight_update()
    worker.update_weight_chunk({"names": []})  # then the trainer lost another engine: no finish came
    worker.start_weight_update()
    worker.finish_weight_update(version=2)
    assert engine.calls == ["start", "update", "finish", "start", "finish"] and worker.held_version() == 2
