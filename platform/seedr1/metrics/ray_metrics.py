"""Prometheus metrics of the data pipeline and the evaluation job, through Ray's metrics API.

Ray exports them from its Prometheus endpoint with a ``ray_`` prefix (``ray_seedr1_data_records_total``). They are
created on first use and only in a process connected to Ray (a local run without Ray records nothing). Labels stay
bounded: annotation file names, schema field names, levels, the run folder's name; never sample ids.
(Per-step training metrics are the ``MetricsSink`` gauges; serving has its own in ``serve/app.py``.)
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
