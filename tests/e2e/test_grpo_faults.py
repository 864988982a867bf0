"""Faults during a GRPO run: a rollout actor killed mid-run and a reward function that raises on one sample."""
import textwrap

import psutil
import pytest

FLAKY = '''
import itertools
_calls = itertools.count()

def flaky(completions, golds):
    """1.0 for every sample, except that it raises on a whole batch and on the run's first single sample."""
    if len(completions) > 1:
        raise ValueError("batch scoring is broken")
    if next(_calls) == 0:
        raise ValueError("this one sample breaks the reward")
    return [1.0]
'''


def _worker_pids(job, actor_class: str) -> list[int]:
    """The job's Ray worker processes running ``actor_class`` (descendants of the job: its embedded Ray's)."""
    pids = []
    for p in psutil.Process(job.pid).children(recursive=True):
        try:
            if any(actor_class in part for part in p.cmdline()):
                pids.append(p.pid)
        except psutil.Error:
            pass
    return pids


@pytest.mark.slow
def test_run_survives_a_dead_actor_and_a_raising_reward(grpo_job, tmp_path):
    import os
    import signal

    from seedr1.data.synthetic import SynthSpec, write_synthetic

    root = tmp_path / "data"
    write_synthetic(root, SynthSpec(train=16, l1=2, l2=2, l3=2))
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "flaky_reward.py").write_text(textwrap.dedent(FLAKY))
    run_dir = tmp_path / "run"
    job = grpo_job.start(run_dir, [
        f"data.root={root}", "steps=4", "prompts_per_step=2", "rollout.num_samples=2", "rollout.max_tokens=6",
        "trainer.micro_batch_size=2", "algo.rewards={accuracy: 1.0, 'flaky_reward:flaky': 0.5}"],
        extra_env={"PYTHONPATH": str(tmp_path / "plugins")})
    grpo_job.wait_for(lambda: len(grpo_job.metrics(run_dir)) >= 1 and _worker_pids(job, "RolloutWorker"), job,
                      run_dir, 600,
                      "the first step")
    pids = _worker_pids(job, "RolloutWorker")
    os.kill(pids[0], signal.SIGKILL)
    assert job.wait(timeout=900) == 0, grpo_job.log_tail(run_dir)

    rows = grpo_job.metrics(run_dir)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    restarts = [e for e in grpo_job.events(run_dir) if e["kind"] == "rollout_actor_restarted"]
    assert len(restarts) == 1 and rows[-1]["rollout_restarts"] == 1
    # the event carries the step it happened in, the step whose row first counts it
    assert restarts[0]["step"] == next(r["step"] for r in rows if r["rollout_restarts"] == 1)
    # the restarted actor got the current weights through the sync's own path (every trainer rank sent them again):
    # its weights version is set only by a finished weight update, and a generate at another version is refused
    resent = [e for e in grpo_job.events(run_dir) if e["kind"] == "weights_resent"]
    assert len(resent) == 1 and resent[0]["version"] >= 2
    # the raising sample scored 0 and was counted; the run went on
    assert [r["reward_failures/flaky_reward:flaky"] for r in rows] == [1, 0, 0, 0]
    assert rows[0]["reward/flaky_reward:flaky"] == pytest.approx(3 / 4)  # 2 prompts x 2 samples, one scored 0
    assert all(r["reward/flaky_reward:flaky"] == 1.0 for r in rows[1:])


@pytest.mark.slow
def test_lost_trainer_worker_restarts_the_group_from_the_last_checkpoint(grpo_job, tmp_path):
    import os
    import signal

    from seedr1.data.synthetic import SynthSpec, write_synthetic
    from seedr1.train.checkpoint import complete_steps, step_uri

    root = tmp_path / "data"
    write_synthetic(root, SynthSpec(train=16, l1=2, l2=2, l3=2))
    run_dir = tmp_path / "run"
    job = grpo_job.start(run_dir, [
        f"data.root={root}", "steps=5", "prompts_per_step=2", "rollout.num_samples=2", "rollout.max_tokens=6",
        "trainer.micro_batch_size=2", "checkpoint.every=2", "trainer.max_failures=1",
        "resume=never"])  # only the restart logic (not resume=auto) can make the group resume
    ckpts = str(run_dir / "checkpoints")
    # step 3 under way: the step-2 checkpoint is saved and reported to Ray Train (the report is a barrier)
    grpo_job.wait_for(lambda: len(grpo_job.metrics(run_dir)) >= 3 and len(_worker_pids(job, "RayTrainWorker")) == 2,
                      job, run_dir,
                      600, "step 3")
    assert 2 in complete_steps(ckpts)
    os.kill(_worker_pids(job, "RayTrainWorker")[-1], signal.SIGKILL)
    assert job.wait(timeout=900) == 0, grpo_job.log_tail(run_dir)
    resumed = [e for e in grpo_job.events(run_dir) if e["kind"] == "resumed"]
    # Ray Train's pointer, or (killed before Ray Train registered the report) this launch's newest checkpoint
    assert resumed and resumed[0]["checkpoint"] in (step_uri(ckpts, 2), step_uri(ckpts, 4))
    rows = grpo_job.metrics(run_dir)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert [r["optimizer_step"] for r in rows] == [1, 2, 3, 4, 5]
