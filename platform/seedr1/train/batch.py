"""Trainer-side batches: prompt (with media) + completion tokens -> one padded forward -> completion log-probs (or,
when prompts repeat, one forward of each prompt and one of the completions on its cache: ``train/shared_prefix.py``).

A GRPO batch holds G completions of each prompt. The batch keeps each distinct prompt's media once; the vision
tower encodes them once and every completion of the prompt gets those outputs (transformers' ``mm_encoder_outputs``),
so the tower's forward and backward cost one pass per prompt, not G. M-RoPE positions depend on the tokens and media
sizes only: the trainer computes them once per micro-batch for the reference and policy forwards."""
from __future__ import annotations

import itertools
import json

import torch

from seedr1.algo.losses import entropy_from_logits, token_logprobs
from seedr1.model.multimodal import record_inputs

# second_per_grid_ts: Qwen2.5-VL's seconds per temporal patch of each video (its temporal positions scale with it)
_MEDIA_KEYS = ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw", "second_per_grid_ts")
# modality -> (pixel key, grid key, owner key: for each media slot in sample order, its index among the distinct ones)
_MODALITIES = {"image": ("pixel_values", "image_grid_thw", "image_owner"),
               "video": ("pixel_values_videos", "video_grid_thw", "video_owner")}
# keys the forward never gets as they are: lengths, and the media (handed over as encoder outputs instead)
_BATCH_ONLY = ("prompt_lens", "completion_lens", "prompt_owner", "second_per_grid_ts",
               *(key for keys in _MODALITIES.values() for key in keys))


def build_batch(processor, records: list, completions: list[list[int]], cache: dict | None = None) -> dict:
    """Right-padded ``input_ids`` = expanded prompt + completion; ``mm_token_type_ids`` is 0 on completion and
    padding (transformers 5.19 needs it whenever media are passed). Media tensors hold each distinct prompt's media
    once, in first-seen order; ``image_owner`` / ``video_owner`` map every media slot, in sample order, to its row;
    ``prompt_owner`` maps every sample to its distinct prompt (numbered in first-seen order).
    ``cache`` keeps processed prompts across calls; within a call the G completions of a prompt always share one.
    A prompt is its sample_id and its messages: the same sample in two epochs (both in one batch across an epoch
    boundary) has its options in another order, so another prompt and gold letter."""
    pad = processor.tokenizer.pad_token_id
    seqs, types, prompt_lens, media = [], [], [], {k: [] for k in _MEDIA_KEYS}
    owners, first_slot = {"image": [], "video": []}, {}  # first_slot: prompt -> its first media slot per modality
    prompt_owner, order = [], {}  # order: prompt -> its number among the distinct prompts
    cache = {} if cache is None else cache
    for record, completion in zip(records, completions):
        key = (record.sample_id, json.dumps(record.messages, sort_keys=True))
        if key not in cache:
            cache[key] = record_inputs(processor, record)
        p = cache[key]
        ids = p["input_ids"][0]
        seqs.append(torch.cat([ids, torch.tensor(completion, dtype=ids.dtype)]))
        types.append(torch.cat([p["mm_token_type_ids"][0], torch.zeros(len(completion), dtype=torch.long)]))
        prompt_lens.append(len(ids))
        if key not in first_slot:  # a new distinct prompt: keep its media
            order[key] = len(order)
            first_slot[key] = {m: sum(len(g) for g in media[grid]) for m, (_, grid, _) in _MODALITIES.items()}
            for k in _MEDIA_KEYS:
                if k in p:
                    media[k].append(torch.as_tensor(p[k]))
        prompt_owner.append(order[key])
        for m, (_, grid, _) in _MODALITIES.items():
            count = len(p[grid]) if grid in p else 0
            owners[m].extend(range(first_slot[key][m], first_slot[key][m] + count))
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
    for m, (_, _, owner) in _MODALITIES.items():
        if owners[m]:
            batch[owner] = torch.tensor(owners[m])
    batch["prompt_lens"] = torch.tensor(prompt_lens)
    batch["completion_lens"] = torch.tensor([len(c) for c in completions])
    batch["prompt_owner"] = torch.tensor(prompt_owner)
    return batch


def _core(model):
    return getattr(model, "module", model)  # a DeepSpeed engine wraps the Hugging Face model


def _has_media(batch: dict) -> bool:
    return any(owner in batch for _, _, owner in _MODALITIES.values())


def encode_media(model, batch: dict) -> dict:
    """The vision tower's output for each distinct image / video in the batch (a tuple per modality), with
    gradients when the tower trains and grad mode is on."""
    out = {}
    for m, (pixels, grid, _) in _MODALITIES.items():
        if pixels in batch:
            encode = getattr(_core(model), f"get_{m}_features")
            out[m] = encode(batch[pixels], batch[grid], return_dict=True).pooler_output
    return out


