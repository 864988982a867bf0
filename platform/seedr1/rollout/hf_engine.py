"""The transformers ``generate`` engine: the reference baseline behind the same interface. On the actor's GPU (bf16)
when it has one, else on CPU (fp32)."""
from __future__ import annotations

from typing import Sequence

import torch

from seedr1.data.pipeline import PromptRecord
from seedr1.model.tiny import vision_token_ids
from seedr1.rollout.engine import (Completion, RolloutEngine, Sampling, WeightsPayload, completion_texts, named_tensors,
                                   prompt_seeds)
from seedr1.train.batch import build_batch, completion_logprobs, use_engine_positions


def sampled_logprobs(step_logits: tuple, tokens: torch.Tensor) -> torch.Tensor:
    """log p of each sampled token [N, T] from ``generate``'s raw per-step logits (before temperature and the
    vision-token ban: what vLLM reports, and what the trainer computes), one step at a time (no [N, T, V] tensor)."""
    return torch.stack([torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens[:, t:t + 1]).squeeze(-1)
                        for t, logits in enumerate(step_logits)], dim=1)


def engine_device() -> tuple[torch.device, torch.dtype]:
    """Where the engine runs and in which dtype: the GPU this process sees (a Ray actor sees the ones it was given)
    in bf16, as the trainer and vLLM run there; else the CPU in fp32."""
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device()), torch.bfloat16
    return torch.device("cpu"), torch.float32


def _to(inputs: dict, device: torch.device) -> dict:
    """The processor's / a batch's tensors on ``device`` (dtypes kept: the model casts pixels to its own)."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


class HFEngine(RolloutEngine):
    def __init__(self, model: str):
        from seedr1.model.loading import load_model, load_processor

        self.device, dtype = engine_device()
        self.model = load_model(model, dtype=dtype, trainable=False).to(self.device)
        use_engine_positions(self.model)  # sample with the M-RoPE positions the trainer scores with
        self.processor = load_processor(model)
        self.banned = vision_token_ids(self.processor.tokenizer)

    @torch.no_grad()
    def generate(self, prompts: Sequence[PromptRecord], sampling: Sampling) -> list[list[Completion]]:
        from seedr1.model.multimodal import record_inputs

        seeds = prompt_seeds(sampling, prompts)
        tok = self.processor.tokenizer
        results = []
        for i, r in enumerate(prompts):
            if seeds is not None:  # per prompt, as vLLM seeds each request: the batch around it changes nothing
                torch.manual_seed(seeds[i])
            inputs = _to(record_inputs(self.processor, r), self.device)
            out = self.model.generate(**inputs, do_sample=sampling.temperature > 0, temperature=sampling.temperature,
                                      top_p=sampling.top_p, top_k=sampling.top_k or None,
                                      max_new_tokens=sampling.max_tokens,
                                      num_return_sequences=sampling.n, suppress_tokens=self.banned,
                                      pad_token_id=tok.pad_token_id, return_dict_in_generate=True,
                                      output_logits=True)
            gen = out.sequences[:, inputs["input_ids"].shape[1]:]
            logps = sampled_logprobs(out.logits, gen).tolist()
            completions = []
            for ids, lps in zip(gen.tolist(), logps):
                end = ids.index(tok.eos_token_id) + 1 if tok.eos_token_id in ids else len(ids)
                kept = [(i, lp) for i, lp in zip(ids[:end], lps[:end]) if i != tok.pad_token_id]
                ids, lps = [i for i, _ in kept], [lp for _, lp in kept]
                text = completion_texts(tok, [ids])[0]
                finish = "stop" if ids and ids[-1] == tok.eos_token_id else "length"
                cut = min((text.find(s) for s in sampling.stop or [] if s in text), default=-1)
                if cut >= 0:  # stop strings: the text ends before the first one (token ids stay as generated)
                    text, finish = text[:cut], "stop"
                completions.append(Completion(text=text, token_ids=ids, logprobs=lps, finish_reason=finish,
                                              prompt_tokens=int(inputs["input_ids"].shape[1])))
            results.append(completions)
        return results

    @torch.no_grad()
    def score(self, prompts: Sequence[PromptRecord], completions: Sequence[Sequence[int]]) -> list[list[float]]:
        batch = _to(build_batch(self.processor, list(prompts), [list(c) for c in completions]), self.device)
        logp, mask = completion_logprobs(self.model, batch)
        return [logp[i][mask[i]].tolist() for i in range(len(completions))]

    def update_weights(self, payload: WeightsPayload) -> None:
        self.model.load_state_dict(dict(named_tensors(payload)), strict=False)

    def reset_caches(self) -> None:
        pass
