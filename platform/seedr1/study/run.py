"""The study: per seed, evaluate the base model, run SFT and GRPO from it on the same data, evaluate both; then the
side-by-side table and chart (mean +- std over seeds). Every number points at its run folder in study.json."""
from __future__ import annotations

import copy
import dataclasses
import json
import statistics
from pathlib import Path

from seedr1.config import StudyConfig, save_config

METHODS = ("base", "SFT", "GRPO")


def _final_hf(run_dir: Path, cfg) -> str:
    from seedr1.train.checkpoint import checkpoint_root, latest_complete

    uri = latest_complete(checkpoint_root(cfg), cfg.data.s3)
    if uri is None:
        raise RuntimeError(f"{run_dir}: the run left no complete checkpoint")
    return f"{uri}/hf"


def _evaluate(cfg: StudyConfig, model: str, out_dir: Path, name: str) -> dict:
    from seedr1.evaluate.run import run_evaluate

    ev = copy.deepcopy(cfg.evaluate)
    ev.model, ev.out_dir, ev.name, ev.data, ev.endpoint = model, str(out_dir), name, cfg.data, ""
    summary = run_evaluate(ev)
    summary["out_dir"] = str(out_dir)
    return summary


def run_seed(cfg: StudyConfig, seed: int, out: Path) -> dict[str, dict]:
    """One repetition: (warm-up) -> evaluate base -> SFT -> evaluate -> GRPO -> evaluate."""
    from seedr1.grpo.run import run_grpo
    from seedr1.model.loading import resolve_checkpoint
    from seedr1.sft.run import run_sft

    base = cfg.base_model  # as given: each job's workers resolve it on their own node (s3:// with data.s3)
    if cfg.perception_warmup:
        from seedr1.sft.warmup import perception_warmup

        warm = out / "warmup"
        if not (warm / "config.json").exists():  # a rerun of the study reuses finished stages
            perception_warmup(resolve_checkpoint(base, cfg.data.s3), cfg.data.root, warm,
                              dataclasses.replace(cfg.warmup, seed=seed))
        base = str(warm)
    results = {"base": _evaluate(cfg, base, out / "eval-base", "base")}
    results["base"]["model_path"] = base

    sft = copy.deepcopy(cfg.sft)
    sft.model, sft.run_dir, sft.data, sft.seed = base, str(out / "sft"), copy.deepcopy(cfg.data), seed
    sft.data.seed = seed  # the repetition's seed also draws the data order and option shuffles
    run_sft(sft)
    results["SFT"] = _evaluate(cfg, _final_hf(out / "sft", sft), out / "eval-sft", "SFT")

    grpo = copy.deepcopy(cfg.grpo)
    grpo.model, grpo.run_dir, grpo.data, grpo.seed = base, str(out / "grpo"), copy.deepcopy(cfg.data), seed
    grpo.data.seed = seed
    run_grpo(grpo)
    results["GRPO"] = _evaluate(cfg, _final_hf(out / "grpo", grpo), out / "eval-grpo", "GRPO")
    for method, run in (("SFT", out / "sft"), ("GRPO", out / "grpo")):
        results[method]["run_dir"] = str(run)
    return results


def run_study(cfg: StudyConfig) -> dict:
    from seedr1.evaluate.table import COLUMNS, bar_chart, columns_of, markdown_table

    from seedr1.grpo.run import check_grpo

    grpo = copy.deepcopy(cfg.grpo)
    grpo.data = cfg.data  # what run_seed gives it
    check_grpo(grpo)  # before the base evaluation and the SFT stage, not hours later
    from seedr1.cluster.outputs import make_output_dir
    from seedr1.cluster.stores import check_inputs

    check_inputs(cfg)
    out = make_output_dir(cfg.out_dir, "study")  # never inside Ray's unpacked working directory
    cfg.out_dir = str(out)
    if not cfg.data.root and not cfg.data.shards:
        from seedr1.data.synthetic import SynthSpec, write_synthetic

        root = out / "data"
        if not (root / "annotations" / "validation_L3.jsonl").exists():
            write_synthetic(root, SynthSpec(**cfg.synth_sizes))
        cfg.data.root = str(root)
    save_config(cfg, out)
    # One embedded Ray for every stage, sized for the largest (a cluster sized by the first, small stage would leave
    # GRPO's data tasks waiting for a CPU forever); every stage checked to fit before the first starts.
    from seedr1.cluster.check import check_fits
    from seedr1.cluster.demands import evaluate_groups, grpo_groups, prefixed, sft_groups
    from seedr1.cluster.fit import total
    from seedr1.train.launch import ensure_ray, worker_env

    stages = {"grpo": (prefixed(grpo_groups(grpo), "grpo."), cfg.grpo.cluster),
              "sft": (prefixed(sft_groups(cfg.sft), "sft."), cfg.sft.cluster),
              "evaluate": (prefixed(evaluate_groups(cfg.evaluate), "evaluate."), cfg.evaluate.cluster)}
    ensure_ray(max(total(groups).get("CPU", 0.0) for groups, _ in stages.values()), worker_env())
    for name, (groups, cluster) in stages.items():
        check_fits(f"study ({name} stage)", groups, cluster.wait_for_nodes_s)
    per_seed = {seed: run_seed(cfg, seed, out / f"seed{seed}") for seed in range(cfg.seeds)}

    mean, spread = {}, {}
    for method in METHODS:
        cols = [columns_of(per_seed[s][method]) for s in per_seed]
        mean[method] = {c: _mean([x[c] for x in cols]) for c in COLUMNS}
        if cfg.seeds > 1:
            spread[method] = {c: _std([x[c] for x in cols]) for c in COLUMNS}
    as_summary = {m: _summary_of(mean[m]) for m in METHODS}
    table = markdown_table(as_summary, spread or None)
    (out / "table.md").write_text(f"SEED-Bench-R1 accuracy (%), {cfg.seeds} seed(s)"
                                  f"{', mean ± std' if cfg.seeds > 1 else ''}\n\n{table}")
    bar_chart(as_summary, out / "chart.png")
    study = {"seeds": cfg.seeds, "columns": list(COLUMNS), "mean": mean, "std": spread,
             "runs": {str(s): {m: {k: r[k] for k in ("out_dir", "run_dir", "model_path") if k in r}
                               for m, r in res.items()} for s, res in per_seed.items()},
             "per_seed": {str(s): {m: columns_of(r) for m, r in res.items()} for s, res in per_seed.items()}}
    (out / "study.json").write_text(json.dumps(study, indent=1))
    print(f"[study] {out / 'table.md'}\n{table}", flush=True)
    return study


def _mean(values):
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _std(values):
    values = [v for v in values if v is not None]
    return statistics.pstdev(values) if len(values) > 1 else None


def _summary_of(columns: dict) -> dict:
    """A summary-shaped dict from paper columns, so the table/chart code reads both."""
    from seedr1.evaluate.table import DOMAINS

    return {"accuracy": columns["Overall"],
            "by_level": {lv: {"accuracy": columns[lv]} for lv in ("L1", "L2", "L3") if columns[lv] is not None},
            "l3_by_domain": {d: {"accuracy": columns[f"L3 {d}"]} for d in DOMAINS if columns[f"L3 {d}"] is not None}}
