"""Turning chat messages + frames + image into model inputs (the transformers side)."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


def chat_text(processor, messages: list[dict], add_generation_prompt: bool = True) -> str:
    """The prompt string with one unexpanded placeholder per image/video (the processor expands them)."""
    return processor.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False)


def video_metadata(frames: np.ndarray, fps: float) -> dict:
    """What already-sampled frames are: ``fps`` frames per second, every one kept. Without it transformers takes a
    video for 24 fps (Qwen2.5-VL's ``second_per_grid_ts``, which spaces its temporal positions, comes from it) and
    vLLM refuses a Qwen2.5-VL video; the trainer and the engine must both be told the same."""
    if not fps > 0:  # also NaN
        raise ValueError(f"video_fps must be a positive rate, got {fps!r}")
    n = len(frames)
    return {"fps": float(fps), "duration": n / fps, "total_num_frames": n, "frames_indices": list(range(n))}


def processor_inputs(processor, texts: Sequence[str], images: Optional[Sequence[np.ndarray]] = None,
                     videos: Optional[Sequence[np.ndarray]] = None, video_fps: Optional[Sequence[float]] = None):
    """Batch of tokenised prompts with pixel values, grids and ``mm_token_type_ids``.

    transformers 5.19 refuses a forward with media but without ``mm_token_type_ids`` (1 on media pad positions):
    the processor computes it here; callers that append completion tokens extend it with zeros.
    ``video_fps``: per video, the rate its frames stand for (``PromptRecord.video_fps``).
    """
    kwargs = {}
    if images:
        kwargs["images"] = list(images)
    if videos:
        kwargs["videos"] = list(videos)
        kwargs["do_sample_frames"] = False  # already sampled (as vLLM is told): a checkpoint's config must not resample
        if video_fps is not None:
            kwargs["video_metadata"] = [video_metadata(v, f) for v, f in zip(videos, video_fps)]
    return processor(text=list(texts), padding=True, return_tensors="pt", **kwargs)


def record_inputs(processor, record):
    """``processor_inputs`` of one prompt record: its chat text, its image and its video at the record's rate."""
    video = [record.video] if record.video is not None else None
    return processor_inputs(processor, [chat_text(processor, record.messages)],
                            images=[record.image] if record.image is not None else None,
                            videos=video, video_fps=[record.video_fps] if video else None)
