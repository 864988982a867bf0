"""Serve a checkpoint on Ray Serve behind an OpenAI-compatible API with video input (Ctrl-C stops it).

    SEEDR1_API_KEYS=secret python jobs/serve.py [--config configs/serve/tiny.yaml] [model=...] [port=8000]
    serve run seedr1.serve.app:build_app config=configs/serve/tiny.yaml      (or a KubeRay RayService)
"""
import time
from pathlib import Path

from seedr1.config import ServeConfig, run_job
from seedr1.serve.run import start

CONFIGS = Path(__file__).resolve().parents[1] / "configs"  # defaults work from any working directory


def serve_until_stopped(cfg: ServeConfig) -> None:
    start(cfg)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    run_job(serve_until_stopped, ServeConfig, default_config=str(CONFIGS / "serve/tiny.yaml"), description=__doc__)
