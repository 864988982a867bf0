"""The one writer of a job's training metrics (rank 0, every step).

Each ``log(row)`` goes to four places: ``<run_dir>/metrics.jsonl`` (the row as given, nested, plus ``time``: the
wall clock when it was logged, Unix seconds; a step's full cycle is the difference of two rows'), TensorBoard event
files under ``<run_dir>/tensorboard/`` (one scalar per flat name), Ray gauges that the node's Prometheus endpoint
exports (``ray_seedr1_<job>_<name>{run=...}``), and one progress line on stdout. Rare events (an actor restart,
a checkpoint, a resume) go to ``<run_dir>/events.jsonl``, stdout and the counter ``seedr1_<job>_events_total``.
Everything is flushed as it is written, so a killed run keeps every step it logged.
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Optional

import ray

from seedr1.metrics.catalog import describe, flatten

try:  # tensorboardX comes with ray[train]; torch's writer would need the tensorboard package instead
    from tensorboardX.event_file_writer import EventsWriter
    from tensorboardX.proto.event_pb2 import Event, SessionLog
    from tensorboardX.proto.summary_pb2 import Summary
except ImportError:
    EventsWriter = None


def read_event_file(path: str | os.PathLike) -> list:
    """Every Event of a TensorBoard (TFRecord) file, checking both CRCs of each record as TensorBoard does."""
    import struct

    from tensorboardX.record_writer import masked_crc32c

    data, pos, events = Path(path).read_bytes(), 0, []
    while pos < len(data):
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        if struct.unpack("<I", data[pos + 8:pos + 12])[0] != masked_crc32c(header):
            raise ValueError(f"{path}: corrupt record header at byte {pos}")
        payload = data[pos + 12:pos + 12 + length]
        if struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])[0] != masked_crc32c(payload):
            raise ValueError(f"{path}: corrupt record at byte {pos}")
        event = Event()
        event.ParseFromString(payload)
        events.append(event)
        pos += 16 + length
    return events


def read_scalars(logdir: str | os.PathLike) -> dict[int, dict[str, float]]:
    """``{step: {tag: value}}`` from every event file under ``logdir`` (later files win, as in TensorBoard)."""
    out: dict[int, dict[str, float]] = {}
    for path in sorted(Path(logdir).glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime_ns):
        for event in read_event_file(path):
            if event.HasField("summary"):
                out.setdefault(event.step, {}).update({v.tag: v.simple_value for v in event.summary.value})
    return out


def prometheus_name(job: str, name: str) -> str:
    """The Ray metric name of a flat metric name (Ray's exporter adds the ``ray_`` prefix)."""
    return f"seedr1_{job}_" + re.sub(r"[^a-zA-Z0-9_]", "_", name)


def _json_default(value):
    """JSON for numpy / torch scalars (``.item()``); anything else as its string."""
    return value.item() if hasattr(value, "item") else str(value)


class _EventFile:
    """One TensorBoard event file, written synchronously.

    Not tensorboardX's SummaryWriter: it hands events to a background thread, and its flush() does not wait for
    that queue, so a killed run could lose its last steps.
    """

    def __init__(self, logdir: Path, purge_step: Optional[int]):
        logdir.mkdir(parents=True, exist_ok=True)
        # pid and ns in the name: a file opened within the same second must not overwrite this one
        self._writer = EventsWriter(str(logdir / "events"), f".{os.getpid()}.{time.time_ns()}")
        if purge_step is not None:
            # TensorBoard drops the older files' events from this step on: a resumed run redoes those steps
            self._writer.write_event(Event(wall_time=time.time(), step=purge_step,
                                           session_log=SessionLog(status=SessionLog.START)))
        self._writer.flush()

    def write(self, step: int, scalars: dict[str, float]) -> None:
        """All scalars of a step as one event, flushed."""
        values = [Summary.Value(tag=tag, simple_value=value) for tag, value in scalars.items()]
        self._writer.write_event(Event(wall_time=time.time(), step=step, summary=Summary(value=values)))
        self._writer.flush()

    def close(self) -> None:
        """Close the file."""
        self._writer.close()


class _TorchEventFile:
    """Fallback without tensorboardX: torch's SummaryWriter (needs the tensorboard package)."""

    def __init__(self, logdir: Path, purge_step: Optional[int]):
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(str(logdir), purge_step=purge_step)

    def write(self, step: int, scalars: dict[str, float]) -> None:
        """All scalars of a step, flushed (this writer's flush waits for its queue)."""
        for tag, value in scalars.items():
            self._writer.add_scalar(tag, value, step)
        self._writer.flush()

    def close(self) -> None:
        """Close the writer."""
        self._writer.close()


def _open_event_file(logdir: Path, purge_step: Optional[int]):
    """A TensorBoard writer (tensorboardX, else torch); None, with a warning, when neither is installed."""
    if EventsWriter is not None:
        return _EventFile(logdir, purge_step)
    try:
        return _TorchEventFile(logdir, purge_step)
    except ImportError as e:
        print(f"[metrics] TensorBoard logging off: {e}", flush=True)
        return None


class MetricsSink:
    """Writes a job's per-step metrics rows and rare events (see the module docstring)."""

    def __init__(self, run_dir: str | os.PathLike, job: str = "grpo", *, total_steps: int,
                 run_name: Optional[str] = None, tensorboard: bool = True, ray_metrics: bool = True,
                 progress: bool = True):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.job, self.total_steps = job, total_steps
        self.run_name = run_name or self.run_dir.resolve().name
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.events_path = self.run_dir / "events.jsonl"
        self.tensorboard_dir = self.run_dir / "tensorboard"
        self.use_tensorboard, self.ray_metrics, self.progress = tensorboard, ray_metrics, progress
        self.step = 0  # the step in progress (``begin_step``), else the last logged: events without a step carry it
        self._metrics = open(self.metrics_path, "a", encoding="utf-8")
        self._event_file = None  # opened on the first row, so a resume's purge marker comes first
        self._purge_step: Optional[int] = None
        self._gauges: dict = {}
        self._events_counter = None
        self._last_log = time.perf_counter()
        self._step_seconds: list[float] = []  # s/step of the steps logged by this process (ETA)

    def log(self, row: dict) -> None:
        """Write one step's row: a metrics.jsonl line, TensorBoard scalars, Ray gauges and a progress line."""
        now = time.perf_counter()
        step = int(row["step"])
        stamped = {"step": row["step"], "time": round(time.time(), 4), **row}
        self._metrics.write(json.dumps(stamped, default=_json_default) + "\n")
        self._metrics.flush()
        flat = flatten(row)
        self._write_tensorboard(step, flat)
        self._set_gauges(flat)
        seconds = flat.get("seconds/step", now - self._last_log)
        self._last_log, self.step = now, step
        self._step_seconds.append(seconds)
        if self.progress:
            print(self.progress_line(step, flat, seconds), flush=True)

    PROGRESS = (("reward_mean", "reward", ".3f"), ("accuracy", "acc", ".3f"), ("format_rate", "fmt", ".3f"),
                ("kl", "kl", ".4g"), ("loss", "loss", ".4f"), ("lr", "lr", ".2e"))

    def progress_line(self, step: int, flat: dict[str, float], seconds: float) -> str:
        """``[job] step S/T reward R acc A fmt F kl K loss L lr X 1.23 s/step ETA 45 s`` (metrics the row has)."""
        mean = sum(self._step_seconds) / len(self._step_seconds) if self._step_seconds else seconds
        eta = mean * max(self.total_steps - step, 0)
        shown = "".join(f" {label} {format(flat[name], spec)}" for name, label, spec in self.PROGRESS if name in flat)
        return f"[{self.job}] step {step}/{self.total_steps}{shown} {seconds:.2f} s/step ETA {eta:.0f} s"

    def begin_step(self, step: int) -> None:
        """Step ``step`` (1-based, as its row will say) has begun: events from now on carry it."""
        self.step = step

    def event(self, kind: str, **fields) -> None:
        """Record a rare event: an events.jsonl line, a log line and +1 on ``seedr1_<job>_events_total{kind}``."""
        record = {"time": time.time(), "step": fields.pop("step", self.step), "kind": kind, **fields}
        with open(self.events_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=_json_default) + "\n")
        details = " ".join(f"{k}={v}" for k, v in fields.items())
        print(f"[{self.job}] event {kind} at step {record['step']}" + (f": {details}" if details else ""), flush=True)
        if self._ray_on():
            if self._events_counter is None:
                from ray.util.metrics import Counter

                self._events_counter = Counter(f"seedr1_{self.job}_events_total", tag_keys=("run", "kind"),
                                               description=f"Rare events of the {self.job} job, by kind.")
            self._events_counter.inc(1, tags={"run": self.run_name, "kind": kind})

    def truncate_after(self, step: int) -> None:
        """Resume at ``step``: keep only metrics rows with step <= ``step`` (events stay: they are history)."""
        self._metrics.close()
        kept = []
        if self.metrics_path.exists():
            for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a killed run
                    continue
                if row.get("step", 0) <= step:
                    kept.append(line + "\n")
        tmp = self.metrics_path.with_name(self.metrics_path.name + ".tmp")
        tmp.write_text("".join(kept), encoding="utf-8")
        os.replace(tmp, self.metrics_path)  # atomic: a kill leaves the old or the new file, never half of one
        self._metrics = open(self.metrics_path, "a", encoding="utf-8")
        # TensorBoard files are append-only: the next file starts with a marker that hides later steps
        self._purge_step, self.step = step + 1, step
        if self._event_file is not None:
            self._event_file.close()
            self._event_file = None

    def close(self) -> None:
        """Flush and close the files (idempotent)."""
        if not self._metrics.closed:
            self._metrics.close()
        if self._event_file is not None:
            self._event_file.close()
            self._event_file = None

    def _write_tensorboard(self, step: int, flat: dict[str, float]) -> None:
        if not self.use_tensorboard:
            return
        if self._event_file is None:
            self._event_file = _open_event_file(self.tensorboard_dir, self._purge_step)
            if self._event_file is None:
                self.use_tensorboard = False
                return
        # "step" is the x axis already: no chart of its own
        self._event_file.write(step, {k: v for k, v in flat.items() if k != "step"})

    def _ray_on(self) -> bool:
        return self.ray_metrics and ray.is_initialized()

    def _set_gauges(self, flat: dict[str, float]) -> None:
        if not self._ray_on():
            return
        from ray.util.metrics import Gauge

        for name, value in flat.items():
            gauge = self._gauges.get(name)
            if gauge is None:
                help_text, unit = describe(name)
                gauge = self._gauges[name] = Gauge(prometheus_name(self.job, name), tag_keys=("run",),
                                                   description=f"{help_text} [{unit}]" if unit else help_text)
            gauge.set(value, tags={"run": self.run_name})
