"""One interface over local paths and ``s3://`` URIs (any S3-compatible endpoint), with retries and timeouts.

Endpoint, credentials and region come from the usual AWS variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``/``AWS_DEFAULT_REGION``) or from an explicit ``S3Config``. Everything in
seedr1 that touches S3 goes through here (Ray Data's decode tasks too), never through ad-hoc clients.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time
from dataclasses import astuple, replace
from pathlib import Path
from typing import Iterator, Optional

from seedr1.config import S3Config


class StorageError(RuntimeError):
    """A storage operation failed; the message names the URI and the cause."""


class StorageNotFound(StorageError):
    """The store answered that the object or file is not there (S3 NoSuchKey / 404, a missing local file), as
    opposed to failing to answer or refusing access."""


class StorageUnreachable(StorageError):
    """The store could not be reached or the connection failed (after retries), as opposed to an answer such as
    access denied or no such bucket."""


def resolve_s3(cfg: S3Config | None = None) -> S3Config:
    """Fill the empty fields of ``cfg`` from the AWS environment variables."""
    cfg = cfg or S3Config()
    env = os.environ
    return replace(
        cfg,
        endpoint_url=cfg.endpoint_url or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or "",
        region=cfg.region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
        access_key=cfg.access_key or env.get("AWS_ACCESS_KEY_ID") or "",
        secret_key=cfg.secret_key or env.get("AWS_SECRET_ACCESS_KEY") or "",
        # the variable's token belongs to the variables' key, not to a key given in the config
        session_token=cfg.session_token or ("" if cfg.access_key else env.get("AWS_SESSION_TOKEN", "")),
    )


def is_s3(uri: str | os.PathLike) -> bool:
    return str(uri).startswith("s3://")


def absolute(path: str) -> str:
    """A local path made absolute, for configs a driver hands to Ray workers and actors (they do not run in the
    driver's working directory); an ``s3://`` URI or "" as given."""
    return path if not path or is_s3(path) else str(Path(path).resolve())


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/key/part`` -> ("bucket", "key/part")."""
    if not is_s3(uri):
        raise StorageError(f"not an s3:// URI: {uri}")
    rest = uri[len("s3://"):]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise StorageError(f"s3 URI has no bucket: {uri}")
    return bucket, key


def join(base: str, *parts: str) -> str:
    """Join path parts for either a local path or an s3:// URI."""
    if is_s3(base):
        out = base.rstrip("/")
        for p in parts:
            out += "/" + p.strip("/")
        return out
    return str(Path(base, *parts))


class Storage:
    """The storage seam: local and S3 implement the same seven methods."""

    def read_bytes(self, uri: str) -> bytes: ...
    def write_bytes(self, uri: str, data: bytes, metadata: Optional[dict] = None) -> None: ...
    def exists(self, uri: str) -> bool: ...
    def list(self, prefix: str) -> list[str]: ...
    def download_dir(self, prefix: str, dest: str | os.PathLike) -> Path: ...
    def upload_file(self, path: str | os.PathLike, uri: str) -> None: ...
    def delete_prefix(self, prefix: str) -> None: ...


class LocalStorage(Storage):
    def read_bytes(self, uri: str) -> bytes:
        try:
            return Path(uri).read_bytes()
        except FileNotFoundError as e:
            raise StorageNotFound(f"cannot read {uri}: {e.strerror or e}") from e
        except OSError as e:
            raise StorageError(f"cannot read {uri}: {e.strerror or e}") from e

    def write_bytes(self, uri: str, data: bytes, metadata: Optional[dict] = None) -> None:
        path = Path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # atomic: a reader never sees half a file

    def exists(self, uri: str) -> bool:
        return Path(uri).exists()

    def list(self, prefix: str) -> list[str]:
        root = Path(prefix)
        if root.is_file():
            return [str(root)]
        if not root.exists():
            return []
        return sorted(str(p) for p in root.rglob("*") if p.is_file())

    def download_dir(self, prefix: str, dest: str | os.PathLike) -> Path:
        return Path(prefix)

    def upload_file(self, path: str | os.PathLike, uri: str) -> None:
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, uri)

    def delete_prefix(self, prefix: str) -> None:
        path = Path(prefix)
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


