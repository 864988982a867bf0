"""Launching a GRPO run: Ray (embedded or joined), data, the rollout group, the trainer group (Ray Train)."""
from __future__ import annotations

import os
import time
from pathlib import Path

from seedr1.config import GRPOConfig, save_config, to_dict


def _worker_env() -> dict:
    keep = ("RAY_AUTH_MODE", "TORCH_EXTENSIONS_DIR", "SEEDR1_CACHE", "VLLM_ENABLE_V1_MULTIPROCESSING",
            "VLLM_CPU_KVCACHE_SPACE", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION",
            "HF_HUB_OFFLINE")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def prepare_run(cfg: GRPOConfig) -> GRPOConfig:
    """Resolve data and model locations, write the config into the run folder."""
    run_dir = Path(cfg.run_dir).resolve()
    cfg.run_dir = str(run_dir)
    if not cfg.data.root and not cfg.data.shards:
        if not cfg.synthetic_if_missing:
            raise ValueError("data.root (or data.shards) is required: the SEED-Bench-R1 root or packed shards")
        from seedr1.data.synthetic import SynthSpec, write_synthetic

        root = run_dir / "data"
        if not (root / "annotations" / "training_6k.jsonl").exists():
            write_synthetic(root, SynthSpec(seed=cfg.data.seed))
        cfg.data.root = str(root)
        print(f"[grpo] no data.root given: synthetic SEED-Bench-R1-mini at {root}", flush=True)
    if cfg.model.startswith("tiny"):
        from seedr1.model.loading import resolve_checkpoint

        cfg.model = resolve_checkpoint(cfg.model)  # built once on the driver, read by every worker
    G, world = cfg.rollout.num_samples, cfg.trainer.num_workers
    if (cfg.prompts_per_step * G) % world:
        raise ValueError(f"prompts_per_step x rollout.num_samples = {cfg.prompts_per_step * G} must divide evenly "
                         f"over trainer.num_workers = {world}")
    save_config(cfg, run_dir)
    return cfg


def run_grpo(cfg: GRPOConfig) -> Path:
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from seedr1.grpo.loop import grpo_train_loop
    from seedr1.rollout.actor import start_rollout_group
    from seedr1.rollout.group import RolloutGroup

    cfg = prepare_run(cfg)
    env = _worker_env()
    if not ray.is_initialized():
        # No RAY_ADDRESS: an embedded local Ray; with RAY_ADDRESS / under `ray job submit`: join that cluster.
        # Logical CPUs sized to the job (threads are pinned to 1 per process, so oversubscription is mild).
        needed = cfg.rollout.num_actors * cfg.rollout.cpus_per_actor + \
            cfg.trainer.num_workers * cfg.trainer.cpus_per_worker + 2  # + train controller + data tasks
        local = None if os.environ.get("RAY_ADDRESS") else max(os.cpu_count() or 1, int(needed + 0.999))
        ray.init(runtime_env={"env_vars": env}, include_dashboard=False, num_cpus=local,
                 log_to_driver=True, ignore_reinit_error=True)
    actors, pg = start_rollout_group(cfg.model, cfg.rollout, env)
    restarts = cfg.rollout.max_restarts
    group = RolloutGroup(actors, max_recoveries=restarts if restarts >= 0 else 10 ** 6)
    gpu = cfg.trainer.gpus_per_worker > 0
    trainer = TorchTrainer(
        grpo_train_loop,
        train_loop_config={"cfg": to_dict(cfg), "rollout": group},
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=cfg.trainer.num_workers, use_gpu=gpu,
                                     resources_per_worker={"CPU": cfg.trainer.cpus_per_worker,
                                                           **({"GPU": cfg.trainer.gpus_per_worker} if gpu else {})}),
        # A fresh Ray Train run per launch: its checkpoints (pointers to ours) only serve restarts within this
        # launch; resuming across launches is ``resume=auto`` over our own checkpoint folder.
        run_config=RunConfig(name=f"trainer-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}",
                             storage_path=str(Path(cfg.run_dir) / "ray_train"),
                             checkpoint_config=CheckpointConfig(num_to_keep=cfg.checkpoint.keep or None),
                             failure_config=FailureConfig(max_failures=cfg.trainer.max_failures)),
    )
    try:
        trainer.fit()
    finally:
        for a in actors:
            ray.kill(a)
        ray.util.remove_placement_group(pg)
    print(f"[grpo] done: run folder {cfg.run_dir} (metrics.jsonl, tensorboard/, checkpoints/, config.yaml)",
          flush=True)
    return Path(cfg.run_dir)
