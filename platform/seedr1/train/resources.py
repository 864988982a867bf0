"""GPU requests that cannot work, refused before anything starts (a ConfigError naming the keys).

- A trainer worker is one DeepSpeed rank, one NCCL rank: it needs exactly one GPU (or none, on CPU). A fraction puts
  two NCCL ranks on one GPU, which NCCL refuses; more than one GPU is never used by the one rank.
- An engine (vLLM) actor or replica may share a GPU only when the engines packed on it fit: each claims
  ``vllm.gpu_memory_utilization`` of the whole GPU at start, so floor(1 / gpus) engines on one GPU need
  floor(1 / gpus) x utilization <= ``MAX_SHARED_UTILIZATION`` (else the second fails at start). A fraction above one
  GPU (1.5) is never a whole number of devices for an engine.
"""
from __future__ import annotations

import math

from seedr1.config import ConfigError

# what engines packed on one GPU may claim together: the rest is the CUDA contexts' and the allocators' own
MAX_SHARED_UTILIZATION = 0.95


def check_trainer_gpus(gpus_per_worker: float, key: str = "trainer.gpus_per_worker") -> None:
    """0 (CPU) or exactly 1 GPU per trainer worker."""
    if gpus_per_worker not in (0, 1):
        why = ("a fraction puts two NCCL ranks on one GPU, which NCCL refuses" if gpus_per_worker < 1 else
               "one DeepSpeed rank uses one GPU; the rest would sit idle (add workers instead: trainer.num_workers)")
        raise ConfigError(f"{key} = {gpus_per_worker:g} must be 0 (CPU) or 1 (one NCCL rank per GPU): {why}")


def engines_per_gpu(gpus: float) -> int:
    """How many engines of ``gpus`` (0 < gpus < 1) Ray packs onto one GPU."""
    return math.floor(1 / gpus + 1e-9)


def check_engine_gpus(gpus: float, utilization: float, gpus_key: str, utilization_key: str,
                      shares_memory: bool = True) -> None:
    """An engine's GPU request: 0, a whole number, or a fraction below 1 whose packed engines fit in one GPU's memory
    (``shares_memory``: the engine claims ``utilization`` of the GPU; False for one that takes what it uses)."""
    if gpus > 1 and gpus != int(gpus):
        raise ConfigError(f"{gpus_key} = {gpus:g}: above 1 GPU it must be a whole number of GPUs "
                          f"({math.floor(gpus)} or {math.ceil(gpus)})")
    if not 0 < gpus < 1 or not shares_memory:
        return
    n = engines_per_gpu(gpus)
    if n * utilization > MAX_SHARED_UTILIZATION + 1e-9:
        fits = math.floor(MAX_SHARED_UTILIZATION / n * 100) / 100
        raise ConfigError(
            f"{gpus_key} = {gpus:g} puts {n} engines on one GPU and each claims {utilization_key} = {utilization:g} "
            f"of it ({n} x {utilization:g} = {n * utilization:.2f} > {MAX_SHARED_UTILIZATION}): the second fails at "
            f"start. Set {utilization_key} <= {fits:.2f} (with {gpus_key} = {gpus:g}), or {gpus_key} = 1 "
            "(one engine per GPU)")
