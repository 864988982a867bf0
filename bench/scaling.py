"""GRPO seconds per step as the setup and the work change: 1 vs 2 rollout actors, ZeRO-2 vs ZeRO-3, and more work
per step (prompts per step x G); tiny model, synthetic data, one embedded Ray, runs in turn, medians per stage.

    .venv/bin/python bench/scaling.py [--steps 5] [--rounds 1] [--config configs/grpo/tiny.yaml] [key=value ...]

Each variant is one GRPO library call (``run_grpo``) with overrides on the tiny config; its median ``seconds.*``
per stage comes from metrics.jsonl, leaving out the first two steps (engine and DeepSpeed warm-up). With
``--rounds 2`` the variants run twice, alternating, and the medians pool both rounds. On a 2-core machine, two
rollout actors share the cores with the two trainer workers, so "2 actors" shows the cost of splitting, not a
speed-up from more hardware. ``reference`` is part of ``update`` (the frozen model's forward inside the train
step); ``step`` = data + rollout + reward + update + sync.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from seedr1.config import GRPOConfig, load_config

REPO = Path(__file__).resolve().parents[1]
STAGES = ("data", "rollout", "reward", "reference", "update", "sync", "step")
# name -> overrides on the tiny config (prompts_per_step 4, G = rollout.num_samples 4, 1 actor, ZeRO-2)
VARIANTS = {
    "1 actor, ZeRO-2 (base)": [],
    "2 actors, ZeRO-2": ["rollout.num_actors=2"],
    "1 actor, ZeRO-3": ["trainer.zero_stage=3"],
    "1 actor, ZeRO-2, 2x work": ["prompts_per_step=8"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--config", default=str(REPO / "configs" / "grpo" / "tiny.yaml"))
    ap.add_argument("--only", action="append", default=None, help="a variant name to run (repeatable; default: all)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    from seedr1.grpo.run import run_grpo
    from seedr1.train.launch import worker_env

    variants = {k: v for k, v in VARIANTS.items() if not args.only or k in args.only}
    # One Ray for all variants, with logical CPUs for the largest one (2 actors + 2 workers + controller + data).
    ray.init(runtime_env={"env_vars": worker_env()}, include_dashboard=False, num_cpus=8, log_to_driver=False)
    tmp = Path(tempfile.mkdtemp(prefix="seedr1-scaling-"))
    rows: dict[str, list[dict]] = {name: [] for name in variants}
    cfgs: dict[str, GRPOConfig] = {}
    wall: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for round_ in range(args.rounds):
            for i, (name, extra) in enumerate(variants.items()):
                run_dir = tmp / f"r{round_}-v{i}"
                cfg = load_config(GRPOConfig, args.config, [f"run_dir={run_dir}", f"steps={args.steps}",
                                                            "resume=never", "checkpoint.every=0", *extra,
                                                            *args.overrides])
                if round_ or i:  # the same synthetic data for every run
                    cfg.data.root = str(tmp / "r0-v0" / "data")
                cfgs[name] = cfg
                t0 = time.perf_counter()
                run_grpo(cfg)
                wall[name].append(time.perf_counter() - t0)
                lines = (run_dir / "metrics.jsonl").read_text().splitlines()
                rows[name] += [json.loads(line) for line in lines][2:]
                print(f"[scaling] round {round_} {name}: {time.perf_counter() - t0:.0f} s for {args.steps} steps "
                      f"(with start-up)", flush=True)
    finally:
        ray.shutdown()

    print(f"\ntiny model, {args.steps} steps per run x {args.rounds} round(s) (first two steps of each run left out), "
          f"cores {os.cpu_count()}, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"{'variant':28s} {'prompts x G':>11s} " + " ".join(f"{s:>9s}" for s in STAGES) + "  vs base  run wall s")
    base = None
    for name, rs in rows.items():
        med = {s: statistics.median(r["seconds"].get(s, 0.0) for r in rs) for s in STAGES}
        base = base or med["step"]
        c = cfgs[name]
        print(f"{name:28s} {c.prompts_per_step:>4d} x {c.rollout.num_samples:<4d} "
              + " ".join(f"{med[s]:9.3f}" for s in STAGES)
              + f"  {med['step'] / base:6.2f}x  {statistics.median(wall[name]):6.0f}")
    print("(median seconds per step and per stage; 'step' is the whole step; 'reference' is inside 'update')")


if __name__ == "__main__":
    main()
