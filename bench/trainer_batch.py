"""One trainer micro-batch (a prompt's G completions), forward + backward, three ways: the same batch with media per
completion (transformers' own forward, as trainers without sharing run it); the vision tower encoding the prompt's
media once for the G completions, each still a full sequence (``trainer.shared_prefix=false``); and this project's
default, the prompt run once and the G completions on its cached keys and values (``train/shared_prefix.py``). Same
tiny model, same tokens, one torch thread, alternating in one process; median milliseconds and the ratios.

    .venv/bin/python bench/trainer_batch.py [--g 8] [--frames 16] [--tokens 20] [--rounds 30]

``--frames`` is ``data.max_frames`` (the paper's 16 by default); the synthetic clips are short, so a prompt gets at
most what its clip holds at 2 fps. Both sides run the LM head only on completion positions.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--g", type=int, default=8, help="completions per prompt (the micro-batch)")
    ap.add_argument("--frames", type=int, default=16, help="data.max_frames")
    ap.add_argument("--tokens", type=int, default=20, help="completion length")
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    import numpy as np
    import torch

    from seedr1.config import DataConfig
    from seedr1.data.pipeline import RecordStream, iter_local
    from seedr1.data.synthetic import SynthSpec, write_synthetic
    from seedr1.model.loading import load_model, load_processor, resolve_checkpoint
    from seedr1.train.batch import build_batch, completion_logprobs, unshared_inputs

    torch.set_num_threads(1)
    root = tempfile.mkdtemp(prefix="seedr1-bench-trainer-batch-")
    write_synthetic(root, SynthSpec(train=8, l1=4, l2=2, l3=4))
    data = DataConfig(root=root, frame_size=56, image_size=56, max_frames=args.frames)
    records = list(RecordStream(iter_local(data, [data.train_file]), data))
    record = max((r for r in records if r.video is not None), key=lambda r: len(r.video))
    path = resolve_checkpoint("tiny")
    model, processor = load_model(path), load_processor(path)
    rng = np.random.default_rng(0)
    batch = build_batch(processor, [record] * args.g, [rng.integers(10, 200, args.tokens).tolist() for _ in range(args.g)])

    variants = {"per-completion media": dict(inputs=unshared_inputs(batch)),
                "shared media, full sequences": dict(shared_prefix=False),
                "shared prompt (seedr1)": dict(shared_prefix=True)}

    def step(kwargs: dict) -> float:
        t0 = time.perf_counter()
        logp, mask = completion_logprobs(model, batch, **kwargs)
        (logp * mask).sum().backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    times: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(args.rounds + 3):  # the first 3 of each are a warm-up
        for name, kwargs in variants.items():
            t = step(kwargs)
            if i >= 3:
                times[name].append(t)
    med = {name: statistics.median(v) for name, v in times.items()}
    base = med["per-completion media"]
    print(f"tiny model, 1 thread, G={args.g}, video {len(record.video)} frames + image at 56 px, "
          f"prompt {int(batch['prompt_lens'][0])} tokens, completion {args.tokens} tokens, {args.rounds} rounds, "
          f"load average {os.getloadavg()[0]:.1f}")
    for name, m in med.items():
        print(f"{name:30s} {m * 1000:7.1f} ms forward + backward   {base / m:5.2f}x")


if __name__ == "__main__":
    main()
