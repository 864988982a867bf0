"""The evaluation job: answers from a checkpoint (a pool of vLLM actors) or an OpenAI-compatible endpoint, appended
to predictions.jsonl as they finish (a rerun skips what is done), then scored with the official rule
(`evaluate.scoring`), with the reasoning analysis, a paper-style table, a chart and a browsable HTML report."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from seedr1.algo.rewards import is_correct
from seedr1.config import ConfigError, EvaluateConfig, RolloutConfig, save_config
from seedr1.data.schema import Sample
from seedr1.evaluate.scoring import score_draws
from seedr1.metrics import ray_metrics
from seedr1.storage import absolute, join


def read_done(path: Path) -> dict[tuple[str, int], dict]:
    """Predictions already written, by (sample_id, k); a line cut short by a kill is dropped (and redone)."""
    done = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            done[(str(row["sample_id"]), int(row.get("k", 0)))] = row
    return done


def open_for_append(path: Path):
    """``path`` opened to append rows, cut back to its last complete line first: a row cut short by a kill would
    otherwise run into the first new row and make both unreadable."""
    if path.exists():
        with open(path, "rb+") as f:
            data = f.read()
            if data and not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)
    return open(path, "a", encoding="utf-8")


def _records(cfg: EvaluateConfig) -> Iterator:
    import ray

    from seedr1.data.pipeline import RecordStream, build_dataset, dataset_rows, iter_local

    if cfg.data.shards or ray.is_initialized():
        return iter(RecordStream(dataset_rows(build_dataset(cfg.data, cfg.files)), cfg.data))
    return iter(RecordStream(iter_local(cfg.data, cfg.files), cfg.data))


def _thumbnails(record) -> dict:
    """Small copies of the media for the HTML report (the full frames are not kept)."""
    from PIL import Image

    def small(a: np.ndarray) -> np.ndarray:
        im = Image.fromarray(a)
        im.thumbnail((112, 112))
        return np.asarray(im)

    frames = record.video
    if frames is not None:
        frames = np.stack([small(f) for f in frames[np.linspace(0, len(frames) - 1, min(8, len(frames))).astype(int)]])
    return {"frames": frames, "image": None if record.image is None else small(record.image)}


class _EnginePool:
    """vLLM actors on their own placement group: the rollout group used in training."""

    def __init__(self, cfg: EvaluateConfig, model: str):
        from seedr1.rollout.group import RolloutGroup
        from seedr1.train.launch import ensure_ray, worker_env

        rollout = RolloutConfig(engine="vllm", num_actors=cfg.num_actors, cpus_per_actor=cfg.cpus_per_actor,
                                gpus_per_actor=cfg.gpus_per_actor, num_samples=cfg.samples,
                                temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens, vllm=cfg.vllm)
        ensure_ray(cfg.num_actors * cfg.cpus_per_actor, worker_env())
        self.group = RolloutGroup.start(model, rollout, worker_env(), s3=cfg.data.s3)

    def generate(self, records: list, seed: int) -> list[list[str]]:
        groups, _ = self.group.generate(records, seed)
        return [[c.text for c in g] for g in groups]

    def close(self) -> None:
        self.group.close()


def _sample_of(record) -> Sample:
    """What scoring needs of a prompt record, when only shards (no annotation files) are at hand."""
    text = next((p["text"] for p in record.messages[0]["content"] if p["type"] == "text"), "")
    return Sample(sample_id=record.sample_id, kind=record.kind, question=text.split("\n")[0], answer="",
                  options=record.options, gold_letter=record.gold_letter, task_level=record.task_level,
                  domain=record.domain)


def run_evaluate(cfg: EvaluateConfig) -> dict:
    from seedr1.data.annotations import read_annotations
    from seedr1.evaluate.http_target import Rejected
    from seedr1.evaluate.reasoning import answer_letter, is_consistent
    from seedr1.evaluate.table import bar_chart, markdown_table

    out = Path(cfg.out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not cfg.data.root and not cfg.data.shards:
        raise ConfigError("data.root (or data.shards) is required: where the annotation files and media are")
    if cfg.samples > 1 and cfg.temperature == 0:
        raise ConfigError("samples > 1 needs temperature > 0 (greedy answers are all the same)")
    model = cfg.model
    if not cfg.endpoint:
        from seedr1.model.loading import resolve_for_workers

        model = resolve_for_workers(model)  # the vLLM actors do not run in this working directory
    cfg.data.root, cfg.data.shards = absolute(cfg.data.root), absolute(cfg.data.shards)  # nor do Ray Data's tasks
    name = cfg.name or (cfg.served_model if cfg.endpoint else Path(model.rstrip("/")).name)
    save_config(cfg, out)
    # Scored against the annotation files (every sample counts, rejected media too); shards alone: the records.
    samples = [s for f in cfg.files for s in read_annotations(join(cfg.data.root, f))] if cfg.data.root else []
    seen: list[Sample] = []
    pred_path = out / "predictions.jsonl"
    done = read_done(pred_path)
    t0, answered = time.perf_counter(), 0
    target, run = None, out.name
    ray_metrics.evaluation_totals(run, len(samples))
    thumbs, by_id = {}, {}
    with open_for_append(pred_path) as sink:
        def flush(batch: list) -> None:
            nonlocal answered, target
            todo = [r for r in batch if any((r.sample_id, i) not in done for i in range(cfg.samples))]
            if not todo:
                return
            if target is None:
                from seedr1.evaluate.http_target import EndpointTarget

                target = EndpointTarget(cfg.endpoint, cfg.served_model, cfg.api_key, cfg.concurrency,
                                        cfg.request_timeout_s) if cfg.endpoint else _EnginePool(cfg, model)
            if cfg.endpoint:
                texts = target.generate(todo, cfg.samples, cfg.temperature, cfg.top_p, cfg.max_tokens, cfg.seed)
            else:
                texts = target.generate(todo, cfg.seed)
            failure = None
            for r, answers in zip(todo, texts):
                error = None
                if isinstance(answers, Rejected):  # this sample only: an empty answer, counted wrong, error kept
                    error, answers = str(answers), [""] * cfg.samples
                    print(f"[evaluate] {r.sample_id}: refused by the endpoint, counted wrong: {error}", flush=True)
                elif isinstance(answers, Exception):  # the run fails, after writing the answers that came back
                    failure = failure or answers
                    continue
                ray_metrics.evaluation_answers(run, [(r.task_level, is_correct(t, r.gold_letter)) for t in answers])
                for i, text in enumerate(answers):
                    row = {"sample_id": r.sample_id, "k": i, "response": text, "task_level": r.task_level,
                           "domain": r.domain, **({"error": error} if error else {})}
                    if (r.sample_id, i) not in done:
                        sink.write(json.dumps(row) + "\n")
                        done[(r.sample_id, i)] = row
                sink.flush()
                answered += 1
            if failure is not None:
                raise failure
            rate = answered / (time.perf_counter() - t0)
            left = max(len(samples) - len({sid for sid, _ in done}), 0)
            print(f"[evaluate] {len({sid for sid, _ in done})}/{len(samples) or '?'} answered, {rate:.2f} q/s, "
                  f"ETA {left / max(rate, 1e-9):.0f} s", flush=True)

        try:
            batch = []
            for record in _records(cfg):
                by_id[record.sample_id] = record.options
                seen.append(_sample_of(record))
                if cfg.html_report:
                    thumbs[record.sample_id] = _thumbnails(record)
                batch.append(record)
                if len(batch) == cfg.batch_size:
                    flush(batch)
                    batch = []
            flush(batch)
        finally:
            if isinstance(target, _EnginePool):
                target.close()
    seconds = time.perf_counter() - t0
    samples = samples or seen
    predictions = list(read_done(pred_path).values())
    summary = score_draws(samples, predictions, cfg.samples)
    summary.update(model=name, checkpoint=None if cfg.endpoint else model, endpoint=cfg.endpoint or None,
                   files=cfg.files, samples=cfg.samples, temperature=cfg.temperature, seconds=round(seconds, 2),
                   answered_this_run=answered)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    ray_metrics.evaluation_totals(run, summary["n"], {"all": summary["accuracy"],
                                                      **{lv: v["accuracy"] for lv, v in summary["by_level"].items()}})
    (out / "table.md").write_text(markdown_table({name: summary}))
    bar_chart({name: summary}, out / "chart.png")
    if cfg.html_report:
        from seedr1.evaluate.report import write_html_report

        items = []
        golds = {s.sample_id: s for s in samples}
        for p in predictions:
            if p.get("k", 0) != 0 or p["sample_id"] not in golds:
                continue
            s, options = golds[p["sample_id"]], by_id.get(p["sample_id"], golds[p["sample_id"]].options)
            items.append({"sample_id": s.sample_id, "task_level": s.task_level, "domain": s.domain,
                          "question": s.question, "options": options, "gold_letter": s.gold_letter,
                          "response": p["response"], "answer_letter": answer_letter(p["response"], options),
                          "correct": is_correct(p["response"], s.gold_letter),
                          "consistent": is_consistent(p["response"], options),
                          **thumbs.get(s.sample_id, {"frames": None, "image": None})})
        write_html_report(out / "report.html", summary, items, title=f"{name} on SEED-Bench-R1")
    print(f"[evaluate] {name}: accuracy {summary['accuracy']:.3f} over {summary['n']} questions -> {out}", flush=True)
    return summary
