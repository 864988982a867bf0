"""seedr1's server (Ray Serve LLM + seedr1's gate) against `vllm serve` (vLLM's own OpenAI server) on the same tiny
model and the same SEED-Bench-R1-mini requests (frames + image + question, lossless, as the evaluation job sends
them), in one run: req/s and p50/p95 at concurrency 1 and 8, and the first/last streamed chunk at concurrency 1.
Each server runs alone (the other stopped); with --rounds > 1 they alternate and each figure is the median round.

    .venv/bin/python bench/serve.py [--requests 32] [--max-tokens 16] [--rounds 1]

Targets: c=8 req/s >= 1.0x vllm serve; c=1 p50 <= 1.15x; first streamed chunk p50 <= 1.5x.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

KEY = "bench-key"
MAX_MODEL_LEN = 1024
SETTLE_S = 10.0


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _q(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def measure(base_url: str, bodies: list[dict], max_tokens: int) -> dict:
    """req/s and latencies at c=1 and c=8; first/last chunk of streamed answers at c=1 (seconds)."""
    import logging

    from openai import OpenAI

    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request once Ray has set up logging
    client = OpenAI(base_url=base_url, api_key=KEY, max_retries=0, timeout=300)

    def args(body) -> dict:  # media_io_kwargs is vLLM's field, not the client's
        extra = {k: v for k, v in body.items() if k != "messages"}
        return {"model": "seedr1", "max_tokens": max_tokens, "temperature": 0.0, "messages": body["messages"],
                "extra_body": extra}

    def ask(body) -> float:
        t = time.perf_counter()
        client.chat.completions.create(**args(body))
        return time.perf_counter() - t

    def stream(body) -> tuple[float, float, int]:
        t, first, chunks = time.perf_counter(), None, 0
        for chunk in client.chat.completions.create(stream=True, **args(body)):
            if chunk.choices and chunk.choices[0].delta.content:
                first = first or time.perf_counter() - t
                chunks += 1
        return first or 0.0, time.perf_counter() - t, chunks

    for body in bodies[:8]:
        ask(body)  # warm-up (compilation, caches)
    time.sleep(SETTLE_S)  # start-up work still running beside the server (Ray's idle workers, telemetry) ends
    out = {}
    for c in (1, 8):
        t0 = time.perf_counter()
        with ThreadPoolExecutor(c) as pool:
            lat = list(pool.map(ask, bodies))
        out[c] = {"rps": len(bodies) / (time.perf_counter() - t0), "p50": _q(lat, 50), "p95": _q(lat, 95)}
    streamed = [stream(b) for b in bodies]
    out["stream"] = {"first": _q([s[0] for s in streamed], 50), "last": _q([s[1] for s in streamed], 50),
                     "chunks": statistics.median(s[2] for s in streamed)}
    return out


def run_seedr1(model: str, bodies: list[dict], max_tokens: int) -> dict:
    import ray
    from ray import serve

    from seedr1.config import ServeConfig, ServeLimits, VLLMConfig
    from seedr1.serve.run import start

    url = start(ServeConfig(model=model, port=_port(), cpus_per_replica=1, max_ongoing_requests=64,
                            vllm=VLLMConfig(max_model_len=MAX_MODEL_LEN),
                            limits=ServeLimits(frame_size=56, image_size=56, max_tokens=max_tokens)))
    try:
        return measure(url, bodies, max_tokens)
    finally:
        serve.shutdown()
        ray.shutdown()


def run_vllm(model: str, bodies: list[dict], max_tokens: int) -> dict:
    port = _port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "WARNING"}
    cmd = [sys.executable, "-m", "seedr1.serve.vllm_cli", "serve", model, "--port", str(port), "--api-key", KEY,
           "--served-model-name", "seedr1", "--max-model-len", str(MAX_MODEL_LEN), "--dtype", "float32",
           "--seed", "0", "--trust-request-mm-kwargs", "--limit-mm-per-prompt", '{"image": 1, "video": 1}']
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 600
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"vllm serve did not start: {' '.join(cmd)}")
                time.sleep(2)
        return measure(f"http://127.0.0.1:{port}/v1", bodies, max_tokens)
    finally:
        server.terminate()
        server.wait(60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--only", choices=("seedr1", "vllm"), help="measure one server (no ratios)")
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ["SEEDR1_API_KEYS"] = KEY
    from seedr1.config import DataConfig
    from seedr1.data.pipeline import RecordStream, iter_local
    from seedr1.data.synthetic import SynthSpec, write_synthetic
    from seedr1.evaluate.http_target import chat_body
    from seedr1.model.loading import resolve_checkpoint

    root = tempfile.mkdtemp(prefix="seedr1-bench-serve-")
    write_synthetic(root, SynthSpec(train=0, l1=args.requests, l2=0, l3=0))
    data = DataConfig(root=root, frame_size=56, image_size=56)
    bodies = [chat_body(r) for r in RecordStream(iter_local(data, ["annotations/validation_L1.jsonl"]), data)]
    model = resolve_checkpoint("tiny")
    rounds = {"seedr1": [], "vllm": []}
    for _ in range(args.rounds):
        if args.only != "seedr1":
            rounds["vllm"].append(run_vllm(model, bodies, args.max_tokens))
        if args.only != "vllm":
            rounds["seedr1"].append(run_seedr1(model, bodies, args.max_tokens))

    def fig(name, *keys):
        return statistics.median(r[keys[0]][keys[1]] for r in rounds[name])

    print(f"\n{len(bodies)} SEED-Bench-R1-mini requests (frames + image + question), {args.max_tokens} tokens, greedy, "
          f"tiny model, {args.rounds} round(s)")
    for name in [n for n in ("vllm", "seedr1") if rounds[n]]:
        label = "vllm serve" if name == "vllm" else "seedr1"
        print(f"{label:>10}: c=1 {fig(name, 1, 'rps'):6.2f} req/s p50 {fig(name, 1, 'p50') * 1e3:5.0f} ms "
              f"p95 {fig(name, 1, 'p95') * 1e3:5.0f} ms | c=8 {fig(name, 8, 'rps'):6.2f} req/s "
              f"p50 {fig(name, 8, 'p50') * 1e3:5.0f} ms p95 {fig(name, 8, 'p95') * 1e3:5.0f} ms | stream first "
              f"{fig(name, 'stream', 'first') * 1e3:4.0f} ms last {fig(name, 'stream', 'last') * 1e3:4.0f} ms "
              f"({fig(name, 'stream', 'chunks'):.0f} chunks)")
    if args.only:
        return
    ratios = {"c=8 req/s (target >= 1.0)": fig("seedr1", 8, "rps") / fig("vllm", 8, "rps"),
              "c=1 p50 (target <= 1.15)": fig("seedr1", 1, "p50") / fig("vllm", 1, "p50"),
              "first chunk p50 (target <= 1.5)": fig("seedr1", "stream", "first") / fig("vllm", "stream", "first")}
    print("seedr1 / vllm serve: " + "; ".join(f"{k}: {v:.2f}x" for k, v in ratios.items()))


if __name__ == "__main__":
    main()
