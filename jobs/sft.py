"""Supervised fine-tuning on SEED-Bench-R1: the same Ray Train/DeepSpeed trainer group as GRPO.

    python jobs/sft.py [--config configs/sft/tiny.yaml] [key=value ...]
    ray job submit --working-dir . -- python jobs/sft.py --config configs/sft/paper.yaml data.root=s3://...
"""
from pathlib import Path

from seedr1.config import SFTConfig, run_job
from seedr1.sft.run import run_sft

CONFIGS = Path(__file__).resolve().parents[1] / "configs"  # defaults work from any working directory

if __name__ == "__main__":
    run_job(run_sft, SFTConfig, default_config=str(CONFIGS / "sft/tiny.yaml"), description=__doc__)
