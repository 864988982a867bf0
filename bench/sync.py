"""Weight sync (trainer -> rollout engines) as a share of GRPO step time, for both transports, in one run; plus a
7B estimate from bytes and a bandwidth measured here.

    .venv/bin/python bench/sync.py [--steps 6] [--config configs/grpo/tiny.yaml] [key=value ...]

Runs the GRPO library call once per transport (rollout.weight_sync=object_store, then collective) on one embedded
Ray, and reads ``seconds.sync`` (gather + send + load) and ``seconds.step`` from metrics.jsonl, steps after the
first two. The vLLM engine runs compiled, vLLM's default (the tiny config turns that off for a quick start; the
override ``rollout.vllm.enforce_eager=true`` measures eager steps, which are longer, so the share is smaller).
The 7B line is an estimate: Qwen2-VL-7B's bf16 bytes divided by the gloo broadcast bandwidth measured
on this machine's loopback (two processes), which says nothing about NCCL on a GPU node; it is printed as such.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from pathlib import Path

from seedr1.config import GRPOConfig, load_config

REPO = Path(__file__).resolve().parents[1]
QWEN2_VL_7B_PARAMS = 8.29e9  # language model + vision tower


def _receiver(port: int, nbytes: int) -> None:
    import torch

    from seedr1.rollout.weight_transfer import join_group, leave_group

    pg = join_group("127.0.0.1", port, 1, 2, 120)
    buf = torch.empty(nbytes // 4, dtype=torch.float32)
    for _ in range(3):
        pg.broadcast(buf, 0).wait()
    leave_group(pg)


def gloo_bandwidth(nbytes: int = 256 << 20) -> float:
    """Bytes per second of a gloo broadcast between two processes on loopback (median of 3)."""
    import torch
    from vllm.utils.network_utils import get_open_port

    from seedr1.rollout.weight_transfer import join_group, leave_group

    port = get_open_port()
    proc = mp.get_context("spawn").Process(target=_receiver, args=(port, nbytes))
    proc.start()
    pg = join_group("127.0.0.1", port, 0, 2, 120)
    buf, times = torch.ones(nbytes // 4, dtype=torch.float32), []
    for _ in range(3):
        t0 = time.perf_counter()
        pg.broadcast(buf, 0).wait()
        times.append(time.perf_counter() - t0)
    leave_group(pg)
    proc.join(60)
    return nbytes / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--config", default=str(REPO / "configs" / "grpo" / "tiny.yaml"))
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from seedr1.grpo.run import run_grpo

    tmp = Path(tempfile.mkdtemp(prefix="seedr1-sync-"))
    result = {}
    for transport in ("object_store", "collective"):
        run_dir = tmp / transport
        cfg = load_config(GRPOConfig, args.config, [f"run_dir={run_dir}", f"steps={args.steps}", "resume=never",
                                                    "checkpoint.every=0", f"rollout.weight_sync={transport}",
                                                    "rollout.vllm.enforce_eager=false", *args.overrides])
        if transport == "collective":  # same data as the first run
            cfg.data.root = str(tmp / "object_store" / "data")
        run_grpo(cfg)
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][2:]
        result[transport] = (statistics.median(r["seconds"]["sync"] for r in rows),
                             statistics.median(r["seconds"]["step"] for r in rows),
                             statistics.median(r["seconds"]["sync_engine"] for r in rows))
        eager = cfg.rollout.vllm.enforce_eager
    print(f"\ntiny model, {args.steps} steps (first two left out), vLLM engine {'eager' if eager else 'compiled'}, "
          f"overrides {args.overrides or 'none'}, load average {os.getloadavg()[0]:.1f}")
    for transport, (sync_s, step_s, engine_s) in result.items():
        print(f"{transport:12s} sync {sync_s * 1000:6.1f} ms of {step_s:.3f} s/step = {100 * sync_s / step_s:.1f}% "
              f"(target < 5%); the engine's load {engine_s * 1000:.1f} ms of it")
    bw = gloo_bandwidth()
    nbytes = QWEN2_VL_7B_PARAMS * 2
    print(f"gloo broadcast on loopback: {bw / 1e9:.2f} GB/s; Qwen2-VL-7B in bf16 is {nbytes / 1e9:.1f} GB -> "
          f"~{nbytes / bw:.0f} s per sync over gloo here (ESTIMATE; NCCL on a GPU node is another link entirely)")


if __name__ == "__main__":
    main()
