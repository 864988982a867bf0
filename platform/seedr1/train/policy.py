"""The trainer core: model + DeepSpeed engine + one update on a shard of samples + gather for weight sync.

Independent of the launcher: it needs an initialised torch.distributed group (Ray Train's, or plain actors').
"""
from __future__ import annotations

import contextlib
import io

import math
import time
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist

from seedr1.algo.losses import loss_denominator, masked_mean, policy_loss, sft_loss
from seedr1.config import AlgoConfig, S3Config, TrainerConfig
from seedr1.train.batch import build_batch, completion_logprobs, rope_positions


@dataclass
class TrainSample:
    """One completion to learn from: its prompt record, tokens, advantage (and behaviour log-probs)."""

    record: object
    token_ids: list[int]
    advantage: float
    behaviour_logprobs: Optional[list[float]] = None  # off-policy: the sampling engine's log-probs per token
    engine_logprobs: Optional[list[float]] = None  # what the engine reported when sampling (for the mismatch metric)
    weight: float = 1.0  # in the loss; 0 leaves the sample out (a dropped uninformative group)


def _add_engine_gap(gap: list, chunk: list[TrainSample], logp: torch.Tensor, mask: torch.Tensor) -> None:
    """Accumulate how far the engine's sampling log-probs are from the trainer's (weights not yet stepped: DeepSpeed
    steps at the accumulation boundary). On-policy this is ~0 after a correct weight sync; a broken sync shows here."""
    for i, s in enumerate(chunk):
        if s.engine_logprobs:
            mine = logp[i][mask[i]][:len(s.engine_logprobs)].float().cpu()
            theirs = torch.tensor(s.engine_logprobs[:len(mine)], dtype=torch.float32)
            gap[0] += float((mine - theirs).abs().sum())
            gap[1] += len(mine)


def warmup_schedule(warmup_steps: int, total_steps: int = 0, cosine: bool = False):
    """lr multiplier per optimizer step: linear warm-up to the peak, then constant or cosine decay to 0 at
    ``total_steps``. Step 0 already trains (lr / warmup_steps): DeepSpeed's WarmupLR starts at warmup_min_lr,
    which made every run's first optimizer step a no-op at lr 0."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if not cosine or total_steps <= warmup_steps:
            return 1.0
        progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return factor


def linear_schedule(warmup_steps: int, total_steps: int):
    """Hugging Face's ``get_linear_schedule_with_warmup`` (the Trainer's default, which the official GRPO script
    runs with): ``step / warmup`` during the warm-up (0 at step 0), then linear decay to 0 at ``total_steps``."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return factor


def lr_schedule(cfg: TrainerConfig, total_steps: int):
    """The schedule ``cfg`` asks for over a run of ``total_steps`` optimizer steps."""
    warmup = round(cfg.warmup_ratio * total_steps) if cfg.warmup_ratio > 0 else cfg.warmup_steps
    if cfg.schedule == "linear":
        return linear_schedule(warmup, total_steps)
    return warmup_schedule(warmup, total_steps, cosine=cfg.schedule == "cosine")


def zero3_buckets(hidden_size: int) -> dict:
    """ZeRO-3 communication buckets sized to the model, as transformers' and Accelerate's "auto" values are (TRL,
    OpenRLHF use them too), and gathered parameters released once used: DeepSpeed's defaults keep up to 1e9 gathered
    elements alive between uses (4 GB of fp32), so a 0.55 B model stayed whole on every rank after its first forward,
    policy and reference both, and one step took a CPU rank past 12 GB. ~30 hidden^2 is about one decoder layer."""
    layer = 30 * hidden_size * hidden_size
    return {"reduce_bucket_size": hidden_size * hidden_size,
            "stage3_prefetch_bucket_size": int(0.9 * hidden_size * hidden_size),
            "stage3_param_persistence_threshold": 10 * hidden_size,
            "stage3_max_live_parameters": layer, "stage3_max_reuse_distance": layer,
            "sub_group_size": 10 * layer}  # the optimizer steps over ~10 layers at a time, not the whole partition


