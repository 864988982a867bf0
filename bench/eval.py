"""Evaluation throughput: questions/s of the evaluation job's engine path (a pool of vLLM actors answering batches,
as ``jobs/evaluate.py`` / ``run_evaluate`` does) vs a one-question-at-a-time transformers ``generate`` loop (the
official SEED-Bench-R1 ``infer.py`` way); same tiny model, same questions (video + image + text), greedy, same
max_tokens; alternating rounds in one process tree, medians and the ratio. Then one full ``run_evaluate`` call for
the end-to-end figure (Ray Data records, actor start-up, scoring, report).

    .venv/bin/python bench/eval.py [--questions 32] [--max-tokens 64] [--batch-size 32] [--rounds 3]
                                   [--hf-threads 1] [--no-e2e]

Steady state: the vLLM pool is started once (as one evaluation run does) and each round sends all questions in
batches of ``--batch-size``; the loop answers them one by one with ``HFEngine`` in this process. The first round
of each is a warm-up and is not counted. Equal CPU by default: the vLLM actor reserves one CPU (one torch thread),
the loop runs one torch thread (``--hf-threads 2`` gives it both cores).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--actors", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hf-threads", type=int, default=1,
                    help="torch threads of the transformers loop (default 1: the vLLM actor's one CPU)")
    ap.add_argument("--no-e2e", action="store_true", help="skip the end-to-end run_evaluate call")
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    import ray
    import torch

    from seedr1.config import DataConfig, EvaluateConfig, VLLMConfig
    from seedr1.data.pipeline import RecordStream, iter_local
    from seedr1.data.synthetic import SynthSpec, write_synthetic
    from seedr1.evaluate.run import _EnginePool, run_evaluate
    from seedr1.model.loading import resolve_checkpoint
    from seedr1.rollout.engine import Sampling
    from seedr1.rollout.hf_engine import HFEngine
    from seedr1.train.launch import worker_env

    files = ["annotations/validation_L1.jsonl"]
    root = Path(tempfile.mkdtemp(prefix="seedr1-bench-eval-"))
    write_synthetic(root / "data", SynthSpec(train=0, l1=args.questions, l2=0, l3=0))
    data = DataConfig(root=str(root / "data"), frame_size=56, image_size=56)
    records = list(RecordStream(iter_local(data, files), data))
    model = resolve_checkpoint("tiny")
    cfg = EvaluateConfig(out_dir=str(root / "eval"), model=model, files=files, max_tokens=args.max_tokens,
                         batch_size=args.batch_size, num_actors=args.actors, vllm=VLLMConfig(max_model_len=1024),
                         data=data, html_report=False)
    ray.init(runtime_env={"env_vars": worker_env()}, include_dashboard=False, num_cpus=max(4, args.actors + 2),
             log_to_driver=False)
    torch.set_num_threads(args.hf_threads)
    hf = HFEngine(model)
    greedy = Sampling(n=1, max_tokens=args.max_tokens, temperature=0.0)

    def loop() -> int:  # infer.py: one question, one generate call
        return sum(len(hf.generate([r], greedy)[0][0].token_ids) for r in records)

    t0 = time.perf_counter()
    pool = _EnginePool(cfg, model)
    start_s = time.perf_counter() - t0

    def batched() -> int:  # run_evaluate's call (_EnginePool.generate), keeping the token ids to count them
        n = 0
        for i in range(0, len(records), args.batch_size):
            groups, _ = pool.group.generate(records[i:i + args.batch_size], cfg.seed)
            n += sum(len(g[0].token_ids) for g in groups)
        return n

    contenders = {"vLLM pool, batched": batched, "transformers, one at a time": loop}
    rates: dict[str, list[float]] = {k: [] for k in contenders}
    tokens: dict[str, int] = {}
    try:
        for round_ in range(args.rounds + 1):
            for name, fn in contenders.items():
                t = time.perf_counter()
                tokens[name] = fn()
                secs = time.perf_counter() - t
                if round_:
                    rates[name].append(len(records) / secs)
                print(f"round {round_} {name:28s} {len(records)} questions in {secs:.2f} s "
                      f"({tokens[name]} answer tokens)", flush=True)
    finally:
        pool.close()
    e2e = None
    if not args.no_e2e:
        t = time.perf_counter()
        summary = run_evaluate(cfg)
        e2e = (summary["n"], time.perf_counter() - t)

    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n{len(records)} SEED-Bench-R1-mini questions (video + image + text), greedy, max {args.max_tokens} tokens, "
          f"tiny model, batch {args.batch_size}, {args.actors} vLLM actor(s) (1 CPU each), transformers in the driver "
          f"with {torch.get_num_threads()} torch threads; cores {os.cpu_count()}, load average {load}")
    med = {k: statistics.median(v) for k, v in rates.items()}
    for name, r in rates.items():
        print(f"{name:28s} median {med[name]:7.2f} questions/s   rounds: {' '.join(f'{x:.2f}' for x in r)}")
    ratio = med["vLLM pool, batched"] / med["transformers, one at a time"]
    print(f"vLLM pool / one-at-a-time transformers: {ratio:.2f}x (target >= 4x: {'MET' if ratio >= 4 else 'NOT MET'})")
    print(f"vLLM pool start-up (actor + engine): {start_s:.1f} s, once per evaluation run")
    if e2e:
        n, secs = e2e
        print(f"end to end, run_evaluate (Ray Data records, pool start, scoring, table, chart): {n} questions in "
              f"{secs:.1f} s = {n / secs:.2f} questions/s")
    ray.shutdown()


if __name__ == "__main__":
    main()
