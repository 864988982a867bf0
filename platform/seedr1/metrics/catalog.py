"""Every per-step training metric, by the flat name it has in TensorBoard and Prometheus.

A metrics row is the dict a job logs each step (nested dicts allowed, e.g. ``{"seconds": {"step": 1.2}}``);
``flatten`` turns it into flat names (``seconds/step``). Names with a ``<...>`` part are patterns: one metric
per reward function or stage. A name not in the catalog is still logged; it just gets a generic help text.
"""
from __future__ import annotations

import numbers
import re
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Metric:
    """One catalog entry: a flat name (or a pattern with one ``<part>``), a one-line help and a unit."""

    name: str
    help: str
    unit: str


# SFT metrics join this list when the SFT job logs through the sink (loss, lr, seconds/... are shared).
METRICS = (
    Metric("step", "Optimizer steps done so far (the row's step, 1-based).", "steps"),
    Metric("reward_mean", "Mean total (weighted) reward over the step's completions.", "reward"),
    Metric("reward_std", "Standard deviation of the total reward over the step's completions.", "reward"),
    Metric("reward/<fn>", "Mean value of reward function <fn> over the step's completions.", "reward"),
    Metric("reward_std/<fn>", "Standard deviation of reward function <fn> over the step's completions.", "reward"),
    Metric("reward_failures/<fn>", "Completions for which reward function <fn> raised (scored 0).", "completions"),
    Metric("accuracy", "Fraction of completions whose answer matches the gold answer.", "fraction"),
    Metric("format_rate", "Fraction of completions in the expected answer format.", "fraction"),
    Metric("kl", "Mean per-token KL divergence of the policy from the reference model.", "nats"),
    Metric("clip_fraction", "Fraction of tokens whose probability ratio was clipped.", "fraction"),
    Metric("entropy", "Mean per-token entropy of the policy on the completions.", "nats"),
    Metric("engine_logprob_gap", "Mean |trainer - rollout engine| log-prob of the sampled tokens: ~0 on-policy "
           "after a correct weight sync; staleness or a broken sync raises it (logged at rollout.temperature 1: "
           "the engines report T=1 log-probs).", "nats"),
    Metric("loss", "GRPO loss of the step (mean over ranks).", "loss"),
    Metric("response_length", "Mean completion length.", "tokens"),
    Metric("groups_dropped", "Prompt groups dropped because all their rewards were equal (no signal).", "groups"),
    Metric("truncated_rate", "Fraction of completions cut at rollout.max_tokens without an end token (left out of the "
           "loss with algo.mask_truncated_completions).", "fraction"),
    Metric("rollout_tokens", "Completion tokens generated in the step.", "tokens"),
    Metric("rollout_tokens_per_s", "Completion tokens generated per second of generation.", "tokens/s"),
    Metric("generate_s", "Generation time of the slowest rollout actor in the step.", "seconds"),
    Metric("target_tokens", "SFT target (assistant) tokens that carried loss in the step, all workers.", "tokens"),
    Metric("train_tokens", "Tokens (prompt and completion) trained on in the step, all ranks.", "tokens"),
    Metric("train_tokens_per_s", "Tokens trained on per second of the update.", "tokens/s"),
    Metric("rank_token_imbalance", "Tokens trained on by the busiest trainer rank over the ranks' mean (1: even; "
           "each gradient reduction waits for the busiest).", "ratio"),
    Metric("lr", "Learning rate of the step.", "1"),
    Metric("rollout_restarts", "Rollout actor restarts so far in this run.", "restarts"),
    Metric("staleness", "Policy versions between the generating and the trained policy (1: overlapped).", "steps"),
    Metric("seconds/data", "Time to take the step's prompts.", "seconds"),
    Metric("seconds/rollout", "Time waiting for the step's completions.", "seconds"),
    Metric("seconds/reward", "Time scoring completions and building train samples.", "seconds"),
    Metric("seconds/reference", "Time for the reference model's log-probabilities (mean over ranks).", "seconds"),
    Metric("seconds/update", "Time for the optimizer step (forward, backward, update).", "seconds"),
    Metric("seconds/sync", "Time to gather the new weights and load them into the rollout engines.", "seconds"),
    Metric("seconds/sync_engine", "Load time of the slowest rollout engine for the new weights.", "seconds"),
    Metric("seconds/step", "Wall time of the whole step.", "seconds"),
    Metric("weight_sync_bytes", "Bytes trainer rank 0 sent to each rollout engine in the step's weight sync.", "bytes"),
    Metric("weight_sync_largest_message_bytes", "Largest single message (one bucket) of the step's weight sync; at "
           "most rollout.weight_sync_bucket_mb unless one tensor is larger (vLLM's NCCL packing: plus one tensor).",
           "bytes"),
    Metric("weight_sync_buckets", "Buckets in the step's weight sync (one weight update on each engine).", "buckets"),
)

GENERIC = ("Metric without a catalog entry.", "")

_PART = re.compile(r"<[^>]+>")


def _pattern(name: str) -> re.Pattern:
    """The regex of a catalog name: each ``<part>`` matches one path segment (re.escape leaves ``<>`` as is)."""
    return re.compile("^" + _PART.sub("([^/]+)", re.escape(name)) + "$")


def describe(name: str) -> tuple[str, str]:
    """(help, unit) of a flat metric name; pattern entries get the matched part filled into their help."""
    for metric in METRICS:
        if "<" not in metric.name:
            if metric.name == name:
                return metric.help, metric.unit
            continue
        match = _pattern(metric.name).match(name)
        if match:
            return _PART.sub(match.group(1), metric.help), metric.unit
    return GENERIC


def flatten(row: dict, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a (nested) row as ``{"a/b": float}``; strings, lists and None are left out."""
    # numbers.Real: bool, int, float and numpy numbers (np.float32 is no float subclass); np.bool_ is no Real.
    flat: dict[str, float] = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "/"))
        elif isinstance(value, (numbers.Real, np.bool_)):
            flat[name] = float(value)
    return flat
