"""This project's GRPO job vs TRL's ``GRPOTrainer`` (what the official SEED-Bench-R1 code builds on): same tiny
model, same training records, same group size, prompts per step, completion length, steps, learning rate, KL
weight and rewards (accuracy 1.0 + format 0.5, the project's reward functions), on CPU; median seconds per step,
peak memory of each process tree, and this project's per-stage breakdown.

    .venv/bin/pip install -e '.[bench]' -c <(.venv/bin/pip freeze | grep ==)   # TRL
    .venv/bin/python bench/grpo_vs_trl.py [--steps 6] [--rounds 1] [key=value ...]

Data: TRL's GRPOTrainer takes images (``image``/``images`` columns) but no video, so both get image + text: the
bench writes SEED-Bench-R1-mini and empties the training records' ``task_progress_metadata``, which in SEED-Bench-R1's
schema means "no task-progress video" (the prompt is the current-observation image and the question). TRL's rows
are built from the same records by this project's loader, so both see the same prompts, options and gold letters.

Setup as each is meant to run on one 2-core machine: this project: 1 vLLM rollout actor + 2 DeepSpeed ZeRO-2
trainer workers (data parallel), each taking its 8 completions in one forward/backward (micro-batch 8), the vLLM
engine compiled as vLLM runs by default (configs/grpo/tiny.yaml turns that off for a quick start; the override
``rollout.vllm.enforce_eager=true`` measures that), on an embedded Ray (``key=value`` overrides change it, e.g.
``trainer.num_workers=1``); TRL: one process (transformers
``generate``, torch with the machine's threads), the way its GRPOTrainer runs without ``accelerate launch``, the
batch's 16 completions in one forward/backward (``per_device_train_batch_size`` 16). Both: one optimizer step per
generation batch (on-policy, ``num_iterations=1``), a frozen reference model (beta 0.04), temperature 1.0, the same
loss aggregation (TRL ``loss_type="grpo"``).

Seconds per step: a step's full cycle, from the end of the step before to the end of this one (everything a step
does, its logging and bookkeeping included): for this project the difference of consecutive metrics.jsonl rows'
``time``, for TRL of consecutive ``on_step_end`` callbacks; median over steps after the first two of each run. The
in-step times (this project's ``seconds.step``, TRL's ``on_step_begin`` to ``on_step_end``) are printed too.
The runs alternate (ours, TRL, ours, ...) for ``--rounds`` rounds in one process tree; TRL runs in a child process.
Peak memory comes from one more, untimed run of each (``--no-memory`` skips it): RSS and PSS summed over the process
tree (the driver with Ray's own processes and workers / the TRL process), sampled every 0.2 s. Reading every
process's PSS takes ~0.1-0.17 CPU s per pass over this project's ~21 processes (vLLM's and torch's many mappings)
and ~1/20 of that for TRL's one, so sampling during the timed rounds would slow this project's side by up to half a
core. RSS counts pages shared between processes once per process, so for the multi-process side it is an
overestimate; PSS shares them out.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGES = ("data", "rollout", "reward", "reference", "update", "sync", "step")
# The shared settings (configs/grpo/tiny.yaml's values).
PROMPTS, G, MAX_TOKENS, LR, BETA, WARMUP, SIZE = 4, 4, 20, 3.0e-4, 0.04, 2, 56
REWARD_WEIGHTS = {"accuracy": 1.0, "format": 0.5}


class PeakMemory(threading.Thread):
    """Peak RSS and PSS summed over a process tree (root pid and its descendants), sampled every 0.2 s."""

    def __init__(self):
        super().__init__(daemon=True)
        self.pid, self.done, self.rss, self.pss = 0, threading.Event(), 0, 0

    def start(self, pid: int) -> None:
        self.pid = pid
        super().start()

    def stop(self) -> tuple[int, int]:
        """Stops sampling; the peak (RSS, PSS) in bytes."""
        self.done.set()
        self.join()
        return self.rss, self.pss

    def run(self):
        import psutil

        while not self.done.wait(0.2):
            rss = pss = 0
            try:
                root = psutil.Process(self.pid)
                procs = [root] + root.children(recursive=True)
            except psutil.Error:
                continue
            for p in procs:
                try:
                    m = p.memory_full_info()
                    rss, pss = rss + m.rss, pss + m.pss
                except psutil.Error:
                    continue
            self.rss, self.pss = max(self.rss, rss), max(self.pss, pss)


def trl_child(args) -> None:
    """Runs TRL's GRPOTrainer; writes per-step seconds to args.out (JSON)."""
    import torch
    from datasets import Dataset
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from seedr1.algo.rewards import accuracy_reward, format_reward
    from seedr1.config import DataConfig
    from seedr1.data.pipeline import RecordStream, iter_local

    data = DataConfig(root=args.data, frame_size=SIZE, image_size=SIZE, option_order="sorted")
    rows = []
    for r in RecordStream(iter_local(data, [data.train_file]), data):
        assert r.video is None and r.image is not None, f"{r.sample_id}: the bench's records are image + text"
        rows.append({"prompt": [{"role": "user", "content": r.messages[0]["content"]}],
                     "image": Image.fromarray(r.image),
                     "gold": r.gold_letter})
    ds = Dataset.from_list(rows)

    def text_of(completions) -> list[str]:  # conversational completions: [{"role": "assistant", "content": ...}]
        return [c[0]["content"] if isinstance(c, list) else c for c in completions]

    def accuracy(completions, gold, **_):
        return accuracy_reward(text_of(completions), gold)

    def fmt(completions, gold, **_):
        return format_reward(text_of(completions), gold)

    times: list[float] = []  # on_step_begin -> on_step_end
    ends: list[float] = []  # perf_counter at each on_step_end: consecutive differences are full cycles

    class StepTimer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            ends.append(time.perf_counter())
            times.append(ends[-1] - self.t)

    model_path = args.model
    cfg = GRPOConfig(output_dir=str(Path(args.out).parent / "trl-out"), use_cpu=True, bf16=False, fp16=False,
                     per_device_train_batch_size=PROMPTS * G, num_generations=G, max_completion_length=MAX_TOKENS,
                     max_steps=args.steps, learning_rate=LR, beta=BETA, warmup_steps=WARMUP,
                     lr_scheduler_type="constant_with_warmup", max_grad_norm=1.0, temperature=1.0,
                     reward_weights=[REWARD_WEIGHTS["accuracy"], REWARD_WEIGHTS["format"]], loss_type="grpo",
                     num_iterations=1, logging_steps=1, report_to=[], save_strategy="no", seed=0,
                     dataloader_num_workers=0, disable_tqdm=True)
    trainer = GRPOTrainer(model=AutoModelForImageTextToText.from_pretrained(model_path, dtype=torch.float32),
                          processing_class=AutoProcessor.from_pretrained(model_path), reward_funcs=[accuracy, fmt],
                          args=cfg, train_dataset=ds, callbacks=[StepTimer()])
    trainer.train()
    Path(args.out).write_text(json.dumps({"times": times, "cycles": [b - a for a, b in zip(ends, ends[1:])],
                                          "torch_threads": torch.get_num_threads()}))


