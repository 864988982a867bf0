"""A PromptRecord as OpenAI chat content, losslessly: what the evaluation client sends and what the server hands
vLLM, so a served model sees the very pixels the evaluation job's engine sees.

Images go as PNG data URLs; a video's sampled frames as vLLM's frame-list form (``data:video/jpeg;base64,`` + base64
PNGs joined by ","), with ``media_io_kwargs`` telling vLLM to keep every frame (it keeps 32 otherwise) and what
rate they stand for, the metadata the engine gets in process (``model.multimodal.video_metadata``).
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import threading

import numpy as np

from seedr1.model.multimodal import video_metadata

FRAMES_DATA_URL = "data:video/jpeg;base64,"  # vLLM's form of a video as frames: base64 images joined by ","
_REQUEST = threading.local()  # the PNGs of the request being prepared in this thread (``request_pngs``)


def _digest(image: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16).digest() + bytes(str(image.shape), "ascii")


@contextlib.contextmanager
def request_pngs():
    """While one request is prepared (in this thread): PNGs it brought that decode to exactly the pixels it is
    answered with (``remember_png``) are sent on as they came instead of encoded again. Nothing outlives it."""
    _REQUEST.pngs = {}
    try:
        yield
    finally:
        _REQUEST.pngs = None


def remember_png(image: np.ndarray, png: bytes) -> None:
    """``png`` decodes to exactly ``image`` (and to nothing else: the caller checked it carries no orientation,
    which vLLM would apply): within ``request_pngs``, ``png_base64(image)`` sends these bytes."""
    pngs = getattr(_REQUEST, "pngs", None)
    if pngs is not None:
        pngs[_digest(image)] = png


def png_base64(image: np.ndarray) -> str:
    from PIL import Image

    pngs = getattr(_REQUEST, "pngs", None)
    known = pngs.get(_digest(image)) if pngs else None
    if known is not None:
        return base64.b64encode(known).decode()
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", compress_level=1)  # lossless, quick
    return base64.b64encode(buf.getvalue()).decode()


def png_data_url(image: np.ndarray) -> str:
    return "data:image/png;base64," + png_base64(image)


def frames_data_url(frames: np.ndarray) -> str:
    """Sampled frames [T, H, W, 3] in vLLM's frame-list form."""
    return FRAMES_DATA_URL + ",".join(png_base64(f) for f in frames)


def video_io_kwargs(frames: np.ndarray, fps: float) -> dict:
    """vLLM's per-request ``media_io_kwargs`` for a frame-list video: every frame kept, already sampled at ``fps``
    (vLLM then gives the processor ``model.multimodal.video_metadata``'s values: n frames, indices 0..n-1, n/fps s)."""
    return {"video": {"num_frames": -1, "fps": float(video_metadata(frames, fps)["fps"])}}


def openai_messages(record) -> tuple[list[dict], dict]:
    """(messages, media_io_kwargs) for ``record``: its messages with placeholders replaced by the media themselves."""
    messages = []
    for message in record.messages:
        parts = []
        for part in message["content"]:
            if part["type"] == "video" and record.video is not None:
                parts.append({"type": "video_url", "video_url": {"url": frames_data_url(record.video)}})
            elif part["type"] == "image" and record.image is not None:
                parts.append({"type": "image_url", "image_url": {"url": png_data_url(record.image)}})
            elif part["type"] == "text":
                parts.append({"type": "text", "text": part["text"]})
        messages.append({"role": message["role"], "content": parts})
    kwargs = video_io_kwargs(record.video, record.video_fps) if record.video is not None else {}
    return messages, kwargs
