"""Reading annotation files (JSONL, or a JSON list for LongVideoBench) into ``Sample``s.

Errors name the file, the line and the field; ``read_annotations(..., on_error=...)`` lets a caller collect bad
records instead of stopping at the first.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

from seedr1.data.schema import RecordError, Sample, parse_record
from seedr1.storage import get_storage, join

OFFICIAL_FILES = {
    "training_6k.jsonl": "train",
    "training_with_cot_6k.jsonl": "cot",
    "validation_L1.jsonl": "validation",
    "validation_L2.jsonl": "validation",
    "validation_L3.jsonl": "validation",
}


@dataclass
class BadRecord:
    """A record that could not be read; written to rejects files as JSON."""

    file: str
    line: int
    sample_id: Optional[str]
    field: Optional[str]
    reason: str

    def as_dict(self) -> dict:
        return dict(file=self.file, line=self.line, sample_id=self.sample_id, field=self.field, reason=self.reason)


class AnnotationError(ValueError):
    def __init__(self, bad: BadRecord):
        where = f"{bad.file}:{bad.line}" + (f" (sample_id {bad.sample_id})" if bad.sample_id else "")
        super().__init__(f"{where}: " + (f"field '{bad.field}': " if bad.field else "") + bad.reason)
        self.bad = bad


def kind_of(path: str) -> str:
    """The record kind of an annotation file, from its name (training files with other names: 'train')."""
    name = Path(path).name
    if name in OFFICIAL_FILES:
        return OFFICIAL_FILES[name]
    if "cot" in name:
        return "cot"
    if name.startswith("validation"):
        return "validation"
    if name.startswith("train"):
        return "train"
    if name.endswith(".json"):
        return "longvideobench"
    raise ValueError(f"cannot tell the record kind of {path}; pass kind= explicitly")


def raw_lines(path: str, data: bytes | str, kind: str) -> Iterator[tuple[int, object]]:
    """(line or list position, parsed record or the JSONDecodeError) for JSONL, or a JSON list (LongVideoBench).
    A JSONL line that is not UTF-8 is that line's error, not the whole file's. Lines end at "\n" only: a raw U+2028
    inside a JSON string (which ``str.splitlines`` would split at) stays in its record."""
    if kind == "longvideobench" and (data.lstrip().startswith(b"[") if isinstance(data, bytes)
                                     else data.lstrip().startswith("[")):
        try:
            items = json.loads(data)
        except UnicodeDecodeError as e:
            raise AnnotationError(BadRecord(path, data[:e.start].count(b"\n") + 1, None, None,
                                            f"not UTF-8 text (byte {data[e.start]:#04x})")) from None
        except json.JSONDecodeError as e:
            raise AnnotationError(BadRecord(path, e.lineno, None, None, f"invalid JSON: {e.msg}")) from None
        yield from enumerate(items, start=1)
        return
    for lineno, line in enumerate(data.split(b"\n" if isinstance(data, bytes) else "\n"), start=1):
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as e:  # reported like bad JSON: file, line, column
                yield lineno, json.JSONDecodeError(f"not UTF-8 text (byte {line[e.start]:#04x})", " " * e.start,
                                                   e.start)
                continue
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as e:
            yield lineno, e


def read_annotations(path: str, kind: Optional[str] = None,
                     on_error: Optional[Callable[[BadRecord], None]] = None) -> list[Sample]:
    """All samples of one annotation file (local or s3://). Bad records raise, or go to ``on_error``."""
    kind = kind or kind_of(path)
    data = get_storage(path).read_bytes(path)
    samples, seen = [], set()
    for index, (lineno, raw) in enumerate(raw_lines(path, data, kind)):
        sid = str(raw.get("sample_id", raw.get("id"))) if isinstance(raw, dict) and \
            raw.get("sample_id", raw.get("id")) is not None else None
        try:
            if isinstance(raw, json.JSONDecodeError):
                raise RecordError(f"malformed JSON: {raw.msg} at column {raw.colno}")
            sample = parse_record(kind, raw, index)
            if sample.sample_id in seen:
                raise RecordError(f"duplicate sample_id {sample.sample_id!r}", "sample_id")
            seen.add(sample.sample_id)
            samples.append(sample)
        except RecordError as e:
            bad = BadRecord(path, lineno, sid, e.field, e.reason)
            if on_error is None:
                raise AnnotationError(bad) from None
            on_error(bad)
    return samples


def annotation_names(root: str, s3=None) -> list[str]:
    """The annotation files to validate or pack: the five official names (present or not), then any other
    ``*.jsonl`` under ``root/annotations`` whose kind its name tells (e.g. the full training file)."""
    listed = get_storage(root, s3).list(join(root, "annotations"))
    extra = sorted({Path(p).name for p in listed if p.endswith(".jsonl") and Path(p).parent.name == "annotations"}
                   - OFFICIAL_FILES.keys())
    return [*OFFICIAL_FILES, *(n for n in extra if _known_kind(n))]


def _known_kind(name: str) -> bool:
    try:
        kind_of(name)
        return True
    except ValueError:
        return False
