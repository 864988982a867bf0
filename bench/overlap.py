"""Seconds per GRPO step, one-step off-policy overlap vs on-policy, measured in the same run on the same machine.

    .venv/bin/python bench/overlap.py [--steps 8] [--config configs/grpo/tiny.yaml] [key=value ...]

Runs `jobs/grpo.py`'s library call twice on one embedded Ray (overlap=false, then overlap=true), each in a fresh
run folder with resume=never, and compares the median ``seconds.step`` of the steps after the first two (engine
and DeepSpeed warm-up excluded).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

from seedr1.config import GRPOConfig, load_config

REPO = Path(__file__).resolve().parents[1]


def median_step_s(run_dir: Path) -> tuple[float, list[float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    secs = [r["seconds"]["step"] for r in rows]
    return statistics.median(secs[2:] or secs), secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--config", default=str(REPO / "configs" / "grpo" / "tiny.yaml"))
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from seedr1.grpo.run import run_grpo

    tmp = Path(tempfile.mkdtemp(prefix="seedr1-overlap-"))
    result = {}
    for overlap in (False, True):
        run_dir = tmp / f"overlap-{overlap}"
        cfg = load_config(GRPOConfig, args.config, [f"run_dir={run_dir}", f"steps={args.steps}", "resume=never",
                                                    "checkpoint.every=0", f"overlap={overlap}", *args.overrides])
        if overlap:  # same data as the first run
            cfg.data.root = str(tmp / "overlap-False" / "data")
        run_grpo(cfg)
        result[overlap] = median_step_s(run_dir)
    (on, on_all), (off, off_all) = result[False], result[True]
    print(f"\non-policy   median {on:.3f} s/step   all: {' '.join(f'{s:.2f}' for s in on_all)}")
    print(f"overlap     median {off:.3f} s/step   all: {' '.join(f'{s:.2f}' for s in off_all)}")
    print(f"overlap / on-policy: {off / on:.2f}x the seconds per step ({on / off:.2f}x the steps per second)")


if __name__ == "__main__":
    main()
