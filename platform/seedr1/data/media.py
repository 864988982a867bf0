"""Decoding media from bytes in memory: video with decord (no temp files), images with PIL; frame sampling.

Frames are sampled at ``fps`` (default 2), at least ``min_frames`` and at most ``max_frames`` and never more than
the clip has, an even count rounded down (Qwen's temporal patch is 2; the official rule, ``frame_count``), and
resized to ``size`` x ``size`` (the official run: 252).
"""
from __future__ import annotations

import io
import math

import numpy as np


class MediaError(ValueError):
    """Media could not be decoded; the message names the file."""


def frame_count(num_frames: int, native_fps: float, fps: float, min_frames: int, max_frames: int) -> int:
    """How many frames to sample from a clip of ``num_frames`` at ``native_fps``: the official rule
    (``smart_nframes`` in SEED-Bench-R1's qwen-vl-utils): duration x ``fps``, within ``min_frames`` (rounded up to
    even) and ``max_frames`` (rounded down to even), never more than the clip has, then rounded down to even (Qwen's
    temporal patch is 2). A clip of fewer than 2 frames has no such count: ValueError."""
    duration = num_frames / native_fps if native_fps > 0 else 0.0
    lo, hi = 2 * math.ceil(min_frames / 2), 2 * math.floor(max_frames / 2)
    n = 2 * math.floor(min(min(max(duration * fps, lo), hi), num_frames) / 2)
    if not 2 <= n <= num_frames:
        raise ValueError(f"{num_frames} frame(s) give no even frame count of at least 2 (between {min_frames} and "
                         f"{max_frames})")
    return n


def frame_indices(num_frames: int, count: int) -> np.ndarray:
    """``count`` indices spread uniformly over the clip (repeats when the clip is shorter than ``count``)."""
    return np.linspace(0, num_frames - 1, count).round().astype(np.int64)


def decode_video(data: bytes, name: str = "<video>", fps: float = 2.0, min_frames: int = 4, max_frames: int = 16,
                 size: int | None = 252) -> np.ndarray:
    """uint8 frames [T, H, W, 3] sampled from an encoded video held in memory."""
    return decode_clip(data, name, fps, min_frames, max_frames, size)[0]


def decode_clip(data: bytes, name: str = "<video>", fps: float = 2.0, min_frames: int = 4, max_frames: int = 16,
                size: int | None = 252) -> tuple[np.ndarray, float]:
    """``decode_video``'s frames and the rate they stand for: frames per second of the clip as sampled (``fps``
    unless ``min_frames`` / ``max_frames`` changed the count). Qwen2.5-VL spaces its temporal positions by it."""
    import decord

    if not data:
        raise MediaError(f"{name}: empty video file")
    try:
        kwargs = dict(width=size, height=size) if size else {}
        reader = decord.VideoReader(io.BytesIO(data), ctx=decord.cpu(0), num_threads=1, **kwargs)
        n, native_fps = len(reader), float(reader.get_avg_fps())
        if n == 0:
            raise MediaError(f"{name}: video has no frames")
        try:
            count = frame_count(n, native_fps, fps, min_frames, max_frames)
        except ValueError as e:
            raise MediaError(f"{name}: {e}") from None
        frames = reader.get_batch(frame_indices(n, count).tolist()).asnumpy()
    except MediaError:
        raise
    except Exception as e:  # decord raises DECORDError / RuntimeError on corrupt or truncated input
        first_line = str(e).strip().partition("\n")[0][:200]  # decord appends a long C++ stack trace
        cause = f"{type(e).__name__}: {first_line}" if first_line else type(e).__name__
        raise MediaError(f"{name}: cannot decode video ({cause})") from e
    rate = count * native_fps / n if 0 < native_fps < float("inf") else fps  # no usable rate: as asked
    return np.ascontiguousarray(frames, dtype=np.uint8), rate


def decode_image(data: bytes, name: str = "<image>", size: int | None = 252) -> np.ndarray:
    """uint8 RGB image [H, W, 3] from encoded bytes, resized to ``size`` x ``size``."""
    from PIL import Image

    if not data:
        raise MediaError(f"{name}: empty image file")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("RGB")
            if size:
                im = im.resize((size, size), Image.BICUBIC)
            return np.asarray(im, dtype=np.uint8).copy()
    except Exception as e:
        raise MediaError(f"{name}: cannot decode image ({type(e).__name__}: {e})") from e
