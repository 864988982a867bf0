"""Smoke demo: build the tiny model, one vLLM generation with video + image, one transformers forward.

    python jobs/smoke.py [--config configs/smoke/tiny.yaml] [key=value ...]
"""
from seedr1.config import SmokeConfig, parse_job_args
from seedr1.smoke import run_smoke

if __name__ == "__main__":
    run_smoke(parse_job_args(SmokeConfig, default_config="configs/smoke/tiny.yaml", description=__doc__))
