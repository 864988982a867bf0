"""An OpenAI-compatible chat endpoint as an evaluation target: this project's server, or vLLM's own (media go in
vLLM's forms, which other OpenAI-compatible servers may not take).

Media travel inline and lossless, in the prompt's order: the current-observation image as a PNG data URL
(`image_url`), the task-progress clip as its sampled frames in vLLM's frame-list form (`video_url`
``data:video/jpeg;base64,<png>,<png>,...`` with ``media_io_kwargs`` giving their rate; ``serve.wire``; vLLM's own
server takes it when started with ``--trust-request-mm-kwargs``). Bounded concurrency, retries with backoff.
A request the server refuses for its content (400, 413, 422: e.g. a prompt over the model's length), or answers
with fewer choices than the ``n`` asked for, fails only its sample; anything else (auth, 5xx or no connection after
the retries) fails the run.
"""
from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

from seedr1.serve.wire import openai_messages


def chat_body(record) -> dict:
    """The record as OpenAI chat content, its media lossless (``serve.wire``): a served model sees the pixels the
    evaluation job's own engine sees. vLLM's own server takes this form too."""
    messages, media_io_kwargs = openai_messages(record)
    return {"messages": messages, **({"media_io_kwargs": media_io_kwargs} if media_io_kwargs else {})}


class Rejected(RuntimeError):
    """The server refused one sample's request for its content (HTTP 400, 413, 422), or answered it with fewer
    choices than asked: this sample's answers are errors (counted wrong, asked again by a rerun)."""

    STATUSES = (400, 413, 422)


class EndpointTarget:
    def __init__(self, base_url: str, model: str, api_key: str = "", concurrency: int = 8, timeout_s: float = 300.0,
                 retries: int = 3):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.concurrency, self.timeout_s, self.retries = model, concurrency, timeout_s, retries
        self.api_key = api_key or os.environ.get("SEEDR1_API_KEY") or os.environ.get("OPENAI_API_KEY", "")

    def _post(self, body: dict) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode()
        for attempt in range(self.retries + 1):
            try:
                req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    return json.loads(resp.read())
            except urllib.error.HTTPError as e:
                if e.code in Rejected.STATUSES:
                    raise Rejected(f"HTTP {e.code}: {_error_message(e.read())}") from None
                if e.code < 500 and e.code != 429 or attempt == self.retries:  # a client error won't improve
                    raise RuntimeError(f"{self.url}: HTTP {e.code}: {e.read()[:300]!r}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                if attempt == self.retries:
                    raise RuntimeError(f"{self.url}: {e} (after {self.retries + 1} attempts)") from None
            time.sleep(min(2 ** attempt, 10))
        raise AssertionError("unreachable")

    def answer(self, record, n: int, temperature: float, top_p: float, max_tokens: int,
               seed: Optional[int] = None, top_k: int = 0) -> list[str]:
        body = {"model": self.model, **chat_body(record), "n": n, "temperature": temperature,
                "top_p": top_p, "max_tokens": max_tokens}
        if seed is not None:
            body["seed"] = seed
        if top_k:  # vLLM's sampling extra (OpenAI's API has none): sent only when asked for
            body["top_k"] = top_k
        choices = self._post(body)["choices"]
        if len(choices) != n:  # a server ignoring ``n``: the missing draws would silently count wrong
            raise Rejected(f"asked for n={n} answers, the server returned {len(choices)}")
        return [c["message"]["content"] or "" for c in sorted(choices, key=lambda c: c.get("index", 0))]

    def generate(self, records: list, n: int, temperature: float, top_p: float, max_tokens: int,
                 seed: Optional[int] = None, top_k: int = 0) -> list:
        """``n`` answers per record, ``concurrency`` requests in flight; a record whose request failed gets its
        exception instead (``Rejected`` for a refused sample), so the caller keeps the answers that came back."""
        def one(record):
            try:
                return self.answer(record, n, temperature, top_p, max_tokens, seed, top_k)
            except Exception as e:  # noqa: BLE001 - handed to the caller in the record's place
                return e

        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(one, records))


def _error_message(raw: bytes) -> str:
    """The message of an OpenAI-shaped error body, else the start of the body."""
    try:
        return str(json.loads(raw)["error"]["message"])[:500]
    except (ValueError, KeyError, TypeError):
        return repr(raw[:300])
