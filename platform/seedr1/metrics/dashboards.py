"""Grafana dashboards as code: training (GRPO, SFT), data, evaluation and serving, built from the metric names the
jobs export; plus Ray's own dashboards as Ray generates them. ``seedr1 dashboards build`` writes them,
``seedr1 dashboards push`` provisions them through Grafana's HTTP API (``grafana-client``).

Every panel queries metrics by the names the code exports (``MetricsSink`` gauges ``seedr1_<job>_<name>``,
``metrics/ray_metrics.py``, ``serve/app.py``), with Ray's ``ray_`` prefix; ``tests/metrics`` scrapes a real run to
check that no panel queries a metric nobody emits, and that the committed copies match this code.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from seedr1.metrics import ray_metrics
from seedr1.metrics.catalog import describe
from seedr1.metrics.sink import prometheus_name

UNITS = {"seconds": "s", "fraction": "percentunit", "nats": "short", "tokens/s": "short"}
REWARD_FNS = ("accuracy", "format")  # the built-in reward functions (custom ones show under their own names)
STAGES = ("data", "rollout", "reward", "reference", "update", "sync")

# Per-step training metrics by dashboard row (catalog names; see metrics/catalog.py for what each means).
GRPO_ROWS = {
    "Rewards": ["reward_mean", "reward_std", *(f"reward/{f}" for f in REWARD_FNS), "accuracy", "format_rate",
                *(f"reward_failures/{f}" for f in REWARD_FNS), "groups_dropped"],
    "Policy": ["loss", "kl", "clip_fraction", "entropy", "engine_logprob_gap", "lr"],
    "Throughput": ["response_length", "rollout_tokens_per_s", "train_tokens_per_s", "rank_token_imbalance",
                   "generate_s", "staleness", "rollout_restarts"],
}
SFT_ROWS = {"Training": ["loss", "lr", "train_tokens", "target_tokens", "train_tokens_per_s"]}
SFT_STAGES = ("data", "update")

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def _panel(title: str, targets: list[tuple[str, str]], unit: str = "short", description: str = "",
           kind: str = "timeseries") -> dict:
    return {"type": kind, "title": title, "description": description, "datasource": DATASOURCE,
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [{"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend, "datasource": DATASOURCE}
                        for i, (expr, legend) in enumerate(targets)]}


def _row(title: str) -> dict:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


def _variables(run_metric: str | None) -> list[dict]:
    out = [{"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
            "current": {}, "hide": 0}]
    if run_metric:  # the run folder's name: one line per run, pick any
        out.append({"name": "run", "label": "Run", "type": "query", "datasource": DATASOURCE,
                    "query": {"query": f"label_values({run_metric}, run)", "refId": "run"},
                    "definition": f"label_values({run_metric}, run)", "multi": True, "includeAll": True,
                    "current": {"text": "All", "value": "$__all"}, "refresh": 2, "hide": 0})
    return out


def _layout(items: list[dict]) -> list[dict]:
    """Grafana grid positions: rows full width, panels two per line."""
    y, x, panels = 0, 0, []
    for pid, item in enumerate(items, start=1):
        item = {**item, "id": pid}
        if item["type"] == "row":
            y, x = y + (8 if x else 0), 0
            item["gridPos"] = {"h": 1, "w": 24, "x": 0, "y": y}
            y += 1
        else:
            item["gridPos"] = {"h": 8, "w": 12, "x": x, "y": y}
            x = 12 - x
            y += 8 if x == 0 else 0
        panels.append(item)
    return panels


def _dashboard(uid: str, title: str, items: list[dict], run_metric: str | None) -> dict:
    return {"uid": uid, "title": title, "tags": ["seedr1"], "timezone": "browser", "schemaVersion": 39,
            "editable": True, "refresh": "30s", "time": {"from": "now-6h", "to": "now"},
            "templating": {"list": _variables(run_metric)}, "panels": _layout(items)}


def _gauge(job: str, name: str) -> str:
    return "ray_" + prometheus_name(job, name)


def _training(job: str, rows: dict, stages: tuple) -> dict:
    items = []
    for row, names in rows.items():
        items.append(_row(row))
        for name in names:
            help_text, unit = describe(name)
            items.append(_panel(name, [(f'{_gauge(job, name)}{{run=~"$run"}}', "{{run}}")], UNITS.get(unit, "short"),
                                help_text))
    items += [_row("Time"),
              _panel("seconds per stage", [(f'{_gauge(job, f"seconds/{s}")}{{run=~"$run"}}', f"{{{{run}}}} {s}")
                                           for s in stages], "s", "Wall time of each stage of a step."),
              _panel("seconds per step", [(f'{_gauge(job, "seconds/step")}{{run=~"$run"}}', "{{run}}")], "s",
                     describe("seconds/step")[0]),
              _panel("progress (step)", [(f'{_gauge(job, "step")}{{run=~"$run"}}', "{{run}}")], "short",
                     describe("step")[0]),
              _panel("events", [(f'sum by (run, kind) (ray_seedr1_{job}_events_total{{run=~"$run"}})',
                                 "{{run}} {{kind}}")], "short",
                     "Rare events so far: checkpoints, resumes, rollout actor restarts, weight-sync failures, weights resent.")]
    if job == "grpo":
        items.insert(-1, _panel("weight sync", [(f'{_gauge(job, "seconds/sync")}{{run=~"$run"}}', "{{run}} total"),
                                                (f'{_gauge(job, "seconds/sync_engine")}{{run=~"$run"}}',
                                                 "{{run}} engine load")], "s", describe("seconds/sync")[0]))
    return _dashboard(f"seedr1-{job}", f"seedr1 / {job.upper()} training", items, _gauge(job, "step"))


def _data() -> dict:
    r, rej, fr = (f"ray_{n}" for n in (ray_metrics.DATA_RECORDS, ray_metrics.DATA_REJECTS, ray_metrics.DATA_FRAMES))
    items = [_row("Data pipeline"),
             _panel("records/s", [(f"sum by (file) (rate({r}[1m]))", "{{file}}")], "short",
                    "Records decoded and yielded per second, by annotation file."),
             _panel("frames/s", [(f"sum by (file) (rate({fr}[1m]))", "{{file}}")], "short",
                    "Video frames decoded per second."),
             _panel("rejected records", [(f"sum by (file, field) ({rej})", "{{file}} {{field}}")], "short",
                    "Records dropped (corrupt or missing media, schema errors), by the field at fault."),
             _panel("bad fraction", [(f"sum({rej}) / clamp_min(sum({rej}) + sum({r}), 1)", "bad")], "percentunit",
                    "Rejected share of all records; the job stops above data.max_bad_fraction.")]
    return _dashboard("seedr1-data", "seedr1 / data pipeline", items, None)


def _evaluation() -> dict:
    a, c, q, acc = (f"ray_{n}" for n in (ray_metrics.EVAL_ANSWERED, ray_metrics.EVAL_CORRECT,
                                          ray_metrics.EVAL_QUESTIONS, ray_metrics.EVAL_ACCURACY))
    items = [_row("Evaluation"),
             _panel("progress", [(f'sum by (run) ({a}{{run=~"$run"}}) / on (run) {q}{{run=~"$run"}}', "{{run}}")],
                    "percentunit", "Answered share of the evaluation's questions."),
             _panel("questions/s", [(f'sum by (run) (deriv({a}{{run=~"$run"}}[1m]))', "{{run}}")], "short",
                    "Answers per second."),
             _panel("running accuracy", [(f'sum by (run, level) ({c}{{run=~"$run"}}) / '
                                          f'sum by (run, level) ({a}{{run=~"$run"}})', "{{run}} {{level}}")],
                    "percentunit", "Correct share of the answers so far, by level."),
             _panel("final accuracy", [(f'{acc}{{run=~"$run"}}', "{{run}} {{level}}")], "percentunit",
                    "Accuracy per level when the evaluation finished (level all: overall).", kind="bargauge")]
    return _dashboard("seedr1-evaluation", "seedr1 / evaluation", items, f"ray_{ray_metrics.EVAL_QUESTIONS}")


def _serving() -> dict:
    req, lat, tin, tout = (f"ray_{n}" for n in (ray_metrics.SERVE_REQUESTS, ray_metrics.SERVE_LATENCY,
                                                 ray_metrics.SERVE_PROMPT_TOKENS, ray_metrics.SERVE_COMPLETION_TOKENS))
    items = [_row("Requests"),
             _panel("requests/s by code", [(f"sum by (code) (rate({req}[1m]))", "{{code}}")], "reqps",
                    "Chat completion requests per second."),
             _panel("error rate", [(f'sum(rate({req}{{code!="200"}}[5m])) / clamp_min(sum(rate({req}[5m])), 1e-9)',
                                    "errors")], "percentunit", "Share of requests answered with an error (4xx/5xx)."),
             _panel("latency", [(f"histogram_quantile({q}, sum by (le) (rate({lat}_bucket[5m])))", f"p{int(q * 100)}")
                                for q in (0.5, 0.9, 0.99)], "s", "Request latency percentiles."),
             _panel("tokens/s", [(f"sum(rate({tin}[1m]))", "prompt"), (f"sum(rate({tout}[1m]))", "completion")],
                    "short", "Prompt (media expanded) and completion tokens per second.")]
    return _dashboard("seedr1-serving", "seedr1 / serving", items, None)


def ray_dashboards() -> dict[str, dict]:
    """Ray's own dashboards (cluster, Serve, Data, Train), as the installed Ray generates them."""
    from ray.dashboard.modules.metrics import grafana_dashboard_factory as factory

    out = {}
    for name in ("default", "serve", "serve_deployment", "data", "train"):
        content = getattr(factory, f"generate_{name}_grafana_dashboard")()
        content = content[0] if isinstance(content, tuple) else content
        out[f"ray-{name.replace('_', '-')}.json"] = json.loads(content)
    return out


def build_dashboards(include_ray: bool = True) -> dict[str, dict]:
    """File name -> dashboard JSON."""
    ours = [_training("grpo", GRPO_ROWS, STAGES), _training("sft", SFT_ROWS, SFT_STAGES), _data(), _evaluation(),
            _serving()]
    out = {f"{d['uid']}.json": d for d in ours}
    if include_ray:
        out.update(ray_dashboards())
    return out


def write_dashboards(out_dir: str | Path, include_ray: bool = True) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, dash in sorted(build_dashboards(include_ray).items()):
        (out / name).write_text(json.dumps(dash, indent=1, sort_keys=True) + "\n")
        paths.append(out / name)
    return paths


def queried_metrics(dashboard: dict) -> set[str]:
    """The seedr1 metric names a dashboard's panels query (histograms by their base name)."""
    names = set()
    for panel in dashboard.get("panels", []):
        for target in panel.get("targets", []):
            names |= set(re.findall(r"ray_seedr1_[a-z0-9_]+", target.get("expr", "")))
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}