def deepspeed_config(cfg: TrainerConfig, grad_accum: int, bf16: bool, hidden_size: int | None = None) -> dict:
    """``hidden_size``: the text model's, for ZeRO-3's buckets (``zero3_buckets``; DeepSpeed's defaults without it)."""
    zero = {"stage": cfg.zero_stage}
    if cfg.zero_stage == 3 and hidden_size:
        zero.update(zero3_buckets(hidden_size))
    return {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": grad_accum,
        "gradient_clipping": cfg.grad_clip,
        # torch's fused AdamW (CPU and GPU): the default foreach one makes temporaries the size of the whole flat
        # partition, several GiB a step at 0.5 B parameters
        "optimizer": {"type": "AdamW", "params": {"lr": cfg.lr, "weight_decay": cfg.weight_decay,
                                                  "torch_adam": True, "fused": True}},
        "zero_optimization": zero,
        "bf16": {"enabled": bf16},
        "steps_per_print": 10 ** 9,
        "wall_clock_breakdown": False,
    }


def reference_deepspeed_config(cfg: TrainerConfig, hidden_size: int, bf16: bool) -> dict:
    """ZeRO-3 for the frozen reference model, without optimizer (as TRL's ``prepare_deepspeed`` and OpenRLHF do): each
    rank holds a shard of it, gathered layer by layer in its forward. Parameters below 10 x hidden size stay whole
    on every rank (norms, biases), as in TRL."""
    return {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "zero_optimization": {"stage": 3, **zero3_buckets(hidden_size)},
        "bf16": {"enabled": bf16},
        "steps_per_print": 10 ** 9,
        "wall_clock_breakdown": False,
    }


def _hidden_size(config) -> int:
    text = getattr(config, "text_config", None) or config
    return int(text.hidden_size)


def layer_groups(names: list[str]) -> list[list[str]]:
    """Names by layer (everything under the first numbered module: ``...layers.3``, ``...blocks.0``), else by their
    own module (embeddings, norms, the LM head, the merger), in first-appearance order: the unit one ZeRO-3 gather
    brings together (checkpoints here, weight syncs in ``train.weight_sync``). vLLM's ``layerwise_groups`` would put
    every un-numbered module after the first stack into one group (Qwen2-VL: merger, embeddings, norm and LM head,
    ~2 GB at 7B)."""
    groups: dict[str, list[str]] = {}
    for name in names:
        parts = name.split(".")
        cut = next((i + 1 for i, part in enumerate(parts) if part.isdigit()), len(parts) - 1)
        groups.setdefault(".".join(parts[:cut]), []).append(name)
    return list(groups.values())


def trim_host_memory() -> None:
    """Hand memory freed by the C allocator back to the system (glibc's ``malloc_trim``; elsewhere nothing). Loading
    a checkpoint and building ZeRO's partitions free gigabytes in pieces glibc keeps: measured on the 0.55 B
    rehearsal model, a ZeRO-3 rank held 6.6-8.0 GiB after set-up without this and 4.7 GiB with it."""
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:  # not glibc (musl): nothing to trim this way
            pass


def load_partitioned(model_path: str, dtype: torch.dtype, ds_config: dict, trainable: bool = True):
    """The model built under ``deepspeed.zero.Init`` when ``ds_config`` is ZeRO-3 (transformers does it while its
    ``HfDeepSpeedConfig`` is alive): each rank materialises only its shard, never a full copy (a 0.55 B model's two
    ranks held ~4 fp32 copies each while loading policy and reference whole). Otherwise a plain load."""
    from seedr1.model.loading import load_model

    if ds_config["zero_optimization"]["stage"] != 3:
        return load_model(model_path, dtype=dtype, trainable=trainable)
    from transformers.integrations.deepspeed import HfDeepSpeedConfig, unset_hf_deepspeed_config

    marker = HfDeepSpeedConfig(ds_config)  # noqa: F841 - transformers holds a weak reference: it must stay alive
    try:
        return load_model(model_path, dtype=dtype, trainable=trainable)
    finally:
        unset_hf_deepspeed_config()  # later loads in this process (processors, engines) are plain again
        trim_host_memory()  # the checkpoint's tensors, read whole and scattered into shards


