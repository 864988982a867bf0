"""Requests/s and latency percentiles of the served tiny model (Ray Serve + vLLM) at concurrency 1 and 8, against
the same prompts answered one at a time in-process by transformers `generate` (the official evaluation script's
way); ratios printed from one run.

    .venv/bin/python bench/serve.py [--requests 32] [--max-tokens 16]
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import time
from concurrent.futures import ThreadPoolExecutor


def percentiles(latencies: list[float]) -> str:
    qs = statistics.quantiles(latencies, n=100)
    return f"p50 {qs[49] * 1000:.0f} ms  p90 {qs[89] * 1000:.0f} ms  p99 {qs[98] * 1000:.0f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=16)
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ["SEEDR1_API_KEYS"] = "bench-key"
    from openai import OpenAI

    from seedr1.config import DataConfig, ServeConfig, ServeLimits, VLLMConfig
    from seedr1.data.pipeline import RecordStream, iter_local
    from seedr1.data.synthetic import SynthSpec, write_synthetic
    from seedr1.evaluate.http_target import chat_messages
    from seedr1.model.loading import resolve_checkpoint
    from seedr1.rollout.engine import Sampling
    from seedr1.rollout.hf_engine import HFEngine
    from seedr1.serve.run import start

    import tempfile

    root = tempfile.mkdtemp(prefix="seedr1-bench-serve-")
    write_synthetic(root, SynthSpec(train=0, l1=args.requests, l2=0, l3=0))
    data = DataConfig(root=root, frame_size=56, image_size=56)
    records = list(RecordStream(iter_local(data, ["annotations/validation_L1.jsonl"]), data))
    model = resolve_checkpoint("tiny")

    hf = HFEngine(model)
    hf.generate(records[:1], Sampling(n=1, max_tokens=args.max_tokens, temperature=0.0))  # warm-up
    hf_lat = []
    t0 = time.perf_counter()
    for r in records:
        t = time.perf_counter()
        hf.generate([r], Sampling(n=1, max_tokens=args.max_tokens, temperature=0.0))
        hf_lat.append(time.perf_counter() - t)
    hf_rps = len(records) / (time.perf_counter() - t0)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = start(ServeConfig(model=model, port=port, vllm=VLLMConfig(max_model_len=1024),
                            limits=ServeLimits(frame_size=56, image_size=56)))
    client = OpenAI(base_url=url, api_key="bench-key", max_retries=0, timeout=300)
    bodies = [chat_messages(r) for r in records]

    def ask(messages) -> float:
        t = time.perf_counter()
        client.chat.completions.create(model="seedr1", messages=messages, max_tokens=args.max_tokens, temperature=0.0)
        return time.perf_counter() - t

    ask(bodies[0])  # warm-up
    served = {}
    for concurrency in (1, 8):
        t0 = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            lat = list(pool.map(ask, bodies))
        served[concurrency] = (len(bodies) / (time.perf_counter() - t0), lat)

    print(f"\n{len(records)} SEED-Bench-R1-mini questions (video + image + text), {args.max_tokens} new tokens, tiny model")
    print(f"transformers generate, in-process, one at a time: {hf_rps:.2f} req/s  {percentiles(hf_lat)}")
    for c, (rps, lat) in served.items():
        print(f"Ray Serve + vLLM over HTTP, concurrency {c}:       {rps:.2f} req/s  {percentiles(lat)}  "
              f"({rps / hf_rps:.2f}x transformers)")


if __name__ == "__main__":
    main()
