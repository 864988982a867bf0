"""Endless training prompts with a position that can be saved and resumed exactly.

Epoch after epoch, each in a deterministic order per (seed, epoch); the position is (epoch, rows consumed in that
epoch up to the last prompt handed out), so a resumed run neither repeats nor skips a prompt.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from seedr1.config import DataConfig
from seedr1.data.pipeline import PromptRecord, RecordStream, build_dataset, dataset_rows


class PromptStream:
    def __init__(self, cfg: DataConfig, files: list[str], rejects_path: Optional[str] = None,
                 position: Optional[dict] = None):
        self.cfg, self.files, self.rejects_path = cfg, files, rejects_path
        position = position or {}
        self.epoch, self.rows = int(position.get("epoch", 0)), int(position.get("rows", 0))
        self._records = None
        # The same bad record is rejected every epoch: the file gets it once (also across a resume).
        existing = Path(rejects_path) if rejects_path else None
        self.written = set(existing.read_text().splitlines()) if existing and existing.is_file() else set()

    @property
    def position(self) -> dict:
        """Where the next prompt comes from: ``{"epoch": e, "rows": r}`` (JSON-serialisable)."""
        return {"epoch": self.epoch, "rows": self.rows}

    def _open_epoch(self):
        start = self.rows
        ds = build_dataset(self.cfg, self.files, epoch=self.epoch, shuffle=True,
                           start_row=0 if self.cfg.shards else start)
        stream = RecordStream(dataset_rows(ds), self.cfg, rejects_path=self.rejects_path,
                              skip_rows=start if self.cfg.shards else 0, written=self.written)
        offset = 0 if self.cfg.shards else start  # rows_consumed counts from the dataset's first row
        for record in stream:
            self.rows = offset + stream.rows_consumed
            yield record

    def take(self, n: int) -> list[PromptRecord]:
        """The next ``n`` prompts (crossing into the next epoch when one ends)."""
        out: list[PromptRecord] = []
        while len(out) < n:
            if self._records is None:
                self._records = self._open_epoch()
            record = next(self._records, None)
            if record is None:  # epoch over
                if self.rows == 0:
                    raise RuntimeError(f"no usable training prompt in {self.files} (every record rejected?)")
                self._records, self.epoch, self.rows = None, self.epoch + 1, 0
                continue
            out.append(record)
        return out

    def close(self) -> None:
        """Stop the current epoch's dataset iterator (its Ray Data executor) early."""
        if self._records is not None:
            self._records.close()
            self._records = None
