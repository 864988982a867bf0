"""``seedr1 data validate ROOT``: check every record of every official annotation file under ROOT.

Checks: JSON, schema (required fields, types), golden letter consistent with the answer, duplicate sample ids,
media present and decodable (with the same decoders and frame sampling the pipeline uses). Writes rejects as JSONL
(file, line, sample_id, field, reason) and returns a summary; non-zero exit when anything is wrong.
"""
from __future__ import annotations

import json
from collections import deque
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

from seedr1.config import DataConfig
from seedr1.data.annotations import OFFICIAL_FILES, annotation_names
from seedr1.data.pipeline import REJECT_KEYS, _reject, prepare_from_root, raw_records
from seedr1.storage import get_storage, join

@dataclass
class FileReport:
    file: str
    records: int = 0
    rejected: int = 0


@dataclass
class ValidationReport:
    files: list[FileReport] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)
    missing_files: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.rejects and any(f.records for f in self.files)

    def table(self) -> str:
        lines = [f"{'file':<32} {'records':>8} {'ok':>8} {'rejected':>9}"]
        for f in self.files:
            lines.append(f"{f.file:<32} {f.records:>8} {f.records - f.rejected:>8} {f.rejected:>9}")
        for name in self.missing_files:
            lines.append(f"{name:<32} {'missing':>8}")
        return "\n".join(lines)


def check_record(meta: dict, root: str, cfg: DataConfig) -> dict:
    """One record -> what the report needs ({ok, file, line, sample_id, field, reason}): the decoded frames are
    dropped here, in the worker, so validating a file never holds more than a few records' pixels."""
    row = prepare_from_root(meta, root, cfg, 0)
    return {"ok": row["ok"], **{k: row[k] for k in REJECT_KEYS}}


def _ordered_map(pool: Executor, fn: Callable, items: Iterable, ahead: int) -> Iterator:
    """``pool.map`` with at most ``ahead`` results pending (``Executor.map`` submits every item at once)."""
    pending: deque = deque()
    for item in items:
        if len(pending) >= ahead:
            yield pending.popleft().result()
        pending.append(pool.submit(fn, item))
    while pending:
        yield pending.popleft().result()


def validate_root(root: str, cfg: Optional[DataConfig] = None, workers: int = 2) -> ValidationReport:
    cfg = cfg or DataConfig()
    cfg = replace(cfg, root=root)
    storage = get_storage(root, cfg.s3)
    report = ValidationReport()
    for name in annotation_names(root, cfg.s3):
        rel = f"annotations/{name}"
        if not storage.exists(join(root, rel)):
            if name in OFFICIAL_FILES:
                report.missing_files.append(name)
            continue
        file_report, seen = FileReport(name), {}
        with ThreadPoolExecutor(workers) as pool:  # decord and PIL release the GIL while decoding
            check = partial(check_record, root=root, cfg=cfg)
            for row in _ordered_map(pool, check, raw_records(root, [rel], cfg), ahead=2 * workers):
                file_report.records += 1
                if row["ok"] and row["sample_id"] in seen:
                    row = _reject(name, row["line"], row["sample_id"], "sample_id",
                                  f"duplicate sample_id (first on line {seen[row['sample_id']]})")
                elif row["ok"]:
                    seen[row["sample_id"]] = row["line"]
                if not row["ok"]:
                    file_report.rejected += 1
                    report.rejects.append({k: row[k] for k in REJECT_KEYS})
        report.files.append(file_report)
    return report


def write_rejects(report: ValidationReport, path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for r in report.rejects:
            f.write(json.dumps(r) + "\n")
