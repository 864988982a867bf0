"""Score a predictions file against SEED-Bench-R1 annotations with the official rule (`algo.rewards.is_correct`).

Predictions are JSONL rows ``{"sample_id": ..., "response": "..."}`` (extra keys allowed; ``k`` numbers the draws
when the evaluation job sampled several answers per question). Every annotated sample counts: one without a
prediction is wrong and listed under ``missing`` (unless the caller names it ``rejected``: its media could not be
read). A prediction for an unknown sample, a sample predicted twice in one draw or a malformed row is a
``ScoringError`` naming the sample (and the file and line when read from a file). The summary also carries the
rule-based reasoning analysis of `evaluate.reasoning`.
"""
from __future__ import annotations

import json
import statistics
from typing import Iterable, Optional

from seedr1.algo.rewards import is_correct
from seedr1.data.annotations import AnnotationError, BadRecord, kind_of, raw_lines, read_annotations
from seedr1.data.schema import LEVELS, Sample
from seedr1.evaluate.reasoning import analyse
from seedr1.storage import get_storage


class ScoringError(ValueError):
    """Predictions that cannot be scored; ``index`` is the offending prediction's position, when there is one."""

    def __init__(self, message: str, index: Optional[int] = None):
        super().__init__(message)
        self.index = index


def _tally(correct_flags: Iterable[bool]) -> dict:
    flags = list(correct_flags)
    correct = sum(flags)
    return {"accuracy": correct / len(flags) if flags else 0.0, "n": len(flags), "correct": correct}


def _level_order(level: str) -> tuple:
    return (0, LEVELS.index(level), "") if level in LEVELS else (1, 0, str(level))


def _line_of(path: str, sample_id: str):
    """The line (list position for a JSON list) of ``sample_id`` in an annotation file, for an error message."""
    data = get_storage(path).read_bytes(path)
    return next((lineno for lineno, raw in raw_lines(path, data, kind_of(path))
                 if isinstance(raw, dict) and str(raw.get("sample_id", raw.get("id"))) == sample_id), "?")


def read_samples(paths: list[str]) -> list[Sample]:
    """The samples of several annotation files. A sample_id in two files is an ``AnnotationError`` naming both
    places, raised before anything is generated (``read_annotations`` checks within one file)."""
    samples, first_in = [], {}
    for path in paths:
        for s in read_annotations(path):
            if s.sample_id in first_in:
                other = first_in[s.sample_id]
                raise AnnotationError(BadRecord(path, _line_of(path, s.sample_id), s.sample_id, "sample_id",
                                                f"also in {other}:{_line_of(other, s.sample_id)}"))
            first_in[s.sample_id] = path
            samples.append(s)
    return samples


def _responses_by_id(samples: list[Sample], predictions: list[dict], rejected=frozenset()) -> dict[str, str]:
    """sample_id -> response, after checking every prediction row and every sample."""
    known = set()
    for sample in samples:
        if sample.sample_id in known:
            raise ScoringError(f"sample_id {sample.sample_id!r} appears twice in the annotations")
        # a rejected record read from shards alone is known by its id (and an earlier answer's gold letter) only:
        # without a gold letter it counts wrong
        if not sample.gold_letter and sample.sample_id not in rejected and sample.kind != "rejected":
            raise ScoringError(f"sample_id {sample.sample_id!r} ({sample.kind}) has no gold letter; only validation "
                               "and LongVideoBench annotations can be scored")
        known.add(sample.sample_id)
    responses: dict[str, str] = {}
    for i, row in enumerate(predictions):
        if not isinstance(row, dict):
            raise ScoringError(f"prediction must be a JSON object, got {type(row).__name__}", i)
        sid = row.get("sample_id")
        if sid is None or isinstance(sid, bool) or not isinstance(sid, (str, int)):
            raise ScoringError(f"prediction needs a sample_id (string or integer), got {sid!r}", i)
        sid = str(sid)
        if not isinstance(row.get("response"), str):
            raise ScoringError(f"prediction for sample_id {sid!r} needs a string response", i)
        if sid not in known:
            raise ScoringError(f"prediction for sample_id {sid!r}, which is not in the annotations", i)
        if sid in responses:
            raise ScoringError(f"sample_id {sid!r} is predicted twice", i)
        responses[sid] = row["response"]
    return responses


def _levels(samples: list[Sample]) -> list:
    return sorted({s.task_level for s in samples if s.task_level is not None}, key=_level_order)


def _reasoning(samples: list[Sample], responses: list[dict[str, str]]) -> tuple[dict, dict]:
    """The reasoning analysis over every answer of every draw in ``responses``: overall and by level."""
    def of(chosen: list[Sample]) -> dict:
        pairs = [(r[s.sample_id], s.options) for r in responses for s in chosen if s.sample_id in r]
        return analyse([text for text, _ in pairs], [options for _, options in pairs])

    return of(samples), {lv: of([s for s in samples if s.task_level == lv]) for lv in _levels(samples)}