class PolicyTrainer:
    def __init__(self, model_path: str, cfg: TrainerConfig, algo: AlgoConfig, grad_accum: int, total_steps: int = 0,
                 temperature: float = 1.0, s3: S3Config | None = None, max_completion_tokens: int | None = None):
        """``temperature``: the rollouts' sampling temperature; the update's log-probs (policy, reference, ratio, KL,
        entropy) are those of ``softmax(logits / temperature)``, the distribution the completions came from.
        ``max_completion_tokens``: the rollouts' ``max_tokens`` (the dr_grpo aggregation divides by it).
        ``s3``: how to reach an ``s3://`` model (the job's ``data.s3``; empty fields: the AWS variables)."""
        import deepspeed

        from seedr1.model.loading import load_model, load_processor, resolve_checkpoint

        model_path = resolve_checkpoint(model_path, s3)  # into this node's cache, once

        self.cfg, self.algo, self.temperature = cfg, algo, temperature
        self.max_completion_tokens = max_completion_tokens
        self.gpu = torch.cuda.is_available()
        if not self.gpu:
            torch.set_num_threads(cfg.torch_threads)
            # DeepSpeed's CPU shared-memory op prints "built successfully" in every rank as it loads (from the cache)
            with contextlib.redirect_stdout(io.StringIO()):
                deepspeed.init_distributed(dist_backend="gloo")
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.processor = load_processor(model_path)
        bf16 = cfg.dtype == "bfloat16" or (cfg.dtype == "auto" and self.gpu)
        dtype = torch.bfloat16 if bf16 else torch.float32
        from transformers import AutoConfig

        hidden = _hidden_size(AutoConfig.from_pretrained(model_path))
        ds_config = deepspeed_config(cfg, grad_accum, bf16, hidden)
        model = load_partitioned(model_path, dtype, ds_config)
        if cfg.freeze_vision:
            for name, p in model.named_parameters():
                if ".visual." in f".{name}":
                    p.requires_grad_(False)
        if cfg.gradient_checkpointing:  # before DeepSpeed wraps it; non-reentrant: frozen inputs need no grad hack
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.engine, *_ = deepspeed.initialize(
            model=model, model_parameters=[p for p in model.parameters() if p.requires_grad],
            config=ds_config,
            lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule(cfg, total_steps)))
        trim_host_memory()  # ZeRO's flattening copies, freed in pieces
        self.ref = None
        if algo.beta > 0:  # beta == 0: no reference model is loaded at all
            if cfg.zero_stage == 3:  # ZeRO-3: a shard per rank, not a full copy (ZeRO-2 keeps the plain copy)
                ref_config = reference_deepspeed_config(cfg, hidden, bf16)
                ref = load_partitioned(model_path, dtype, ref_config, trainable=False)
                ref.requires_grad_(False)
                self.ref, *_ = deepspeed.initialize(model=ref, config=ref_config)
                self.ref.eval()
            else:
                ref = load_model(model_path, dtype=dtype, trainable=False)
                ref.requires_grad_(False)
                self.ref = ref.to(self.engine.device) if self.gpu else ref
        self.grad_accum = grad_accum
        trim_host_memory()

    def _micro_batches(self, samples: list[TrainSample]):
        mb = self.cfg.micro_batch_size
        for i in range(0, len(samples), mb):
            chunk = samples[i:i + mb]
            batch = build_batch(self.processor, [s.record for s in chunk], [s.token_ids for s in chunk])
            yield chunk, {k: v.to(self.engine.device) for k, v in batch.items()}

    def train_step(self, samples: list[TrainSample], batch_denominator: float | None = None) -> dict:
        """One optimizer step on this rank's shard (``grad_accum`` micro-batches).

        ``batch_denominator``: ``loss_denominator`` of the whole batch over all ranks (default: this shard's, right
        for one rank). Each micro-batch's loss divides by it, times what DeepSpeed divides by afterwards (the
        accumulation steps, then the rank average), so the step's gradient is that of the whole batch's loss.
        """
        n_micro = -(-len(samples) // self.cfg.micro_batch_size)
        if n_micro != self.grad_accum:
            raise ValueError(f"rank {self.rank}: {len(samples)} samples make {n_micro} micro-batches, "
                             f"expected gradient_accumulation_steps={self.grad_accum}")
        if batch_denominator is None:
            batch_denominator = loss_denominator([len(s.token_ids) for s in samples], [s.weight for s in samples],
                                                 self.algo.aggregation, self.max_completion_tokens)
        denominator = batch_denominator / (self.grad_accum * self.world)
        sums = {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0, "entropy": 0.0, "ref_s": 0.0,
                "lr": float(self.engine.get_lr()[0]), "train_tokens": 0}
        gap = [0.0, 0]  # |trainer - engine| log-prob over the completion tokens the engine reported, and their count
        self.engine.train()
        for chunk, batch in self._micro_batches(samples):
            positions = rope_positions(self.engine, batch)  # the reference and policy forwards share them
            ref_logp = None
            if self.ref is not None:
                t0 = time.perf_counter()
                with torch.no_grad():
                    ref_logp = self.reference_logprobs(batch, positions)
                sums["ref_s"] += time.perf_counter() - t0
            shared, pad = self._zero3_align(self.engine, batch)
            logp, mask, entropy = completion_logprobs(self.engine, batch, with_entropy=True, positions=positions,
                                                      temperature=self.temperature, shared_prefix=shared)
            adv = torch.tensor([s.advantage for s in chunk], dtype=torch.float32, device=logp.device)
            weights = torch.tensor([s.weight for s in chunk], dtype=torch.float32, device=logp.device)
            loss, m = policy_loss(logp, self._old_logprobs(chunk, logp), adv, mask, ref_logp=ref_logp, beta=self.algo.beta,
                                  clip_eps_low=self.algo.clip_eps_low, clip_eps_high=self.algo.clip_eps_high,
                                  kl_kind=self.algo.kl_kind, aggregation=self.algo.aggregation, weights=weights,
                                  denominator=denominator, kl_clamp=self.algo.kl_clamp,
                                  kl_bias_correction=self.algo.kl_bias_correction)
            if pad is not None:  # the dummy vision forward's backward, as every rank runs the tower's
                loss = loss + 0.0 * pad
            self.engine.backward(loss)
            self.engine.step()
            for k in ("loss", "kl", "clip_fraction"):
                sums[k] += m[k] / n_micro
            sums["entropy"] += float(masked_mean(entropy, mask)) / n_micro
            sums["train_tokens"] += int(batch["attention_mask"].sum())
            _add_engine_gap(gap, chunk, logp.detach(), mask)
        sums["optimizer_step"] = int(self.engine.global_steps)
        sums["engine_gap"] = gap
        return sums

    def sft_step(self, records: list, targets: list[list[int]], batch_tokens: int | None = None) -> dict:
        """One supervised optimizer step on this rank's shard: cross-entropy on the target (assistant) tokens only,
        a mean over ``batch_tokens``, the whole batch's target tokens over all ranks (default: this shard's)."""
        samples = [TrainSample(r, t, 0.0) for r, t in zip(records, targets)]
        n_micro = -(-len(samples) // self.cfg.micro_batch_size)
        if n_micro != self.grad_accum:
            raise ValueError(f"rank {self.rank}: {len(samples)} samples make {n_micro} micro-batches, "
                             f"expected gradient_accumulation_steps={self.grad_accum}")
        batch_tokens = batch_tokens if batch_tokens is not None else sum(len(t) for t in targets)
        denominator = max(batch_tokens, 1) / (self.grad_accum * self.world)  # see train_step
        stats = {"loss": 0.0, "lr": float(self.engine.get_lr()[0]), "train_tokens": 0, "target_tokens": 0}
        self.engine.train()
        for chunk, batch in self._micro_batches(samples):
            shared, pad = self._zero3_align(self.engine, batch)
            logp, mask = completion_logprobs(self.engine, batch, shared_prefix=shared)
            loss = sft_loss(logp, mask, denominator)
            if pad is not None:
                loss = loss + 0.0 * pad
            self.engine.backward(loss)
            self.engine.step()
            stats["loss"] += float(loss) / n_micro
            stats["train_tokens"] += int(batch["attention_mask"].sum())
            stats["target_tokens"] += int(mask.sum())
        stats["optimizer_step"] = int(self.engine.global_steps)
        return stats

    @torch.no_grad()
    def reference_logprobs(self, batch: dict, positions: torch.Tensor | None = None) -> torch.Tensor:
        """The reference model's completion log-probs ``[B, Tc]`` for a micro-batch on the trainer's device.

        Sharded (ZeRO-3), each submodule's forward gathers its parameters from every rank: all ranks must run the
        same submodules in the same order, whatever their micro-batches hold. So they agree on the forward's shape
        (the shared-prompt path only where every rank takes it, with the same number of forwards) and a rank with
        fewer media kinds (image, video) than another runs the vision tower on a dummy input first."""
        shared = self._zero3_align(self.ref, batch)[0]
        logp, _ = completion_logprobs(self.ref, batch, temperature=self.temperature, positions=positions,
                                      shared_prefix=shared)
        return logp

    def _zero3_align(self, model, batch: dict) -> tuple[bool, torch.Tensor | None]:
        """Make this rank's forward of ``model`` (a ZeRO-3 engine) run the same submodules in the same order as every
        other rank's: ZeRO-3 gathers each submodule's parameters collectively and checks the order across ranks.
        Returns whether to take the shared-prompt path (only where every rank takes it, with as many forwards) and
        the vision tower's output on dummy input, run here as many extra times as this rank has fewer media kinds
        (image, video) than another (with grad: the caller adds it x 0 to the loss, so its backward matches too).
        Below ZeRO-3 (policy and reference whole on every rank): ``trainer.shared_prefix`` as set, no dummy."""
        shared = self.cfg.shared_prefix
        if self.cfg.zero_stage != 3:
            return shared, None
        from seedr1.train.batch import _MODALITIES, _core
        from seedr1.train.shared_prefix import can_share_prefix

        # 0: one full forward; 1: the prompts only (every completion one token); 2: prompts, then completions
        path = 2 if int(batch["completion_lens"].max()) > 1 else 1
        path = path if shared and can_share_prefix(model, batch) else 0
        kinds = sum(pixels in batch for pixels, _, _ in _MODALITIES.values())
        agreed = torch.tensor([path, -path, -kinds], dtype=torch.long, device=self._comm_device())
        dist.all_reduce(agreed, op=dist.ReduceOp.MIN)
        shared = int(agreed[0]) == -int(agreed[1]) != 0
        extra, pad = -int(agreed[2]) - kinds, None
        if extra:
            vision = _core(model).config.vision_config
            merge = vision.spatial_merge_size
            grid = torch.tensor([[1, merge, merge]], device=self.engine.device)
            width = vision.in_channels * vision.temporal_patch_size * vision.patch_size ** 2
            pixels = torch.zeros(merge * merge, width, device=self.engine.device)
            for _ in range(extra):
                out = _core(model).get_image_features(pixels, grid, return_dict=True).pooler_output
                out = torch.cat(list(out)) if isinstance(out, (tuple, list)) else out
                pad = out.float().sum() if pad is None else pad + out.float().sum()
        return shared, pad

    def _comm_device(self) -> torch.device:
        return self.engine.device if self.gpu else torch.device("cpu")

    @staticmethod
    def _old_logprobs(chunk: list[TrainSample], logp: torch.Tensor) -> torch.Tensor:
        """The behaviour policy's log-probs for the importance ratio. On-policy (one update per batch) that is the
        current policy (ratio 1, gradient intact); off-policy it is what the sampling engine reported."""
        old = logp.detach().clone()
        for i, s in enumerate(chunk):
            if s.behaviour_logprobs is not None:
                n = min(len(s.behaviour_logprobs), old.shape[1])
                old[i, :n] = torch.tensor(s.behaviour_logprobs[:n], dtype=old.dtype, device=old.device)
        return old

    def full_state_dict(self, trainable_only: bool) -> dict | None:
        """The full parameters as CPU tensors in their own dtype (bf16 on GPU) on rank 0, None elsewhere. Under ZeRO-3
        one layer group is gathered at a time and only rank 0 copies it out (every rank must call: the gather is
        collective)."""
        import deepspeed

        params = [(n, p) for n, p in self.engine.module.named_parameters() if p.requires_grad or not trainable_only]
        if self.cfg.zero_stage != 3:
            return {n: p.detach().to("cpu").contiguous() for n, p in params} if self.rank == 0 else None
        state = {} if self.rank == 0 else None
        by_name = dict(params)
        for group in ([(n, by_name[n]) for n in names] for names in layer_groups(list(by_name))):
            with deepspeed.zero.GatheredParameters([p for _, p in group], modifier_rank=None):
                if state is not None:
                    state.update((n, p.detach().to("cpu", copy=True).contiguous()) for n, p in group)
        return state

    def save_pretrained(self, out_dir) -> None:
        """A Hugging Face checkpoint of the current policy (model + processor), written by rank 0."""
        state = self.full_state_dict(trainable_only=False)
        if state is not None:
            self.engine.module.save_pretrained(out_dir, state_dict=state)
            self.processor.save_pretrained(out_dir)
