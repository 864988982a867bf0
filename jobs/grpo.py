"""GRPO on SEED-Bench-R1: vLLM rollout actors + a Ray Train/DeepSpeed trainer group.

    python jobs/grpo.py [--config configs/grpo/tiny.yaml] [key=value ...]
    ray job submit --working-dir . -- python jobs/grpo.py --config configs/grpo/paper.yaml data.root=s3://...
"""
from pathlib import Path

from seedr1.config import GRPOConfig, run_job
from seedr1.grpo.run import run_grpo

CONFIGS = Path(__file__).resolve().parents[1] / "configs"  # defaults work from any working directory

if __name__ == "__main__":
    run_job(run_grpo, GRPOConfig, default_config=str(CONFIGS / "grpo/tiny.yaml"), description=__doc__)
