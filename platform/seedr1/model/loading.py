"""Resolve and load a checkpoint: a local folder, an ``s3://`` prefix, ``tiny[:family]``, or a hub id.

The tiny model and a real Qwen2-VL-7B-Instruct go through the same code: resolve to a local folder holding a
Hugging Face checkpoint, then ``from_pretrained``.
"""
from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Callable

import torch

from seedr1.config import S3Config, TinyModelConfig
from seedr1.paths import cache_dir
from seedr1.storage import S3Storage, StorageError, StorageUnreachable, is_s3, resolve_s3

log = logging.getLogger(__name__)


def _remove_abandoned(folder: Path) -> None:
    """Remove the unfinished folders of makers that died (killed mid-download, say): each maker holds a lock on
    ``<tmp>.lock`` while it works, and the kernel drops the lock with the process. At 7B one is ~16 GB. Assumes a
    node-local cache folder (flock over NFS is emulated with per-process locks). Only a tidy-up: it never fails."""
    for lock in folder.glob("*.tmp*.lock"):
        try:
            fd = os.open(lock, os.O_RDWR)  # never create one: a lock file exists only while its maker has it
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_ino != os.stat(lock).st_ino:
                continue  # another cleaner removed it meanwhile
            shutil.rmtree(lock.with_suffix(""), ignore_errors=True)
            lock.unlink(missing_ok=True)
        except OSError:  # its maker is at work (or the file is not ours to take)
            continue
        finally:
            os.close(fd)


def _make_once(out: Path, marker: str, make: Callable[[Path], None]) -> None:
    """``make`` the folder ``out`` (finished when it holds ``marker``) in a folder of this process's own and rename
    it into place whole: ranks and actors of one node may make the same one at once, and a half-made folder must
    never look finished. A failed ``make`` leaves nothing, and neither, once another make runs in the same cache
    folder, does a killed one; an ``out`` without the marker (cut off by an older version) is replaced; when
    another process finished first, its folder stays."""
    if (out / marker).exists():
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(out.parent)
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}.{uuid.uuid4().hex[:8]}")
    lock = tmp.with_name(tmp.name + ".lock")
    with open(lock.with_name(lock.name + ".new"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        os.replace(fh.name, lock)  # visible to cleaners only once locked
        try:
            try:
                make(tmp)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            if out.exists() and not (out / marker).exists():
                shutil.rmtree(out, ignore_errors=True)
            try:
                os.replace(tmp, out)
            except OSError:  # another process finished first
                shutil.rmtree(tmp, ignore_errors=True)
        finally:
            lock.unlink(missing_ok=True)


def resolve_checkpoint(path: str, s3: S3Config | None = None) -> str:
    """A local folder (or hub id) that ``from_pretrained`` and vLLM can read. ``s3``: how to reach an ``s3://``
    checkpoint (empty fields: the AWS variables).

    - ``tiny`` / ``tiny:qwen2.5-vl``: the offline tiny model (seed 0), built once into the cache;
    - ``s3://bucket/prefix``: downloaded once into the cache (keyed by the endpoint, the URI and the objects'
      ETags: a rewritten checkpoint is fetched again; while the store cannot be reached, the copy fetched last
      is used, with a warning);
    - an existing folder: itself; anything else: passed on as a hub id.
    """
    if path == "tiny" or path.startswith("tiny:"):
        family = path.partition(":")[2] or "qwen2-vl"
        out = cache_dir() / "models" / f"tiny-{family}-seed0"

        def build(tmp: Path) -> None:
            from seedr1.model.tiny import build_tiny_model

            build_tiny_model(tmp, TinyModelConfig(family=family))  # type: ignore[arg-type]

        _make_once(out, "seedr1_tiny.json", build)
        return str(out)
    if is_s3(path):
        # Keyed by endpoint and URI (the same bucket/prefix on two stores are two checkpoints), never the keys, and
        # by what the prefix holds now: a checkpoint rewritten in place (a "latest" prefix) is fetched again.
        where = f"{resolve_s3(s3).endpoint_url}|{path}"
        storage = S3Storage(s3)
        base = hashlib.sha256(where.encode()).hexdigest()[:16]
        try:
            version = storage.fingerprint(path)
        except StorageUnreachable as e:  # an outage: a finished copy from before beats failing a restart
            cached = sorted((p for p in (cache_dir() / "checkpoints").glob(f"{base}-*")
                             if ".tmp" not in p.name and (p / ".complete").exists()),
                            key=lambda p: (p / ".complete").stat().st_mtime)
            if not cached:
                raise
            log.warning("%s; using the copy of %s fetched last (%s)", e, path, cached[-1])
            return str(cached[-1])
        out = cache_dir() / "checkpoints" / f"{base}-{version[:16]}"

        def download(tmp: Path) -> None:
            storage.download_dir(path, tmp)
            if storage.fingerprint(path) != version:
                raise StorageError(f"{path} changed while it was downloaded; try again once it is written")
            (tmp / ".complete").write_text(f"{where}\n{version}\n")

        # Earlier versions stay: another process of this node may be loading one right now. They are whole
        # checkpoints in the cache folder (SEEDR1_CACHE), to be removed by hand.
        _make_once(out, ".complete", download)
        return str(out)
    if Path(path).is_dir():
        return str(Path(path).resolve())  # absolute: Ray workers do not share the caller's working directory
    if Path(path).exists() or path.startswith((".", "/")):
        raise FileNotFoundError(f"checkpoint {path} is not a folder holding a Hugging Face checkpoint")
    return path  # a hub id; works where the hub is reachable


def resolve_for_workers(path: str) -> str:
    """The model a driver hands to its Ray workers and actors: a local folder made absolute; an ``s3://`` prefix or
    hub id unchanged (each node resolves it into its own cache); ``tiny`` built here first (so this node's workers
    find it in the cache) but handed on as ``tiny``: the cache is per node (on Kubernetes, per pod), and a worker on
    another node builds the same bytes (the build is deterministic) instead of looking for this node's folder."""
    if path.startswith("tiny"):
        resolve_checkpoint(path)
        return path
    return resolve_checkpoint(path) if Path(path).is_dir() else path


def load_model(path: str, dtype: torch.dtype = torch.float32, trainable: bool = True):
    """The image-text-to-text model at ``path`` (any resolvable location)."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(resolve_checkpoint(path), dtype=dtype)
    model.train(trainable)
    return model


def load_processor(path: str):
    """The model's processor (tokenizer + image/video processors + chat template)."""
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(resolve_checkpoint(path))
