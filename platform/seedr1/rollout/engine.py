"""The rollout-engine seam: one interface, one implementation per backend (vLLM CPU/GPU build, transformers)."""
from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence, Union

from seedr1.data.pipeline import PromptRecord

WeightsPayload = Union[bytes, Mapping[str, object]]  # safetensors bytes, or parameter name -> numpy array / tensor


def array_state(state: Mapping) -> dict:
    """A CPU state dict as numpy arrays (no copy): Ray's object store takes them with one copy and hands them to an
    actor without another, where safetensors bytes cost a serialisation here and a parse and copy there."""
    arrays = {}
    for name, t in state.items():
        try:
            arrays[name] = t.detach().cpu().numpy()
        except TypeError as e:  # bf16, fp8: numpy has no such dtype
            raise TypeError(f"array_state: {name} is {t.dtype}, which numpy cannot hold; send it as fp32 or as "
                            "safetensors bytes (safetensors_payload)") from e
    return arrays


def safetensors_payload(payload: WeightsPayload) -> bytes:
    """The payload as safetensors bytes (unchanged if it already is)."""
    if isinstance(payload, (bytes, bytearray)):
        return bytes(payload)
    from safetensors.torch import save

    return save({name: t.contiguous() for name, t in named_tensors(payload)})


def named_tensors(payload: WeightsPayload) -> list:
    """The ``(name, tensor)`` pairs of a weights payload. Arrays from the object store are read-only views of
    shared memory; the tensors over them are only read (copied into the engine's parameters)."""
    import warnings

    import torch

    if isinstance(payload, (bytes, bytearray, memoryview)):
        from safetensors.torch import load

        return list(load(bytes(payload)).items())
    with warnings.catch_warnings():  # torch warns that a read-only array makes a tensor it must not write to
        warnings.simplefilter("ignore", UserWarning)
        return [(name, t if isinstance(t, torch.Tensor) else torch.from_numpy(t)) for name, t in payload.items()]


@dataclass
class Sampling:
    """How to sample completions (one config for every engine)."""

    n: int = 1
    max_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # the k likeliest tokens only; 0: off
    seed: Optional[int] = None  # the call's seed; each prompt's own derives from it and the prompt's sample_id
    stop: Optional[list[str]] = None  # stop strings (not included in the text)
    seeds: Optional[list[int]] = None  # each prompt's own seed, given (a served request's), instead of ``seed``


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


def prompt_seeds(sampling: Sampling, prompts: Sequence[PromptRecord]) -> Optional[list[int]]:
    """One seed per prompt of a call (None when the call has none): ``sampling.seeds`` as given, or derived from
    ``sampling.seed``, the prompt's sample_id and how often that id came earlier in the call, not from the prompt's
    position, so a question draws the same samples whatever batch, actor or resumed run it lands in. vLLM draws a
    prompt's j-th sample from its seed + j; hashed 63-bit seeds keep those streams apart."""
    if sampling.seeds is not None:
        if len(sampling.seeds) != len(prompts):
            raise ValueError(f"{len(sampling.seeds)} seeds for {len(prompts)} prompts")
        return list(sampling.seeds)
    if sampling.seed is None:
        return None
    seen: Counter = Counter()
    seeds = []
    for record in prompts:
        key = f"{sampling.seed}:{record.sample_id}:{seen[record.sample_id]}"
        seen[record.sample_id] += 1
        seeds.append(int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") >> 1)
    return seeds


class RolloutEngine(ABC):
    @abstractmethod
    def generate(self, prompts: Sequence[PromptRecord], sampling: Sampling) -> list[list[Completion]]:
        """``sampling.n`` completions for each prompt (media included)."""

    @abstractmethod
    def update_weights(self, payload: WeightsPayload) -> None:
        """Load new policy weights (the changed parameters: ``array_state`` arrays, tensors or safetensors bytes;
        ``named_tensors`` reads each), then reset caches."""

    # Weight sync: one weight update per sync on vLLM's weight-transfer protocol (rollout.weight_transfer). This
    # default serves engines without vLLM: buckets arrive inline (weight_sync=object_store) and load at once.
    def weight_transfer_backend(self) -> str:
        """The engine's weight-transfer backend (vLLM's ``weight_transfer_config.backend``)."""
        from seedr1.rollout.weight_transfer import SEEDR1_BACKEND

        return SEEDR1_BACKEND

    def weight_group_size(self) -> int:
        """Processes of this engine that take part in a sync (each a rank of a collective transfer group)."""
        return 1

    def init_weight_transfer(self, init_info: dict) -> None:
        if init_info.get("transport") != "object_store":
            raise NotImplementedError(f"{type(self).__name__} takes weights through the object store only "
                                      f"(got transport {init_info.get('transport')!r}); use weight_sync=object_store")

    def start_weight_update(self) -> None:
        pass

    def update_weight_chunk(self, update_info: dict) -> None:
        """One bucket: ``names``, ``dtype_names``, ``shapes`` and its ``packed`` bytes."""
        from seedr1.rollout.weight_transfer import unpack_bytes

        self.update_weights(dict(unpack_bytes(update_info["packed"], update_info["names"], update_info["shapes"],
                                              update_info["dtype_names"])))

    def finish_weight_update(self) -> None:
        self.reset_caches()

    def shutdown_weight_transfer(self) -> None:
        pass

    @abstractmethod
    def reset_caches(self) -> None:
        """Drop prefix and encoder caches (stale after a weight change)."""

    @abstractmethod
    def score(self, prompts: Sequence[PromptRecord], completions: Sequence[Sequence[int]]) -> list[list[float]]:
        """Log-probabilities of given completion tokens under the current weights."""
