"""GRPO end to end on a local Ray cluster: 1 vLLM rollout actor + 2 DeepSpeed workers, ZeRO-2 and ZeRO-3."""
import json
from pathlib import Path

import pytest

from seedr1.config import GRPOConfig, load_config

TINY = Path(__file__).resolve().parents[2] / "configs" / "grpo" / "tiny.yaml"

REQUIRED = ("step", "reward_mean", "reward/accuracy", "reward/format", "accuracy", "format_rate", "kl",
            "clip_fraction", "entropy", "response_length", "seconds")
STAGES = ("data", "rollout", "reward", "reference", "update", "sync")


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    from seedr1.data.synthetic import SynthSpec, write_synthetic

    root = tmp_path_factory.mktemp("grpo-data")
    write_synthetic(root, SynthSpec(train=16, l1=4, l2=4, l3=4))
    return str(root)


@pytest.mark.slow
@pytest.mark.parametrize("zero_stage", [2, 3])
def test_grpo_runs_on_ray_with_deepspeed(ray_cluster, small_data, tiny_model_dir, tmp_path, zero_stage):
    from seedr1.grpo.run import run_grpo

    cfg = load_config(GRPOConfig, TINY, [
        f"run_dir={tmp_path}", f"model={tiny_model_dir}", f"data.root={small_data}", "steps=2",
        "prompts_per_step=2", "rollout.num_samples=4", "rollout.max_tokens=8", f"trainer.zero_stage={zero_stage}",
        "trainer.micro_batch_size=2"])
    run_dir = run_grpo(cfg)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        for k in REQUIRED:
            assert k in r, k
        for s in STAGES:
            assert r["seconds"][s] >= 0.0
        assert r["seconds"]["sync"] > 0.0 and r["rollout_tokens"] > 0
        assert 0.0 <= r["accuracy"] <= 1.0
    assert (run_dir / "config.yaml").exists()
    # the final policy is a Hugging Face checkpoint (gathered from every rank under ZeRO-3)
    from transformers import AutoModelForImageTextToText

    final = AutoModelForImageTextToText.from_pretrained(run_dir / "final")
    base = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    assert final.state_dict().keys() == base.state_dict().keys()
