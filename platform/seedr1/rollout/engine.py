"""The rollout-engine seam: one interface, one implementation per backend (vLLM CPU/GPU build, transformers)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Optional, Sequence

from seedr1.data.pipeline import PromptRecord


@dataclass
class Sampling:
    """How to sample completions (one config for every engine)."""

    n: int = 1
    max_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    seed: Optional[int] = None
    stop: Optional[list[str]] = None  # stop strings (not included in the text)


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    logprobs: list[float] = field(default_factory=list)  # per generated token, under the sampling policy
    finish_reason: Optional[str] = None
    prompt_tokens: int = 0  # tokens of the prompt after media expansion (usage accounting)


def completion_texts(tokenizer, token_ids: Sequence[Sequence[int]]) -> list[str]:
    """Completions' text as every engine reports it: special tokens skipped, no trailing incomplete UTF-8 character
    (``decode`` renders one as U+FFFD; vLLM's incremental detokenizer never emits it), so the same tokens get the
    same text, and the same reward, whichever engine sampled them."""
    return [t.rstrip("\ufffd") for t in tokenizer.batch_decode([list(ids) for ids in token_ids],
                                                                skip_special_tokens=True)]


def prompt_seeds(seed: int, count: int, n: int) -> list[int]:
    """One seed per prompt of a call. vLLM draws a prompt's j-th sample from seed + j, so a single seed for every
    prompt would give sample j of each prompt the same random numbers; the 1000003 spacing keeps the seeds of the
    rollout actors (seed + k) and of consecutive steps apart while count x n stays below it."""
    return [(seed * 1000003 + i * n) % 2 ** 63 for i in range(count)]


class RolloutEngine(ABC):
    @abstractmethod
    def generate(self, prompts: Sequence[PromptRecord], sampling: Sampling) -> list[list[Completion]]:
        """``sampling.n`` completions for each prompt (media included)."""

    @abstractmethod
    def update_weights(self, payload: bytes) -> None:
        """Load new policy weights (safetensors bytes of changed parameters), then reset caches."""

    # Collective weight sync (RolloutConfig.weight_sync="collective"); engines without it keep these defaults.
    def weight_group_size(self) -> int:
        """Processes of this engine that join the trainer's weight group."""
        raise NotImplementedError(f"{type(self).__name__} has no collective weight sync; use weight_sync=object_store")

    def join_weight_group(self, host: str, port: int, offset: int, world_size: int, backend: str,
                          timeout_s: float) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no collective weight sync")

    def receive_weights(self, buckets: list) -> None:
        """Receive the broadcast buckets (``weight_sync.plan_buckets``) and load them, then reset caches."""
        raise NotImplementedError(f"{type(self).__name__} has no collective weight sync")

    @abstractmethod
    def reset_caches(self) -> None:
        """Drop prefix and encoder caches (stale after a weight change)."""

    @abstractmethod
    def score(self, prompts: Sequence[PromptRecord], completions: Sequence[Sequence[int]]) -> list[list[float]]:
        """Log-probabilities of given completion tokens under the current weights."""
