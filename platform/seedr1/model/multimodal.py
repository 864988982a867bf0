"""Turning chat messages + frames + image into model inputs (the transformers side)."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


def chat_text(processor, messages: list[dict], add_generation_prompt: bool = True) -> str:
    """The prompt string with one unexpanded placeholder per image/video (the processor expands them)."""
    return processor.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False)


def processor_inputs(processor, texts: Sequence[str], images: Optional[Sequence[np.ndarray]] = None,
                     videos: Optional[Sequence[np.ndarray]] = None):
    """Batch of tokenised prompts with pixel values, grids and ``mm_token_type_ids``.

    transformers 5.19 refuses a forward with media but without ``mm_token_type_ids`` (1 on media pad positions):
    the processor computes it here; callers that append completion tokens extend it with zeros.
    """
    kwargs = {}
    if images:
        kwargs["images"] = list(images)
    if videos:
        kwargs["videos"] = list(videos)
    return processor(text=list(texts), padding=True, return_tensors="pt", **kwargs)
