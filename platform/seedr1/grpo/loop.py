"""The GRPO step loop. It runs inside the trainer group's train function (Ray Train gives no worker handles to the
driver), so rank 0 drives the rollout actors and the data stream, and broadcasts each batch to every rank.

One step: prompts -> G completions each (rollout actors) -> rewards -> group advantages -> policy update on every
rank's shard (reference log-probs inside) -> weight sync (gather on all ranks, rank 0 sends) -> one metrics row.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import ray
import torch
import torch.distributed as dist

from seedr1.algo.advantages import drop_uninformative, group_advantages
from seedr1.algo.rewards import combine_rewards
from seedr1.config import GRPOConfig, from_dict
from seedr1.data.pipeline import RecordStream, build_dataset
from seedr1.train.policy import PolicyTrainer, TrainSample


def prompt_stream(cfg: GRPOConfig):
    """Endless training prompts, epoch after epoch, in a deterministic order per (seed, epoch)."""
    epoch = 0
    rejects = str(Path(cfg.run_dir) / "rejects.jsonl")
    while True:
        ds = build_dataset(cfg.data, [cfg.data.train_file], epoch=epoch, shuffle=True)
        yield from RecordStream(ds.iter_rows(), cfg.data, rejects_path=rejects)
        epoch += 1


def rollout(actors: list, records: list, seed: int) -> tuple[list, float]:
    """Spread prompts over the actors; returns completions per prompt (in order) and the slowest actor's time."""
    chunks = [idx for idx in (list(range(k, len(records), len(actors))) for k in range(len(actors))) if idx]
    futures = [a.generate.remote([records[i] for i in idx], seed + k) for k, (a, idx) in enumerate(zip(actors, chunks))]
    out: list = [None] * len(records)
    gen_s = 0.0
    for idx, (completions, secs) in zip(chunks, ray.get(futures)):
        gen_s = max(gen_s, secs)
        for i, c in zip(idx, completions):
            out[i] = c
    return out, gen_s


def grpo_train_loop(config: dict) -> None:
    """The Ray Train train function (``train_loop_config = {"cfg": ..., "actors": [...]}``)."""
    cfg = from_dict(GRPOConfig, config["cfg"])
    actors = config["actors"]
    rank, world = dist.get_rank(), dist.get_world_size()
    G = cfg.rollout.num_samples
    per_rank = cfg.prompts_per_step * G // world
    grad_accum = -(-per_rank // cfg.trainer.micro_batch_size)
    torch.manual_seed(cfg.seed + rank)
    trainer = PolicyTrainer(cfg.model, cfg.trainer, cfg.algo, grad_accum)
    stream = iter(prompt_stream(cfg)) if rank == 0 else None
    metrics_path = Path(cfg.run_dir) / "metrics.jsonl"
    t_run = time.perf_counter()

    for step in range(cfg.steps):
        t = {"start": time.perf_counter()}
        payload = None
        if rank == 0:
            records = [next(stream) for _ in range(cfg.prompts_per_step)]
            t["data"] = time.perf_counter()
            groups, gen_s = rollout(actors, records, seed=cfg.seed * 100003 + step * 101)
            t["rollout"] = time.perf_counter()
            flat = [(r, c) for r, cs in zip(records, groups) for c in cs]
            texts, golds = [c.text for _, c in flat], [r.gold_letter for r, _ in flat]
            total, per_fn, failures = combine_rewards(texts, golds, cfg.algo.rewards)
            rewards = torch.tensor(total, dtype=torch.float32)
            adv = group_advantages(rewards, G, scale_by_std=cfg.algo.scale_by_std, eps=cfg.algo.adv_eps)
            keep, dropped = torch.ones(len(flat), dtype=torch.bool), 0
            if cfg.algo.drop_uninformative:
                keep, dropped = drop_uninformative(rewards, G)
            samples = [TrainSample(r, c.token_ids, float(a) if k else 0.0)
                       for (r, c), a, k in zip(flat, adv.tolist(), keep.tolist())]
            t["reward"] = time.perf_counter()
            payload = {"samples": samples, "info": {
                "reward_mean": float(rewards.mean()), "reward_std": float(rewards.std()),
                **{f"reward/{k}": float(np.mean(v)) for k, v in per_fn.items()},
                "reward_failures": sum(failures.values()), "groups_dropped": int(dropped),
                "response_length": float(np.mean([len(c.token_ids) for _, c in flat])),
                "rollout_tokens": int(sum(len(c.token_ids) for _, c in flat)), "generate_s": gen_s}}
        box = [payload]
        dist.broadcast_object_list(box, src=0)
        samples, info = box[0]["samples"], box[0]["info"]
        t_update = time.perf_counter()
        stats = trainer.train_step(samples[rank::world])
        t["update"] = time.perf_counter()
        weights = trainer.state_dict_bytes()  # all ranks (ZeRO-3 gather is collective)
        sync_s = 0.0
        if rank == 0:
            ref = ray.put(weights)
            sync_s = max(ray.get([a.update_weights.remote(ref) for a in actors]))
        t["sync"] = time.perf_counter()
        gathered = [None] * world
        dist.all_gather_object(gathered, stats)
        if rank == 0:
            row = {"step": step + 1, **info,
                   "accuracy": info.get("reward/accuracy", 0.0), "format_rate": info.get("reward/format", 0.0),
                   **{k: float(np.mean([g[k] for g in gathered])) for k in ("loss", "kl", "clip_fraction", "entropy")},
                   "seconds": {"data": t["data"] - t["start"], "rollout": t["rollout"] - t["data"],
                               "reward": t["reward"] - t["rollout"],
                               "reference": float(np.mean([g["ref_s"] for g in gathered])),
                               "update": t["update"] - t_update, "sync": t["sync"] - t["update"],
                               "sync_engine": sync_s, "step": t["sync"] - t["start"]}}
            with open(metrics_path, "a") as f:
                f.write(json.dumps(row) + "\n")
            elapsed = time.perf_counter() - t_run
            eta = elapsed / (step + 1) * (cfg.steps - step - 1)
            print(f"[grpo] step {step + 1}/{cfg.steps} reward {row['reward_mean']:.3f} acc {row['accuracy']:.3f} "
                  f"fmt {row['format_rate']:.3f} kl {row['kl']:.4f} {row['seconds']['step']:.2f} s/step "
                  f"ETA {eta:.0f} s", flush=True)
    trainer.save_pretrained(Path(cfg.run_dir) / "final")  # every rank: the ZeRO-3 gather is collective
    if rank == 0:
        print(f"[grpo] final policy saved to {Path(cfg.run_dir) / 'final'}", flush=True)
