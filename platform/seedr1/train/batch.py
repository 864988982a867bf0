"""Trainer-side batches: prompt (with media) + completion tokens -> one padded forward -> completion log-probs."""
from __future__ import annotations

import torch

from seedr1.algo.losses import entropy_from_logits, token_logprobs
from seedr1.model.multimodal import chat_text

_MEDIA_KEYS = ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw")


def build_batch(processor, records: list, completions: list[list[int]], cache: dict | None = None) -> dict:
    """Right-padded ``input_ids`` = expanded prompt + completion; ``mm_token_type_ids`` is 0 on completion and
    padding (transformers 5.19 needs it whenever media are passed). Media tensors are concatenated in order.
    ``cache`` (keyed by sample_id) keeps processed prompts across calls; within a call the G completions of a
    prompt always share one."""
    pad = processor.tokenizer.pad_token_id
    seqs, types, prompt_lens, media = [], [], [], {k: [] for k in _MEDIA_KEYS}
    cache = {} if cache is None else cache
    for record, completion in zip(records, completions):
        key = record.sample_id
        if key not in cache:
            kwargs = {}
            if record.image is not None:
                kwargs["images"] = [record.image]
            if record.video is not None:
                kwargs["videos"] = [record.video]
            cache[key] = processor(text=[chat_text(processor, record.messages)], return_tensors="pt", **kwargs)
        p = cache[key]
        ids = p["input_ids"][0]
        seqs.append(torch.cat([ids, torch.tensor(completion, dtype=ids.dtype)]))
        types.append(torch.cat([p["mm_token_type_ids"][0], torch.zeros(len(completion), dtype=torch.long)]))
        prompt_lens.append(len(ids))
        for k in _MEDIA_KEYS:
            if k in p:
                media[k].append(p[k])
    width = max(len(s) for s in seqs)
    batch = {
        "input_ids": torch.full((len(seqs), width), pad, dtype=torch.long),
        "attention_mask": torch.zeros((len(seqs), width), dtype=torch.long),
        "mm_token_type_ids": torch.zeros((len(seqs), width), dtype=torch.long),
    }
    for i, (s, t) in enumerate(zip(seqs, types)):
        batch["input_ids"][i, :len(s)] = s
        batch["attention_mask"][i, :len(s)] = 1
        batch["mm_token_type_ids"][i, :len(t)] = t
    for k, parts in media.items():
        if parts:
            batch[k] = torch.cat(parts)
    batch["prompt_lens"] = torch.tensor(prompt_lens)
    batch["completion_lens"] = torch.tensor([len(c) for c in completions])
    return batch


def completion_logprobs(model, batch: dict, with_entropy: bool = False):
    """Per-token log-probs of the completion tokens: ``[B, Tc]`` plus a bool mask (and entropies when asked)."""
    inputs = {k: v for k, v in batch.items() if k not in ("prompt_lens", "completion_lens")}
    logits = model(**inputs).logits
    dev = logits.device  # the batch may sit on CPU (engines) or on the trainer's GPU
    plen, clen = batch["prompt_lens"].to(dev), batch["completion_lens"].to(dev)
    width = max(int(clen.max()), 1)
    # position p-1+j predicts completion token j
    offsets = torch.arange(width, device=dev).unsqueeze(0)
    mask = offsets < clen.unsqueeze(1)
    pos = (plen.unsqueeze(1) - 1 + offsets).clamp(max=logits.shape[1] - 2)
    tgt_pos = (pos + 1).clamp(max=logits.shape[1] - 1)
    picked = logits.gather(1, pos.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))
    targets = batch["input_ids"].to(dev).gather(1, tgt_pos)
    logp = token_logprobs(picked, targets)
    if with_entropy:
        return logp, mask, entropy_from_logits(picked.detach())
    return logp, mask
