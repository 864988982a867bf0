"""Rollout engine throughput: vLLM vs transformers `generate`, same tiny model, same prompts (video + image + text),
same n and max_tokens, alternating rounds in one process; median completion tokens/s of each and the ratio.

    .venv/bin/python bench/rollout.py [--prompts 8] [--n 8] [--max-tokens 32] [--rounds 3]

Both engines sit behind the `RolloutEngine` interface the GRPO job uses (`rollout.engine=vllm|hf`); vLLM with
`VLLMConfig`'s defaults (compiled, as vLLM runs by default). Sampling at
temperature 1.0, as in GRPO rollouts; the first round of each engine is a warm-up and is not counted.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from seedr1.config import DataConfig, VLLMConfig
    from seedr1.data.pipeline import RecordStream, iter_local
    from seedr1.data.synthetic import SynthSpec, write_synthetic
    from seedr1.model.loading import resolve_checkpoint
    from seedr1.rollout.engine import Sampling
    from seedr1.rollout.hf_engine import HFEngine
    from seedr1.rollout.vllm_engine import VLLMEngine

    root = tempfile.mkdtemp(prefix="seedr1-bench-rollout-")
    write_synthetic(root, SynthSpec(train=4, l1=max(args.prompts, 4), l2=2, l3=4))
    data = DataConfig(root=root, frame_size=56, image_size=56)
    records = list(RecordStream(iter_local(data, ["annotations/validation_L1.jsonl"]), data))[:args.prompts]
    model = resolve_checkpoint("tiny")
    engines = {"vllm": VLLMEngine(model, VLLMConfig(max_model_len=1024)), "transformers": HFEngine(model)}
    sampling = Sampling(n=args.n, max_tokens=args.max_tokens, temperature=1.0, seed=0)
    rates: dict[str, list[float]] = {name: [] for name in engines}
    for round_ in range(args.rounds + 1):
        for name, engine in engines.items():
            t0 = time.perf_counter()
            out = engine.generate(records, sampling)
            secs = time.perf_counter() - t0
            tokens = sum(len(c.token_ids) for group in out for c in group)
            if round_ > 0:  # round 0 warms both engines up
                rates[name].append(tokens / secs)
            print(f"round {round_} {name:12s} {tokens} tokens in {secs:.2f} s", flush=True)
    med = {name: statistics.median(r) for name, r in rates.items()}
    print(f"\n{len(records)} prompts (video + image + text) x n={args.n}, max {args.max_tokens} tokens, tiny model, "
          f"load average {os.getloadavg()[0]:.1f}")
    for name, r in rates.items():
        print(f"{name:12s} median {med[name]:8.0f} tokens/s   rounds: {' '.join(f'{x:.0f}' for x in r)}")
    print(f"vLLM / transformers: {med['vllm'] / med['transformers']:.2f}x (target >= 3x)")


if __name__ == "__main__":
    main()