class S3Storage(Storage):
    def __init__(self, options: S3Config | None = None):
        import boto3
        from botocore.config import Config

        self.options = resolve_s3(options)
        o = self.options
        self.client = boto3.client(
            "s3", endpoint_url=o.endpoint_url or None, region_name=o.region, aws_access_key_id=o.access_key or None,
            aws_secret_access_key=o.secret_key or None, aws_session_token=o.session_token or None,
            config=Config(connect_timeout=o.connect_timeout_s, read_timeout=o.read_timeout_s,
                          retries={"max_attempts": o.max_attempts, "mode": "standard"}),
        )

    def _error(self, what: str, uri: str, e: Exception) -> StorageError:
        from botocore.exceptions import (ClientError, ConnectionError, HTTPClientError, IncompleteReadError,
                                         NoCredentialsError)

        if isinstance(e, ClientError):
            code = e.response.get("Error", {}).get("Code", "?")
            msg = e.response.get("Error", {}).get("Message", str(e))
            hint = ""
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"):
                hint = " (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and bucket permissions)"
            kind = StorageNotFound if code in ("NoSuchKey", "404", "NotFound") else StorageError
            return kind(f"S3 {what} {uri} failed: {code}: {msg}{hint}")
        if isinstance(e, ConnectionError):  # refused, unresolvable, connect timeout
            return StorageUnreachable(f"S3 {what} {uri} failed: cannot reach endpoint "
                                      f"{self.options.endpoint_url or 'AWS'} after {self.options.max_attempts} "
                                      f"attempts ({e})")
        if isinstance(e, (HTTPClientError, IncompleteReadError)):  # connection dropped, timed out, body cut short
            return StorageUnreachable(f"S3 {what} {uri} failed after {self.options.max_attempts} attempts: {e}")
        if isinstance(e, NoCredentialsError):
            return StorageError(f"S3 {what} {uri} failed: {e} (set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY; on a "
                                f"Ray cluster joined through RAY_ADDRESS every node needs them, or set "
                                f"SEEDR1_FORWARD_AWS_SECRETS=1 to send the driver's)")
        return StorageError(f"S3 {what} {uri} failed: {e}")

    def _call(self, what: str, uri: str, fn, *args, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except (BotoCoreError, ClientError) as e:
            raise self._error(what, uri, e) from e

    def read_bytes(self, uri: str) -> bytes:
        bucket, key = split_s3(uri)
        return self._call("read", uri, self._get, bucket, key)

    def _get(self, bucket: str, key: str) -> bytes:
        """get_object and the download of its body, retried together: botocore retries the request, but the body
        streams after get_object has returned, so a connection dropped mid-download is retried here."""
        from botocore.exceptions import IncompleteReadError, ReadTimeoutError, ResponseStreamingError

        attempts = max(1, self.options.max_attempts)
        for attempt in range(1, attempts + 1):
            body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
            try:
                return body.read()
            except (ResponseStreamingError, IncompleteReadError, ReadTimeoutError):
                body.close()
                if attempt == attempts:
                    raise
                time.sleep(min(0.1 * 2 ** attempt, 2.0))

    def write_bytes(self, uri: str, data: bytes, metadata: Optional[dict] = None) -> None:
        bucket, key = split_s3(uri)
        self._call("write", uri, self.client.put_object, Bucket=bucket, Key=key, Body=data, Metadata=metadata or {})

    def head(self, uri: str) -> Optional[dict]:
        """Object metadata (size, ETag, user metadata) or None when absent."""
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = split_s3(uri)
        try:
            return self.client.head_object(Bucket=bucket, Key=key)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._error("stat", uri, e) from e
        except BotoCoreError as e:
            raise self._error("stat", uri, e) from e

    def exists(self, uri: str) -> bool:
        return self.head(uri) is not None

    def _objects(self, prefix: str) -> Iterator[tuple[str, dict]]:
        """(bucket, listing entry) of every object whose key starts with ``prefix``'s key: one paginated listing."""
        bucket, key = split_s3(prefix)
        paginator = self.client.get_paginator("list_objects_v2")
        pages = self._call("list", prefix, lambda: list(paginator.paginate(Bucket=bucket, Prefix=key)))
        for page in pages:
            for obj in page.get("Contents", []):
                yield bucket, obj

    def _iter_keys(self, prefix: str) -> Iterator[str]:
        for bucket, obj in self._objects(prefix):
            yield f"s3://{bucket}/{obj['Key']}"

    def list(self, prefix: str) -> list[str]:
        return sorted(self._iter_keys(prefix))

    def fingerprint(self, prefix: str) -> str:
        """A hash of the objects under ``prefix``/ (key, size, ETag, time written): it changes when any of them is
        rewritten, added or removed. One listing, no download; FileNotFoundError when there is nothing."""
        base = prefix.rstrip("/") + "/"
        lines = sorted(f"{o['Key']}\t{o['Size']}\t{o.get('ETag', '')}\t{o.get('LastModified', '')}"
                       for _, o in self._objects(base))
        if not lines:
            raise FileNotFoundError(f"no checkpoint at {prefix}: nothing under {base}")
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()

    def download_dir(self, prefix: str, dest: str | os.PathLike) -> Path:
        dest = Path(dest)
        base = prefix.rstrip("/") + "/"
        keys = [k for k in self._iter_keys(base)]
        if not keys:
            raise StorageError(f"nothing under {base}")
        for uri in keys:
            target = dest / uri[len(base):]
            target.parent.mkdir(parents=True, exist_ok=True)
            bucket, key = split_s3(uri)
            tmp = target.with_name(target.name + ".part")
            self._call("download", uri, self.client.download_file, bucket, key, str(tmp))
            os.replace(tmp, target)
        return dest

    def upload_file(self, path: str | os.PathLike, uri: str) -> None:
        bucket, key = split_s3(uri)
        self._call("upload", uri, self.client.upload_file, str(path), bucket, key)

    def delete_prefix(self, prefix: str) -> None:
        keys = list(self._iter_keys(prefix.rstrip("/") + "/"))
        bucket, _ = split_s3(prefix)
        for i in range(0, len(keys), 1000):  # delete_objects takes at most 1000 keys
            objects = [{"Key": split_s3(k)[1]} for k in keys[i:i + 1000]]
            self._call("delete", prefix, self.client.delete_objects, Bucket=bucket, Delete={"Objects": objects})


_S3_CLIENTS: dict[tuple, S3Storage] = {}  # (astuple(resolved S3Config), AWS_PROFILE) -> storage
_S3_CLIENTS_LOCK = threading.Lock()  # building boto3 clients from the default session is not thread-safe


def get_storage(uri: str | os.PathLike, options: S3Config | None = None) -> Storage:
    """The storage implementation for ``uri``. An ``S3Storage`` is made once per process and resolved config (the
    same endpoint, credentials and timeouts): building a boto3 client takes ~3 ms of CPU (~0.2 s the first time in
    a process), and the pipeline asks for storage per shard, or per record when it reads media from a root."""
    if not is_s3(uri):
        return LocalStorage()
    resolved = resolve_s3(options)
    # Keys from profiles, credential files or web identity are boto3's to refresh inside the client.
    key = (astuple(resolved), os.environ.get("AWS_PROFILE", ""))
    with _S3_CLIENTS_LOCK:
        if key not in _S3_CLIENTS:
            _S3_CLIENTS[key] = S3Storage(resolved)
        return _S3_CLIENTS[key]


def check_store(uri: str, options: S3Config | None = None, write: bool = False, timeout_s: float = 5.0) -> None:
    """Fail fast (StorageError naming ``uri`` and the cause) unless ``uri`` is there to read (``write``: its bucket
    or parent folder takes a new object), with one short attempt: a job checks its stores before it starts Ray
    actors, so an unreachable endpoint or a wrong key shows in seconds, not from inside a worker minutes later."""
    if not is_s3(uri):
        path = Path(uri)
        if write:
            parent = next((p for p in [path, *path.parents] if p.exists()), None)
            if parent is None or not os.access(parent, os.W_OK):
                raise StorageError(f"{uri}: cannot create it ({parent} is not writable)")
        elif not path.exists():
            raise StorageNotFound(f"{uri}: no such file or folder")
        return
    fast = replace(resolve_s3(options), connect_timeout_s=min(timeout_s, resolve_s3(options).connect_timeout_s),
                   read_timeout_s=timeout_s, max_attempts=1)
    store = S3Storage(fast)  # its own client: the shared one retries and waits longer
    bucket, key = split_s3(uri)
    listed = store._call("list", uri, store.client.list_objects_v2, Bucket=bucket, Prefix=key.rstrip("/"), MaxKeys=1)
    if write:
        probe = f"s3://{bucket}/{key.rstrip('/')}/.seedr1-write-check".replace("//.seedr1", "/.seedr1")
        store.write_bytes(probe, b"")
        store._call("delete", probe, store.client.delete_object, Bucket=bucket, Key=split_s3(probe)[1])
    elif not listed.get("KeyCount"):
        raise StorageNotFound(f"{uri}: nothing there (bucket {bucket} has no key under {key or '/'})")
