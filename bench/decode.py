"""Benchmark: frames/s through the Ray Data pipeline (tar shards on a loopback S3 server) vs the single-process loop.

    .venv/bin/python bench/decode.py [--train 400] [--frame-size 252] [--concurrency 2] [--rounds 3]

Writes a synthetic data set, packs it to a moto S3 server started on loopback, then alternates three contenders for
``--rounds`` rounds and prints medians: the pipeline (``build_dataset`` + ``RecordStream``, shards from S3), the
single-process loop (``iter_local`` over the local files) and raw ``decode_video`` on the local mp4 files (one core).
Also prints the pipeline's peak RSS (driver + Ray worker processes, sampled every 20 ms) and the issue's targets.
"""
from __future__ import annotations

import argparse
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import boto3
import psutil

from seedr1.config import DataConfig
from seedr1.data.media import decode_video
from seedr1.data.pipeline import RecordStream, build_dataset, iter_local
from seedr1.data.shards import pack
from seedr1.data.synthetic import SynthSpec, write_synthetic

FILES = ["annotations/training_6k.jsonl"]
BUCKET = "seedr1-bench"


def start_moto() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(150):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("moto server did not start")


class PeakRSS(threading.Thread):
    """While ``on`` is set, sums RSS of this process + its Ray processes (not moto); keeps the peaks."""

    def __init__(self, moto_pid: int):
        super().__init__(daemon=True)
        self.moto_pid, self.on, self.done, self.peak_workers, self.peak_all = moto_pid, threading.Event(), \
            threading.Event(), 0, 0

    def run(self):
        me = psutil.Process()
        while not self.done.wait(0.02):
            if not self.on.is_set():
                continue
            workers = total = me.memory_info().rss
            for p in me.children(recursive=True):
                try:
                    if p.pid != self.moto_pid and self.moto_pid not in [q.pid for q in p.parents()]:
                        rss = p.memory_info().rss
                        total += rss
                        workers += rss if (p.cmdline() or [""])[0].startswith("ray::") else 0  # ray::IDLE, ray::Map
                except psutil.Error:
                    continue
            self.peak_workers, self.peak_all = max(self.peak_workers, workers), max(self.peak_all, total)


def frames_of(records) -> int:
    return sum(r.video.shape[0] for r in records if r.video is not None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=400, help="training samples in the synthetic data set")
    ap.add_argument("--frame-size", type=int, default=252, help="synthetic video size and decode size")
    ap.add_argument("--concurrency", type=int, default=2, help="DataConfig.decode_concurrency")
    ap.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs given to Ray (default: all)")
    ap.add_argument("--shards", type=int, default=16, help="about how many tar shards to pack")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # before importing ray
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    load_before = os.getloadavg()[0]  # other work on the machine (our own processes inflate the later figure)
    tmp = tempfile.TemporaryDirectory(prefix="seedr1-bench-")
    moto, endpoint = start_moto()
    os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_REGION="us-east-1")
    sampler = PeakRSS(moto.pid)
    try:
        root = Path(tmp.name) / "root"
        t0 = time.perf_counter()
        write_synthetic(root, SynthSpec(train=args.train, l1=0, l2=0, l3=0, frame_size=args.frame_size))
        videos = sorted(str(p) for p in (root / "videos").rglob("*.mp4"))
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        media_bytes = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        # the cot file repeats the training media, so the packed bytes are about twice the folder
        res = pack(str(root), f"s3://{BUCKET}/shards", shard_size=max(1, 2 * media_bytes // args.shards),
                   log=lambda *a, **k: None)
        print(f"data: {args.train} train samples, {len(videos)} videos at {args.frame_size}px, {res.shards} shards "
              f"({res.bytes / 1e6:.1f} MB) on {endpoint}; setup {time.perf_counter() - t0:.1f}s")

        cfg = DataConfig(root=str(root), frame_size=args.frame_size, image_size=args.frame_size,
                         decode_concurrency=args.concurrency)
        s3cfg = replace(cfg, shards=f"s3://{BUCKET}/shards")
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)

        def pipeline() -> int:
            return frames_of(RecordStream(build_dataset(s3cfg, FILES).iter_rows(), s3cfg))

        def local() -> int:
            return frames_of(RecordStream(iter_local(cfg, FILES), cfg))

        def raw() -> int:
            return sum(decode_video(Path(v).read_bytes(), v, cfg.fps, cfg.min_frames, cfg.max_frames,
                                    cfg.frame_size).shape[0] for v in videos)

        contenders = {"pipeline (Ray Data, S3 shards)": pipeline, "single-process loop (local)": local,
                      "raw decord, 1 core (local)": raw}
        frames = {name: fn() for name, fn in contenders.items()}  # warm-up: Ray workers, page cache, imports
        sampler.start()
        moto_cpu = pipe_wall = 0.0  # the S3 server shares the cores with the pipeline: show how much it took
        rates: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(args.rounds):
            for name, fn in contenders.items():
                (sampler.on.set if fn is pipeline else sampler.on.clear)()
                t, c = time.perf_counter(), sum(psutil.Process(moto.pid).cpu_times()[:2])
                n = fn()
                rates[name].append(n / (time.perf_counter() - t))
                if fn is pipeline:
                    pipe_wall += time.perf_counter() - t
                    moto_cpu += sum(psutil.Process(moto.pid).cpu_times()[:2]) - c
                assert n == frames[name], f"{name}: {n} frames, warm-up had {frames[name]}"
    finally:
        sampler.done.set()
        ray.shutdown()
        moto.terminate()
        moto.wait(timeout=10)
        tmp.cleanup()

    med = {name: statistics.median(r) for name, r in rates.items()}
    print(f"\n{'contender':34s} {'frames':>7s} {'median fps':>11s}   rounds")
    for name, r in rates.items():
        print(f"{name:34s} {frames[name]:7d} {med[name]:11.0f}   " + " ".join(f"{x:.0f}" for x in r))
    p, loop, rawr = med.values()
    per_core = p / args.concurrency
    print(f"\nRay CPUs {args.cpus}, decode concurrency {args.concurrency}, machine cores {os.cpu_count()}, "
          f"1-min load avg before start {load_before:.2f}, at end {os.getloadavg()[0]:.2f}")
    print(f"moto S3 server CPU during timed pipeline runs: {moto_cpu:.1f}s over {pipe_wall:.1f}s wall")
    print(f"pipeline peak RSS: {sampler.peak_workers / 2**20:.0f} MiB (driver + ray:: workers), "
          f"{sampler.peak_all / 2**20:.0f} MiB incl. raylet/GCS/agents")
    speedup, eff = p / loop, per_core / rawr
    print(f"pipeline / single loop: {speedup:.2f}x   (target >= 1.60x: {'MET' if speedup >= 1.6 else 'NOT MET'})")
    print(f"pipeline per core {per_core:.0f} fps / raw decord {rawr:.0f} fps = {eff:.0%}   "
          f"(target >= 80%: {'MET' if eff >= 0.8 else 'NOT MET'})")


if __name__ == "__main__":
    main()
