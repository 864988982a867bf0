"""Scale rehearsal on CPU: 2 GRPO steps of a ~0.5 B-parameter Qwen2-VL (random weights) through the library, with
2 ZeRO-3 trainer workers and one rollout actor whose vLLM engine core runs in its own process; prints what a
weight sync sends and what each process holds, and checks them (exit 1 when a check fails or cannot be made).

    .venv/bin/python bench/scale_rehearsal.py [--size 0.5b] [--set num_layers=12 ...] [--transport collective]
        [--bucket-mb 64] [--dtype auto] [--max-tokens 16] [--keep] [key=value ...]

The model is built once with ``seedr1 model tiny --size SIZE [--set ...]`` (in a child process, timed, its peak
RSS measured) into ``<cache>/models/rehearsal-...`` and reused. The run: ``configs/grpo/tiny.yaml`` with
``steps=2 prompts_per_step=2 rollout.num_samples=2``, 56-pixel frames and image, 2 frames,
``trainer.num_workers=2 trainer.zero_stage=3``, ``rollout.vllm.in_process=false``, ``rollout.weight_sync=TRANSPORT``,
``rollout.weight_sync_bucket_mb=BUCKET``, ``trainer.gradient_checkpointing=true``, engine and trainer in bf16
(``rollout.vllm.dtype``, ``trainer.dtype``: bf16 buckets) when this CPU has avx512_bf16 or amx_bf16 (else fp32),
then any ``key=value`` overrides given. A thread samples the RSS of every process under this one (Ray's processes
included) four times a second and keeps each one's peak, grouped by role (driver, rollout actor, vLLM EngineCore,
trainer workers, the rest of Ray).

Checks:
- the largest single message of a sync <= the bucket size (``weight_sync_largest_message_bytes`` of metrics.jsonl);
- per process: peak RSS without file pages (RssAnon + RssShmem: a checkpoint mapped from disk is not held) <= model
  + one bucket + its optimizer share (+ the engine's KV cache) + a runtime allowance
  (``--runtime-mb``: what a process of that role holds with a ~1 M-parameter model: Python, torch, vLLM, Ray, the
  processor, activations); the model in the process's dtype (the trainer's fp32 copy, the engine's dtype); the
  optimizer share of a trainer rank is ZeRO's partition of the fp32 master weights (DeepSpeed keeps one even when
  training in fp32), fp32 gradients and Adam's two moments, 16 B x params / N (the "model" term covers the rank's
  policy and reference partitions: 2 x model / N for N = 2);
- the engine/trainer log-prob gap (``engine_logprob_gap``) <= 1e-5 with an fp32 engine, <= 1e-2 with bf16.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MiB = 1 << 20
GAP_LIMIT = {"float32": 1e-5, "bfloat16": 1e-2}
ROLES = ("driver", "rollout actor", "vLLM EngineCore", "vLLM Worker", "trainer worker", "Ray (other)")


def cpu_has_bf16() -> bool:
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags.split()))


def role_of(cmdline: str, pid: int, driver: int) -> str:
    if pid == driver:
        return "driver"
    if "VLLM::EngineCore" in cmdline:
        return "vLLM EngineCore"
    if "VLLM::Worker" in cmdline:  # the engine core's executor process: the weights and the KV cache live here
        return "vLLM Worker"
    if "RolloutWorker" in cmdline:
        return "rollout actor"
    if "RayTrainWorker" in cmdline:
        return "trainer worker"
    return "Ray (other)"


def anon_bytes(pid: int) -> int:
    """RssAnon + RssShmem of ``pid`` (the RSS a process cannot give back by dropping file pages), 0 if gone."""
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                      if line.startswith(("RssAnon", "RssShmem")))
    except OSError:
        return 0
    return sum(int(v.split()[0]) for v in fields.values()) << 10


class TreeRSS(threading.Thread):
    """Peak RSS of every process under ``root`` (and itself), sampled every ``period`` s; each pid keeps the most
    specific role it was seen with (a Ray worker starts as ray::IDLE before it becomes an actor)."""

    def __init__(self, root: int, period: float = 0.25):
        super().__init__(daemon=True)
        self.root, self.period, self.done = root, period, threading.Event()
        self.peak: dict[int, int] = {}
        self.anon: dict[int, int] = {}  # RssAnon + RssShmem: RSS without the file pages (a mapped checkpoint)
        self.role: dict[int, str] = {}
        self.title: dict[int, str] = {}
        self.total_peak, self.samples = 0, 0

    def stop(self) -> None:
        self.done.set()
        self.join()

    def run(self) -> None:
        import psutil

        root = psutil.Process(self.root)
        while not self.done.wait(self.period):
            try:
                procs = [root] + root.children(recursive=True)
            except psutil.Error:
                continue
            total = 0
            for p in procs:
                try:
                    rss = p.memory_info().rss
                    cmd = " ".join(p.cmdline()) or p.name()
                except psutil.Error:
                    continue
                total += rss
                self.peak[p.pid] = max(self.peak.get(p.pid, 0), rss)
                self.anon[p.pid] = max(self.anon.get(p.pid, 0), anon_bytes(p.pid))
                role = role_of(cmd, p.pid, self.root)
                if self.role.get(p.pid, "Ray (other)") == "Ray (other)":
                    self.role[p.pid] = role
                    self.title[p.pid] = cmd[:60].strip()
            self.total_peak, self.samples = max(self.total_peak, total), self.samples + 1


def watchdog(seconds: float, sampler: TreeRSS) -> threading.Timer:
    """After ``seconds``: print where the trainer workers and the rollout actor are (py-spy, this project's frames
    and ZeRO's), then SIGINT this process (Ray Train aborts the run; the figures so far are printed)."""
    import signal

    def fire() -> None:
        print(f"\n[rehearsal] no result after {seconds:.0f} s (--timeout): where the processes are, then abort",
              flush=True)
        spy = Path(sys.executable).with_name("py-spy")
        for pid, role in sorted(sampler.role.items()):
            if role not in ("trainer worker", "rollout actor") or not spy.exists():
                continue
            try:
                out = subprocess.run([str(spy), "dump", "--pid", str(pid)], capture_output=True, text=True,
                                     timeout=60).stdout
            except (OSError, subprocess.TimeoutExpired) as e:
                out = str(e)
            keep = [line for line in out.splitlines() if "seedr1/" in line or "runtime/zero" in line
                    or "distributed_c10d" in line]
            print(f"[rehearsal] {role} pid {pid}:\n" + "\n".join(keep[:30]), flush=True)
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    return timer


def build_model(size: str, sets: list[str]) -> tuple[Path, dict]:
    """The model folder (built once into the cache) and what the build cost (None when it was already there)."""
    import hashlib

    import psutil

    from seedr1.paths import cache_dir

    key = hashlib.sha256(json.dumps([size, sets]).encode()).hexdigest()[:10]
    out = cache_dir() / "models" / f"rehearsal-{size}-{key}"
    if (out / "seedr1_tiny.json").exists():
        return out, {}
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [sys.executable, "-m", "seedr1.cli", "model", "tiny", "--out", str(tmp), "--size", size]
    for s in sets:
        cmd += ["--set", s]
    t0, peak = time.perf_counter(), 0
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    proc = psutil.Process(child.pid)
    while child.poll() is None:
        try:
            peak = max(peak, proc.memory_info().rss)
        except psutil.Error:
            pass
        time.sleep(0.1)
    log = child.stdout.read()
    if child.returncode:
        sys.exit(f"model build failed (rc {child.returncode}):\n{log[-3000:]}")
    seconds = time.perf_counter() - t0
    os.replace(tmp, out)
    return out, {"seconds": seconds, "peak_rss": peak}


def fmt_mib(n: float | int | None) -> str:
    return "n/a (not reported)" if n is None else f"{n / MiB:,.1f} MiB"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="0.5b", help="model preset of seedr1 model tiny (default 0.5b)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="TinyModelConfig override for the model build (repeatable), e.g. num_layers=12")
    ap.add_argument("--transport", choices=["object_store", "collective"], default="collective",
                    help="rollout.weight_sync (default collective)")
    ap.add_argument("--bucket-mb", type=int, default=64, help="rollout.weight_sync_bucket_mb (default 64)")
    ap.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                    help="the engine's dtype (rollout.vllm.dtype); auto: bfloat16 if the CPU has avx512_bf16 or "
                         "amx_bf16, else float32")
    ap.add_argument("--max-tokens", type=int, default=16, help="rollout.max_tokens (default 16)")
    ap.add_argument("--runtime-mb", type=int, default=1024,
                    help="per-process allowance beyond the model, bucket and optimizer share: Python, torch, vLLM, "
                         "Ray, activations (default 1024; with a 0.6 M-parameter model each process peaked at "
                         "0.45-0.76 GiB, the vLLM Worker at 0.76 GiB besides its KV cache)")
    ap.add_argument("--timeout", type=float, default=1800,
                    help="seconds the GRPO run may take before it is aborted, stacks printed (default 1800)")
    ap.add_argument("--config", default=str(REPO / "configs" / "grpo" / "tiny.yaml"))
    ap.add_argument("--keep", action="store_true", help="keep the run folder (default: deleted at the end)")
    ap.add_argument("overrides", nargs="*", help="more GRPO config overrides (key=value), applied last")
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from seedr1.config import GRPOConfig, load_config
    from seedr1.grpo.run import run_grpo
    from seedr1.model.tiny import tiny_config

    t_start = time.perf_counter()
    dtype = args.dtype if args.dtype != "auto" else ("bfloat16" if cpu_has_bf16() else "float32")
    model_dir, build = build_model(args.size, args.sets)
    info = json.loads((model_dir / "seedr1_tiny.json").read_text())
    params = info["parameters"]
    model_fp32 = 4 * params
    model_engine = (2 if dtype == "bfloat16" else 4) * params
    tcfg = tiny_config(args.size, args.sets)
    print(f"[rehearsal] model {model_dir}: {params / 1e9:.3f} B parameters, {model_fp32 / MiB:,.0f} MiB in fp32 "
          f"(hidden {tcfg.hidden_size}, {tcfg.num_layers} layers, vision {tcfg.vision_depth}x{tcfg.vision_embed_dim})"
          + (f"; built in {build['seconds']:.1f} s, peak RSS {fmt_mib(build['peak_rss'])}" if build
             else "; cached"), flush=True)

    run_dir = Path(tempfile.mkdtemp(prefix="seedr1-rehearsal-"))
    cfg = load_config(GRPOConfig, args.config, [
        f"run_dir={run_dir}", f"model={model_dir}", "steps=2", "prompts_per_step=2", "resume=never",
        "checkpoint.every=0", "data.frame_size=56", "data.image_size=56", "data.min_frames=2", "data.max_frames=2",
        "rollout.num_actors=1", "rollout.num_samples=2", f"rollout.max_tokens={args.max_tokens}",
        "rollout.vllm.in_process=false", f"rollout.vllm.dtype={dtype}", "rollout.vllm.max_model_len=1024",
        f"rollout.weight_sync={args.transport}", f"rollout.weight_sync_bucket_mb={args.bucket_mb}",
        "trainer.num_workers=2", "trainer.zero_stage=3", "trainer.micro_batch_size=2", f"trainer.dtype={dtype}",
        "trainer.gradient_checkpointing=true", *args.overrides])
    bucket = cfg.rollout.weight_sync_bucket_mb * MiB
    world = cfg.trainer.num_workers
    kv = cfg.rollout.vllm.cpu_kvcache_space_gb << 30
    sampler = TreeRSS(os.getpid())
    sampler.start()
    t0 = time.perf_counter()
    error = None
    timer = watchdog(args.timeout, sampler)
    try:
        run_grpo(cfg)
    except BaseException as e:  # the figures gathered so far are still printed
        error = e
    timer.cancel()
    run_s = time.perf_counter() - t0
    sampler.stop()
    try:
        import ray

        ray.shutdown()
    except Exception:
        pass
    metrics = run_dir / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []

    print(f"\nscale rehearsal: {args.size}{' ' + ' '.join(args.sets) if args.sets else ''}, {params:,} parameters "
          f"({params / 1e9:.3f} B), model {model_fp32 / MiB:,.0f} MiB fp32 / {model_engine / MiB:,.0f} MiB in the "
          f"engine's {dtype}; transport {cfg.rollout.weight_sync}, bucket {args.bucket_mb} MiB, "
          f"{world} ZeRO-{cfg.trainer.zero_stage} trainer workers, engine core "
          f"{'in process' if cfg.rollout.vllm.in_process else 'in its own process'}; {len(rows)} step(s) in "
          f"{run_s:.0f} s (run_grpo), {time.perf_counter() - t_start:.0f} s in all; cores {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    if error is not None:
        print(f"run_grpo FAILED: {type(error).__name__}: {str(error)[:1500]}")
    checks: list[tuple[str, bool | None]] = []

    print("\nper step:")
    for r in rows:
        s = r.get("seconds", {})
        sent, largest = r.get("weight_sync_bytes"), r.get("weight_sync_largest_message_bytes")
        print(f"  step {r.get('step')}: bytes sent per sync {fmt_mib(sent)}, largest message {fmt_mib(largest)}, "
              f"sync {s.get('sync', float('nan')):.2f} s (engine load {s.get('sync_engine', float('nan')):.2f} s), "
              f"step {s.get('step', float('nan')):.1f} s (rollout {s.get('rollout', float('nan')):.1f}, update "
              f"{s.get('update', float('nan')):.1f}), engine/trainer log-prob gap {r.get('engine_logprob_gap')}")
    largest = [r["weight_sync_largest_message_bytes"] for r in rows if "weight_sync_largest_message_bytes" in r]
    checks.append((f"largest message {fmt_mib(max(largest)) if largest else 'n/a (not reported)'} <= bucket "
                   f"{fmt_mib(bucket)}", (max(largest) <= bucket) if largest else None))
    gaps = [r["engine_logprob_gap"] for r in rows if r.get("engine_logprob_gap") is not None]
    limit = GAP_LIMIT[dtype]
    checks.append((f"engine/trainer log-prob gap {max(gaps) if gaps else 'n/a (not reported)'} <= {limit:g} "
                   f"({dtype} engine)", (max(gaps) <= limit) if gaps else None))

    runtime = args.runtime_mb * MiB
    bounds = {
        "driver": (model_fp32 + bucket + runtime, "model fp32 + bucket + runtime"),
        "rollout actor": (model_fp32 + bucket + runtime, "model fp32 + bucket + runtime"),
        "vLLM EngineCore": (model_engine + bucket + runtime, f"model {dtype} + bucket + runtime"),
        "vLLM Worker": (model_engine + bucket + kv + runtime,
                        f"model {dtype} + bucket + KV cache {kv >> 30} GiB + runtime"),
        "trainer worker": (model_engine + bucket + 16 * params // world + runtime,
                           f"model {dtype} + bucket + optimizer share 16 B x params / {world} + runtime"),
    }
    print(f"\npeak RSS per process ({sampler.samples} samples, every {sampler.period} s; runtime allowance "
          f"{args.runtime_mb} MiB; sum over all processes at once peaked at {fmt_mib(sampler.total_peak)}):")
    for role in ROLES:
        pids = sorted((p for p, r in sampler.role.items() if r == role), key=lambda p: -sampler.peak[p])
        if role == "Ray (other)":
            if pids:
                top = pids[0]
                print(f"  {role}: {len(pids)} processes, largest {fmt_mib(sampler.peak[top])} "
                      f"({sampler.title[top]}), no bound")
            continue
        if not pids:
            print(f"  {role}: not seen")
            if role in ("vLLM EngineCore", "trainer worker", "rollout actor"):
                checks.append((f"{role} seen", False))
            continue
        bound, how = bounds[role]
        for p in pids:
            ok = sampler.anon[p] <= bound
            print(f"  {role} (pid {p}, {sampler.title[p][:28]}): RSS {fmt_mib(sampler.peak[p])}, without file pages "
                  f"{fmt_mib(sampler.anon[p])}; bound {fmt_mib(bound)} = {how} -> {'PASS' if ok else 'FAIL'}")
            checks.append((f"{role} pid {p} peak RSS without file pages {fmt_mib(sampler.anon[p])} <= "
                           f"{fmt_mib(bound)}", ok))
    if error is not None:
        checks.append(("run_grpo finished", False))
    elif len(rows) < cfg.steps:
        checks.append((f"{cfg.steps} metrics rows (got {len(rows)})", False))

    print("\nchecks:")
    for text, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL' if ok is False else 'N/A '}  {text}")
    failed = [t for t, ok in checks if ok is not True]
    if args.keep:
        print(f"run folder kept: {run_dir}")
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
    print(f"\n{'ALL CHECKS PASS' if not failed else f'{len(failed)} check(s) failed or could not be made'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
