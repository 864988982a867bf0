"""Smoke demo: build the tiny model, one vLLM generation with video + image, one transformers forward.

    python jobs/smoke.py [--config configs/smoke/tiny.yaml] [key=value ...]
"""
from pathlib import Path

from seedr1.config import SmokeConfig, run_job
from seedr1.smoke import run_smoke

CONFIGS = Path(__file__).resolve().parents[1] / "configs"  # defaults work from any working directory

if __name__ == "__main__":
    run_job(run_smoke, SmokeConfig, default_config=str(CONFIGS / "smoke/tiny.yaml"), description=__doc__)
