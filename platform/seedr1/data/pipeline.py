"""The data pipeline: annotation records + media bytes -> model-ready prompt records, on Ray Data or in-process.

Ray Data path (laptop or cluster, same code): read tar shards from S3 or a folder -> split into records ->
decode video (decord, from memory) and image in a parallel map stage -> rows. Without shards it reads the
annotation files and fetches media through the storage module instead. Corrupt or missing media never crash the
job: the record becomes a reject row (reason, file, line, field), is counted and written to the rejects sink by
``RecordStream``; above ``max_bad_fraction`` the stream stops with a ``DataQualityError``.
Order is deterministic for a (seed, epoch), so a data position (epoch, index) can be saved and resumed.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np

from seedr1.config import ConfigError, DataConfig
from seedr1.data.annotations import kind_of, raw_lines
from seedr1.data.media import MediaError, decode_clip, decode_image
from seedr1.data.prompt_text import build_prompt_text
from seedr1.data.prompts import arrange_options, user_message
from seedr1.data.schema import RecordError, parse_record
from seedr1.metrics import ray_metrics
from seedr1.storage import StorageError, StorageNotFound, get_storage, join


class DataQualityError(RuntimeError):
    """Too many records were rejected."""


@dataclass
class PromptRecord:
    """A model-ready sample: chat messages with media placeholders, the decoded media and the answer key."""

    sample_id: str
    kind: str
    messages: list[dict]
    video: Optional[np.ndarray]  # uint8 [T, H, W, 3] or None
    image: Optional[np.ndarray]  # uint8 [H, W, 3] or None
    gold_letter: Optional[str]
    options: list[str] = field(default_factory=list)
    task_level: Optional[str] = None
    domain: Optional[str] = None
    response: Optional[str] = None  # SFT target (cot files)
    # frames per second ``video`` stands for (Qwen2.5-VL spaces temporal positions by it); the data default
    video_fps: float = DataConfig.fps


_ROW_KEYS = ("ok", "sample_id", "kind", "messages", "gold_letter", "options", "task_level", "domain", "response",
             "video", "video_shape", "video_fps", "image", "image_shape", "file", "line", "field", "reason")
REJECT_KEYS = ("file", "line", "sample_id", "field", "reason")  # a rejects file's line, and a validation report's


def _reject(file: str, line, sample_id, field_name, reason: str) -> dict:
    row = dict.fromkeys(_ROW_KEYS)
    row.update(ok=False, file=file, line=line, sample_id=sample_id, field=field_name, reason=reason)
    return row


def prepare(meta: dict, media: dict, cfg: DataConfig, epoch: int, sample=None) -> dict:
    """One raw record (``meta`` = {file, kind, line, record}) and its media bytes -> a row (ok or reject).
    ``sample``: the record already parsed, when the caller had to parse it to know its media."""
    file, line, raw = meta["file"], meta.get("line"), meta["record"]
    sid = str(raw.get("sample_id")) if isinstance(raw, dict) and raw.get("sample_id") is not None else None
    if sample is None:
        try:
            sample = parse_record(meta["kind"], raw, line or 0)
        except RecordError as e:
            return _reject(file, line, sid, e.field, e.reason)
    video = image = fps = None
    try:
        if sample.video:
            if media.get("mp4") is None:
                return _reject(file, line, sample.sample_id, sample.video_field, f"missing video {sample.video}")
            video, fps = decode_clip(media["mp4"], sample.video, cfg.fps, cfg.min_frames, cfg.max_frames,
                                     cfg.frame_size)
        if sample.image:
            if media.get("png") is None:
                return _reject(file, line, sample.sample_id, sample.image_field, f"missing image {sample.image}")
            image = decode_image(media["png"], sample.image, cfg.image_size)
    except MediaError as e:
        return _reject(file, line, sample.sample_id, sample.video_field if video is None and sample.video
                       else sample.image_field, str(e))
    row = dict.fromkeys(_ROW_KEYS)
    row.update(ok=True, sample_id=sample.sample_id, kind=sample.kind, task_level=sample.task_level,
               domain=sample.domain, file=file, line=line)
    if sample.kind == "cot":
        messages = [{**m, "content": [{"type": p["type"]} if p["type"] in ("video", "image") else p
                                      for p in m["content"]]} if isinstance(m["content"], list) else m
                    for m in sample.messages]
        row.update(messages=json.dumps(messages), response=sample.response, options="[]")
    else:
        options, gold = arrange_options(sample, cfg.option_order, cfg.seed, epoch)
        text = build_prompt_text(sample.question, options, cfg.question_template, cfg.instruction)
        row.update(messages=json.dumps(user_message(text, video is not None, image is not None)),
                   gold_letter=gold, options=json.dumps(options))
    # Arrays stay arrays here (no copy); ``_to_table`` packs a block's worth into one Arrow buffer for Ray Data.
    if video is not None:
        row.update(video=video, video_shape=list(video.shape), video_fps=fps)
    if image is not None:
        row.update(image=image, image_shape=list(image.shape))
    return row


def to_record(row: dict) -> PromptRecord:
    def array(data, shape):  # an ndarray (in-process rows) or bytes (Ray Data rows)
        if data is None or isinstance(data, np.ndarray):
            return data
        return np.frombuffer(data, dtype=np.uint8).reshape([int(s) for s in shape])

    return PromptRecord(sample_id=row["sample_id"], kind=row["kind"], messages=json.loads(row["messages"]),
                        video=array(row["video"], row["video_shape"]), image=array(row["image"], row["image_shape"]),
                        gold_letter=row["gold_letter"], options=json.loads(row["options"] or "[]"),
                        task_level=row["task_level"], domain=row["domain"], response=row["response"],
                        video_fps=row["video_fps"] or DataConfig.fps)


# ---- sources ------------------------------------------------------------------------------------------------------
def raw_records(root: str, files: Iterable[str], cfg: DataConfig) -> Iterator[dict]:
    """``meta`` dicts for every line of the given annotation files (relative to root); bad JSON -> meta with error."""
    storage = get_storage(root, cfg.s3)
    for rel in files:
        path = join(root, rel)
        data, kind = storage.read_bytes(path), kind_of(rel)
        for lineno, record in raw_lines(path, data, kind):  # JSONL, or a JSON list (LongVideoBench)
            if isinstance(record, json.JSONDecodeError):
                record = {"__error__": f"malformed JSON: {record.msg} at column {record.colno}"}
            yield {"file": Path(rel).name, "kind": kind, "line": lineno, "record": record}


def prepare_from_root(meta: dict, root: str, cfg: DataConfig, epoch: int) -> dict:
    """Fetch a record's media through the storage module, then ``prepare`` it. A media file that exists but cannot
    be read (a folder, no permission, S3 failing after retries) makes this record a reject, not the job fail."""
    try:
        sample = parse_record(meta["kind"], meta["record"], meta.get("line") or 0)
    except RecordError:  # bad JSON or schema: ``prepare`` makes the same parse its reject
        return prepare(meta, {}, cfg, epoch)
    storage = get_storage(root, cfg.s3)
    media = {}
    for ext, (rel, field_name) in sample.media().items():
        path = join(root, rel)
        try:
            media[ext] = storage.read_bytes(path) if storage.exists(path) else None
        except StorageError as e:
            return _reject(meta["file"], meta["line"], sample.sample_id, field_name, str(e))
    return prepare(meta, media, cfg, epoch, sample)


def epoch_order(items: list, seed: int, epoch: int, shuffle: bool) -> list:
    if not shuffle:
        return list(items)
    items = list(items)
    random.Random(f"order:{seed}:{epoch}").shuffle(items)
    return items


def iter_local(cfg: DataConfig, files: list[str], epoch: int = 0, shuffle: bool = False) -> Iterator[dict]:
    """The single-process path (small evaluations, tests, the benchmark baseline): rows in order."""
    metas = epoch_order(list(raw_records(cfg.root, files, cfg)), cfg.seed, epoch, shuffle)
    for meta in metas:
        yield prepare_from_root(meta, cfg.root, cfg, epoch)


# ---- Ray Data -----------------------------------------------------------------------------------------------------
# Rows per table a decode task yields. Ray Data gathers them into blocks of up to DataContext.target_max_block_size
# and ships each block as soon as it is full, so a task holds at most about one block, never a whole decoded shard.
_ROWS_PER_BLOCK = 8


def _row_schema():
    import pyarrow as pa

    text, shape = pa.string(), pa.list_(pa.int64())
    types = dict.fromkeys(_ROW_KEYS, text)
    types.update(ok=pa.bool_(), line=pa.int64(), video=pa.large_binary(), image=pa.large_binary(),
                 video_shape=shape, image_shape=shape, video_fps=pa.float64())
    return pa.schema([(k, types[k]) for k in _ROW_KEYS])


def _binary_column(arrays: list):
    """uint8 arrays (or None) -> one Arrow binary column over a single buffer (one copy of the pixels)."""
    import pyarrow as pa

    sizes = np.array([0 if a is None else a.nbytes for a in arrays], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    data = np.empty(int(offsets[-1]), dtype=np.uint8)
    for a, start, n in zip(arrays, offsets, sizes):
        if a is not None:
            data[start:start + n] = a.reshape(-1)
    valid = np.array([a is not None for a in arrays])
    return pa.Array.from_buffers(pa.large_binary(), len(arrays),
                                 [pa.py_buffer(np.packbits(valid, bitorder="little")), pa.py_buffer(offsets),
                                  pa.py_buffer(data)], null_count=int((~valid).sum()))


def _to_table(rows: list[dict]):
    """Rows -> an Arrow block with a fixed schema. Letting Ray Data build it from row dicts (``pa.Table.from_pylist``
    on ``tobytes()`` copies) cost about a third as much CPU as the decoding itself (measured: 0.42 s vs 1.5 s per
    200 records of 252px video), which is what kept the pipeline below the single-process loop on 2 cores."""
    import pyarrow as pa

    schema = _row_schema()
    columns = [_binary_column([r[k] for r in rows]) if k in ("video", "image")
               else pa.array([r[k] for r in rows], type=schema.field(k).type) for k in _ROW_KEYS]
    return pa.Table.from_arrays(columns, schema=schema)


def _blocks(rows: Iterable[dict]) -> Iterator:
    """Stream rows out as Arrow tables of ``_ROWS_PER_BLOCK`` rows."""
    block = []
    for row in rows:
        block.append(row)
        if len(block) == _ROWS_PER_BLOCK:
            yield _to_table(block)
            block = []
    if block:
        yield _to_table(block)


def _member_meta(member: dict, path: str) -> dict:
    """A shard member's ``{key}.json`` -> the record's meta; ValueError naming the shard and member if it is not one."""
    try:
        meta = json.loads(member["json"])
        if not isinstance(meta, dict) or not {"file", "kind", "record"} <= meta.keys():
            raise ValueError("expected an object with file, kind and record")
    except KeyError:
        raise ValueError(f"shard {path}: record {member['key']} has no {member['key']}.json member") from None
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"shard {path}: member {member['key']}.json is not a record: {e}") from None
    return meta


def _shard_rows(shard: bytes, path: str, files: list[str], cfg: DataConfig, epoch: int,
                expected: Optional[int] = None, shuffle: bool = False) -> Iterator[dict]:
    """A shard's rows for ``files``. ``expected``: how many records of ``files`` the manifest lists in this shard;
    when the shard breaks, each record it lost is one reject, so the bad fraction counts them all. ``shuffle``: the
    records in a seeded order per (seed, epoch, shard), on top of the shuffled shard order (a small data set is one
    shard); a resumed run sees the same order."""
    from seedr1.data.shards import iter_tar_members

    name, read = Path(path).name, 0
    members = list(iter_tar_members(shard, path))
    broken = members.pop() if members and members[-1]["key"] is None else None  # the records after it are lost
    if shuffle:
        random.Random(f"order:{cfg.seed}:{epoch}:{name}").shuffle(members)
    for member in members:
        try:
            meta = _member_meta(member, path)
        except ValueError as e:  # a corrupt member: its record is a reject, the rest of the shard goes on
            read += 1
            yield _reject(name, None, None, None, str(e))
            continue
        if meta["file"] in files:
            read += 1
            yield prepare(meta, {"mp4": member.get("mp4"), "png": member.get("png")}, cfg, epoch)
    if broken is not None:
        yield from _lost_rows(name, 1 if expected is None else max(expected - read, 1), broken["error"])


def _lost_rows(name: str, lost: int, reason: str) -> Iterator[dict]:
    """One reject per record a shard lost (cut short, or unreadable), so the bad fraction counts them all."""
    for i in range(lost):
        yield _reject(name, None, None, None, reason + (f" (lost record {i + 1} of {lost})" if lost > 1 else ""))


def _decode_shards(batch, files: list[str], cfg: DataConfig, epoch: int, expected: dict,
                   shuffle: bool = False) -> Iterator:
    """One task's shard(s): read through the storage module (its retries and timeouts), split, decode, prepare, in
    the same task: no raw-media hop through the object store, and no second stage competing for the same CPUs. A
    shard the store says is not there loses its records: each is a reject, and the stream goes on unless they pass
    ``max_bad_fraction``. Any other storage error (unreachable after the retries, access denied, no credentials)
    fails the task: silently fewer records would train on less data, or score an evaluation lower."""
    storage = get_storage(cfg.shards, cfg.s3)
    for uri in batch["uri"].to_pylist():
        name = Path(uri).name
        try:
            shard = storage.read_bytes(uri)
        except StorageNotFound as e:  # its message names the shard's URI
            yield from _blocks(_lost_rows(name, max(expected.get(name) or 1, 1), f"missing shard: {e}"))
            continue
        yield from _blocks(_shard_rows(shard, uri, files, cfg, epoch, expected.get(name), shuffle))


def _prepare_json_rows(batch, root: str, cfg: DataConfig, epoch: int) -> Iterator:
    yield from _blocks(prepare_from_root(json.loads(m), root, cfg, epoch) for m in batch["meta"].to_pylist())


def build_dataset(cfg: DataConfig, files: list[str], epoch: int = 0, shuffle: bool = False, start_row: int = 0):
    """A Ray Dataset of rows (ok and reject) for the given annotation files, from shards or from the root.

    ``start_row`` (resume) drops the epoch's first rows before any media is fetched; shards are read whole, so there
    the caller skips them (``RecordStream(skip_rows=...)``)."""
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # deterministic order: a data position can be resumed
    ctx.enable_progress_bars = cfg.progress_bars
    ctx.print_on_execution_start = cfg.progress_bars  # the dataset's id and plan: 2-3 lines each time a stream opens
    names = [Path(f).name for f in files]
    if cfg.shards:
        from seedr1.data.shards import read_manifest

        manifest = read_manifest(cfg.shards, cfg.s3)
        uris = epoch_order([join(cfg.shards, s["name"]) for s in manifest["shards"]
                            if set(s["files"]) & set(names)], cfg.seed, epoch, shuffle)
        if not uris:
            held = sorted({f for s in manifest["shards"] for f in s.get("files", {})})
            raise ConfigError(f"data.shards {cfg.shards}: no shard holds {', '.join(names)}; its manifest lists "
                              f"{', '.join(held) or 'no files'} (pack the root that has them, or fix the file names)")
        # One task per shard reads it (``_decode_shards``, through the storage module: its retries, and a shard the
        # store does not have becomes rejects, where ``read_binary_files`` failed the whole dataset) and decodes its
        # records, so raw media never make a hop through the object store and no second stage competes for the
        # CPUs. At most `concurrency` tasks run, each streaming blocks out (Ray Data joins our 8-row tables up to
        # its target block size, 128 MiB by default), so memory stays bounded (Ray Data's backpressure policies stay
        # on).
        concurrency = max(1, min(cfg.decode_concurrency, len(uris)))
        ds = ray.data.from_items([{"uri": u} for u in uris], override_num_blocks=len(uris))
        # Records of the requested files in each shard (the manifest's per-file counts): what a broken shard lost.
        expected = {s["name"]: sum(s.get("files", {}).get(n, 0) for n in names) for s in manifest["shards"]}
        return ds.map_batches(_decode_shards, batch_size=None, batch_format="pyarrow",
                              compute=ray.data.TaskPoolStrategy(size=concurrency),
                              fn_kwargs={"files": names, "cfg": cfg, "epoch": epoch, "expected": expected,
                                         "shuffle": shuffle})
    metas = epoch_order(list(raw_records(cfg.root, files, cfg)), cfg.seed, epoch, shuffle)[start_row:]
    if not metas:
        return ray.data.from_items([])
    # Records travel as JSON text: Arrow would unify nested dicts across rows and add null keys (a CoT text part
    # would gain "image": None, which the chat template counts as one more image placeholder).
    ds = ray.data.from_items([{"meta": json.dumps(m)} for m in metas],
                             override_num_blocks=max(1, min(len(metas), 8 * cfg.decode_concurrency)))
    return ds.map_batches(_prepare_json_rows, batch_size=None, batch_format="pyarrow",
                          fn_kwargs={"root": cfg.root, "cfg": cfg, "epoch": epoch},
                          compute=ray.data.TaskPoolStrategy(size=cfg.decode_concurrency))


def _media_views(column, shapes: list) -> list:
    """An Arrow binary column of pixels -> uint8 arrays that view its buffer (no copy), None where null."""
    _, offsets, data = column.buffers()  # validity is read through is_null below
    offsets = np.frombuffer(offsets, dtype=np.int64)[column.offset:column.offset + len(column) + 1]
    data = np.frombuffer(data, dtype=np.uint8) if data is not None else np.empty(0, dtype=np.uint8)
    nulls = column.is_null().to_numpy(zero_copy_only=False)
    return [None if null else data[offsets[i]:offsets[i + 1]].reshape(shape)
            for i, (null, shape) in enumerate(zip(nulls, shapes))]


def dataset_rows(ds) -> Iterator[dict]:
    """The rows of a ``build_dataset`` dataset, in order, with video and image as uint8 arrays viewing the Arrow
    block they came in (they stay read-only and keep the block alive). ``ds.iter_rows()`` would first copy every
    video and image into a Python bytes object: one more pass over all the pixels, in the consuming process."""
    for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        if table.num_rows == 0 or "ok" not in table.column_names:
            continue
        for batch in table.to_batches():
            cols = {k: batch.column(k).to_pylist() for k in _ROW_KEYS if k not in ("video", "image")}
            for k in ("video", "image"):
                cols[k] = _media_views(batch.column(k), cols[f"{k}_shape"])
            for i in range(batch.num_rows):
                yield {k: cols[k][i] for k in _ROW_KEYS}


class RecordStream:
    """Iterate prompt records from rows; count, log and write rejects; stop when too many are bad."""

    def __init__(self, rows: Iterable[dict], cfg: DataConfig, rejects_path: Optional[str] = None, skip: int = 0,
                 skip_rows: int = 0, written: Optional[set] = None):
        self.rows, self.cfg = rows, cfg
        self.rejects_path = rejects_path or cfg.rejects_path or None
        self.written = written  # reject lines already in the file (a stream over several epochs writes each once)
        self.seen = self.rejected = 0
        self.skip = skip  # resume: ok records already consumed in this epoch
        self.skip_rows = skip_rows  # resume: rows (ok or not) already consumed, dropped unchecked
        self.rows_consumed = 0  # rows up to and including the last record yielded (a resumable position)
        self.reasons: dict[str, int] = {}

    def _write_reject(self, row: dict) -> None:
        if self.rejects_path:
            line = json.dumps({k: row[k] for k in REJECT_KEYS})
            if self.written is not None:
                if line in self.written:
                    return
                self.written.add(line)
            Path(self.rejects_path).parent.mkdir(parents=True, exist_ok=True)
            with open(self.rejects_path, "a") as f:
                f.write(line + "\n")

    def __iter__(self) -> Iterator[PromptRecord]:
        ok_index = 0
        for i, row in enumerate(self.rows):
            if i < self.skip_rows:
                continue
            self.seen += 1
            if not row["ok"]:
                self.rejected += 1
                key = (row["reason"] or "").split(":")[0][:60]
                self.reasons[key] = self.reasons.get(key, 0) + 1
                self._write_reject(row)
                ray_metrics.data_record(row["file"], ok=False, field=row["field"])
                print(f"[data] rejected {row['file']}:{row['line']} sample_id={row['sample_id']} "
                      f"field={row['field']}: {row['reason']}", flush=True)
                if self.seen >= self.cfg.min_records_for_bad_fraction and \
                        self.rejected / self.seen > self.cfg.max_bad_fraction:
                    raise DataQualityError(
                        f"{self.rejected} of {self.seen} records rejected ({self.rejected / self.seen:.0%} > "
                        f"max_bad_fraction {self.cfg.max_bad_fraction:.0%}); see "
                        f"{self.rejects_path or 'the log above'}; most common: {self.reasons}")
                continue
            ok_index += 1
            if ok_index <= self.skip:
                continue
            self.rows_consumed = i + 1
            record = to_record(row)
            ray_metrics.data_record(row["file"], ok=True, frames=0 if record.video is None else len(record.video))
            yield record
