"""The SFT step loop: the GRPO trainer group without rollouts. Rank 0 reads the data stream and broadcasts each
batch; every rank trains its shard (cross-entropy on the assistant tokens only); checkpoints, resume and metrics
are the trainer group's, exactly as in GRPO."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from seedr1.config import AlgoConfig, SFTConfig, from_dict
from seedr1.data.prompt_stream import PromptStream
from seedr1.train import checkpoint as ckpt
from seedr1.train.policy import PolicyTrainer


def training_file(cfg: SFTConfig) -> str:
    """The annotation file the target reads: the chain-of-thought file or the GRPO training file."""
    return cfg.cot_file if cfg.target == "cot" else cfg.data.train_file


def target_text(cfg: SFTConfig, record) -> str:
    """What the model learns to say for ``record``."""
    if cfg.target == "cot":
        if not record.response:
            raise ValueError(f"sample {record.sample_id}: no response in {cfg.cot_file}")
        return record.response
    return f"<answer>{record.gold_letter}.</answer>"  # answer-only, after the official option shuffling


def sft_train_loop(config: dict) -> None:
    """The Ray Train train function (``train_loop_config = {"cfg": ...}``)."""
    from seedr1.metrics.sink import MetricsSink

    cfg = from_dict(SFTConfig, config["cfg"])
    rank, world = dist.get_rank(), dist.get_world_size()
    grad_accum = -(-(cfg.batch_size // world) // cfg.trainer.micro_batch_size)
    torch.manual_seed(cfg.seed + rank)
    trainer = PolicyTrainer(cfg.model, cfg.trainer, AlgoConfig(beta=0.0), grad_accum, total_steps=cfg.steps,
                            s3=cfg.data.s3)
    start, position, uri = ckpt.resume_trainer(trainer, cfg, config.get("launch_id"))
    sink = stream = None
    if rank == 0:
        sink = MetricsSink(cfg.run_dir, job="sft", total_steps=cfg.steps)
        sink.truncate_after(start)
        stream = PromptStream(cfg.data, [training_file(cfg)], str(Path(cfg.run_dir) / "rejects.jsonl"), position)
        tok = trainer.processor.tokenizer
        end = [tok.convert_tokens_to_ids("<|im_end|>")]
        if uri:
            sink.event("resumed", checkpoint=uri, step=start, data_position=position)

    for step in range(start, cfg.steps):
        t0 = time.perf_counter()
        payload = None
        if rank == 0:
            records = stream.take(cfg.batch_size)
            targets = [tok.encode(target_text(cfg, r), add_special_tokens=False) + end for r in records]
            payload = {"records": records, "targets": targets, "position": stream.position}
        t_data = time.perf_counter()
        box = [payload]
        dist.broadcast_object_list(box, src=0)
        records, targets, position = box[0]["records"], box[0]["targets"], box[0]["position"]
        # the loss is a mean over the whole batch's target tokens, whatever the micro-batches and ranks
        stats = trainer.sft_step(records[rank::world], targets[rank::world], sum(len(t) for t in targets))
        t_update = time.perf_counter()
        gathered = [None] * world
        dist.all_gather_object(gathered, stats)
        if rank == 0:
            tokens = sum(g["train_tokens"] for g in gathered)
            sink.log({"step": step + 1, "loss": float(np.mean([g["loss"] for g in gathered])), "lr": stats["lr"],
                      "optimizer_step": stats["optimizer_step"], "train_tokens": tokens,
                      "target_tokens": sum(g["target_tokens"] for g in gathered),
                      "train_tokens_per_s": tokens / max(t_update - t_data, 1e-9),
                      "sample_ids": [r.sample_id for r in records],
                      "seconds": {"data": t_data - t0, "update": t_update - t_data, "step": t_update - t0}})
        saved = ckpt.save_if_due(trainer, cfg, step + 1, cfg.steps, position, config.get("launch_id"))
        if saved and rank == 0:
            sink.event("checkpoint", checkpoint=saved, step=step + 1)
    if rank == 0:
        print(f"[sft] final model (Hugging Face format): "
              f"{ckpt.latest_complete(ckpt.checkpoint_root(cfg), cfg.data.s3)}/hf", flush=True)
        stream.close()
        sink.close()
