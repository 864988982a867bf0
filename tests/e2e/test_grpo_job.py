"""GRPO end to end on a local Ray cluster: 1 vLLM rollout actor + 2 DeepSpeed workers, ZeRO-2 and ZeRO-3."""
import json
from pathlib import Path

import pytest

from seedr1.config import GRPOConfig, load_config

TINY = Path(__file__).resolve().parents[2] / "configs" / "grpo" / "tiny.yaml"

REQUIRED = ("step", "reward_mean", "reward/accuracy", "reward/format", "accuracy", "format_rate", "kl",
            "clip_fraction", "entropy", "response_length", "seconds")
STAGES = ("data", "rollout", "reward", "reference", "update", "sync")
NAMED = ("reward_mean", "reward_std", "reward/accuracy", "reward_std/format", "reward_failures/accuracy",
         "accuracy", "format_rate", "kl", "clip_fraction", "entropy", "engine_logprob_gap", "loss", "response_length", "groups_dropped",
         "rollout_tokens", "rollout_tokens_per_s", "train_tokens", "train_tokens_per_s", "lr", "rollout_restarts",
         "staleness", "rank_token_imbalance", *(f"seconds/{s}" for s in STAGES), "seconds/step")


def _emit_a_reject(tmp_path):
    """One malformed line through the pipeline's record stream (here, in the driver, connected to the same Ray)."""
    from seedr1.config import DataConfig
    from seedr1.data.pipeline import RecordStream, iter_local

    bad = tmp_path / "bad-data"
    (bad / "annotations").mkdir(parents=True)
    (bad / "annotations" / "validation_L1.jsonl").write_text("{not json\n")
    data = DataConfig(root=str(bad))
    assert list(RecordStream(iter_local(data, ["annotations/validation_L1.jsonl"]), data)) == []


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    from seedr1.data.synthetic import SynthSpec, write_synthetic

    root = tmp_path_factory.mktemp("grpo-data")
    write_synthetic(root, SynthSpec(train=16, l1=4, l2=4, l3=4))
    return str(root)


@pytest.mark.slow
@pytest.mark.parametrize("zero_stage,overlap,weight_sync", [(2, False, "object_store"), (3, True, "collective")])
def test_grpo_runs_on_ray_with_deepspeed(ray_cluster, prometheus_watch, small_data, tiny_model_dir, tmp_path, zero_stage, overlap,
                                         weight_sync):
    from seedr1.grpo.run import run_grpo

    scraped = prometheus_watch(run=tmp_path.name)
    cfg = load_config(GRPOConfig, TINY, [
        f"run_dir={tmp_path}", f"model={tiny_model_dir}", f"data.root={small_data}", "steps=2",
        "prompts_per_step=2", "rollout.num_samples=4", "rollout.max_tokens=8", f"trainer.zero_stage={zero_stage}",
        "trainer.micro_batch_size=2", f"overlap={overlap}", f"rollout.weight_sync={weight_sync}"])
    run_dir = run_grpo(cfg)
    _emit_a_reject(tmp_path)  # the data dashboard also shows rejects; this run's data has none
    from seedr1.metrics.dashboards import build_dashboards, queried_metrics

    build = build_dashboards(include_ray=False)
    wanted = queried_metrics(build["seedr1-grpo.json"]) | queried_metrics(build["seedr1-data.json"])
    scraped.wait_for(wanted)
    # every metric a GRPO or data dashboard panel queries was emitted (no empty panel), with plausible values
    assert wanted <= scraped.names, sorted(wanted - scraped.names)
    assert scraped.values["ray_seedr1_grpo_step"] == 2 == scraped.values["ray_seedr1_grpo_optimizer_step"]
    assert scraped.values["ray_seedr1_grpo_seconds_step"] > 0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        for k in REQUIRED:
            assert k in r, k
        for s in STAGES:
            assert r["seconds"][s] >= 0.0
        assert r["seconds"]["sync"] > 0.0 and r["rollout_tokens"] > 0
        assert 0.0 <= r["accuracy"] <= 1.0
    # overlap: step 2 was generated while step 1 trained, by the weights from before step 1
    assert [r["staleness"] for r in rows] == ([0, 1] if overlap else [0, 0])
    # the engines sampled with the trainer's weights wherever staleness is 0: the syncs (object store, or the gloo
    # broadcast that also carries the first sync) loaded them whole; a partial load (seen: NaN) shows up as a gap.
    # (The untrained tiny model earns no reward, so its weights barely move here; tests/rollout/test_weight_sync.py
    # checks the content of a sync after a real change.)
    fresh = [r["engine_logprob_gap"] for r in rows if r["staleness"] == 0]
    assert fresh and max(fresh) < 1e-3, fresh
    events = [json.loads(line)["kind"] for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert "weight_sync_failed" not in events and "weights_resent" not in events
    assert (run_dir / "config.yaml").exists()
    # rollouts.jsonl has step 1 (the first is always logged; the next at step 10): 2 prompts x 4 completions
    logged = [json.loads(line) for line in (run_dir / "rollouts.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1] * 8 and all(r["tokens"] <= 8 for r in logged)
    assert all(set(r["rewards"]) == set(cfg.algo.rewards) and isinstance(r["text"], str) for r in logged)
    # the final policy is a Hugging Face checkpoint (gathered from every rank under ZeRO-3)
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from seedr1.train.checkpoint import complete_steps, latest_complete

    assert complete_steps(str(run_dir / "checkpoints")) == [2]
    final = Path(latest_complete(str(run_dir / "checkpoints"))) / "hf"
    model = AutoModelForImageTextToText.from_pretrained(final)
    AutoProcessor.from_pretrained(final)
    base = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    assert model.state_dict().keys() == base.state_dict().keys()
    # every named metric of every step is in metrics.jsonl and in TensorBoard
    from seedr1.metrics.catalog import flatten
    from seedr1.metrics.sink import read_scalars

    scalars = read_scalars(run_dir / "tensorboard")
    assert sorted(scalars) == [1, 2]
    for r in rows:
        flat = flatten(r)
        assert set(NAMED) <= set(flat), set(NAMED) - set(flat)
        assert {k for k in flat if k not in ("step", "time")} <= set(scalars[r["step"]])
    assert rows[0]["time"] < rows[1]["time"] < rows[0]["time"] + 600  # wall clock at each row, Unix seconds
    if zero_stage == 3:  # ...and the vLLM engine loads it and generates
        from seedr1.config import DataConfig, VLLMConfig
        from seedr1.data.pipeline import RecordStream, iter_local
        from seedr1.rollout.engine import Sampling
        from seedr1.rollout.vllm_engine import VLLMEngine

        data = DataConfig(root=small_data, frame_size=56, image_size=56)
        records = list(RecordStream(iter_local(data, ["annotations/validation_L1.jsonl"]), data))[:2]
        engine = VLLMEngine(str(final), VLLMConfig(max_model_len=1024, enforce_eager=True))
        out = engine.generate(records, Sampling(n=1, max_tokens=6, temperature=0.0))
        assert len(out) == 2 and all(len(c[0].token_ids) > 0 for c in out)
