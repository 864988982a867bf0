"""Prometheus metrics of the data pipeline, the evaluation job and the server, through Ray's metrics API.

Ray exports them from its Prometheus endpoint with a ``ray_`` prefix (``ray_seedr1_data_records_total``). They are
created on first use and only in a process connected to Ray (a local run without Ray records nothing). Labels stay
bounded: annotation file names, schema field names, levels, the run folder's name; never sample ids.
(Per-step training metrics are the ``MetricsSink`` gauges, named from ``catalog.py``.)
"""
from __future__ import annotations

_metrics: dict = {}


def _ray_on() -> bool:
    try:
        import ray

        return ray.is_initialized()
    except ImportError:
        return False


def _get(kind: str, name: str, description: str, tag_keys: tuple):
    if name not in _metrics:
        from ray.util import metrics

        _metrics[name] = getattr(metrics, kind)(name, description, tag_keys=tag_keys)
    return _metrics[name]


# Every name here, with its kind: the dashboards query them (``metrics/dashboards.py``).
DATA_RECORDS = "seedr1_data_records_total"
DATA_REJECTS = "seedr1_data_rejects_total"
DATA_FRAMES = "seedr1_data_frames_total"
EVAL_ANSWERED = "seedr1_evaluate_answered"
EVAL_CORRECT = "seedr1_evaluate_correct"
EVAL_QUESTIONS = "seedr1_evaluate_questions"
EVAL_ACCURACY = "seedr1_evaluate_accuracy"
SERVE_REQUESTS = "seedr1_serve_requests_total"
SERVE_LATENCY = "seedr1_serve_latency_seconds"
SERVE_PROMPT_TOKENS = "seedr1_serve_prompt_tokens_total"
SERVE_COMPLETION_TOKENS = "seedr1_serve_completion_tokens_total"
LATENCY_BUCKETS_S = [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60]


def data_record(file: str, ok: bool, field: str | None = None, frames: int = 0) -> None:
    """One record through the pipeline: kept (with its decoded frames) or rejected (by the field at fault)."""
    if not _ray_on():
        return
    if ok:
        _get("Counter", DATA_RECORDS, "Records decoded and yielded by the data pipeline.", ("file",)).inc(
            1, tags={"file": file})
        if frames:
            _get("Counter", DATA_FRAMES, "Video frames decoded by the data pipeline.", ("file",)).inc(
                frames, tags={"file": file})
    else:
        _get("Counter", DATA_REJECTS, "Records dropped by the data pipeline, by the field at fault.",
             ("file", "field")).inc(1, tags={"file": file, "field": field or "record"})


_eval_counts: dict = {}


def evaluation_answers(run: str, results: list[tuple[str, bool]]) -> None:
    """Answers just written: (level, correct) per answered question. Gauges of the running totals (a Ray counter
    cannot add 0, so 'no correct answer yet' would have no series at all)."""
    if not _ray_on() or not results:
        return
    answered = _get("Gauge", EVAL_ANSWERED, "Questions answered so far in this evaluation run.", ("run", "level"))
    correct = _get("Gauge", EVAL_CORRECT, "Questions answered correctly so far (official rule).", ("run", "level"))
    for level, right in results:
        n, c = _eval_counts.get((run, str(level)), (0, 0))
        _eval_counts[(run, str(level))] = (n + 1, c + int(right))
    for (r, level), (n, c) in _eval_counts.items():
        if r == run:
            answered.set(n, tags={"run": run, "level": level})
            correct.set(c, tags={"run": run, "level": level})


def evaluation_totals(run: str, questions: int, accuracy_by_level: dict | None = None) -> None:
    """Questions to answer in this evaluation and, at the end, the accuracy per level."""
    if not _ray_on():
        return
    _get("Gauge", EVAL_QUESTIONS, "Questions in the evaluation.", ("run",)).set(questions, tags={"run": run})
    for level, acc in (accuracy_by_level or {}).items():
        _get("Gauge", EVAL_ACCURACY, "Final accuracy of the evaluation, by level (all: overall).",
             ("run", "level")).set(acc, tags={"run": run, "level": str(level)})


def serve_request(code: int, seconds: float, usage: dict | None) -> None:
    """One chat request answered (any status): count by code, latency, tokens in and out."""
    if not _ray_on():
        return
    _get("Counter", SERVE_REQUESTS, "Chat requests by HTTP status code.", ("code",)).inc(1, tags={"code": str(code)})
    if SERVE_LATENCY not in _metrics:
        from ray.util.metrics import Histogram

        _metrics[SERVE_LATENCY] = Histogram(SERVE_LATENCY, "Chat request latency.", boundaries=LATENCY_BUCKETS_S,
                                            tag_keys=("code",))
    _metrics[SERVE_LATENCY].observe(seconds, tags={"code": str(code)})
    # Ray counters refuse to add 0 (a completion that stopped at once would turn into an error here)
    if usage and usage["prompt_tokens"] > 0:
        _get("Counter", SERVE_PROMPT_TOKENS, "Prompt tokens (media expanded).", ()).inc(usage["prompt_tokens"])
    if usage and usage["completion_tokens"] > 0:
        _get("Counter", SERVE_COMPLETION_TOKENS, "Completion tokens.", ()).inc(usage["completion_tokens"])
