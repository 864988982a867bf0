"""SFT end to end on a local Ray cluster: 2 DeepSpeed workers, chain-of-thought targets, checkpoints and metrics."""
from pathlib import Path

import pytest

from seedr1.config import SFTConfig, load_config

TINY = Path(__file__).resolve().parents[2] / "configs" / "sft" / "tiny.yaml"


@pytest.mark.slow
def test_sft_job_learns_the_targets_and_checkpoints(ray_cluster, prometheus_watch, tiny_model_dir, tmp_path):
    import json

    from transformers import AutoModelForImageTextToText

    from seedr1.data.synthetic import SynthSpec, write_synthetic
    from seedr1.metrics.sink import read_scalars
    from seedr1.sft.run import run_sft
    from seedr1.train.checkpoint import complete_steps, latest_complete

    root = tmp_path / "data"
    write_synthetic(root, SynthSpec(train=16, l1=2, l2=2, l3=2))
    cfg = load_config(SFTConfig, TINY, [f"run_dir={tmp_path / 'run'}", f"model={tiny_model_dir}", f"data.root={root}",
                                        "steps=8", "checkpoint.every=4"])
    scraped = prometheus_watch(run="run")
    run_dir = run_sft(cfg)
    from seedr1.metrics.dashboards import build_dashboards, queried_metrics

    scraped.wait_for(queried_metrics(build_dashboards(include_ray=False)["seedr1-sft.json"]))
    missing = queried_metrics(build_dashboards(include_ray=False)["seedr1-sft.json"]) - scraped.names
    assert not missing, f"SFT dashboard panels with no data: {sorted(missing)}"
    assert scraped.values["ray_seedr1_sft_step"] == 8
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert rows[-1]["loss"] < 0.7 * rows[0]["loss"], [r["loss"] for r in rows]  # it fits the CoT targets
    lrs = [r["lr"] for r in rows]  # cosine with a 10% warm-up (1 step): peak first, then decaying
    assert lrs[0] == pytest.approx(1e-3) and all(a > b for a, b in zip(lrs[1:], lrs[2:]))
    assert all(r["target_tokens"] > 0 for r in rows)
    assert sorted(read_scalars(run_dir / "tensorboard")) == list(range(1, 9))
    assert complete_steps(str(run_dir / "checkpoints")) == [4, 8]
    AutoModelForImageTextToText.from_pretrained(Path(latest_complete(str(run_dir / "checkpoints"))) / "hf")


def test_answer_only_targets():
    from types import SimpleNamespace

    from seedr1.sft.loop import target_text, training_file

    cfg = SFTConfig(target="answer")
    assert training_file(cfg) == cfg.data.train_file
    assert target_text(cfg, SimpleNamespace(gold_letter="C", sample_id="x")) == "<answer>C.</answer>"
    assert training_file(SFTConfig()) == "annotations/training_with_cot_6k.jsonl"
