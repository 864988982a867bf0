"""The one line a failed job ends with: the cause, in seedr1's words, and the setting that changes the outcome.

The library's traceback stays above it (``config.run_job`` prints both); this line is what a person reads first.
"""
from __future__ import annotations


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:400]


def _lost_worker(failure: BaseException) -> bool:
    """A Ray Train worker failure that is a lost process (died, killed, hung), not an exception of ours."""
    from ray.exceptions import RayActorError
    from ray.train.v2._internal.exceptions import WorkerHealthCheckFailedError, WorkerHealthCheckTimeoutError

    if isinstance(failure, WorkerHealthCheckTimeoutError):
        return True
    return isinstance(failure, WorkerHealthCheckFailedError) and isinstance(failure.health_check_failure,
                                                                            RayActorError)


def explain(e: BaseException) -> str:
    """``e`` (what a job's run raised) as one line: cause and what to change."""
    from ray.exceptions import RayActorError

    try:
        from ray.train import ControllerError, WorkerGroupError
        from ray.train.v2._internal.exceptions import WorkerGroupStartupTimeoutError
    except ImportError:  # Ray Train v1 (RAY_TRAIN_V2_ENABLED=0): its errors read as they are
        ControllerError = WorkerGroupError = WorkerGroupStartupTimeoutError = ()  # noqa: N806

    if WorkerGroupError and isinstance(e, WorkerGroupError):
        lost = sorted(r for r, f in e.worker_failures.items() if _lost_worker(f))
        if lost:
            return (f"trainer worker rank {', '.join(map(str, lost))} was lost (process died or hung) and the "
                    "trainer group's restarts (trainer.max_failures) are spent: set trainer.max_failures=N to restart "
                    "the group from its last checkpoint, or rerun the job (resume=auto continues from the last "
                    "saved checkpoint)")
        rank, failure = min(e.worker_failures.items())
        return f"trainer rank {rank} failed: {explain(failure)}"
    if ControllerError and isinstance(e, ControllerError) and \
            isinstance(e.controller_failure, WorkerGroupStartupTimeoutError):
        return ("the trainer group's workers did not get their resources within trainer.start_timeout_s (another job "
                "may hold them): raise trainer.start_timeout_s, free them, or add nodes")
    if isinstance(e, RayActorError):
        return f"a Ray actor died ({_first_line(e)}): rollout.max_restarts sets how often a rollout actor is restarted"
    from seedr1.storage import StorageError

    if isinstance(e, StorageError):
        return f"{_first_line(e)} (check the s3 endpoint and credentials: data.s3.*, AWS_* variables)"
    cause = e.__cause__ if isinstance(e, RuntimeError) and "rollout actor" in str(e) else None
    if cause is not None:
        return f"{_first_line(e)} ({_first_line(cause)}): rollout.max_restarts sets the restarts a rollout actor gets"
    return _first_line(e)
