"""Launching a GRPO run: Ray (embedded or joined), data, the rollout group, the trainer group (Ray Train)."""
from __future__ import annotations

from pathlib import Path

from seedr1.algo.rewards import check_rewards
from seedr1.config import ConfigError, GRPOConfig, to_dict
from seedr1.cluster.demands import grpo_groups
from seedr1.cluster.stores import check_inputs
from seedr1.train.launch import prepare_run, run_trainer_group, start_ray, worker_env


def check_grpo(cfg: GRPOConfig) -> None:
    """The settings that cannot work together, refused before anything starts (no Ray, no data, no model)."""
    G, world = cfg.rollout.num_samples, cfg.trainer.num_workers
    if (cfg.prompts_per_step * G) % world:
        raise ConfigError(f"prompts_per_step x rollout.num_samples = {cfg.prompts_per_step * G} must divide evenly "
                         f"over trainer.num_workers = {world}")
    if cfg.data.min_frames > cfg.data.max_frames:
        raise ConfigError(f"data.min_frames = {cfg.data.min_frames} is above data.max_frames = {cfg.data.max_frames}")
    if cfg.rollout.temperature == 0:
        raise ConfigError("rollout.temperature=0 (greedy) makes a prompt's G completions identical: every advantage "
                          "is 0 and nothing is learned; sample (1.0, as the paper)")
    if cfg.overlap and cfg.rollout.temperature != 1.0:
        raise ConfigError(f"overlap=true needs rollout.temperature=1 (got {cfg.rollout.temperature}): "
                          "the engines report T=1 log-probs, and the off-policy ratio needs the sampling distribution's")
    if cfg.rollout.weight_sync == "collective" and cfg.rollout.engine != "vllm":
        raise ConfigError(f"rollout.weight_sync=collective needs rollout.engine=vllm (got {cfg.rollout.engine!r})")
    if cfg.rollout.engine == "vllm" and cfg.rollout.max_tokens >= cfg.rollout.vllm.max_model_len:
        raise ConfigError(f"rollout.max_tokens = {cfg.rollout.max_tokens} leaves no room for the prompt in "
                          f"rollout.vllm.max_model_len = {cfg.rollout.vllm.max_model_len} (vLLM would cut completions "
                          "short without a word); raise max_model_len")
    check_rewards(cfg.algo.rewards)
    check_grpo_resources(cfg)


def check_grpo_resources(cfg: GRPOConfig) -> None:
    """GPU requests that cannot work: a trainer worker on a fraction of a GPU (or several), rollout engines packed
    on one GPU beyond its memory (``train/resources.py``)."""
    from seedr1.train.resources import check_engine_gpus, check_trainer_gpus

    check_trainer_gpus(cfg.trainer.gpus_per_worker)
    check_engine_gpus(cfg.rollout.gpus_per_actor, cfg.rollout.vllm.gpu_memory_utilization, "rollout.gpus_per_actor",
                      "rollout.vllm.gpu_memory_utilization", shares_memory=cfg.rollout.engine == "vllm")


def run_grpo(cfg: GRPOConfig) -> Path:
    from seedr1.grpo.loop import grpo_train_loop
    from seedr1.rollout.group import RolloutGroup

    check_grpo(cfg)
    check_inputs(cfg)
    cfg = prepare_run(cfg, "grpo")
    env = worker_env()
    start_ray("grpo", grpo_groups(cfg), cfg.cluster, env)
    restarts = cfg.rollout.max_restarts
    group = RolloutGroup.start(cfg.model, cfg.rollout, env, s3=cfg.data.s3,
                               max_recoveries=restarts if restarts >= 0 else 10 ** 6)
    try:
        run_trainer_group(grpo_train_loop, {"cfg": to_dict(cfg), "rollout": group}, cfg.trainer, cfg.run_dir,
                          cfg.checkpoint.keep)
    finally:
        group.close()
    print(f"[grpo] done: run folder {cfg.run_dir} (metrics.jsonl, tensorboard/, checkpoints/, config.yaml)",
          flush=True)
    return Path(cfg.run_dir)