def forward_inputs(model, batch: dict, positions=None) -> dict:
    """Keyword arguments for the model's forward: every media slot gets its distinct prompt's vision output (encoded
    here, once), and the M-RoPE ``positions`` (computed here when not given)."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    inputs = {k: v for k, v in batch.items() if k not in _BATCH_ONLY}
    if not _has_media(batch):
        return inputs  # text only: the model infers 1-D positions itself
    media = encode_media(model, batch)
    inputs["position_ids"] = rope_positions(model, batch) if positions is None else positions
    inputs["mm_encoder_outputs"] = {
        m: BaseModelOutputWithPooling(pooler_output=tuple(media[m][i] for i in batch[owner].tolist()))
        for m, (_, _, owner) in _MODALITIES.items() if owner in batch}
    return inputs


def rope_positions(model, batch: dict) -> torch.Tensor | None:
    """M-RoPE position ids ``[3, B, T]`` of a batch with media (a function of the tokens and media grids only);
    None for a text-only batch. Qwen2-VL and Qwen2.5-VL: ``mrope_positions``, the layout vLLM (and the original
    Qwen2-VL code) uses; others: the model's own ``get_rope_index``."""
    if not _has_media(batch):
        return None
    grids = {f"{m}_grid_thw": batch[grid][batch[owner]] for m, (_, grid, owner) in _MODALITIES.items() if owner in batch}
    core = _core(model)
    if core.config.model_type in _VLLM_LAYOUT:
        seconds = batch["second_per_grid_ts"][batch["video_owner"]] if "second_per_grid_ts" in batch else None
        return mrope_positions(batch["mm_token_type_ids"], batch["attention_mask"],
                               core.config.vision_config.spatial_merge_size,
                               video_time_scale=_time_scales(core.config, seconds), **grids)
    positions, _ = core.model.get_rope_index(batch["input_ids"], mm_token_type_ids=batch["mm_token_type_ids"],
                                             attention_mask=batch["attention_mask"], **grids)
    return positions


_VLLM_LAYOUT = ("qwen2_vl", "qwen2_5_vl")


def _time_scales(config, second_per_grid_ts) -> list[float] | None:
    """Qwen2.5-VL: temporal position step per temporal patch of each video, ``tokens_per_second`` x its seconds per
    patch (float64 from the processor's float32 seconds, as vLLM computes it). Qwen2-VL: None (a step of 1)."""
    if config.model_type != "qwen2_5_vl" or second_per_grid_ts is None:
        return None
    tokens_per_second = getattr(config.vision_config, "tokens_per_second", 1.0)
    return [float(s) * tokens_per_second for s in torch.as_tensor(second_per_grid_ts).reshape(-1).tolist()]


def mrope_positions(mm_token_type_ids: torch.Tensor, attention_mask: torch.Tensor, merge: int,
                    image_grid_thw: torch.Tensor | None = None, video_grid_thw: torch.Tensor | None = None,
                    video_time_scale: list[float] | None = None):
    """Qwen2-VL's M-RoPE ids ``[3, B, T]``: text counts up on all three axes; an image or video block takes
    (t, h, w) grid indices from where the text stopped, and the text after it resumes at the block's largest id + 1.
    ``video_time_scale`` (Qwen2.5-VL): per video, the temporal id step per temporal patch (truncated to integers).
    That is what vLLM computes for the rollouts (and the original Qwen2-VL code); transformers 5.19 resumes at
    ``max(h, w)`` instead, which for a video of more temporal patches than rows puts every token after it at other
    positions than in the engine that sampled them (log-probs apart by ~1e-3 on SEED-Bench-R1-mini's clips)."""
    grids = {1: iter(image_grid_thw.tolist()) if image_grid_thw is not None else None,
             2: iter(video_grid_thw.tolist()) if video_grid_thw is not None else None}
    scales = {1: itertools.repeat(1.0), 2: iter(video_time_scale) if video_time_scale else itertools.repeat(1.0)}
    B, T = mm_token_type_ids.shape
    positions = torch.zeros(3, B, T, dtype=torch.long)
    for b in range(B):
        parts, start = [], 0
        for kind, run in itertools.groupby(mm_token_type_ids[b][attention_mask[b].bool()].tolist()):
            n = len(list(run))
            if kind == 0:  # text
                parts.append(torch.arange(n).expand(3, -1) + start)
            else:  # one image or video block: t x (h / merge) x (w / merge) tokens
                t, h, w = next(grids[kind])
                h, w = h // merge, w // merge
                times = (torch.arange(t, dtype=torch.float64) * next(scales[kind])).long()
                grid = torch.stack(torch.meshgrid(times, torch.arange(h), torch.arange(w), indexing="ij"))
                parts.append(grid.reshape(3, -1) + start)
                if parts[-1].shape[1] != n:
                    raise ValueError(f"row {b}: a media block of {n} tokens, its grid {t}x{h}x{w} says otherwise")
            start = int(parts[-1].max()) + 1
        positions[:, b, attention_mask[b].bool()] = torch.cat(parts, dim=1)
    return positions.to(mm_token_type_ids.device)


