"""GRPO learns SEED-Bench-R1-mini: from the perception warm-up (answers at chance), greedy accuracy on held-out L1
rises well above chance within a bounded number of steps (fixed seeds; 1 vLLM actor + 2 DeepSpeed workers)."""
from pathlib import Path

import pytest

from seedr1.config import DataConfig, GRPOConfig, VLLMConfig, WarmupConfig, load_config
from seedr1.data.pipeline import RecordStream, iter_local

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "grpo" / "tiny-learn.yaml"


@pytest.mark.slow
def test_grpo_raises_l1_accuracy(ray_cluster, tmp_path_factory):
    from seedr1.data.synthetic import SynthSpec, write_synthetic
    from seedr1.evaluate.greedy import greedy_accuracy
    from seedr1.grpo.run import run_grpo
    from seedr1.model.loading import resolve_checkpoint
    from seedr1.rollout.vllm_engine import VLLMEngine
    from seedr1.sft.warmup import perception_warmup
    from seedr1.train.checkpoint import latest_complete

    root = tmp_path_factory.mktemp("mini")
    write_synthetic(root, SynthSpec())
    warm = perception_warmup(resolve_checkpoint("tiny"), str(root), tmp_path_factory.mktemp("warm"), WarmupConfig())
    data = DataConfig(root=str(root), frame_size=56, image_size=56)
    l1 = list(RecordStream(iter_local(data, ["annotations/validation_L1.jsonl"]), data))
    assert len(l1) == 64

    engine = VLLMEngine(str(warm), VLLMConfig(max_model_len=1024, enforce_eager=True))
    before = greedy_accuracy(engine, l1)
    assert before["accuracy"] <= 0.45, before  # the warm-up answers at chance

    run_dir = tmp_path_factory.mktemp("grpo")
    cfg = load_config(GRPOConfig, CONFIG, [f"run_dir={run_dir}", f"model={warm}", f"data.root={root}"])
    run_grpo(cfg)
    # the trained policy goes into the same engine through the weight-sync path used in training
    final = Path(latest_complete(str(Path(run_dir) / "checkpoints"))) / "hf"
    engine.update_weights((final / "model.safetensors").read_bytes())
    after = greedy_accuracy(engine, l1)
    print(f"L1 greedy accuracy: warm-up {before['accuracy']:.3f} -> GRPO {after['accuracy']:.3f} ({cfg.steps} steps)")
    assert after["accuracy"] >= 0.6, (before, after)
