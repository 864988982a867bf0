"""The GRPO step loop. It runs inside the trainer group's train function (Ray Train gives no worker handles to the
driver), so rank 0 drives the rollout group and the data stream, and broadcasts each batch to every rank.

One step: prompts -> G completions each (rollout group) -> rewards -> group advantages -> policy update on every
rank's shard (reference log-probs inside) -> weight sync (gather on all ranks, rank 0 sends) -> metrics row ->
checkpoint every K steps (reported to Ray Train, so a restarted group resumes from it).
With ``overlap`` the rollout of step t+1 runs while step t trains (one step stale, importance-weighted).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from seedr1.algo.advantages import drop_uninformative, group_advantages
from seedr1.algo.losses import loss_denominator
from seedr1.grpo.rollout_log import RolloutLog, logged, rollout_rows
from seedr1.algo.rewards import accuracy_reward, combine_rewards, format_reward
from seedr1.config import GRPOConfig, from_dict
from seedr1.data.prompt_stream import PromptStream
from seedr1.grpo.balance import balance_ranks
from seedr1.train import checkpoint as ckpt
from seedr1.train.policy import PolicyTrainer, TrainSample, trim_host_memory
from seedr1.train.weight_sync import WeightSync


def sampling_seed(cfg: GRPOConfig, step: int) -> int:
    return cfg.seed * 100003 + step * 101


def train_temperature(cfg: GRPOConfig) -> float:
    """The temperature of the policy the update trains: the sampling one (greedy rollouts: 1)."""
    return cfg.rollout.temperature if cfg.rollout.temperature > 0 else 1.0


def rank_shard(samples: list, rank: int, world: int) -> list:
    """This rank's contiguous share (sizes differ by at most one): a prompt's completions stay together, so a
    micro-batch encodes each prompt's media once for all of them (see ``seedr1.train.batch``). Rank 0 puts the
    groups in an order whose shares carry about equal tokens first (``balance_ranks``)."""
    n = len(samples)
    return samples[rank * n // world:(rank + 1) * n // world]


def score_rollouts(cfg: GRPOConfig, records: list, groups: list) -> tuple[list[TrainSample], dict]:
    """Rewards -> group advantages -> train samples, plus the step's reward metrics (rank 0)."""
    G = cfg.rollout.num_samples
    flat = [(r, c) for r, cs in zip(records, groups) for c in cs]
    texts, golds = [c.text for _, c in flat], [r.gold_letter for r, _ in flat]
    total, per_fn, failures = combine_rewards(texts, golds, cfg.algo.rewards)
    rewards = torch.tensor(total, dtype=torch.float32)
    adv = group_advantages(rewards, G, scale_by_std=cfg.algo.scale_by_std, eps=cfg.algo.adv_eps)
    keep, dropped = torch.ones(len(flat), dtype=torch.bool), 0
    if cfg.algo.drop_uninformative:
        keep, dropped = drop_uninformative(rewards, G)
    truncated = torch.tensor([c.finish_reason == "length" for _, c in flat], dtype=torch.bool)
    if cfg.algo.mask_truncated_completions:  # out of the loss and its count; their rewards shaped the advantages
        keep = keep & ~truncated
    if cfg.overlap and any(len(c.logprobs or []) != len(c.token_ids) for _, c in flat):
        raise RuntimeError("overlap=true needs the sampling log-prob of every completion token (the importance "
                           f"ratio's denominator); the {cfg.rollout.engine!r} engine returned fewer")
    # A dropped group stays in the batch (ranks keep equal shards) with weight 0: out of the loss and its count.
    # The engines report T=1 log-probs: the trainer's are comparable with them (the gap metric) only at T=1.
    comparable = train_temperature(cfg) == 1.0
    samples = [TrainSample(r, c.token_ids, float(a) if k else 0.0, c.logprobs if cfg.overlap else None,
                           c.logprobs if comparable else None, weight=1.0 if k else 0.0)
               for (r, c), a, k in zip(flat, adv.tolist(), keep.tolist())]
    info = {"reward_mean": float(rewards.mean()), "reward_std": float(rewards.std()),
            **{f"reward/{k}": float(np.mean(v)) for k, v in per_fn.items()},
            **{f"reward_std/{k}": float(np.std(v)) for k, v in per_fn.items()},
            **{f"reward_failures/{k}": n for k, n in failures.items()},
            # measured whether or not they are rewarded (a run rewarding accuracy alone still shows its format)
            "accuracy": float(np.mean(accuracy_reward(texts, golds))),
            "format_rate": float(np.mean(format_reward(texts, golds))),
            "groups_dropped": int(dropped),
            "truncated_rate": float(truncated.float().mean()),
            "response_length": float(np.mean([len(c.token_ids) for _, c in flat])),
            "rollout_tokens": int(sum(len(c.token_ids) for _, c in flat)),
            "sample_ids": [r.sample_id for r in records],
            "per_reward": per_fn}  # for rollouts.jsonl; not a metric (the loop takes it out)
    return samples, info


