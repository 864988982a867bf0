"""Request content -> engine input: OpenAI-style chat ``messages`` with images and video become a ``PromptRecord``.

Accepted content parts (media only in user messages; system, developer (taken for system) and assistant messages
carry text only; an assistant message's ``content`` may be null, taken for empty text):

* ``{"type": "text", "text": str}`` (a message's ``content`` may also be a plain string);
* ``{"type": "image_url", "image_url": {"url": URL}}`` (or ``"image_url": URL``): an image, resized to
  ``limits.image_size`` square exactly as the data pipeline does (RGB, bicubic);
* ``{"type": "video", "video": [URL, ...]}``: a video given as image frames, at most ``limits.max_frames``,
  each resized to ``limits.frame_size``; an odd count is padded by repeating the last frame (Qwen's temporal
  patch is 2), so one frame becomes a two-frame video;
* ``{"type": "video_url", "video_url": {"url": "data:video/jpeg;base64,<frame>,<frame>,..."}}``: frames as vLLM's
  own server takes them (base64 images, PNG or JPEG, joined by ","), read as a frame list;
* ``{"type": "video_url", "video_url": {"url": URL}}`` (or ``"video_url": URL``): an encoded video, refused
  when longer than ``limits.max_video_seconds``, sampled with decord like the data pipeline (``limits.fps``,
  ``limits.min_frames``..``limits.sampled_max_frames``, ``limits.frame_size``).

URLs: ``data:<type>;base64,...``, ``s3://bucket/key`` (read with the server's S3 credentials), or ``http(s)://``
on ``limits.allow_hosts``. Allow-list entries are ``host``, ``host:port`` (IPv6 as ``[addr]:port``), or wildcards
``*.example.com`` / ``*``. A host listed exactly is trusted as the operator named it, private addresses included;
a host admitted only by a wildcard is resolved and refused when any of its addresses is loopback, link-local,
private, shared, multicast, reserved or unspecified. The connection goes to the checked address (no second DNS
lookup), redirects are never followed, no proxy is used, reads stop at ``limits.max_fetch_bytes`` (413 beyond)
and at ``limits.fetch_timeout_s``. Images are PNG, JPEG, WebP, GIF or BMP only, their size read from the header
and checked against ``limits.max_image_pixels`` before the pixels are decoded.

Videos are probed and sampled in a spawned decoder process (``ISOLATE_VIDEO_DECODING``): decord segfaults on
some corrupt files, which must cost the request a 400, not the replica (and its engine) its life. Spawning
re-imports the caller's main module: a script that calls ``parse_chat`` itself needs an ``if __name__ ==
"__main__":`` guard (Ray's worker main has one).

``parse_chat`` checks the whole request's structure and counts before it fetches anything, and only ever
raises ``APIError`` (400/413 for the request's fault, 500 ``server_error`` for a bug here).
"""
from __future__ import annotations

import base64
import binascii
import fnmatch
import http.client
import io
import ipaddress
import math
import socket
import ssl
import threading
import time
from dataclasses import astuple, dataclass, field, replace
from typing import Optional
from urllib.parse import urlsplit

import numpy as np

from seedr1.config import S3Config, ServeLimits
from seedr1.data.media import MediaError, decode_clip
from seedr1.data.pipeline import PromptRecord
from seedr1.serve.errors import APIError, bad_request, server_busy, too_large
from seedr1.serve.wire import FRAMES_DATA_URL, remember_png

ROLES = ("system", "developer", "user", "assistant")  # developer: OpenAI's newer name for system
PART_TYPES = ("text", "image_url", "video", "video_url")
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")  # no exotic parsers (EPS would run Ghostscript)
SCHEMES = ("data", "s3", "http", "https")
MAX_URL_CHARS = 8192  # for non-data URLs
ENGINE_MAX_IMAGES = ENGINE_MAX_VIDEOS = 1  # a PromptRecord carries one image and one video
# Videos are decoded in a separate process: decord segfaults on some corrupt files (e.g. an mp4 whose sample
# table points past the end), which would take the whole replica, engine included, down with it.
ISOLATE_VIDEO_DECODING = True
VIDEO_WORKERS = 1  # decoder processes per serving process (spawned on first use), each decoding one video at a time
VIDEO_DECODE_TIMEOUT_S = 120.0  # a decode running longer is killed (its request gets a 400)
VIDEO_WAIT_TIMEOUT_S = 60.0  # a request waiting longer for a free decoder (or for one to start) gets a 503


