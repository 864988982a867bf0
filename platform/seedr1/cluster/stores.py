"""The stores a job reads and writes, checked before Ray and its actors start (``storage.check_store``).

A wrong endpoint, key or path then fails in seconds with the config key that names it, instead of from inside a
trainer worker after the cluster has started the job (~40 s and a traceback per worker).
"""
from __future__ import annotations

from seedr1.config import ConfigError


class StoreCheckFailed(ConfigError):
    """A store the job needs is unreachable, refuses the credentials, or lacks what the job reads."""


def _is_path(model: str) -> bool:
    """A model given as a location (folder or s3://), not ``tiny`` or a hub id."""
    return model.startswith(("s3://", "/", ".", "~"))


def job_stores(cfg) -> list[tuple[str, str, object, bool]]:
    """``(key, uri, s3 config, write)`` for each store ``cfg`` names: data root or shards, model, checkpoints, resume."""
    data = getattr(cfg, "data", None)
    s3 = data.s3 if data is not None else getattr(cfg, "s3", None)
    out = []
    if data is not None:
        if data.shards:
            sep = "" if data.shards.endswith("/") else "/"
            out.append(("data.shards", data.shards + sep + "manifest.json", s3, False))
        elif data.root:
            out.append(("data.root", data.root, s3, False))
    for key in ("model", "base_model"):
        model = getattr(cfg, key, "")
        if isinstance(model, str) and _is_path(model) and not getattr(cfg, "endpoint", ""):
            out.append((key, model, s3, False))
    checkpoint = getattr(cfg, "checkpoint", None)
    if checkpoint is not None and checkpoint.dir.startswith("s3://"):
        out.append(("checkpoint.dir", checkpoint.dir, s3, True))
    resume = getattr(cfg, "resume", "auto")
    if resume not in ("auto", "never"):
        out.append(("resume", resume, s3, False))
    return out


def check_inputs(cfg) -> None:
    """A job's inputs before it starts anything: relative ones resolved where the job finds them
    (``outputs.resolve_inputs``), then every store it names checked (``check_stores``)."""
    from seedr1.cluster.outputs import resolve_inputs

    resolve_inputs(cfg)
    check_stores(cfg)


def check_stores(cfg) -> None:
    """Raise StoreCheckFailed naming the first store ``cfg`` needs that does not answer as it must."""
    from seedr1.storage import StorageError, check_store

    for key, uri, s3, write in job_stores(cfg):
        try:
            check_store(uri, s3, write=write)
        except StorageError as e:
            raise StoreCheckFailed(f"{key} = {uri}: {e}") from None
