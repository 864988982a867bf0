"""Launching a GRPO run: Ray (embedded or joined), data, the rollout group, the trainer group (Ray Train)."""
from __future__ import annotations

from pathlib import Path

from seedr1.config import GRPOConfig, to_dict
from seedr1.train.launch import ensure_ray, prepare_run, run_trainer_group, worker_env


def run_grpo(cfg: GRPOConfig) -> Path:
    import ray

    from seedr1.grpo.loop import grpo_train_loop
    from seedr1.rollout.actor import start_rollout_group
    from seedr1.rollout.group import RolloutGroup

    G, world = cfg.rollout.num_samples, cfg.trainer.num_workers
    if (cfg.prompts_per_step * G) % world:
        raise ValueError(f"prompts_per_step x rollout.num_samples = {cfg.prompts_per_step * G} must divide evenly "
                         f"over trainer.num_workers = {world}")
    if cfg.rollout.weight_sync == "collective" and cfg.rollout.engine != "vllm":
        raise ValueError(f"rollout.weight_sync=collective needs rollout.engine=vllm (got {cfg.rollout.engine!r})")
    cfg = prepare_run(cfg, "grpo")
    env = worker_env()
    ensure_ray(cfg.rollout.num_actors * cfg.rollout.cpus_per_actor + world * cfg.trainer.cpus_per_worker, env)
    actors, pg = start_rollout_group(cfg.model, cfg.rollout, env)
    restarts = cfg.rollout.max_restarts
    sender = None
    if cfg.rollout.weight_sync == "collective":  # the group forms in the trainer's rank 0, at its first sync
        from seedr1.rollout.weight_sync import CollectiveSender

        sender = CollectiveSender(actors, cfg.rollout.weight_sync_bucket_mb << 20, cfg.rollout.weight_sync_timeout_s)
    group = RolloutGroup(actors, max_recoveries=restarts if restarts >= 0 else 10 ** 6, sender=sender)
    try:
        run_trainer_group(grpo_train_loop, {"cfg": to_dict(cfg), "rollout": group}, cfg.trainer, cfg.run_dir,
                          cfg.checkpoint.keep)
    finally:
        for a in actors:
            ray.kill(a)
        ray.util.remove_placement_group(pg)
    print(f"[grpo] done: run folder {cfg.run_dir} (metrics.jsonl, tensorboard/, checkpoints/, config.yaml)",
          flush=True)
    return Path(cfg.run_dir)