# ----------------------------------------------------------------------------------------------------------------
# Messages
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class _Job:
    kind: str  # "image" | "frames" | "video"
    param: str
    url: str = ""
    urls: list = field(default_factory=list)


def _url_of(part: dict, key: str, where: str) -> tuple[str, str]:
    """The URL of an image_url / video_url part (object or plain-string form) and its param path."""
    value = part.get(key)
    if isinstance(value, str):
        return value, f"{where}.{key}"
    if isinstance(value, dict):
        url = value.get("url")
        if isinstance(url, str) and url:
            return url, f"{where}.{key}.url"
        raise bad_request(f"'{key}.url' must be a non-empty string", param=f"{where}.{key}.url")
    raise bad_request(f"'{key}' must be an object with a 'url' (or a URL string)", param=f"{where}.{key}")


def _text(text: str, param: str) -> str:
    """Text the tokenizer can take: a lone surrogate (JSON "\\ud800") is valid JSON but not UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_request("text is not valid Unicode (lone surrogate)", param=param) from None
    return text


def _check_messages(messages, limits: ServeLimits) -> tuple[list[dict], list[_Job]]:
    """Validate structure, roles and counts (no I/O); the output messages and the media to load."""
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty list", param="messages")
    out: list[dict] = []
    jobs: list[_Job] = []
    max_images = min(limits.max_images, ENGINE_MAX_IMAGES)
    max_videos = min(limits.max_videos, ENGINE_MAX_VIDEOS)
    images = videos = 0
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise bad_request("each message must be an object with 'role' and 'content'", param=where)
        role = message.get("role")
        if role not in ROLES:
            raise bad_request(f"'role' must be one of {', '.join(ROLES)}, got {role!r}", param=f"{where}.role")
        content = message.get("content")
        if content is None and role == "assistant":  # OpenAI allows it (an assistant turn of tool calls only)
            content = ""
        as_role = "system" if role == "developer" else role  # the chat template knows system
        if isinstance(content, str):
            out.append({"role": as_role, "content": [{"type": "text", "text": _text(content, f"{where}.content")}]})
            continue
        if not isinstance(content, list) or not content:
            raise bad_request("'content' must be a string or a non-empty list of content parts",
                              param=f"{where}.content")
        parts = []
        for j, part in enumerate(content):
            pw = f"{where}.content[{j}]"
            if not isinstance(part, dict):
                raise bad_request("each content part must be an object with a 'type'", param=pw)
            kind = part.get("type")
            if kind not in PART_TYPES:
                raise bad_request(f"unknown content part type {kind!r} (expected one of {', '.join(PART_TYPES)})",
                                  param=f"{pw}.type")
            if kind == "text":
                if not isinstance(part.get("text"), str):
                    raise bad_request("'text' must be a string", param=f"{pw}.text")
                parts.append({"type": "text", "text": _text(part["text"], f"{pw}.text")})
                continue
            if role != "user":
                raise bad_request(f"{kind} parts are only allowed in user messages, not {role}", param=f"{pw}.type")
            if kind == "image_url":
                images += 1
                if images > max_images:
                    raise bad_request(f"at most {max_images} image(s) per request", param=pw,
                                      code="too_many_images")
                url, param = _url_of(part, "image_url", pw)
                jobs.append(_Job("image", param, url=url))
                parts.append({"type": "image"})
                continue
            videos += 1
            if videos > max_videos:
                raise bad_request(f"at most {max_videos} video(s) per request", param=pw, code="too_many_videos")
            parts.append({"type": "video"})
            if kind == "video_url":
                url, param = _url_of(part, "video_url", pw)
                if url[:len(FRAMES_DATA_URL)].lower() != FRAMES_DATA_URL:  # an encoded clip
                    jobs.append(_Job("video", param, url=url))
                    continue
                # sampled frames, as vLLM's own server takes them: base64 images joined by ","
                frames = [f"data:image/png;base64,{x}" for x in url[len(FRAMES_DATA_URL):].split(",")]
            else:
                frames, param = part.get("video"), f"{pw}.video"
                if not isinstance(frames, list) or not frames:
                    raise bad_request("'video' must be a non-empty list of image URLs", param=param)
            if len(frames) > limits.max_frames:
                raise bad_request(f"{len(frames)} frames; at most {limits.max_frames} per video", param=param,
                                  code="too_many_frames")
            for k, url in enumerate(frames):
                if not isinstance(url, str) or not url:
                    raise bad_request("each frame must be a non-empty image URL string", param=f"{param}[{k}]")
            jobs.append(_Job("frames", param, urls=list(frames)))
        out.append({"role": as_role, "content": parts})
    return out, jobs


def parse_chat(messages: list, limits: ServeLimits, s3: Optional[S3Config] = None,
               frames_fps: Optional[float] = None) -> PromptRecord:
    """OpenAI-style chat messages -> a PromptRecord with media placeholders and decoded media (APIError otherwise).
    ``frames_fps``: the rate a video given as frames stands for (default ``limits.fps``, the serving rate)."""
    try:
        out, jobs = _check_messages(messages, limits)
        video = image = None
        fps = frames_fps or limits.fps
        for job in jobs:
            if job.kind == "image":
                image = load_image(job.url, limits, s3, param=job.param)
            elif job.kind == "video":
                video, fps = load_video(job.url, limits, s3, param=job.param)
            else:
                video = load_frames(job.urls, limits, s3, param=job.param)
        return PromptRecord(sample_id="request", kind="chat", messages=out, video=video, image=image,
                            gold_letter=None, video_fps=fps)
    except APIError:
        raise
    except Exception as e:  # noqa: BLE001 - a bug here is a 500 in OpenAI's shape, never an unhandled exception
        raise APIError(500, f"internal error while reading the request content ({type(e).__name__})",
                       "server_error") from e


# ----------------------------------------------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------------------------------------------
def decode_image_checked(data: bytes, size: int, limits: ServeLimits, param: Optional[str] = None) -> np.ndarray:
    """uint8 RGB [size, size, 3] from image bytes: allowed formats only, pixel cap checked on the header first."""
    from PIL import Image

    if not data:
        raise bad_request("empty image", param=param, code="invalid_image")
    try:
        im = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except Image.DecompressionBombError:
        raise bad_request(f"image over {limits.max_image_pixels} pixels", param=param, code="image_too_large") from None
    except Exception:  # noqa: BLE001 - UnidentifiedImageError and any parser error on untrusted bytes
        raise bad_request(f"not a supported image ({', '.join(IMAGE_FORMATS)})", param=param,
                          code="invalid_image") from None
    with im:
        width, height = im.size
        if width <= 0 or height <= 0:
            raise bad_request("image has no pixels", param=param, code="invalid_image")
        if width * height > limits.max_image_pixels:
            raise bad_request(f"image is {width}x{height} = {width * height} pixels; at most "
                              f"{limits.max_image_pixels}", param=param, code="image_too_large")
        try:  # the same conversion as seedr1.data.media.decode_image (RGB, bicubic resize to a square)
            # sent on unchanged only when these bytes are these pixels for vLLM too (which applies an EXIF/XMP
            # orientation) and are not much bigger than the pixels (no large ancillary chunks carried along)
            as_is = (im.format == "PNG" and im.mode == "RGB" and (not size or im.size == (size, size))
                     and not im.getexif() and not {"exif", "xmp", "XML:com.adobe.xmp"} & set(im.info)
                     and len(data) <= 2 * width * height * 3 + 1024)
            rgb = im.convert("RGB")
            if size:
                rgb = rgb.resize((size, size), Image.BICUBIC)
            pixels = np.asarray(rgb, dtype=np.uint8).copy()
            if as_is:  # these bytes are these pixels: sent on to the engine as they came (serve.wire)
                remember_png(pixels, data)
            return pixels
        except Exception as e:  # noqa: BLE001 - truncated or corrupt pixel data
            raise bad_request(f"cannot decode image ({type(e).__name__}: {str(e)[:200]})", param=param,
                              code="invalid_image") from None


def load_image(url: str, limits: ServeLimits, s3: Optional[S3Config] = None, param: Optional[str] = None,
               size: Optional[int] = None) -> np.ndarray:
    """Fetch and decode one image URL, resized to ``size`` (default ``limits.image_size``)."""
    data = fetch(url, limits, s3, kind="image", param=param)
    return decode_image_checked(data, limits.image_size if size is None else size, limits, param)


def load_frames(urls: list, limits: ServeLimits, s3: Optional[S3Config] = None,
                param: Optional[str] = None) -> np.ndarray:
    """A video from image-frame URLs: uint8 [T, F, F, 3], F = ``limits.frame_size``, T even (last frame repeated)."""
    if not urls:
        raise bad_request("a video needs at least one frame", param=param)
    if len(urls) > limits.max_frames:
        raise bad_request(f"{len(urls)} frames; at most {limits.max_frames} per video", param=param,
                          code="too_many_frames")
    frames = [load_image(u, limits, s3, param=f"{param}[{k}]", size=limits.frame_size) for k, u in enumerate(urls)]
    if len({f.shape for f in frames}) > 1:
        raise bad_request("all frames of a video must have the same size", param=param)
    if len(frames) % 2:
        frames.append(frames[-1])
    return np.ascontiguousarray(np.stack(frames), dtype=np.uint8)


def _video_header(data: bytes, limits: ServeLimits, param: Optional[str]) -> None:
    """Refuse, before sampling, a video that is not one, has no frame rate, is too long or too large per frame."""
    import av
    import decord

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            streams = container.streams.video
            if not streams:
                raise bad_request("no video stream in the file", param=param, code="invalid_video")
            width, height = streams[0].codec_context.width, streams[0].codec_context.height
    except APIError:
        raise
    except Exception as e:  # noqa: BLE001 - any demuxer error on untrusted bytes
        raise bad_request(f"cannot decode video ({type(e).__name__})", param=param, code="invalid_video") from None
    if width * height > limits.max_image_pixels:
        raise bad_request(f"video frames are {width}x{height} pixels; at most {limits.max_image_pixels}",
                          param=param, code="video_too_large")
    try:
        size = limits.frame_size or None
        kwargs = dict(width=size, height=size) if size else {}
        reader = decord.VideoReader(io.BytesIO(data), ctx=decord.cpu(0), num_threads=1, **kwargs)
        count, native_fps = len(reader), float(reader.get_avg_fps())
        del reader
    except Exception as e:  # noqa: BLE001 - DECORDError / RuntimeError on corrupt input
        raise bad_request(f"cannot decode video ({type(e).__name__})", param=param, code="invalid_video") from None
    if count <= 0:
        raise bad_request("video has no frames", param=param, code="invalid_video")
    if not (math.isfinite(native_fps) and native_fps > 0):
        raise bad_request("video has no frame rate; its length cannot be checked", param=param, code="invalid_video")
    seconds = count / native_fps
    if seconds > limits.max_video_seconds:
        raise bad_request(f"video is {seconds:.1f} s long; at most {limits.max_video_seconds:g} s", param=param,
                          code="video_too_long")


def _decode_video_here(data: bytes, limits: ServeLimits, param: Optional[str]) -> tuple[np.ndarray, float]:
    _video_header(data, limits, param)
    try:
        return decode_clip(data, "video", limits.fps, limits.min_frames, limits.sampled_max_frames,
                           limits.frame_size)
    except MediaError as e:
        raise bad_request(str(e)[:300], param=param, code="invalid_video") from None
    except Exception as e:  # noqa: BLE001
        raise bad_request(f"cannot decode video ({type(e).__name__})", param=param, code="invalid_video") from None


def _video_job(data: bytes, limits: ServeLimits) -> tuple:
    """In the decoder process: ("ok", (frames, fps)) or ("error", status, message, code) (APIError does not pickle)."""
    try:
        return ("ok", _decode_video_here(data, limits, None))
    except APIError as e:
        return ("error", e.status, e.message, e.code)


def _ready() -> bool:
    """Run once in a fresh decoder process, so that its start-up (spawn, imports) is not timed as a decode."""
    return True


# Decoders not in use, each a one-process pool (None: not started yet). A request takes one for itself, so its
# decode starts at once and the decode deadline times the decode alone, not a queue; and killing a hung decoder
# never takes down another request's decode.
_FREE = None
_FREE_LOCK = threading.Lock()


def _free_decoders():
    global _FREE
    with _FREE_LOCK:
        if _FREE is None:
            import queue

            _FREE = queue.Queue()
            for _ in range(VIDEO_WORKERS):
                _FREE.put(None)
        return _FREE


def _start_decoder():
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, never fork: the serving process holds CUDA and threads
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    try:
        pool.submit(_ready).result(timeout=VIDEO_WAIT_TIMEOUT_S)
    except BaseException:
        _stop_decoder(pool)
        raise
    return pool


def _stop_decoder(pool) -> None:
    # a hung decode: Python 3.11 has no public way to stop a running task; the pool is this request's alone
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        proc.kill()
    pool.shutdown(wait=False, cancel_futures=True)


def decode_video_checked(data: bytes, limits: ServeLimits, param: Optional[str] = None,
                         isolate: Optional[bool] = None) -> tuple[np.ndarray, float]:
    """uint8 frames [T, F, F, 3] sampled from video bytes after the checks, in a decoder process by default, and
    the rate they stand for (``decode_clip``)."""
    if not data:
        raise bad_request("empty video", param=param, code="invalid_video")
    if not (ISOLATE_VIDEO_DECODING if isolate is None else isolate):
        return _decode_video_here(data, limits, param)
    import queue
    from concurrent.futures import TimeoutError as FutureTimeout
    from concurrent.futures.process import BrokenProcessPool

    free = _free_decoders()
    try:
        pool = free.get(timeout=VIDEO_WAIT_TIMEOUT_S)
    except queue.Empty:
        raise server_busy(f"no video decoder free within {VIDEO_WAIT_TIMEOUT_S:g} s; retry later",
                          param=param) from None
    def started():
        try:
            return _start_decoder()
        except Exception as e:  # noqa: BLE001 - the server's fault (e.g. out of processes), not the video's
            raise server_busy(f"cannot start a video decoder ({type(e).__name__}); retry later", param=param) from None

    try:
        if pool is None:
            pool = started()
        try:
            future = pool.submit(_video_job, data, limits)
        except BrokenProcessPool:  # the decoder died while idle (say the OOM killer): not this video's doing
            _stop_decoder(pool)
            pool = None
            pool = started()
            future = pool.submit(_video_job, data, limits)
        result = future.result(timeout=VIDEO_DECODE_TIMEOUT_S)
    except BrokenProcessPool:  # the decoder died on this video (decord segfaults on some corrupt files)
        _stop_decoder(pool)
        pool = None
        raise bad_request("cannot decode video (the decoder crashed on it)", param=param,
                          code="invalid_video") from None
    except FutureTimeout:
        _stop_decoder(pool)
        pool = None
        raise bad_request(f"video took over {VIDEO_DECODE_TIMEOUT_S:g} s to decode", param=param,
                          code="invalid_video") from None
    except APIError:
        raise
    except Exception as e:  # noqa: BLE001 - an error raised in the worker that is not an APIError
        raise bad_request(f"cannot decode video ({type(e).__name__})", param=param, code="invalid_video") from None
    finally:
        free.put(pool)  # back for the next request (None: a fresh decoder is started on demand)
    if result[0] == "ok":
        return result[1]
    _, status, message, code = result
    raise APIError(status, message, "invalid_request_error", param, code)


def load_video(url: str, limits: ServeLimits, s3: Optional[S3Config] = None,
               param: Optional[str] = None) -> tuple[np.ndarray, float]:
    """Fetch and decode one video URL into sampled frames and their rate."""
    return decode_video_checked(fetch(url, limits, s3, kind="video", param=param), limits, param)


# ----------------------------------------------------------------------------------------------------------------
# Fetching
# ----------------------------------------------------------------------------------------------------------------
def _shown(url: str) -> str:
    return url if len(url) <= 200 else url[:200] + "..."


def fetch(url: str, limits: ServeLimits, s3: Optional[S3Config] = None, *, kind: Optional[str] = None,
          param: Optional[str] = None) -> bytes:
    """The bytes behind a media URL (data:, s3://, allow-listed http(s)://), within the size and time limits."""
    if not isinstance(url, str) or not url:
        raise bad_request("media URL must be a non-empty string", param=param)
    if url[:5].lower() == "data:":
        return decode_data_url(url, limits, kind=kind, param=param)
    if len(url) > MAX_URL_CHARS:
        raise bad_request(f"media URL longer than {MAX_URL_CHARS} characters", param=param)
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme not in SCHEMES:
        raise bad_request(f"unsupported URL scheme {scheme or '(none)'!r}: use data:, s3://, http:// or https://",
                          param=param, code="invalid_url")
    if scheme == "s3":
        return _fetch_s3(url, limits, s3, param)
    return _fetch_http(url, limits, param)


def decode_data_url(url: str, limits: ServeLimits, kind: Optional[str] = None, param: Optional[str] = None) -> bytes:
    """The payload of a ``data:<kind>/...;base64,...`` URL (400 when malformed, 413 over max_fetch_bytes)."""
    header, sep, payload = url[5:].partition(",")
    if not sep:
        raise bad_request("malformed data URL: no ',' before the payload", param=param, code="invalid_data_url")
    fields = [f.strip().lower() for f in header.split(";")]
    media_type = fields[0]
    want = (kind,) if kind else ("image", "video")
    if not any(media_type.startswith(f"{w}/") and len(media_type) > len(w) + 1 for w in want):
        raise bad_request(f"data URL media type {media_type or '(none)'!r} is not {' or '.join(want)}/*",
                          param=param, code="invalid_data_url")
    if "base64" not in fields[1:]:
        raise bad_request("data URL must be base64-encoded (data:<type>;base64,...)", param=param,
                          code="invalid_data_url")
    payload = "".join(payload.split())  # line breaks are tolerated
    if not payload:
        raise bad_request("empty data URL", param=param, code="invalid_data_url")
    if len(payload) // 4 * 3 > limits.max_fetch_bytes + 3:
        raise too_large(f"media over {limits.max_fetch_bytes} bytes", param=param, code="media_too_large")
    try:
        data = base64.b64decode(payload + "=" * (-len(payload) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise bad_request("malformed data URL: invalid base64 payload", param=param, code="invalid_data_url") from None
    if not data:
        raise bad_request("empty data URL", param=param, code="invalid_data_url")
    if len(data) > limits.max_fetch_bytes:
        raise too_large(f"media over {limits.max_fetch_bytes} bytes", param=param, code="media_too_large")
    return data


# --- s3 ----------------------------------------------------------------------------------------------------------
_S3_CLIENTS: dict = {}
_S3_LOCK = threading.Lock()


def _s3_store(s3: Optional[S3Config], timeout_s: float):
    """One S3Storage per resolved configuration (boto3 clients are thread-safe and slow to build)."""
    from seedr1.storage import get_storage, resolve_s3

    base = s3 or S3Config()
    cfg = resolve_s3(replace(base, connect_timeout_s=min(base.connect_timeout_s, timeout_s),
                             read_timeout_s=min(base.read_timeout_s, timeout_s)))
    key = astuple(cfg)
    with _S3_LOCK:
        store = _S3_CLIENTS.get(key)
        if store is None:
            store = _S3_CLIENTS[key] = get_storage("s3://", cfg)
    return store


def _fetch_s3(url: str, limits: ServeLimits, s3: Optional[S3Config], param: Optional[str]) -> bytes:
    from seedr1.storage import StorageError, split_s3

    try:
        bucket, key = split_s3(url)
    except StorageError:
        bucket = key = ""
    if not bucket or not key:
        raise bad_request(f"malformed s3 URL {_shown(url)!r}: expected s3://bucket/key", param=param,
                          code="invalid_url")
    # The server's credentials may reach more than clients should (checkpoints, other data): only listed buckets.
    if not any(fnmatch.fnmatchcase(bucket, pattern) for pattern in limits.allow_s3_buckets):
        raise bad_request(f"s3 bucket {bucket!r} is not on this server's allow_s3_buckets list", param=param,
                          code="bucket_not_allowed")
    store = _s3_store(s3, limits.fetch_timeout_s)
    try:
        head = store.head(url)
        if head is None:
            raise bad_request(f"{_shown(url)} does not exist", param=param, code="media_not_found")
        if int(head.get("ContentLength") or 0) > limits.max_fetch_bytes:
            raise too_large(f"{_shown(url)} is over {limits.max_fetch_bytes} bytes", param=param,
                            code="media_too_large")
        data = store.read_bytes(url)
    except StorageError as e:
        reason = str(e).split(" (check ", 1)[0]  # the credentials hint is for operators, not clients
        raise bad_request(f"cannot read {_shown(url)}: {reason[:300]}", param=param, code="media_fetch_failed") from None
    if len(data) > limits.max_fetch_bytes:  # replaced between head and read
        raise too_large(f"{_shown(url)} is over {limits.max_fetch_bytes} bytes", param=param, code="media_too_large")
    return data


# --- http(s) -----------------------------------------------------------------------------------------------------
def _ip(text: str):
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def _same_host(a: str, b: str) -> bool:
    ia, ib = _ip(a), _ip(b)
    if ia is not None and ib is not None:
        return ia == ib
    return a == b


def _entry(entry: str) -> tuple[str, Optional[int], bool]:
    """An allow-list entry -> (host, port or None, valid): 'host', 'host:port', '[v6]', '[v6]:port' or bare v6."""
    e = entry.strip().lower()
    if e.startswith("["):
        host, _, rest = e[1:].partition("]")
    elif e.count(":") == 1:
        host, rest = e.split(":")
        rest = ":" + rest
    else:
        host, rest = e, ""
    if not rest:
        return host, None, bool(host)
    valid = rest[:1] == ":" and rest[1:].isdigit()
    return host, int(rest[1:]) if valid else None, valid and bool(host)


def host_allowed(host: str, port: int, allow_hosts: list) -> Optional[str]:
    """'explicit' (listed as host or host:port), 'wildcard' (by '*' or '*.domain'), or None (refused)."""
    host = host.lower().rstrip(".")
    match = None
    for raw in allow_hosts or []:
        h, p, valid = _entry(str(raw))
        if not valid or (p is not None and p != port):
            continue
        h = h.rstrip(".")
        if h == "*" or (h.startswith("*.") and host.endswith(h[1:])):
            match = match or "wildcard"
        elif _same_host(host, h):
            return "explicit"
    return match


def refused_address(ip) -> Optional[str]:
    """Why an address may not be fetched from without an explicit allow-list entry (None: public)."""
    if getattr(ip, "ipv4_mapped", None) is not None:
        ip = ip.ipv4_mapped
    for name in ("unspecified", "loopback", "link_local", "multicast", "reserved", "private"):
        if getattr(ip, f"is_{name}"):
            return name.replace("_", "-")
    if not ip.is_global:
        return "non-global"
    return None


class _PinnedHTTP(http.client.HTTPConnection):
    """HTTP to an already-checked address; the Host header still names the URL's host."""

    def __init__(self, host, port, address, timeout):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self):
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to an already-checked address; certificate and SNI checked against the URL's host."""

    def __init__(self, host, port, address, timeout):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self):
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def _fetch_http(url: str, limits: ServeLimits, param: Optional[str]) -> bytes:
    shown = _shown(url)
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        raise bad_request(f"malformed URL {shown!r}", param=param, code="invalid_url") from None
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise bad_request(f"URL {shown!r} has no host", param=param, code="invalid_url")
    if parts.username is not None or parts.password is not None:
        raise bad_request("media URLs may not carry credentials (user@host)", param=param, code="invalid_url")
    trust = host_allowed(host, port, limits.allow_hosts)
    if trust is None:
        raise bad_request(f"host {host!r} is not on this server's media allow list", param=param,
                          code="host_not_allowed")
    deadline = time.monotonic() + limits.fetch_timeout_s
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise bad_request(f"cannot resolve host {host!r}", param=param, code="media_fetch_failed") from None
    addresses = []
    for info in infos:
        address = info[4][0]
        ip = _ip(address)
        reason = "unparsable" if ip is None else refused_address(ip)
        if reason and trust != "explicit":
            raise bad_request(f"refused: {host!r} resolves to a {reason} address ({address}); only hosts listed "
                              "explicitly on the allow list may", param=param, code="host_not_allowed")
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise bad_request(f"cannot resolve host {host!r}", param=param, code="media_fetch_failed")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    cls = _PinnedHTTPS if parts.scheme.lower() == "https" else _PinnedHTTP
    conn = None
    try:
        error: Optional[Exception] = None
        for address in addresses:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            conn = cls(host, port, address, timeout=remaining)
            try:
                conn.request("GET", path, headers={"User-Agent": "seedr1-serve", "Accept-Encoding": "identity"})
                break
            except (ConnectionError, socket.gaierror) as e:  # next address; timeouts and TLS errors are final
                conn.close()
                conn, error = None, e
        if conn is None:
            raise error or OSError("no address")
        sock = conn.sock  # getresponse() drops conn.sock when the server closes after the response
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        resp = conn.getresponse()
        if 300 <= resp.status < 400:
            raise bad_request(f"fetching {shown}: HTTP {resp.status} redirect (redirects are not followed)",
                              param=param, code="media_fetch_failed")
        if resp.status != 200:
            raise bad_request(f"fetching {shown}: HTTP {resp.status}", param=param, code="media_fetch_failed")
        declared = resp.getheader("Content-Length")
        if declared and declared.strip().isdigit() and int(declared) > limits.max_fetch_bytes:
            raise too_large(f"{shown} is over {limits.max_fetch_bytes} bytes", param=param, code="media_too_large")
        chunks, total = [], 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            if resp.isclosed():  # the whole body is in (the response closes its socket)
                break
            sock.settimeout(remaining)
            chunk = resp.read(min(1 << 16, limits.max_fetch_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limits.max_fetch_bytes:
                raise too_large(f"{shown} is over {limits.max_fetch_bytes} bytes", param=param,
                                code="media_too_large")
        return b"".join(chunks)
    except APIError:
        raise
    except TimeoutError:  # socket.timeout is TimeoutError
        raise bad_request(f"fetching {shown} timed out after {limits.fetch_timeout_s:g} s", param=param,
                          code="media_fetch_timeout") from None
    except (OSError, http.client.HTTPException, ValueError) as e:
        raise bad_request(f"cannot fetch {shown}: {type(e).__name__}: {str(e)[:200]}", param=param,
                          code="media_fetch_failed") from None
    finally:
        if conn is not None:
            conn.close()
