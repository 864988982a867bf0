"""A PromptRecord as OpenAI chat content, losslessly: what the evaluation client sends and what the server hands
vLLM, so a served model sees the very pixels the evaluation job's engine sees.

Images go as PNG data URLs; a video's sampled frames as vLLM's frame-list form (``data:video/jpeg;base64,`` + base64
PNGs joined by ","), with ``media_io_kwargs`` telling vLLM to keep every frame (it keeps 32 otherwise) and what
rate they stand for, the metadata the engine gets in process (``model.multimodal.video_metadata``).
"""
from __future__ import annotations

import base64
import hashlib
import io
import threading
from collections import OrderedDict

import numpy as np

from seedr1.model.multimodal import video_metadata

FRAMES_DATA_URL = "data:video/jpeg;base64,"  # vLLM's form of a video as frames: base64 images joined by ","
_KNOWN_PNGS: OrderedDict = OrderedDict()  # pixels' digest -> a PNG of exactly them that a request brought
_KNOWN_LOCK = threading.Lock()
KNOWN_PNGS = 512


def _digest(image: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16).digest() + bytes(str(image.shape), "ascii")


def remember_png(image: np.ndarray, png: bytes) -> None:
    """``png`` decodes to exactly ``image``: a server handing ``image`` on sends these bytes, not a new encoding."""
    with _KNOWN_LOCK:
        _KNOWN_PNGS[_digest(image)] = png
        while len(_KNOWN_PNGS) > KNOWN_PNGS:
            _KNOWN_PNGS.popitem(last=False)


def png_base64(image: np.ndarray) -> str:
    from PIL import Image

    with _KNOWN_LOCK:
        known = _KNOWN_PNGS.pop(_digest(image), None) if _KNOWN_PNGS else None
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
    """vLLM's per-request ``media_io_kwargs`` for a frame-list video: all frames kept, already sampled at ``fps``."""
    return {"video": {"num_frames": -1, **video_metadata(frames, fps)}}


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
