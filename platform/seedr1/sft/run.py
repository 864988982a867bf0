"""Launching an SFT run: the same trainer group (Ray Train + DeepSpeed) as GRPO, no rollout group."""
from __future__ import annotations

import math
from pathlib import Path

from seedr1.config import ConfigError, SFTConfig, to_dict
from seedr1.cluster.demands import sft_groups
from seedr1.cluster.stores import check_inputs
from seedr1.train.launch import prepare_run, run_trainer_group, start_ray, worker_env
from seedr1.train.resources import check_trainer_gpus


def record_count(data, file: str) -> int:
    """Records in annotation ``file``: from the shards' manifest when training reads shards, else the file."""
    if data.shards:
        from seedr1.data.shards import read_manifest

        shards = read_manifest(data.shards, data.s3)["shards"]
        return sum(s.get("files", {}).get(Path(file).name, 0) for s in shards)
    from seedr1.data.pipeline import raw_records

    return sum(1 for _ in raw_records(data.root, [file], data))


def run_sft(cfg: SFTConfig) -> Path:
    from seedr1.sft.loop import sft_train_loop, training_file

    world = cfg.trainer.num_workers
    if cfg.batch_size % world or (cfg.batch_size // world) % cfg.trainer.micro_batch_size:
        raise ConfigError(f"batch_size {cfg.batch_size} must split into trainer.num_workers = {world} equal shards "
                         f"of whole micro-batches (trainer.micro_batch_size = {cfg.trainer.micro_batch_size})")
    check_trainer_gpus(cfg.trainer.gpus_per_worker)
    check_inputs(cfg)
    cfg = prepare_run(cfg, "sft")
    if cfg.steps <= 0:
        n = record_count(cfg.data, training_file(cfg))
        cfg.steps = max(1, math.ceil(cfg.epochs * n / cfg.batch_size))
        print(f"[sft] {n} records x {cfg.epochs} epochs / batch {cfg.batch_size} = {cfg.steps} steps", flush=True)
    start_ray("sft", sft_groups(cfg), cfg.cluster, worker_env())
    run_trainer_group(sft_train_loop, {"cfg": to_dict(cfg)}, cfg.trainer, cfg.run_dir, cfg.checkpoint.keep)
    print(f"[sft] done: run folder {cfg.run_dir} (metrics.jsonl, tensorboard/, checkpoints/, config.yaml)", flush=True)
    return Path(cfg.run_dir)
