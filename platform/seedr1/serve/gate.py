"""seedr1's layer in front of vLLM's OpenAI server, as ASGI middleware in the replica: routes, API keys, the body
limit, request checks and media (``serve.request``), request metrics and a JSON access log.

Public: ``GET /health``, the OpenAPI schema (``/openapi.json``, ``/docs``). Behind a key: ``GET /v1/models[/{id}]``,
``POST /v1/chat/completions``, ``POST /v1/completions``. Every other route of vLLM's app is removed
(``keep_served_routes``), so the schema documents exactly what is served. Refusals here are OpenAI-shaped; vLLM's own
refusals already are.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable, Optional

from ray import serve

from seedr1.config import ServeConfig
from seedr1.metrics import ray_metrics
from seedr1.serve.errors import APIError, bad_request, too_large, unauthorized
from seedr1.serve.request import prepare_chat, prepare_completion

PUBLIC = {"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect"}
GENERATE = {"/v1/chat/completions": prepare_chat, "/v1/completions": prepare_completion}
SERVED = PUBLIC | set(GENERATE) | {"/v1/models", "/v1/models/{model:path}"}
USAGE_BYTES = 1 << 20  # a non-streamed answer's body is read for its usage up to this size

access_log = logging.getLogger("seedr1.serve.access")


def key_digest(key: str) -> str:
    """What replicas compare against: a key's SHA-256. The driver hands its keys to the replicas this way, not
    through a runtime_env, which Ray's dashboard shows in plain text."""
    return hashlib.sha256(key.encode()).hexdigest()


def start_access_log() -> str:
    """One JSON line per request in ``seedr1-access-<pid>.log`` beside Ray Serve's own logs (``<ray logs>/serve/``,
    shown by Ray's dashboard); stderr outside Ray. Returns where it writes."""
    if access_log.handlers:
        return getattr(access_log.handlers[0], "baseFilename", "<stderr>")
    try:
        import ray

        folder = Path(ray._private.worker._global_node.get_logs_dir_path()) / "serve"  # no public accessor
        folder.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(folder / f"seedr1-access-{os.getpid()}.log")
    except (AttributeError, OSError):  # not in a Ray worker
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access_log.addHandler(handler)
    access_log.setLevel(logging.INFO)
    access_log.propagate = False
    return getattr(handler, "baseFilename", "<stderr>")


def keep_served_routes(app) -> None:
    """Drop every route of vLLM's app but the served ones (admin, scaling, tokenizer and render routes included)."""
    app.router.routes = [r for r in app.router.routes if getattr(r, "path", None) in SERVED]
    app.openapi_schema = None


def document_errors(app, title: str) -> None:
    """The OpenAPI schema with the bearer key and the errors this layer adds (401, 404, 413) on every key route."""
    build = app.openapi
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = build()
            schema["info"]["title"] = title
            schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
                "type": "http", "scheme": "bearer"}
            for path, ops in schema.get("paths", {}).items():
                if path in PUBLIC:
                    continue
                for op in ops.values():
                    op["security"] = [{"bearer": []}]
                    for code, text in (("401", "Missing or invalid API key"), ("404", "Unknown model"),
                                       ("413", "Request body or media over its limit")):
                        op.setdefault("responses", {}).setdefault(code, {"description": text, **error})
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi


async def _read_body(receive: Callable, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise APIError(400, "client disconnected")
        size += len(message.get("body", b""))
        if size > limit:  # refused as it streams in: a chunked upload has no Content-Length to check first
            raise too_large(f"request body over {limit} bytes")
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text}")
    return value


def _reject(constant: str):
    raise ValueError(f"{constant} is not JSON")


def _parse(raw: bytes) -> dict:
    """Strict JSON (no NaN, Infinity or 1e400, which Python's reader takes and vLLM's checks would not catch)."""
    try:
        body = json.loads(raw, parse_float=_finite, parse_constant=_reject)
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, int digits limit; deep nesting
        raise bad_request("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object")
    return body


def _usage(chunk: bytes) -> Optional[dict]:
    """The usage object of a JSON answer or of a stream event carrying one (None when there is none)."""
    for line in chunk.split(b"\n"):
        line = line.removeprefix(b"data: ").strip()
        if b'"usage":{' in line.replace(b" ", b"") and line.startswith(b"{"):
            try:
                usage = json.loads(line).get("usage")
            except ValueError:
                continue
            if isinstance(usage, dict):
                return usage
    return None


