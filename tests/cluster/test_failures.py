"""The one line a failed job ends with (``seedr1.cluster.failures.explain``), for the failures Ray Train reports."""
from ray.exceptions import ActorDiedError
from ray.train import ControllerError, WorkerGroupError
from ray.train.v2._internal.exceptions import (WorkerGroupStartupTimeoutError, WorkerHealthCheckFailedError,
                                               WorkerHealthCheckTimeoutError)

from seedr1.cluster.failures import explain
from seedr1.storage import StorageUnreachable


def test_a_lost_trainer_worker_names_max_failures():
    lost = WorkerHealthCheckFailedError("A worker health check failed.", ActorDiedError())
    e = WorkerGroupError("Training failed", {0: RuntimeError("gloo: connection closed by peer"), 1: lost})
    line = explain(e)
    assert "trainer worker rank 1 was lost" in line and "trainer.max_failures=N" in line and "resume=auto" in line
    hung = WorkerGroupError("Training failed", {0: WorkerHealthCheckTimeoutError("no answer in 600 s")})
    assert "rank 0 was lost" in explain(hung)


def test_an_exception_in_the_train_function_is_named_with_its_rank():
    e = WorkerGroupError("Training failed", {1: ValueError("bad shape\nlong traceback"), 0: KeyError("x")})
    assert explain(e) == "trainer rank 0 failed: KeyError: 'x'"
    e = WorkerGroupError("Training failed", {0: StorageUnreachable("S3 read s3://b/k failed: cannot reach endpoint")})
    assert explain(e).startswith("trainer rank 0 failed: StorageUnreachable: S3 read s3://b/k") and "data.s3" in explain(e)


def test_a_trainer_group_that_cannot_start_names_start_timeout():
    line = explain(ControllerError(WorkerGroupStartupTimeoutError(num_workers=3)))
    assert "trainer.start_timeout_s" in line


def test_rollout_actors_that_keep_dying_name_max_restarts():
    try:
        try:
            raise ActorDiedError()
        except ActorDiedError as cause:
            raise RuntimeError("rollout actor 0 died 4 times in one step; giving up") from cause
    except RuntimeError as e:
        line = explain(e)
    assert line.startswith("RuntimeError: rollout actor 0 died 4 times") and "rollout.max_restarts" in line


def test_run_job_ends_a_failure_with_the_traceback_then_the_line(capsys, monkeypatch):
    import pytest

    from seedr1.config import GRPOConfig, run_job

    def run(cfg):
        raise WorkerGroupError("Training failed", {1: WorkerHealthCheckFailedError("gone", ActorDiedError())})

    monkeypatch.setattr("sys.argv", ["grpo.py", "steps=1"])
    with pytest.raises(SystemExit) as e:
        run_job(run, GRPOConfig)
    assert e.value.code == 1
    err = capsys.readouterr().err.rstrip().splitlines()
    assert "Traceback (most recent call last):" in err
    assert err[-1].startswith("[grpo] failed: trainer worker rank 1 was lost") and "trainer.max_failures" in err[-1]