def use_engine_positions(model) -> None:
    """Make transformers' own forward and ``generate`` on ``model`` (Qwen2-VL / Qwen2.5-VL) compute
    ``mrope_positions`` instead of its ``get_rope_index``: the HF engine then samples with the positions the
    trainer scores its completions with (and vLLM samples with)."""
    core = _core(model)
    if core.config.model_type not in _VLLM_LAYOUT:
        return
    merge = core.config.vision_config.spatial_merge_size

    def get_rope_index(input_ids, mm_token_type_ids, image_grid_thw=None, video_grid_thw=None, attention_mask=None,
                       second_per_grid_ts=None, **_):
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        positions = mrope_positions(mm_token_type_ids, mask, merge, image_grid_thw, video_grid_thw,
                                    _time_scales(core.config, second_per_grid_ts))
        deltas = [positions[:, b, mask[b].bool()].max() + 1 - mask[b].sum() for b in range(len(input_ids))]
        return positions, torch.stack(deltas).reshape(-1, 1).to(input_ids.device)

    core.model.get_rope_index = get_rope_index


def unshared_inputs(batch: dict) -> dict:
    """The batch as transformers' own forward takes it, each completion with its own copy of its prompt's media
    (what trainers without the sharing do): the baseline that tests and ``bench/trainer_batch.py`` compare with."""
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "mm_token_type_ids")}
    for pixels, grid, owner in _MODALITIES.values():
        if owner in batch:
            rows = torch.split(batch[pixels], batch[grid].prod(-1).tolist())
            slots = batch[owner].tolist()
            inputs[pixels], inputs[grid] = torch.cat([rows[i] for i in slots]), batch[grid][slots]
    if "second_per_grid_ts" in batch and "video_owner" in batch:  # Qwen2.5-VL: each video's rate, per slot
        inputs["second_per_grid_ts"] = batch["second_per_grid_ts"][batch["video_owner"]]
    return inputs


def completion_logprobs(model, batch: dict, with_entropy: bool = False, inputs: dict | None = None,
                        temperature: float = 1.0, positions: torch.Tensor | None = None, shared_prefix: bool = True):
    """Per-token log-probs of the completion tokens: ``[B, Tc]`` plus a bool mask (and entropies when asked).
    ``temperature``: of the policy ``softmax(logits / T)`` (GRPO trains the distribution the rollouts were sampled
    from, as TRL does). ``positions``: the batch's M-RoPE ids, when already computed (e.g. shared with another
    forward). ``shared_prefix``: a batch that repeats a prompt runs it once and its completions on its cache
    (``train/shared_prefix.py``; same numbers). ``inputs``: ``forward_inputs`` already built, for one forward of
    the full sequences."""
    if inputs is None and shared_prefix:
        from seedr1.train.shared_prefix import can_share_prefix, shared_prefix_logits  # it builds on this module

        if can_share_prefix(model, batch):
            picked, targets, mask = shared_prefix_logits(model, batch, positions)
            return _tail(picked, targets, mask, with_entropy, temperature)
    inputs = dict(inputs if inputs is not None else forward_inputs(model, batch, positions))
    return _tail(*_full_sequence_logits(model, batch, inputs), with_entropy, temperature)


def _full_sequence_logits(model, batch: dict, inputs: dict):
    """One forward of the full sequences: the logits that predict each completion token ``[B, W, V]``, the targets
    and their mask. The LM head runs only from the first position that predicts a completion token on
    (``logits_to_keep``): at 7B a full ``[B, T, vocab]`` of prompt logits would be gigabytes no loss reads."""
    T = batch["input_ids"].shape[1]
    first = max(int(batch["prompt_lens"].min()) - 1, 0)  # position p-1+j predicts completion token j
    inputs["logits_to_keep"] = torch.arange(first, max(T - 1, first + 1), device=batch["input_ids"].device)
    logits = model(**inputs).logits  # [B, window, V]: window position w is sequence position first + w
    dev = logits.device  # the batch may sit on CPU (engines) or on the trainer's GPU
    at, mask = _completion_slots(batch, dev)
    window = (at - 1 - first).clamp(0, logits.shape[1] - 1)  # the position before a token predicts it
    picked = logits.gather(1, window.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))
    return picked, batch["input_ids"].to(dev).gather(1, at), mask


def _completion_slots(batch: dict, device):
    """Sequence positions of the completion tokens ``[B, W]`` (W: the longest completion, at least 1) and the mask of
    the real ones; masked-out entries hold a valid index only."""
    plen, clen = batch["prompt_lens"].to(device), batch["completion_lens"].to(device)
    offsets = torch.arange(max(int(clen.max()), 1), device=device).unsqueeze(0)
    at = (plen.unsqueeze(1) + offsets).clamp(max=batch["input_ids"].shape[1] - 1)
    return at, offsets < clen.unsqueeze(1)


def _tail(picked, targets, mask, with_entropy: bool, temperature: float):
    """Log-probs of ``targets`` under ``softmax(picked / temperature)`` (and the entropies when asked)."""
    if temperature != 1.0:
        picked = picked.float() / temperature  # in float32 (token_logprobs upcasts anyway): no second bf16 rounding
    logp = token_logprobs(picked, targets)
    if with_entropy:
        return logp, mask, entropy_from_logits(picked.detach())
    return logp, mask
