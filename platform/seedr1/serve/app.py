"""The model on Ray Serve LLM: vLLM's async engine (continuous batching, token streaming) and vLLM's own OpenAI
server (chat and legacy completions, ``logprobs``, ``response_format``, ``n``, ``seed``, ``stop``, usage), served
from the replica itself (Ray Serve LLM's direct-streaming shape: one hop from the proxy), with seedr1's layer in
front as ASGI middleware (``serve.gate``: keys, limits, safe media, SEED-Bench-R1 frame sampling, metrics, access
log).

Deploy: ``python jobs/serve.py``, ``serve run seedr1.serve.app:build_app ...``, or a KubeRay RayService with the
same import path.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ray import serve
from ray.llm._internal.serve.core.configs.accelerators import CPUConfig
from ray.llm._internal.serve.engines.vllm.vllm_engine import VLLMEngine
from ray.serve.llm import LLMConfig
from ray.serve.llm.deployment import LLMServer

from seedr1.config import ConfigError, ServeConfig, from_dict, to_dict
from seedr1.serve.gate import Gate, document_errors, keep_served_routes, key_digest, start_access_log


def load_api_keys(cfg: ServeConfig) -> set[str]:
    """Keys from the environment variable and the key file (one per line); empty when none is configured."""
    keys = {k.strip() for k in os.environ.get(cfg.api_keys_env, "").split(",") if k.strip()}
    if cfg.api_keys_file:
        keys |= {line.strip() for line in Path(cfg.api_keys_file).read_text().splitlines() if line.strip()}
    return keys


class Seedr1Engine(VLLMEngine):
    """Ray Serve LLM's vLLM engine, on CPU with one worker run inside the engine core (vLLM's ``uni`` executor), as
    `vllm serve` and seedr1's rollout engines run it: Ray Serve LLM's CPU default (``mp``) adds a worker process and
    a message hop per engine step."""

    def _prepare_engine_config(self, callback_ctx):
        args, frontend, config = super()._prepare_engine_config(callback_ctx)
        parallel = config.parallel_config
        if isinstance(self.llm_config.accelerator_config, CPUConfig) and parallel.world_size == 1:
            parallel.distributed_executor_backend = args.distributed_executor_backend = "uni"
        return args, frontend, config


class Seedr1Server(LLMServer):
    """Ray Serve LLM's server with the checkpoint resolved by seedr1 (tiny, s3:// with seedr1's S3 settings) and
    seedr1's gate wrapped around vLLM's app."""

    async def __init__(self, llm_config: LLMConfig, settings: dict, key_digests: list[str] = ()):
        from seedr1.model.loading import load_processor, resolve_checkpoint
        from seedr1.model.tiny import vision_token_ids

        self.settings = from_dict(ServeConfig, settings)
        # digests of the driver's keys and of this node's own (a key file mounted on the replica's node)
        self.key_digests = set(key_digests) | {key_digest(k) for k in load_api_keys(self.settings)}
        if self.settings.auth == "key" and not self.key_digests:  # checked here too: never serve without keys
            raise RuntimeError(f"auth=key but no API key: set ${self.settings.api_keys_env} or api_keys_file")
        local = resolve_checkpoint(self.settings.model, self.settings.s3)
        llm_config = llm_config.model_copy(deep=True)
        llm_config.model_loading_config.model_source = local
        tokenizer = load_processor(local).tokenizer
        # never sample a vision token, as the rollout and evaluation engines (VLLMEngine.banned_bias)
        self.banned_bias = {str(i): -100.0 for i in vision_token_ids(tokenizer)}
        start_access_log()
        await super().__init__(llm_config, engine_cls=Seedr1Engine)

    async def __serve_build_asgi_app__(self):
        app = await super().__serve_build_asgi_app__()
        keep_served_routes(app)
        document_errors(app, f"seedr1: {self.settings.served_model_name}")
        app.middleware_stack = None  # vLLM built its stack eagerly: rebuilt lazily with the gate outermost
        app.add_middleware(Gate, settings=self.settings, key_digests=self.key_digests, banned_bias=self.banned_bias)
        return app


def llm_config(cfg: ServeConfig) -> LLMConfig:
    """Ray Serve LLM's config for ``cfg``: the engine arguments every seedr1 engine uses, the replica's resources in
    one placement-group bundle, replicas and autoscaling."""
    from seedr1.rollout.vllm_engine_factory import engine_kwargs
    from seedr1.train.launch import worker_env

    cpu = cfg.gpus_per_replica == 0
    bundle = {"CPU": cfg.cpus_per_replica, **({"GPU": cfg.gpus_per_replica} if not cpu else {})}
    env = {**worker_env(), "VLLM_ENABLE_V1_MULTIPROCESSING": "0" if cfg.vllm.in_process else "1"}  # keys: as digests
    if cpu:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(cfg.vllm.cpu_kvcache_space_gb)
    deployment = {"max_ongoing_requests": cfg.max_ongoing_requests,
                  "ray_actor_options": {"num_cpus": 0},  # the replica's CPUs are the bundle's
                  "logging_config": {"enable_access_log": False}}  # seedr1's access log has each request
    if cfg.max_replicas > cfg.min_replicas:
        deployment["autoscaling_config"] = {"min_replicas": cfg.min_replicas, "max_replicas": cfg.max_replicas,
                                            "target_ongoing_requests": cfg.target_ongoing_requests}
    else:
        deployment["num_replicas"] = cfg.min_replicas
    if cfg.node_labels:
        deployment["placement_group_bundle_label_selector"] = [dict(cfg.node_labels)]
    return LLMConfig(model_loading_config={"model_id": cfg.served_model_name, "model_source": cfg.model},
                     accelerator_config={"kind": "cpu" if cpu else "gpu"},
                     placement_group_config={"bundles": [bundle]},
                     # per-request media_io_kwargs are the gate's alone (it sets them for each video it decoded)
                     engine_kwargs={**engine_kwargs(cfg.vllm, cpu), "trust_request_mm_kwargs": True},
                     runtime_env={"env_vars": env}, deployment_config=deployment,
                     log_engine_metrics=True)


def build(cfg: ServeConfig):
    """The Serve application for ``cfg`` (refuses to build without API keys unless auth=none, or replicas packed on
    one GPU beyond its memory)."""
    from ray.serve.llm import build_llm_deployment

    from seedr1.model.loading import resolve_for_workers
    from seedr1.train.resources import check_engine_gpus

    check_engine_gpus(cfg.gpus_per_replica, cfg.vllm.gpu_memory_utilization, "gpus_per_replica",
                      "vllm.gpu_memory_utilization")
    if cfg.auth == "key" and not load_api_keys(cfg):
        raise ConfigError(f"auth=key but no API key configured: set ${cfg.api_keys_env} (comma-separated) or "
                           f"api_keys_file; for local use only, auth=none")
    cfg.model = resolve_for_workers(cfg.model)  # tiny built here first; local paths absolute
    digests = sorted(key_digest(k) for k in load_api_keys(cfg))
    return build_llm_deployment(llm_config(cfg), deployment_cls=serve.ingress()(Seedr1Server),
                                bind_kwargs={"settings": to_dict(cfg), "key_digests": digests})


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