class Gate:
    def __init__(self, app, *, settings: ServeConfig, key_digests: set, banned_bias: dict):
        self.app, self.cfg, self.key_digests, self.banned_bias = app, settings, key_digests, banned_bias

    def _check_auth(self, headers: dict) -> None:
        if self.cfg.auth == "none":
            return
        # the scheme is case-insensitive (RFC 7235): "bearer <key>" is as good as "Bearer <key>"
        scheme, _, key = headers.get(b"authorization", b"").decode("latin-1").strip().partition(" ")
        if scheme.lower() != "bearer" or key_digest(key.strip()) not in self.key_digests:
            raise unauthorized("missing or invalid API key (Authorization: Bearer <key>)")

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self.app(scope, receive, send)
        if scope["type"] != "http":  # no websocket route is served (and none would pass the key check)
            return await send({"type": "websocket.close", "code": 1008})
        root, path = scope.get("root_path", ""), scope["path"]
        path = path[len(root):] or "/" if root and path.startswith(root) else path
        t0, status, usage, prepared = time.perf_counter(), [0], [None], [None]
        multiplexed = serve.get_multiplexed_model_id()  # Ray's LoRA header: no adapters are served here
        if path in PUBLIC and not multiplexed:
            return await self.app(scope, receive, send)
        try:
            if multiplexed:
                raise bad_request("model multiplexing (serve_multiplexed_model_id) is not enabled on this server")
            if path not in GENERATE and path != "/v1/models" and not path.startswith("/v1/models/"):
                raise APIError(404, f"no route {scope['method']} {path}", code="not_found")
            headers = dict(scope["headers"])
            self._check_auth(headers)
            if path in GENERATE and scope["method"] == "POST":
                declared = headers.get(b"content-length", b"")
                if declared.isdigit() and int(declared) > self.cfg.limits.max_body_bytes:
                    raise too_large(f"request body over {self.cfg.limits.max_body_bytes} bytes")
                body = _parse(await _read_body(receive, self.cfg.limits.max_body_bytes))
                try:
                    body = await asyncio.to_thread(GENERATE[path], body, self.cfg, self.banned_bias)
                except APIError:
                    raise
                except Exception as e:  # noqa: BLE001 - a bug here is a 500 in OpenAI's shape, not a dropped socket
                    logging.getLogger("seedr1.serve").exception("request preparation failed")
                    raise APIError(500, f"internal error: {type(e).__name__}", "server_error") from e
                scope, receive = _with_body(scope, json.dumps(body).encode(), receive)
                prepared[0] = time.perf_counter() - t0
        except APIError as e:
            status[0] = e.status
            await _send_json(send, e.status, e.body())
            self._log(scope, path, status[0], t0, None, None)
            return
        except BaseException:  # the client went away (cancelled) while its request was prepared: still a line
            self._log(scope, path, 499, t0, None, None)
            raise

        buffered = bytearray()

        async def observe(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif message["type"] == "http.response.body" and usage[0] is None:
                chunk = message.get("body", b"")
                if len(buffered) + len(chunk) <= USAGE_BYTES:
                    buffered.extend(chunk)
                    if not message.get("more_body"):  # a whole JSON answer, or the last stream events
                        usage[0] = _usage(bytes(buffered))
                    elif b"\n\n" in chunk:  # a stream event: only the last ones carry usage
                        usage[0] = _usage(chunk)
                        buffered.clear()
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            self._log(scope, path, status[0] or 500, t0, usage[0], prepared[0])

    @staticmethod
    def _log(scope, path: str, status: int, t0: float, usage: Optional[dict], prepared: Optional[float]) -> None:
        """Metrics and the access line: ``ms`` the whole request in this replica, ``gate_ms`` its part here (body,
        checks, media fetched and decoded) before vLLM's server had it."""
        seconds = time.perf_counter() - t0
        if path in GENERATE:
            ray_metrics.serve_request(status, seconds, usage)
        request_id = dict(scope.get("headers", ())).get(b"x-request-id", b"").decode("latin-1") or None
        access_log.info(json.dumps({"time": round(time.time(), 3), "request_id": request_id,
                                    "method": scope["method"], "path": path, "status": status,
                                    "ms": round(1000 * seconds, 1),
                                    "gate_ms": None if prepared is None else round(1000 * prepared, 1),
                                    "prompt_tokens": usage and usage.get("prompt_tokens"),
                                    "completion_tokens": usage and usage.get("completion_tokens")}))


def _with_body(scope: dict, body: bytes, receive: Callable) -> tuple[dict, Callable]:
    """The request as the app will read it: the rewritten body, its length in the headers."""
    headers = [(k, v) for k, v in scope["headers"] if k not in (b"content-length", b"transfer-encoding")]
    scope = {**scope, "headers": headers + [(b"content-length", str(len(body)).encode())]}
    sent = [False]

    async def replay():
        if sent[0]:  # the body is read: what follows is the client's (a disconnect aborts the generation)
            return await receive()
        sent[0] = True
        return {"type": "http.request", "body": body, "more_body": False}

    return scope, replay


async def _send_json(send: Callable, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})
