"""Evaluate a checkpoint (vLLM actors) or an OpenAI-compatible endpoint on SEED-Bench-R1 L1/L2/L3.

    python jobs/evaluate.py [--config configs/evaluate/tiny.yaml] model=runs/grpo-tiny/checkpoints/step_00000004/hf
    python jobs/evaluate.py --config configs/evaluate/paper.yaml --endpoint http://host:8000/v1 --api-key $KEY \\
        data.root=... out_dir=runs/eval-served

The default config is the tiny one (48 new tokens, 56 px frames): give a real model configs/evaluate/paper.yaml.
"""
from pathlib import Path

from seedr1.config import EvaluateConfig, run_job
from seedr1.evaluate.run import run_evaluate

CONFIGS = Path(__file__).resolve().parents[1] / "configs"  # defaults work from any working directory

if __name__ == "__main__":
    run_job(run_evaluate, EvaluateConfig, default_config=str(CONFIGS / "evaluate/tiny.yaml"), description=__doc__)
