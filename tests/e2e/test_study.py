"""The study on a reduced config: warm-up, SFT and GRPO runs, every stage evaluated, a traceable table + chart."""
import json
from pathlib import Path

import pytest

from seedr1.config import StudyConfig, load_config

TINY = Path(__file__).resolve().parents[2] / "configs" / "study" / "tiny.yaml"


@pytest.mark.slow
def test_reduced_study_writes_a_traceable_table(ray_cluster, tmp_path):
    from seedr1.study.run import run_study

    cfg = load_config(StudyConfig, TINY, [
        f"out_dir={tmp_path / 'study'}", "synth_sizes={train: 16, l1: 4, l2: 4, l3: 8}", "warmup.steps=5",
        "warmup.batch_size=8", "sft.steps=2", "sft.batch_size=8", "sft.trainer.micro_batch_size=4", "grpo.steps=2",
        "grpo.prompts_per_step=2", "grpo.rollout.num_samples=2", "grpo.trainer.micro_batch_size=2",
        "evaluate.max_tokens=8"])
    study = run_study(cfg)
    out = tmp_path / "study"
    table = (out / "table.md").read_text()
    for method in ("base", "SFT", "GRPO"):
        assert f"| {method} |" in table
        for level in ("L1", "L2", "L3"):
            assert 0.0 <= study["mean"][method][level] <= 1.0
        # every number is traceable to its evaluation folder (and its training run)
        ev = Path(study["runs"]["0"][method]["out_dir"])
        summary = json.loads((ev / "summary.json").read_text())
        assert summary["by_level"]["L1"]["accuracy"] == study["mean"][method]["L1"]
        assert summary["n"] == 16 and (ev / "predictions.jsonl").exists()
        assert (ev / "report.html").read_text().count("data-level=") == 16  # every prediction browsable
    assert Path(study["runs"]["0"]["GRPO"]["run_dir"], "metrics.jsonl").exists()
    assert Path(study["runs"]["0"]["SFT"]["run_dir"], "metrics.jsonl").exists()
    assert (out / "chart.png").stat().st_size > 1000 and (out / "seed0" / "warmup" / "config.json").exists()
