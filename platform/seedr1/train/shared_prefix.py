"""A GRPO batch holds G completions of each prompt. Run each distinct prompt once, keep its keys and values, and run
the completions on top of them: the same causal attention, so the same log-probs and gradients (backward sums the
completions' gradients through the shared prompt), for ~1/G of the prompt's cost. With video prompts of thousands
of tokens and completions of hundreds, the prompt is most of a forward.

Qwen2-VL and Qwen2.5-VL (positions from ``mrope_positions``, the layout the engines sample with); other models run
the plain per-completion forward."""
from __future__ import annotations

import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

from seedr1.train.batch import _VLLM_LAYOUT, _completion_slots, _core, encode_media, mrope_positions, rope_positions


def can_share_prefix(model, batch: dict) -> bool:
    """Whether ``batch`` repeats a prompt and ``model`` is one whose positions this module computes. Not under
    gradient checkpointing while training: transformers then drops the cache the completions need."""
    owner, core = batch.get("prompt_owner"), _core(model)
    return (owner is not None and int(owner.max()) + 1 < len(owner) and core.config.model_type in _VLLM_LAYOUT
            and not (getattr(core, "is_gradient_checkpointing", False) and core.training))


def shared_prefix_logits(model, batch: dict, positions: torch.Tensor | None = None):
    """Logits that predict each completion token ``[B, W, V]`` (W: the longest completion), the target tokens
    ``[B, W]`` and their mask, from one forward of the distinct prompts and one of the completions on their cache.
    ``positions``: the batch's M-RoPE ids ``[3, B, T]`` (computed here when None)."""
    from transformers import DynamicCache

    ids = batch["input_ids"]
    dev = ids.device
    plen, owner = batch["prompt_lens"].to(dev), batch["prompt_owner"].to(dev)
    if positions is None:
        positions = rope_positions(model, batch)
    if positions is None:  # text only: the ids count up
        positions = mrope_positions(batch["mm_token_type_ids"], batch["attention_mask"],
                                    _core(model).config.vision_config.spatial_merge_size)
    # 1. the distinct prompts (each at its first row, right-padded), their media encoded once, cached
    n_prompts = int(owner.max()) + 1
    first = torch.stack([torch.nonzero(owner == p)[0, 0] for p in range(n_prompts)])
    width = int(plen[first].max())
    prompt_mask = (torch.arange(width, device=dev).unsqueeze(0) < plen[first].unsqueeze(1)).long()
    inputs = {"input_ids": ids[first, :width], "attention_mask": prompt_mask,
              "mm_token_type_ids": batch["mm_token_type_ids"][first, :width] * prompt_mask,
              "position_ids": positions[:, first, :width]}
    media = encode_media(model, batch)  # in first-seen order: the prompts' own order, slot by slot
    if media:
        inputs["mm_encoder_outputs"] = {m: BaseModelOutputWithPooling(pooler_output=tuple(media[m])) for m in media}
    last = plen[first] - 1  # predicts completion token 0
    keep = torch.unique(last)
    out = model(**inputs, past_key_values=DynamicCache(config=_core(model).config), use_cache=True,
                logits_to_keep=keep)
    first_logits = out.logits[torch.arange(n_prompts, device=dev), torch.searchsorted(keep, last)]  # [P, V]
    cache = out.past_key_values
    # 2. the completions, each on its prompt's cache (a differentiable row gather of keys and values)
    at, mask = _completion_slots(batch, dev)
    W, targets = at.shape[1], ids.gather(1, at)
    picked = first_logits[owner].unsqueeze(1)
    if W > 1:
        cache.batch_select_indices(owner)
        # the bare module: a DeepSpeed engine prepares its backward once per forward it runs, and one backward
        # follows these two forwards (the prompt's, through the engine, always runs)
        rest = _core(model)(input_ids=targets, attention_mask=torch.cat([prompt_mask[owner], mask.long()], 1),
                            position_ids=positions.gather(2, at.unsqueeze(0).expand(3, -1, -1)),
                            past_key_values=cache, use_cache=True,
                            logits_to_keep=torch.arange(W - 1, device=dev)).logits  # token j predicts j+1
        picked = torch.cat([picked, rest], 1)
    return picked, targets, mask
