"""kill -9 the GRPO driver mid-run, resume with resume=auto: no optimizer step repeated, no prompt skipped."""
import json
from pathlib import Path

import pytest

from seedr1.config import DataConfig
from seedr1.data.pipeline import epoch_order, raw_records
from seedr1.train.checkpoint import complete_steps, step_uri

STEPS, P = 6, 2
SMALL = ["steps=6", f"prompts_per_step={P}", "rollout.num_samples=2", "rollout.max_tokens=6",
         "trainer.micro_batch_size=2", "trainer.warmup_steps=3", "checkpoint.every=2", "checkpoint.keep=0"]


@pytest.mark.slow
def test_sigkill_then_resume_continues_exactly(grpo_job, tmp_path):
    from seedr1.data.synthetic import SynthSpec, write_synthetic

    root = tmp_path / "data"
    write_synthetic(root, SynthSpec(train=16, l1=2, l2=2, l3=2))
    run_dir = tmp_path / "run"
    args = [f"data.root={root}", *SMALL]
    ckpts = run_dir / "checkpoints"

    first = grpo_job.start(run_dir, args)
    grpo_job.wait_for(lambda: 4 in complete_steps(str(ckpts)), first, run_dir, 600, "the step-4 checkpoint")
    grpo_job.kill_tree(first)  # kill -9 the driver and its embedded Ray, wherever step 5 was
    killed_at = [r["step"] for r in grpo_job.metrics(run_dir)]
    assert max(killed_at) < STEPS

    second = grpo_job.start(run_dir, args + ["resume=auto"])
    assert second.wait(timeout=900) == 0, grpo_job.log_tail(run_dir)

    rows = grpo_job.metrics(run_dir)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))  # rows after the checkpoint were redone once
    resumed = [e for e in grpo_job.events(run_dir) if e["kind"] == "resumed"]
    assert len(resumed) == 1 and resumed[0]["checkpoint"] == step_uri(str(ckpts), 4)
    # the optimizer continued: DeepSpeed's step counter and the warm-up schedule pick up where they stopped
    assert [r["optimizer_step"] for r in rows] == list(range(1, STEPS + 1))
    assert rows[4]["lr"] == rows[3]["lr"] == pytest.approx(rows[2]["lr"])  # warm-up (3 steps) finished
    # the data position continued: the prompts of all steps are the epoch's order, none twice, none skipped
    data = DataConfig(root=str(root), option_order="sorted")
    order = [m["record"]["sample_id"] for m in
             epoch_order(list(raw_records(str(root), ["annotations/training_6k.jsonl"], data)), 0, 0, True)]
    seen = [sid for r in rows for sid in r["sample_ids"]]
    assert seen == [str(s) for s in order[:STEPS * P]]
    state = json.loads((Path(step_uri(str(ckpts), 6)) / "trainer_state.json").read_text())
    assert state["step"] == 6 and state["data_position"] == {"epoch": 0, "rows": STEPS * P}
