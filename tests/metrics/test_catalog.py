"""The metric catalog: flat names of nested rows, and help/unit of fixed and per-function names."""
import numpy as np
import pytest

from seedr1.metrics.catalog import GENERIC, METRICS, describe, flatten

# The keys the GRPO job logs (the brief's list, with one reward function "accuracy" for the patterns).
GRPO_NAMES = [
    "step", "reward_mean", "reward_std", "reward/accuracy", "reward_std/accuracy", "reward_failures/accuracy",
    "accuracy", "format_rate", "kl", "clip_fraction", "entropy", "loss", "response_length", "groups_dropped",
    "rollout_tokens", "rollout_tokens_per_s", "train_tokens", "train_tokens_per_s", "lr", "rollout_restarts",
    "staleness", "rank_token_imbalance", "seconds/data", "seconds/rollout", "seconds/reward", "seconds/reference",
    "seconds/update", "seconds/sync", "seconds/step",
]


def test_flatten_nested_row_keeps_numeric_leaves_as_floats():
    row = {"step": 3, "reward_mean": 0.5, "ok": True, "note": "text", "none": None, "list": [1, 2],
           "reward/format": 1, "seconds": {"step": 1.5, "rollout": 0.25, "tag": "x"},
           "deep": {"a": {"b": 2}}, "empty": {}}
    flat = flatten(row)
    assert flat == {"step": 3.0, "reward_mean": 0.5, "ok": 1.0, "reward/format": 1.0,
                    "seconds/step": 1.5, "seconds/rollout": 0.25, "deep/a/b": 2.0}
    assert all(type(v) is float for v in flat.values())


def test_flatten_takes_numpy_scalars():
    assert flatten({"a": np.float32(1.5), "b": np.int64(2), "c": np.bool_(True)}) == {"a": 1.5, "b": 2.0, "c": 1.0}


@pytest.mark.parametrize("name", GRPO_NAMES)
def test_every_grpo_metric_has_help_and_unit(name):
    help_text, unit = describe(name)
    assert (help_text, unit) != GENERIC
    assert help_text.endswith(".") and unit


@pytest.mark.parametrize("pattern, fn", [("reward", "format"), ("reward_std", "my_len"), ("reward_failures", "acc")])
def test_describe_fills_the_function_name_of_pattern_entries(pattern, fn):
    help_text, _ = describe(f"{pattern}/{fn}")
    assert f" {fn} " in help_text and "<" not in help_text


def test_describe_unknown_names_is_generic():
    assert describe("something_new") == GENERIC
    assert describe("reward/a/b") == GENERIC  # a pattern part is one path segment
    assert describe("seconds/unknown_stage") == GENERIC


def test_catalog_names_are_unique():
    names = [m.name for m in METRICS]
    assert len(names) == len(set(names))
