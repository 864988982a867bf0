"""Rule-based rewards for GRPO on SEED-Bench-R1 (multiple-choice answers in `<answer>` tags).

A reward function takes the batch `(completions, golds)` and returns one float per sample.
"""
from __future__ import annotations

import logging
import re
from typing import Callable

from seedr1.config import ConfigError

log = logging.getLogger(__name__)

RewardFn = Callable[[list[str], list[str]], list[float]]

REWARDS: dict[str, RewardFn] = {}

_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_FORMAT_RE = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)


def register_reward(name: str) -> Callable[[RewardFn], RewardFn]:
    """Decorator that adds a reward function to `REWARDS` under `name` (names are unique)."""
    def deco(fn: RewardFn) -> RewardFn:
        if name in REWARDS:
            raise ValueError(f"reward {name!r} is already registered")
        REWARDS[name] = fn
        return fn
    return deco


def check_rewards(weights: dict) -> None:
    """Before a run starts: every reward name resolves and at least one weight is not 0 (else every advantage is 0)."""
    for name in weights:
        try:
            get_reward(name)
        except ValueError as e:
            raise ConfigError(f"algo.rewards: {e}") from None
    if not any(weights.values()):
        raise ConfigError(f"algo.rewards = {weights}: no reward with a nonzero weight, so every advantage is 0")


def get_reward(name: str) -> RewardFn:
    """The registered reward function called `name`, or a user's `package.module:function`."""
    if name in REWARDS:
        return REWARDS[name]
    if ":" in name:  # user rewards without touching this package: rewards: {"my_pkg.rewards:length": 0.1}
        import importlib

        module, _, attr = name.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"reward {name!r}: cannot import {attr} from {module} ({e})") from None
    raise ValueError(f"unknown reward {name!r}; known rewards: {sorted(REWARDS)} or 'module:function'")


def extract_answer(completion: str) -> str | None:
    """Stripped text of the FIRST `<answer>...</answer>`; None when there is no complete tag pair."""
    m = _ANSWER_RE.search(completion)
    return None if m is None else m.group(1).strip()


def is_correct(completion: str, gold: str) -> bool:
    """SEED-Bench-R1 rule: the extracted answer's first character equals the gold letter (case-sensitive).

    Shared by the training reward and the evaluation scorer so both grade identically.
    """
    answer = extract_answer(completion)
    return bool(answer) and answer[0] == gold.strip()


@register_reward("accuracy")
def accuracy_reward(completions: list[str], golds: list[str]) -> list[float]:
    """1.0 per sample whose answer is correct (see `is_correct`), else 0.0."""
    return [1.0 if is_correct(c, g) else 0.0 for c, g in zip(completions, golds, strict=True)]


@register_reward("format")
def format_reward(completions: list[str], golds: list[str]) -> list[float]:
    """1.0 when the completion starts with `<think>...</think>` followed by `<answer>...</answer>`."""
    return [1.0 if _FORMAT_RE.match(c) else 0.0 for c in completions]


def combine_rewards(
    completions: list[str], golds: list[str], weights: dict[str, float]
) -> tuple[list[float], dict[str, list[float]], dict[str, int]]:
    """Weighted sum of the named rewards.

    Returns (total per sample, per-reward per-sample values, per-reward count of samples whose call raised).
    A reward that raises on the batch is retried per sample; a sample that still raises scores 0.0,
    so one bad completion can't crash a training step. A wrong number of values is a bug: ValueError.
    """
    if len(completions) != len(golds):
        raise ValueError(f"{len(completions)} completions but {len(golds)} golds")
    if not weights:
        raise ValueError("weights names no reward")
    fns = {name: get_reward(name) for name in weights}  # fail on unknown names before any work

    per_reward: dict[str, list[float]] = {}
    failures: dict[str, int] = {}
    for name, fn in fns.items():
        failures[name] = 0
        try:
            values = _call(fn, completions, golds)
        except Exception as exc:  # noqa: BLE001 - any reward bug falls back to per-sample scoring
            log.warning("reward %r failed on the batch (%r); scoring per sample", name, exc)
            values = []
            for c, g in zip(completions, golds):
                try:
                    one = _call(fn, [c], [g])
                except Exception:  # noqa: BLE001
                    failures[name] += 1
                    values.append(0.0)
                    continue
                values.extend(_check_len(name, one, 1))
        else:
            values = _check_len(name, values, len(completions))
        per_reward[name] = values

    total = [sum(weights[n] * per_reward[n][i] for n in weights) for i in range(len(completions))]
    return total, per_reward, failures


def _call(fn: RewardFn, completions: list[str], golds: list[str]) -> list[float]:
    # Raised exceptions (including from float conversion) mean "this call failed"; length is checked outside.
    return [float(v) for v in fn(completions, golds)]


def _check_len(name: str, values: list[float], n: int) -> list[float]:
    if len(values) != n:
        raise ValueError(f"reward {name!r} returned {len(values)} values for {n} samples")
    return values