def _score(samples: list[Sample], predictions: list[dict], rejected=frozenset()) -> tuple[dict, dict[str, str]]:
    responses = _responses_by_id(samples, predictions, rejected)
    right = {s.sample_id: s.sample_id in responses and bool(s.gold_letter)
             and is_correct(responses[s.sample_id], s.gold_letter) for s in samples}
    domains = sorted({s.domain for s in samples if s.domain is not None})
    reasoning, reasoning_by_level = _reasoning(samples, [responses])
    return {
        **_tally(right.values()),
        "by_level": {lv: _tally(right[s.sample_id] for s in samples if s.task_level == lv) for lv in _levels(samples)},
        "by_domain": {d: _tally(right[s.sample_id] for s in samples if s.domain == d) for d in domains},
        "missing": [s.sample_id for s in samples if s.sample_id not in responses and s.sample_id not in rejected],
        "reasoning": reasoning,
        "reasoning_by_level": reasoning_by_level,
    }, responses


def score(samples: list[Sample], predictions: list[dict], rejected=frozenset()) -> dict:
    """Accuracy overall, by level and by domain (missing predictions count wrong), plus the reasoning analysis.
    ``rejected``: sample_ids whose media could not be read; unanswered they count wrong, left out of ``missing``."""
    return _score(samples, predictions, set(rejected))[0]


def score_draws(samples: list[Sample], predictions: list[dict], draws: Optional[int] = None,
                rejected=frozenset()) -> dict:
    """``score`` of each draw: rows carry ``k`` (0, 1, ...) when the evaluation job sampled several answers per
    question; rows without it are draw 0. One draw: its score. Several: every ``accuracy`` and ``correct`` is the
    mean over the draws (so correct / n is the accuracy), ``accuracy_std`` their std, ``missing`` the samples
    missing in any draw, ``reasoning`` over every draw's answers, and ``samples`` the number of draws. Also
    ``l3_by_domain`` (the paper's L3 table). ``draws``: how many to expect (default: as many as the rows carry)."""
    rejected = set(rejected)
    by_draw: dict[int, list[tuple[int, dict]]] = {}
    for i, row in enumerate(predictions):
        k = row.get("k", 0) if isinstance(row, dict) else 0
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ScoringError(f"prediction 'k' (the draw) must be an integer >= 0, got {k!r}", i)
        by_draw.setdefault(k, []).append((i, row))
    draws = draws or max(by_draw, default=0) + 1
    l3 = [s for s in samples if s.task_level == "L3"]
    l3_ids = {s.sample_id for s in l3}
    per_draw, responses = [], []
    for k in range(draws):
        rows = by_draw.get(k, [])
        try:
            summary, answered = _score(samples, [row for _, row in rows], rejected)
        except ScoringError as e:  # the index back into ``predictions``, for file:line
            raise ScoringError(str(e), None if e.index is None else rows[e.index][0]) from None
        l3_rows = [row for _, row in rows if str(row.get("sample_id")) in l3_ids]
        summary["l3_by_domain"] = score(l3, l3_rows, rejected)["by_domain"]
        per_draw.append(summary)
        responses.append(answered)
    summary = per_draw[0]
    if draws > 1:
        def mean_std(values):
            return statistics.fmean(values), statistics.pstdev(values)

        # Every figure over all draws, not draw 0's: a report showing "50.0" over "0/4" would contradict itself.
        summary["accuracy"], summary["accuracy_std"] = mean_std([s["accuracy"] for s in per_draw])
        summary["correct"] = statistics.fmean(s["correct"] for s in per_draw)
        for key in ("by_level", "by_domain", "l3_by_domain"):
            for name, entry in summary[key].items():
                entry["accuracy"], entry["accuracy_std"] = mean_std([s[key][name]["accuracy"] for s in per_draw])
                entry["correct"] = statistics.fmean(s[key][name]["correct"] for s in per_draw)
        missing = {sid for s in per_draw for sid in s["missing"]}
        summary["missing"] = [s.sample_id for s in samples if s.sample_id in missing]
        summary["reasoning"], summary["reasoning_by_level"] = _reasoning(samples, responses)
        summary["samples"] = draws
    return summary


def read_predictions(path: str) -> tuple[list[object], list[int]]:
    """The rows of a predictions JSONL file (local or s3://) and their line numbers; bad JSON names file:line."""
    text = get_storage(path).read_bytes(path).decode("utf-8")
    rows, lines = [], []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ScoringError(f"{path}:{lineno}: malformed JSON: {e.msg} at column {e.colno}") from None
        lines.append(lineno)
    return rows, lines


def score_files(annotation_files: list[str], predictions_file: str) -> dict:
    """`score_draws` of a predictions JSONL file (the evaluation job's, or any with sample_id + response rows)
    against annotation files; errors name the predictions file and line."""
    samples = read_samples(annotation_files)
    rows, lines = read_predictions(predictions_file)
    try:
        return score_draws(samples, rows)
    except ScoringError as e:
        if e.index is None:
            raise
        raise ScoringError(f"{predictions_file}:{lines[e.index]}: {e}", e.index) from None
