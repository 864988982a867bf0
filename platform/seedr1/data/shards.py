"""WebDataset-style tar shards of records + media, with a manifest; local folder or s3:// prefix.

A shard holds, per record, ``{key}.json`` (the annotation record plus its file and kind), and when present
``{key}.mp4`` and ``{key}.png``. ``manifest.json`` lists every shard with its record count, size and sha256.
Packing is resumable: a shard whose object already exists at the destination with the same sha256 is skipped,
and the manifest is written last, so a half-finished pack is never mistaken for a complete one.
"""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from seedr1.config import S3Config
from seedr1.data.annotations import annotation_names, kind_of, raw_lines
from seedr1.data.schema import media_of
from seedr1.storage import S3Storage, StorageError, get_storage, join

MANIFEST = "manifest.json"
SHA_KEY = "sha256"  # user metadata on S3 objects, checked on resume


@dataclass
class PackResult:
    shards: int
    records: int
    bytes: int
    uploaded: int
    skipped: int
    manifest: str


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # reproducible shards: same input, same bytes, same checksum
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _records(root: str, s3: Optional[S3Config] = None) -> Iterator[tuple[str, int, dict]]:
    """(file name, line number, raw record) for every line of every annotation file under root (``annotation_names``).
    A line that is not JSON is packed as {'__error__': ...}: the pipeline turns it into a reject (file, line)."""
    storage = get_storage(root, s3)
    for name in annotation_names(root, s3):
        path = join(root, "annotations", name)
        if not storage.exists(path):
            continue
        for lineno, record in raw_lines(path, storage.read_bytes(path), kind_of(name)):
            if isinstance(record, json.JSONDecodeError):
                record = {"__error__": f"malformed JSON: {record.msg} at column {record.colno}"}
            yield name, lineno, record


def pack(root: str, dest: str, shard_size: int = 64 << 20, s3: Optional[S3Config] = None,
         log=print) -> PackResult:
    """Pack every official annotation file under ``root`` with its media into shards at ``dest``."""
    src, out = get_storage(root, s3), get_storage(dest, s3)
    shards: list[dict] = []
    buf, tar, counts, n_in_shard = None, None, {}, 0
    uploaded = skipped = total_records = 0

    def flush() -> None:
        nonlocal buf, tar, counts, n_in_shard, uploaded, skipped
        tar.close()
        data = buf.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        name = f"shard-{len(shards):06d}.tar"
        uri = join(dest, name)
        fresh = not _already_there(out, uri, digest, len(data))
        if fresh:
            out.write_bytes(uri, data, metadata={SHA_KEY: digest})
            uploaded += 1
        else:
            skipped += 1
        shards.append({"name": name, "records": n_in_shard, "bytes": len(data), "sha256": digest, "files": counts})
        log(f"[pack] {name}: {n_in_shard} records, {len(data) / 1e6:.1f} MB, "
            + ("written" if fresh else "already there (same sha256), skipped"))
        buf, tar, counts, n_in_shard = None, None, {}, 0

    for index, (name, lineno, record) in enumerate(_records(root, s3)):
        if tar is None:
            buf = io.BytesIO()
            tar = tarfile.open(fileobj=buf, mode="w")
        key = f"{index:08d}"
        meta = {"file": name, "kind": kind_of(name), "line": lineno, "record": record}
        _tar_add(tar, f"{key}.json", json.dumps(meta, sort_keys=True).encode())
        for ext, rel in media_of(kind_of(name), record).items():
            path = join(root, rel)
            if src.exists(path):  # missing media are caught by `data validate` and by the pipeline's rejects
                _tar_add(tar, f"{key}.{ext}", _read_media(src, path, name, lineno, record))
        counts[name] = counts.get(name, 0) + 1
        n_in_shard += 1
        total_records += 1
        if buf.tell() >= shard_size:
            flush()
    if tar is not None:
        flush()
    if not total_records:  # a mistyped root: say so, and leave a manifest already at dest alone
        raise FileNotFoundError(f"no annotation records under {join(root, 'annotations')} (looked for "
                                f"{', '.join(annotation_names(root, s3))}): nothing packed, {dest} left as it was")
    manifest = {"format": "seedr1-shards/1", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "source": root, "records": total_records, "bytes": sum(s["bytes"] for s in shards), "shards": shards}
    manifest_uri = join(dest, MANIFEST)
    out.write_bytes(manifest_uri, json.dumps(manifest, indent=2).encode())
    return PackResult(len(shards), total_records, manifest["bytes"], uploaded, skipped, manifest_uri)


def _read_media(src, path: str, name: str, lineno: int, record: dict) -> bytes:
    """A media file that exists but cannot be read stops the pack, naming the record: packing the record without it
    would turn a readable-later file (permissions, a flaky endpoint) into a permanently "missing" one in the shards.
    `seedr1 data validate` lists every such record as a reject; a re-run skips the shards already written."""
    try:
        return src.read_bytes(path)
    except StorageError as e:
        sid = record.get("sample_id") if isinstance(record, dict) else None
        raise StorageError(f"cannot pack {name} line {lineno} (sample_id {sid}): {e}") from e


def _already_there(storage, uri: str, digest: str, size: int) -> bool:
    if isinstance(storage, S3Storage):
        head = storage.head(uri)
        return bool(head) and head.get("ContentLength") == size and head.get("Metadata", {}).get(SHA_KEY) == digest
    path = Path(uri)
    return path.exists() and path.stat().st_size == size and hashlib.sha256(path.read_bytes()).hexdigest() == digest


def read_manifest(dest: str, s3: Optional[S3Config] = None) -> dict:
    uri = join(dest, MANIFEST)
    storage = get_storage(dest, s3)
    if not storage.exists(uri):
        raise FileNotFoundError(f"no {MANIFEST} under {dest}: not a packed data set (or packing did not finish)")
    return json.loads(storage.read_bytes(uri))


def iter_tar_members(data: bytes, shard: str) -> Iterator[dict]:
    """Group a shard's members by key: yields {'key', 'json', 'mp4'?, 'png'?} and, for a truncated or corrupt
    shard, a final {'key': None, 'error': ...} after the records that could be read."""
    current: dict = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, _, ext = member.name.partition(".")
                payload = tar.extractfile(member).read()
                if len(payload) != member.size:
                    raise tarfile.ReadError(f"member {member.name} is truncated")
                if current and current["key"] != key:
                    yield current
                    current = {}
                current.setdefault("key", key)
                current[ext] = payload
            # tarfile stops quietly at a header that is cut short or garbage (or at a cut between members); a
            # complete archive ends with a zero block, so anything else means the rest of the shard is lost.
            if data[tar.offset:tar.offset + tarfile.BLOCKSIZE] != tarfile.NUL * tarfile.BLOCKSIZE:
                raise tarfile.ReadError(f"no end-of-archive marker at byte {tar.offset} of {len(data)}")
    except (tarfile.TarError, EOFError, OSError) as e:
        # The record being read when the shard broke is incomplete: drop it and report the shard.
        yield {"key": None, "error": f"shard {shard} is truncated or corrupt after {current.get('key', 'start')}: {e}"}
        return
    if current:
        yield current
