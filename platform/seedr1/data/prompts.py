"""From a ``Sample`` to the chat prompt: option arrangement (the official shuffle, or a fixed order) and messages.

Training samples carry an answer and negative answers: three negatives are drawn and the four options arranged by
the option-order policy. The RNG is seeded per (run seed, sample_id, epoch), so a run is reproducible and a resumed
run sees exactly the options it saw before. Validation and LongVideoBench keep their options as given.
"""
from __future__ import annotations

import random
from typing import Literal

from seedr1.data.prompt_text import LETTERS
from seedr1.data.schema import Sample

OptionOrder = Literal["shuffle", "sorted", "as_given"]


def sample_rng(seed: int, sample_id: str, epoch: int) -> random.Random:
    # String seeds hash with SHA-512 inside `random`: stable across processes and PYTHONHASHSEED.
    return random.Random(f"{seed}:{sample_id}:{epoch}")


def arrange_options(sample: Sample, policy: OptionOrder = "shuffle", seed: int = 0,
                    epoch: int = 0) -> tuple[list[str], str]:
    """(options in display order, gold letter)."""
    if sample.kind != "train":
        if sample.gold_letter is None:
            raise ValueError(f"sample {sample.sample_id}: no gold letter")
        return list(sample.options), sample.gold_letter
    rng = sample_rng(seed, sample.sample_id, epoch)
    negatives = rng.sample(sample.negative_answers, 3)
    if policy == "as_given":
        negatives = [n for n in sample.negative_answers if n in negatives]
        options = negatives + [sample.answer]
    elif policy == "sorted":
        options = sorted(negatives + [sample.answer])
    elif policy == "shuffle":
        options = negatives + [sample.answer]
        rng.shuffle(options)
    else:
        raise ValueError(f"unknown option order {policy!r} (shuffle, sorted, as_given)")
    return options, LETTERS[options.index(sample.answer)]


def user_message(text: str, has_video: bool, has_image: bool) -> list[dict]:
    """The official content order: [video (if any), image, text]; media are placeholders filled by the engine."""
    content = ([{"type": "video"}] if has_video else []) + ([{"type": "image"}] if has_image else [])
    return [{"role": "user", "content": content + [{"type": "text", "text": text}]}]


def answer_target(letter: str) -> str:
    """The official answer-only target (SFT without chain of thought)."""
    return f"<answer>{letter}.</answer>"
