"""``seedr1 data validate ROOT``: check every record of every official annotation file under ROOT.

Checks: JSON, schema (required fields, types), golden letter consistent with the answer, duplicate sample ids,
media present and decodable (with the same decoders and frame sampling the pipeline uses). Writes rejects as JSONL
(file, line, sample_id, field, reason) and returns a summary; non-zero exit when anything is wrong.
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

from seedr1.config import DataConfig
from seedr1.data.annotations import OFFICIAL_FILES
from seedr1.data.pipeline import _reject, prepare_from_root, raw_records
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


def validate_root(root: str, cfg: Optional[DataConfig] = None, workers: int = 2) -> ValidationReport:
    cfg = cfg or DataConfig()
    cfg = replace(cfg, root=root)
    storage = get_storage(root, cfg.s3)
    report = ValidationReport()
    for name in OFFICIAL_FILES:
        rel = f"annotations/{name}"
        if not storage.exists(join(root, rel)):
            report.missing_files.append(name)
            continue
        metas = list(raw_records(root, [rel], cfg))
        with ThreadPoolExecutor(workers) as pool:  # decord and PIL release the GIL while decoding
            rows = list(pool.map(lambda m: prepare_from_root(m, root, cfg, 0), metas))
        seen: dict[str, int] = {}
        for meta, row in zip(metas, rows):
            if row["ok"] and row["sample_id"] in seen:
                row = _reject(name, meta["line"], row["sample_id"], "sample_id",
                              f"duplicate sample_id (first on line {seen[row['sample_id']]})")
            elif row["ok"]:
                seen[row["sample_id"]] = meta["line"]
            if not row["ok"]:
                report.rejects.append({k: row[k] for k in ("file", "line", "sample_id", "field", "reason")})
        report.files.append(FileReport(name, len(metas), sum(1 for r in report.rejects if r["file"] == name)))
    return report


def write_rejects(report: ValidationReport, path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for r in report.rejects:
            f.write(json.dumps(r) + "\n")
