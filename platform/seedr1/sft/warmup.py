"""The perception warm-up: the CPU stand-in for a pretrained VLM.

A random tiny model cannot see, and GRPO cannot reinforce what the policy never does. A short SFT on the
chain-of-thought targets, with the answer letter replaced by a random one, teaches it to state the visual cue in the
think part and to answer in format, at chance. The cue is then encoded at the answer position and GRPO only has
to learn which letter it points to. (A warm-up with random letters and no cue left GRPO flat for 200+ steps.)
"""
from __future__ import annotations

import random
import re
import shutil
import time
from pathlib import Path

import torch

from seedr1.algo.losses import sft_loss
from seedr1.config import DataConfig, WarmupConfig
from seedr1.data.pipeline import RecordStream, iter_local
from seedr1.data.prompt_text import LETTERS
from seedr1.train.batch import build_batch, completion_logprobs

_ANSWER = re.compile(r"<answer>.*?</answer>", re.DOTALL)


def randomise_letter(response: str, rng: random.Random) -> str:
    """The CoT response with its answer replaced by a random letter (the cue stays, the answer is chance)."""
    return _ANSWER.sub(f"<answer>{rng.choice(LETTERS)}.</answer>", response, count=1)


def perception_warmup(model_path: str, data_root: str, out_dir: str | Path, cfg: WarmupConfig = WarmupConfig(),
                      log=print) -> Path:
    from seedr1.model.loading import load_model, load_processor

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.torch_threads)
    rng = random.Random(cfg.seed)
    data = DataConfig(root=data_root, frame_size=cfg.frame_size, image_size=cfg.frame_size)
    records = [r for r in RecordStream(iter_local(data, [cfg.cot_file]), data) if r.response]
    if not records:
        raise ValueError(f"no chain-of-thought records in {data_root}/{cfg.cot_file}")
    processor = load_processor(model_path)
    model = load_model(model_path)
    tok = processor.tokenizer
    end = [tok.convert_tokens_to_ids("<|im_end|>")]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    cache: dict = {}
    t0 = time.perf_counter()
    for step in range(1, cfg.steps + 1):
        chosen = rng.sample(records, min(cfg.batch_size, len(records)))
        targets = [tok.encode(randomise_letter(r.response, rng), add_special_tokens=False) + end for r in chosen]
        logp, mask = completion_logprobs(model, build_batch(processor, chosen, targets, cache=cache))
        loss = sft_loss(logp, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == cfg.steps:
            log(f"[warmup] step {step}/{cfg.steps} loss {loss.item():.4f} ({time.perf_counter() - t0:.0f} s)")
    out = Path(out_dir)
    # Written beside, then renamed: a run killed mid-save must not leave a folder a rerun takes for finished
    # (config.json is written before the weights, the processor after them).
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    processor.save_pretrained(staging)
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return out