def image_only(data_root: str, train_file: str) -> int:
    """Empties each training record's ``task_progress_metadata`` (SEED-Bench-R1: no video); returns the count."""
    path = Path(data_root) / train_file
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for r in records:
        r["task_progress_metadata"] = []
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return len(records)


def run_ours(args, tmp: Path, data_root: str, round_) -> list[dict]:
    from seedr1.config import GRPOConfig, load_config
    from seedr1.grpo.run import run_grpo

    run_dir = tmp / f"ours-{round_}"
    cfg = load_config(GRPOConfig, str(REPO / "configs" / "grpo" / "tiny.yaml"), [
        f"run_dir={run_dir}", f"steps={args.steps}", "resume=never", "checkpoint.every=0", f"data.root={data_root}",
        f"prompts_per_step={PROMPTS}", f"rollout.num_samples={G}", f"rollout.max_tokens={MAX_TOKENS}",
        f"trainer.lr={LR}", f"algo.beta={BETA}", f"trainer.warmup_steps={WARMUP}",
        "rollout.vllm.enforce_eager=false", *args.overrides])  # vLLM's default (tiny.yaml's quick start: true)
    run_grpo(cfg)
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--no-memory", action="store_true", help="skip the untimed runs that measure peak memory")
    ap.add_argument("--trl-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="*", help="key=value overrides for this project's run")
    args = ap.parse_args()
    if args.trl_child:
        return trl_child(args)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import trl
    except ImportError:
        sys.exit("TRL is not installed: .venv/bin/pip install -e '.[bench]' -c <(.venv/bin/pip freeze | grep ==)")
    import ray

    from seedr1.config import DataConfig
    from seedr1.data.synthetic import SynthSpec, write_synthetic
    from seedr1.model.loading import resolve_checkpoint
    from seedr1.train.launch import worker_env

    tmp = Path(tempfile.mkdtemp(prefix="seedr1-vs-trl-"))
    data_root = str(tmp / "data")
    write_synthetic(data_root, SynthSpec(train=64, l1=0, l2=0, l3=0))
    image_only(data_root, DataConfig().train_file)
    model = resolve_checkpoint("tiny")
    ray.init(runtime_env={"env_vars": worker_env()}, include_dashboard=False, num_cpus=6, log_to_driver=False)
    ours_rows: list[dict] = []
    # per side, the steps after the first two of each run: full cycles, and in-step times
    cycles: dict[str, list[float]] = {"ours": [], "trl": []}
    in_step: dict[str, list[float]] = {"ours": [], "trl": []}
    mem = {"ours": (0, 0), "trl": (0, 0)}
    threads = None

    def trl_run(tag: str, sampler: PeakMemory | None = None) -> dict:
        """One TRL run in a child process; ``sampler`` (a PeakMemory not yet started) samples its tree."""
        out, log = tmp / f"trl-{tag}.json", tmp / f"trl-{tag}.log"
        with open(log, "w") as sink:
            child = subprocess.Popen([sys.executable, __file__, "--trl-child", "--data", data_root, "--model",
                                      model, "--out", str(out), "--steps", str(args.steps)],
                                     stdout=sink, stderr=subprocess.STDOUT)
            if sampler:
                sampler.start(child.pid)
            rc = child.wait()
        if rc:
            sys.exit(f"TRL run failed (rc {rc}); log: {log}\n" + log.read_text()[-3000:])
        return json.loads(out.read_text())

    try:
        for round_ in range(args.rounds):
            t0 = time.perf_counter()
            rows = run_ours(args, tmp, data_root, round_)
            ours_rows += rows[2:]
            cycles["ours"] += [b["time"] - a["time"] for a, b in zip(rows[1:], rows[2:])]
            in_step["ours"] += [r["seconds"]["step"] for r in rows[2:]]
            print(f"[vs-trl] round {round_} ours: {time.perf_counter() - t0:.0f} s with start-up", flush=True)
            t0 = time.perf_counter()
            res = trl_run(str(round_))
            cycles["trl"] += res["cycles"][1:]  # cycles[0] is step 2's
            in_step["trl"] += res["times"][2:]
            threads = res["torch_threads"]
            print(f"[vs-trl] round {round_} TRL: {time.perf_counter() - t0:.0f} s with start-up", flush=True)
        load = " ".join(f"{x:.1f}" for x in os.getloadavg())  # of the timed rounds
        if not args.no_memory:  # untimed: reading PSS costs this project's side far more CPU than TRL's
            try:
                sampler = PeakMemory()
                sampler.start(os.getpid())
                run_ours(args, tmp, data_root, "memory")
                mem["ours"] = sampler.stop()
                sampler = PeakMemory()
                trl_run("memory", sampler)
                mem["trl"] = sampler.stop()
                print("[vs-trl] memory runs done", flush=True)
            except (Exception, SystemExit) as e:  # the timed results stand without them
                print(f"[vs-trl] memory runs failed, no peak memory: {e}"[:2000], flush=True)
    finally:
        ray.shutdown()

    ours, theirs = statistics.median(cycles["ours"]), statistics.median(cycles["trl"])
    print(f"\ntiny model (random weights), image + text prompts (no video) for both, {PROMPTS} prompts x G={G}, "
          f"max {MAX_TOKENS} completion tokens, lr {LR}, beta {BETA}, rewards {REWARD_WEIGHTS}, {args.steps} steps x "
          f"{args.rounds} round(s), first two steps of each run left out; TRL {trl.__version__} with {threads} torch "
          f"threads; seedr1's vLLM engine compiled (vLLM's default) unless overridden; overrides "
          f"{args.overrides or 'none'}; cores {os.cpu_count()}, load average {load}")
    memory = "peak RSS MiB peak PSS MiB" if not args.no_memory else "(memory: --no-memory)"
    print(f"{'':8s} {'median s/step':>13s} {'in-step':>8s} {memory}   full cycle of each step")
    for name, label in (("ours", "seedr1"), ("trl", "TRL")):
        rss, pss = (f"{m / 2**20:12.0f}" for m in mem[name]) if not args.no_memory else ("", "")
        print(f"{label:8s} {statistics.median(cycles[name]):13.2f} {statistics.median(in_step[name]):8.2f} {rss} "
              f"{pss}   " + " ".join(f"{t:.2f}" for t in cycles[name]))
    ratio = ours / theirs
    print(f"seedr1 / TRL time per step (full cycles): {ratio:.2f}x (target <= 0.7x: "
          f"{'MET' if ratio <= 0.7 else 'NOT MET'}); in-step times: "
          f"{statistics.median(in_step['ours']) / statistics.median(in_step['trl']):.2f}x")
    print("seedr1 median seconds per stage ('reference' is inside 'update'): "
          + ", ".join(f"{s} {statistics.median(r['seconds'].get(s, 0.0) for r in ours_rows):.3f}" for s in STAGES))


if __name__ == "__main__":
    main()
