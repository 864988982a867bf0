"""The evaluation job: answers from a checkpoint (a pool of vLLM actors) or an OpenAI-compatible endpoint, appended
to predictions.jsonl as they finish, then scored with the official rule (`evaluate.scoring`), with the reasoning
analysis, a paper-style table, a chart and a browsable HTML report.

A rerun in the same out_dir skips what is answered and asks again for what failed (rows with an ``error``); it is
refused when the settings that decide the answers (`answer_settings`, kept in predictions.settings.json) changed.
Records whose media could not be read count wrong, are listed as ``rejected`` and written to rejects.jsonl."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from seedr1.algo.rewards import is_correct
from seedr1.cluster.outputs import make_output_dir
from seedr1.cluster.stores import check_inputs
from seedr1.config import ConfigError, EvaluateConfig, RolloutConfig, save_config
from seedr1.data.schema import Sample
from seedr1.evaluate.scoring import read_samples, score_draws
from seedr1.metrics import ray_metrics
from seedr1.storage import LocalStorage, absolute, join
from seedr1.train.resources import check_engine_gpus


SETTINGS_FILE = "predictions.settings.json"
# A server refusing everything (a max_tokens over its limit, say) makes a broken run, not a score of 0: the run stops
# as soon as this many of its questions were asked and every one failed, and at the end when more than half did.
# Only this run's requests count (a resume asks again for the failed ones), and refusals bunched in one part of the
# data (records come file by file) do not stop a run early.
MIN_QUESTIONS_FOR_ERROR_RATE = 10


def read_done(path: Path) -> dict[tuple[str, int], dict]:
    """Predictions already written, by (sample_id, k); the last line cut short by a kill is dropped (and redone).
    Anything else unreadable is a ``ConfigError`` naming path:line."""
    done = {}
    if path.exists():
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                if lineno == len(lines) and not text.endswith("\n"):
                    continue
                raise ConfigError(f"{path}:{lineno}: malformed JSON: {e.msg} at column {e.colno}") from None
            sid = row.get("sample_id") if isinstance(row, dict) else None
            k = row.get("k", 0) if isinstance(row, dict) else 0
            if sid is None or isinstance(k, bool) or not isinstance(k, int):
                raise ConfigError(f"{path}:{lineno}: not a prediction row (needs 'sample_id' and an integer 'k'): "
                                  f"{line[:200]}")
            done[(str(sid), k)] = row
    return done


def open_for_append(path: Path):
    """``path`` opened to append rows. A last line cut short by a kill is cut off first (it would run into the first
    new row and make both unreadable); a complete last row missing only its newline gets it, since ``read_done``
    counted it as done."""
    if path.exists():
        with open(path, "rb+") as f:
            data = f.read()
            if data and not data.endswith(b"\n"):
                tail = data[data.rfind(b"\n") + 1:]
                try:
                    json.loads(tail)
                    f.write(b"\n")
                except ValueError:
                    f.truncate(data.rfind(b"\n") + 1)
    return open(path, "a", encoding="utf-8")


def answer_settings(cfg: EvaluateConfig, model: str) -> dict:
    """What decides the answers: the model (or endpoint and served model), the sampling, the data and the prompt.
    Answers made with other settings must not be mixed into one score."""
    d = cfg.data
    target = {"endpoint": cfg.endpoint, "served_model": cfg.served_model} if cfg.endpoint else {
        "model": model, "vllm.max_model_len": cfg.vllm.max_model_len, "vllm.dtype": cfg.vllm.dtype,
        "vllm.seed": cfg.vllm.seed}
    settings = {**target, "samples": cfg.samples, "temperature": cfg.temperature, "top_p": cfg.top_p,
                **({"top_k": cfg.top_k} if cfg.top_k else {}),  # absent when off: earlier runs' settings still match
                "max_tokens": cfg.max_tokens, "seed": cfg.seed, "files": cfg.files,
                **{f"data.{k}": getattr(d, k) for k in ("root", "shards", "fps", "min_frames", "max_frames",
                                                         "frame_size", "image_size", "question_template",
                                                         "instruction", "option_order", "seed")}}
    return json.loads(json.dumps(settings))  # as they read back from the file


def check_settings(out: Path, settings: dict, resuming: bool) -> None:
    """Refuse to add answers to a predictions.jsonl made with other settings; record them when a run starts."""
    path, predictions = out / SETTINGS_FILE, out / "predictions.jsonl"
    if resuming and path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise ConfigError(f"{path} is unreadable ({e}); it records the settings of the answers in {predictions}: "
                              "restore it, or start afresh in another out_dir") from None
        differ = [k for k in {**old, **settings} if old.get(k) != settings.get(k)]
        if differ:
            def short(v) -> str:
                return repr(v) if len(repr(v)) <= 60 else repr(v)[:57] + "..."

            changes = "; ".join(f"{k}: {short(old.get(k))} -> {short(settings.get(k))}" for k in differ)
            raise ConfigError(f"{predictions} holds answers made with other settings ({changes}); a rerun only adds "
                              f"to answers made with the same ones. To start afresh, pick another out_dir or delete "
                              f"{predictions}")
        return
    if resuming:  # written before the settings were recorded: nothing to compare with
        print(f"[evaluate] {predictions}: no {SETTINGS_FILE}, resuming on trust; the current settings are recorded",
              flush=True)
    LocalStorage().write_bytes(str(path), json.dumps(settings, indent=1).encode())  # atomic: a kill leaves no half file


def drop_error_rows(path: Path, done: dict) -> dict:
    """``done`` without the rows of requests that failed, which the file loses too (written anew, then moved into
    place): they are asked again, and the file keeps one row per (sample_id, k) for `seedr1 score`."""
    if not any("error" in row for row in done.values()):
        return done
    kept = {key: row for key, row in done.items() if "error" not in row}
    LocalStorage().write_bytes(str(path), "".join(json.dumps(row) + "\n" for row in kept.values()).encode())
    return kept


def _records(cfg: EvaluateConfig, rejects_path: Path, rejects: list, levels: dict) -> Iterator:
    """The prompt records; the rejected ones (media that could not be read) are written to ``rejects_path`` and
    appended to ``rejects`` (the pipeline's reject fields), whichever the source. ``levels``: file name -> the task
    levels of its decoded records."""
    import ray

    from seedr1.data.pipeline import REJECT_KEYS, RecordStream, build_dataset, dataset_rows, iter_local

    def noting(rows):
        for row in rows:
            if not row["ok"]:
                rejects.append({k: row[k] for k in REJECT_KEYS})
            else:
                levels.setdefault(row["file"], set()).add(row["task_level"])
            yield row

    if cfg.data.shards or ray.is_initialized():
        rows = dataset_rows(build_dataset(cfg.data, cfg.files))
    else:
        rows = iter_local(cfg.data, cfg.files)
    return iter(RecordStream(noting(rows), cfg.data, rejects_path=str(rejects_path)))


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
        from seedr1.cluster.demands import evaluate_groups
        from seedr1.train.launch import start_ray, worker_env

        rollout = RolloutConfig(engine="vllm", num_actors=cfg.num_actors, cpus_per_actor=cfg.cpus_per_actor,
                                gpus_per_actor=cfg.gpus_per_actor, node_labels=dict(cfg.node_labels),
                                num_samples=cfg.samples, temperature=cfg.temperature, top_p=cfg.top_p,
                                top_k=cfg.top_k, max_tokens=cfg.max_tokens, vllm=cfg.vllm)
        start_ray("evaluate", evaluate_groups(cfg), cfg.cluster, worker_env())
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


def _check_errors(errored: dict, asked: int, final: bool) -> None:
    """Stop when this run's requests failed at the endpoint: all of them so far, or more than half at the end (see
    MIN_QUESTIONS_FOR_ERROR_RATE). ``asked``: questions this run asked."""
    if errored and (2 * len(errored) > asked if final else len(errored) == asked >= MIN_QUESTIONS_FOR_ERROR_RATE):
        sid, message = next(iter(errored.items()))
        raise RuntimeError(f"{len(errored)} of the {asked} questions this run asked failed at the endpoint: stopped. "
                           f"The first ({sid}): {message}. The answers that came back are kept in predictions.jsonl; "
                           "fix the cause and rerun to ask again for the failed ones")


def run_evaluate(cfg: EvaluateConfig) -> dict:
    from seedr1.evaluate.http_target import Rejected
    from seedr1.evaluate.reasoning import answer_letter, is_consistent
    from seedr1.evaluate.table import bar_chart, markdown_table

    if not cfg.data.root and not cfg.data.shards:
        raise ConfigError("data.root (or data.shards) is required: where the annotation files and media are")
    check_inputs(cfg)
    out = make_output_dir(cfg.out_dir, "evaluate")  # never inside Ray's unpacked working directory
    cfg.out_dir = str(out)
    if cfg.samples > 1 and cfg.temperature == 0:
        raise ConfigError("samples > 1 needs temperature > 0 (greedy answers are all the same)")
    if not cfg.endpoint:  # the local vLLM pool's actors
        check_engine_gpus(cfg.gpus_per_actor, cfg.vllm.gpu_memory_utilization, "gpus_per_actor",
                          "vllm.gpu_memory_utilization")
    model = cfg.model
    if not cfg.endpoint:
        from seedr1.model.loading import resolve_for_workers

        model = resolve_for_workers(model)  # the vLLM actors do not run in this working directory
    cfg.data.root, cfg.data.shards = absolute(cfg.data.root), absolute(cfg.data.shards)  # nor do Ray Data's tasks
    name = cfg.name or (cfg.served_model if cfg.endpoint else Path(model.rstrip("/")).name)
    pred_path = out / "predictions.jsonl"
    done = read_done(pred_path)
    # Before config.yaml is overwritten. Failed requests alone are no answers to mix: new settings may start afresh.
    check_settings(out, answer_settings(cfg, model), resuming=any("error" not in row for row in done.values()))
    save_config(cfg, out)
    # Scored against the annotation files (every sample counts, rejected media too); shards alone: the records.
    samples = read_samples([join(cfg.data.root, f) for f in cfg.files]) if cfg.data.root else []
    seen: list[Sample] = []
    done = drop_error_rows(pred_path, done)
    errored: dict[str, str] = {}  # sample_id -> error, this run's failed requests in order
    rejects: list[dict] = []
    levels: dict[str, set] = {}
    rejects_path = out / "rejects.jsonl"
    rejects_path.write_text("")  # each run reads every record again, so writes every reject again
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
                texts = target.generate(todo, cfg.samples, cfg.temperature, cfg.top_p, cfg.max_tokens, cfg.seed,
                                        top_k=cfg.top_k)
            else:
                texts = target.generate(todo, cfg.seed)
            failure = None
            for r, answers in zip(todo, texts):
                error = None
                if isinstance(answers, Rejected):  # this sample only: an empty answer, counted wrong, error kept
                    error, answers = str(answers), [""] * cfg.samples
                    errored.setdefault(r.sample_id, error)
                    print(f"[evaluate] {r.sample_id}: failed at the endpoint, counted wrong (a rerun asks again): "
                          f"{error}", flush=True)
                elif isinstance(answers, Exception):  # the run fails, after writing the answers that came back
                    failure = failure or answers
                    continue
                ray_metrics.evaluation_answers(run, [(r.task_level, is_correct(t, r.gold_letter)) for t in answers])
                for i, text in enumerate(answers):
                    row = {"sample_id": r.sample_id, "k": i, "response": text, "task_level": r.task_level,
                           "domain": r.domain, "gold_letter": r.gold_letter, **({"error": error} if error else {})}
                    if (r.sample_id, i) not in done:
                        sink.write(json.dumps(row) + "\n")
                        done[(r.sample_id, i)] = row
                sink.flush()
                answered += 1
            if failure is not None:
                raise failure
            asked = len({sid for sid, _ in done})
            _check_errors(errored, answered, final=False)
            rate = answered / (time.perf_counter() - t0)
            left = max(len(samples) - asked, 0)
            print(f"[evaluate] {asked}/{len(samples) or '?'} answered ({len(errored)} failed), {rate:.2f} q/s, "
                  f"ETA {left / max(rate, 1e-9):.0f} s", flush=True)

        try:
            batch = []
            for record in _records(cfg, rejects_path, rejects, levels):
                by_id[record.sample_id] = record.options
                seen.append(_sample_of(record))
                if cfg.html_report:
                    thumbs[record.sample_id] = _thumbnails(record)
                batch.append(record)
                if len(batch) == cfg.batch_size:
                    flush(batch)
                    batch = []
            flush(batch)
            _check_errors(errored, answered, final=True)
        finally:
            if isinstance(target, _EnginePool):
                target.close()
    seconds = time.perf_counter() - t0
    samples = samples or seen
    # Rejected records count wrong, in n, unless an earlier run answered them (their media failed only now: the
    # answer stands). With shards alone the samples are the decoded records, so the rejected ones get stand-ins: at
    # the level of their file when its records share one (SEED-Bench-R1's files are one level each), domain unknown,
    # the gold letter an earlier answer's row carries. A record lost with its shard has no sample_id: it is named
    # after the shard.
    predictions = list(read_done(pred_path).values())
    gold = {str(p["sample_id"]): p["gold_letter"] for p in predictions if "error" not in p and p.get("gold_letter")}
    samples, known, counted = list(samples), {s.sample_id for s in samples}, {}  # counted: sample_id -> reject
    for i, r in enumerate(rejects):
        sid = r["sample_id"] or f"{r['file']}#{i}"
        if sid not in gold:
            counted[sid] = r
        if sid not in known:
            level = next(iter(levels[r["file"]])) if len(levels.get(r["file"], ())) == 1 else None
            samples.append(Sample(sample_id=sid, kind="rejected", question="", answer="", task_level=level,
                                  gold_letter=gold.get(sid)))
            known.add(sid)
    summary = score_draws(samples, predictions, cfg.samples, rejected=list(counted))
    summary.update(model=name, checkpoint=None if cfg.endpoint else model, endpoint=cfg.endpoint or None,
                   files=cfg.files, samples=cfg.samples, temperature=cfg.temperature, seconds=round(seconds, 2),
                   answered_this_run=answered, errors=len({p["sample_id"] for p in predictions if "error" in p}),
                   rejected=list(counted.values()))
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
    print(f"[evaluate] {name}: accuracy {summary['accuracy']:.3f} over {summary['n']} questions ({summary['errors']} "
          f"failed at the endpoint, {len(counted)} rejected media, {len(summary['missing'])} unanswered) -> {out}",
          flush=True)
    return summary
