"""The paper's study in one command: base vs SFT vs GRPO on SEED-Bench-R1 L1/L2/L3 (table + chart).

    python jobs/study.py [--config configs/study/tiny.yaml] [seeds=3]
    ray job submit --working-dir . -- python jobs/study.py --config configs/study/paper.yaml
"""
from pathlib import Path

from seedr1.config import StudyConfig, run_job
from seedr1.study.run import run_study

CONFIGS = Path(__file__).resolve().parents[1] / "configs"  # defaults work from any working directory

if __name__ == "__main__":
    run_job(run_study, StudyConfig, default_config=str(CONFIGS / "study/tiny.yaml"), description=__doc__)
