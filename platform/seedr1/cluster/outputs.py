"""Where a job's relative output folders go, so that they outlive the job.

``ray job submit --working-dir .`` runs the driver inside Ray's unpacked copy of the project
(``<ray temp>/session_*/runtime_resources/working_dir_files/_ray_pkg_*``), which vanishes with the Ray session: a
relative ``run_dir`` resolved there loses the checkpoints, metrics and final model. Relative output folders therefore
resolve under ``$SEEDR1_HOME`` when it is set, else under ``~/seedr1`` when the job runs in such a working directory,
else under the current folder, as any command line tool does. Absolute paths and ``s3://`` URIs are kept as given.
"""
from __future__ import annotations

import os
from pathlib import Path

RAY_WORKING_DIR_MARKER = os.path.join("runtime_resources", "working_dir_files")


def in_ray_working_dir(cwd: str | os.PathLike | None = None) -> bool:
    """Whether ``cwd`` (default: the current folder) is inside a working directory Ray unpacked for a job."""
    return RAY_WORKING_DIR_MARKER in str(Path(cwd or os.getcwd()).resolve())


def output_root(cwd: str | os.PathLike | None = None) -> Path:
    """The folder relative output paths resolve against (see the module docstring)."""
    if os.environ.get("SEEDR1_HOME"):
        return Path(os.environ["SEEDR1_HOME"]).expanduser().resolve()
    if in_ray_working_dir(cwd):
        return Path.home() / "seedr1"
    return Path(cwd or os.getcwd()).resolve()


def output_path(path: str, cwd: str | os.PathLike | None = None) -> str:
    """``path`` made absolute under ``output_root``; ``s3://``, absolute and empty paths as given."""
    if not path or path.startswith("s3://") or os.path.isabs(os.path.expanduser(path)):
        return os.path.expanduser(path) if path and not path.startswith("s3://") else path
    return str(output_root(cwd) / path)


def make_output_dir(path: str, job: str) -> Path:
    """``output_path`` of a job's local output folder, created, and said at the job's start."""
    out = Path(output_path(path))
    out.mkdir(parents=True, exist_ok=True)
    print(f"[{job}] outputs: {out}", flush=True)
    return out


def input_path(path: str, cwd: str | os.PathLike | None = None) -> str:
    """A relative input (a data root, a model folder) as a job finds it: under the current folder if it is there, else
    under ``output_root`` (an earlier job's outputs, e.g. ``runs/grpo-tiny/data`` written by a submitted GRPO job);
    anything else as given (``tiny``, a hub id, ``s3://``, a path to report missing)."""
    if not path or path.startswith("s3://") or os.path.isabs(os.path.expanduser(path)):
        return path
    for root in (Path(cwd or os.getcwd()), output_root(cwd)):
        if (root / path).exists():
            return str((root / path).resolve())
    return path


def resolve_inputs(cfg) -> None:
    """``input_path`` for the inputs a job config names (data root and shards, model, base model, resume path)."""
    data = getattr(cfg, "data", None)
    if data is not None:
        data.root, data.shards = input_path(data.root), input_path(data.shards)
    for key in ("model", "base_model"):
        if isinstance(getattr(cfg, key, None), str):
            setattr(cfg, key, input_path(getattr(cfg, key)))
    if getattr(cfg, "resume", "auto") not in ("auto", "never"):
        cfg.resume = input_path(cfg.resume)