def send_weights(sync: WeightSync, group, rank: int) -> dict:
    """Every rank: the step's weight sync. A failure on rank 0 (an engine died in it) waits for Ray to restart the
    dead actors; the next ``collect`` notices them and resyncs (every rank), as for any restarted actor."""
    try:
        return sync.send(group.version)
    except Exception as e:
        if rank != 0:
            raise
        group.on_event("weight_sync_failed", error=f"{type(e).__name__}: {e}"[:300])
        if sync.wire == "nccl":  # an engine stuck in an NCCL receive never returns: Ray restarts them all
            import ray

            for actor in group.actors:
                ray.kill(actor, no_restart=False)
        sync.close()
        group.wait_for_restarts(e)
        return {}


def grpo_train_loop(config: dict) -> None:
    """The Ray Train train function (``train_loop_config = {"cfg": ..., "rollout": RolloutGroup}``)."""
    from seedr1.metrics.sink import MetricsSink

    cfg = from_dict(GRPOConfig, config["cfg"])
    group = config["rollout"]
    rank, world = dist.get_rank(), dist.get_world_size()
    P, G = cfg.prompts_per_step, cfg.rollout.num_samples
    grad_accum = -(-(P * G // world) // cfg.trainer.micro_batch_size)
    torch.manual_seed(cfg.seed + rank)
    trainer = PolicyTrainer(cfg.model, cfg.trainer, cfg.algo, grad_accum, total_steps=cfg.steps,
                            temperature=train_temperature(cfg), s3=cfg.data.s3,
                            max_completion_tokens=cfg.rollout.max_tokens)

    start, position, uri = ckpt.resume_trainer(trainer, cfg, config.get("launch_id"))
    sync = WeightSync(trainer.engine.module, rank, cfg.rollout.weight_sync, cfg.rollout.weight_sync_bucket_mb << 20,
                      cfg.rollout.weight_sync_timeout_s, actors=group.actors if rank == 0 else None)
    sink = stream = rollout_log = None
    if rank == 0:
        sink = MetricsSink(cfg.run_dir, job="grpo", total_steps=cfg.steps)
        sink.truncate_after(start)  # steps after the checkpoint are redone
        rollout_log = RolloutLog(cfg.run_dir, start) if cfg.log_rollouts_every else None
        group.on_event = sink.event
        stream = PromptStream(cfg.data, [cfg.data.train_file], str(Path(cfg.run_dir) / "rejects.jsonl"), position)

        def resync() -> None:  # a restarted actor holds the start model: every rank sends the current one again
            dist.broadcast_object_list([{"resync": True}], src=0)
            sync.connect()  # the restarted actor is in no transfer group yet
            stats = sync.send(group.version)
            sink.event("weights_resent", version=group.version, seconds=round(stats["seconds"], 3))
        group.resync = resync
    # Engines hold cfg.model, or newer weights when Ray Train restarted this group: give them the trainer's policy
    # (and the group's weight version) before the first rollout.
    group.version += 1
    sync.send(group.version)
    if rank == 0 and uri:
        sink.event("resumed", checkpoint=uri, step=start, data_position=position)
        print(f"[grpo] resumed from {uri} at step {start}, data position {position}", flush=True)

    pending = None
    for step in range(start, cfg.steps):
        t = {"start": time.perf_counter()}
        payload, next_take_s = None, 0.0
        if rank == 0:
            sink.begin_step(step + 1)  # events from here on belong to this step
            if pending is None:
                pending = group.launch(stream.take(P), sampling_seed(cfg, step))
                pending.update(position=stream.position, version=group.version)
            current, pending = pending, None
            t["data"] = time.perf_counter()
            groups, gen_s = group.collect(current)
            t["rollout"] = time.perf_counter()
            if cfg.overlap and step + 1 < cfg.steps:  # generate the next batch while this one trains
                next_records = stream.take(P)
                next_take_s = time.perf_counter() - t["rollout"]  # data time, though it falls between other stages
                pending = group.launch(next_records, sampling_seed(cfg, step + 1))
                pending.update(position=stream.position, version=group.version)
            samples, info = score_rollouts(cfg, current["records"], groups)
            per_reward = info.pop("per_reward")
            if rollout_log is not None and logged(step + 1, cfg.log_rollouts_every):
                rollout_log.write(rollout_rows(step + 1, current["records"], groups, per_reward, samples))
            samples = balance_ranks(samples, groups, world)  # ranks wait for the busiest one at each reduction
            info.update(generate_s=gen_s, rollout_tokens_per_s=info["rollout_tokens"] / max(gen_s, 1e-9),
                        rollout_restarts=group.restarts, staleness=group.version - current["version"])
            t["reward"] = time.perf_counter()
            payload = {"samples": samples, "info": info, "position": current["position"]}
        box = [payload]
        dist.broadcast_object_list(box, src=0)
        while box[0].get("resync"):  # rank 0 lost an actor while generating: send it the weights, then go on
            sync.send(group.version)
            box = [None]
            dist.broadcast_object_list(box, src=0)
        samples, info, position = box[0]["samples"], box[0]["info"], box[0]["position"]
        t_update = time.perf_counter()
        denominator = loss_denominator([len(s.token_ids) for s in samples], [s.weight for s in samples],
                                       cfg.algo.aggregation, cfg.rollout.max_tokens)  # the whole batch's, all ranks
        stats = trainer.train_step(rank_shard(samples, rank, world), denominator)
        t["update"] = time.perf_counter()
        group.version += 1  # rank 0's group is the one that counts
        sync_stats = send_weights(sync, group, rank)
        trim_host_memory()  # the step's activations and the sync's buckets, freed in pieces the allocator keeps
        t["sync"] = time.perf_counter()
        gathered = [None] * world
        dist.all_gather_object(gathered, stats)
        if rank == 0:
            update_s = t["update"] - t_update
            gap_tokens = sum(g["engine_gap"][1] for g in gathered)
            train_tokens = sum(g["train_tokens"] for g in gathered)
            sink.log({"step": step + 1, **info, "rollout_restarts": group.restarts,  # those of this step's sync too
                      "lr": stats["lr"], "optimizer_step": stats["optimizer_step"],
                      "train_tokens": train_tokens,
                      "rank_token_imbalance": max(g["train_tokens"] for g in gathered) * world / max(train_tokens, 1),
                      "train_tokens_per_s": train_tokens / max(update_s, 1e-9),
                      **{k: float(np.mean([g[k] for g in gathered])) for k in ("loss", "kl", "clip_fraction", "entropy")},
                      **({"engine_logprob_gap": sum(g["engine_gap"][0] for g in gathered) / gap_tokens}
                         if gap_tokens else {}),  # none at T != 1: the engines' log-probs are T=1's
                      "seconds": {"data": t["data"] - t["start"] + next_take_s, "rollout": t["rollout"] - t["data"],
                                  "reward": t["reward"] - t["rollout"] - next_take_s,
                                  "reference": float(np.mean([g["ref_s"] for g in gathered])),
                                  "update": update_s, "sync": t["sync"] - t["update"],
                                  "sync_engine": sync_stats.get("engine_seconds", 0.0),
                                  "step": t["sync"] - t["start"]},
                      "weight_sync_bytes": sync_stats.get("bytes", 0),
                      "weight_sync_largest_message_bytes": sync_stats.get("largest_message", 0),
                      "weight_sync_buckets": sync_stats.get("buckets", 0)})
        saved = ckpt.save_if_due(trainer, cfg, step + 1, cfg.steps, position, config.get("launch_id"))
        if saved and rank == 0:
            sink.event("checkpoint", checkpoint=saved, step=step + 1)
    if rank == 0:
        final = ckpt.latest_complete(ckpt.checkpoint_root(cfg), cfg.data.s3)
        print(f"[grpo] final policy (Hugging Face format): {final}/hf", flush=True)
        stream.close()
        sink.close()
        if rollout_log is not None:
            rollout_log.close()
