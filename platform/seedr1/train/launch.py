"""Launching a trainer-group job (GRPO, SFT): run folder, data and model, Ray (embedded or joined), Ray Train."""
from __future__ import annotations

import functools
import os
import time
from pathlib import Path

from seedr1.config import ConfigError, TrainerConfig, save_config
from seedr1.paths import QUIET_ENV


AWS_SECRETS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def _on_a_joined_cluster() -> bool:
    if os.environ.get("RAY_ADDRESS"):
        return True
    import ray

    return ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE  # a task or actor


def worker_env() -> dict:
    """Environment every Ray worker of the job needs (auth, caches, S3, offline hub, thread caps).

    AWS credentials go along only from a driver that starts its own Ray (no ``RAY_ADDRESS``, not itself a Ray
    task, as a Serve application builder on a cluster is): a runtime_env is shown in plain text by Ray's dashboard
    and state API. The nodes of a joined cluster (``RAY_ADDRESS``, ``ray job submit``, KubeRay) have their own (the
    chart: from a Secret); ``SEEDR1_FORWARD_AWS_SECRETS=1`` sends them anyway."""
    keep = ("RAY_AUTH_MODE", "TORCH_EXTENSIONS_DIR", "SEEDR1_CACHE", "VLLM_ENABLE_V1_MULTIPROCESSING",
            "VLLM_CPU_KVCACHE_SPACE", "AWS_ENDPOINT_URL", "AWS_REGION", "HF_HUB_OFFLINE", *QUIET_ENV)
    if not _on_a_joined_cluster() or os.environ.get("SEEDR1_FORWARD_AWS_SECRETS") == "1":
        keep += AWS_SECRETS
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def prepare_run(cfg, job: str):
    """Resolve the run folder, data (synthetic SEED-Bench-R1-mini when none is given) and the tiny model; write
    the config into the run folder. ``cfg`` is any job config with run_dir, model, data, synthetic_if_missing."""
    from seedr1.cluster.outputs import output_path

    run_dir = Path(output_path(cfg.run_dir))  # never inside Ray's unpacked working directory (seedr1.cluster.outputs)
    cfg.run_dir = str(run_dir)
    if not cfg.data.root and not cfg.data.shards:
        if not cfg.synthetic_if_missing:
            raise ConfigError("data.root (or data.shards) is required: the SEED-Bench-R1 root or packed shards")
        from seedr1.data.synthetic import SynthSpec, write_synthetic

        root = run_dir / "data"
        if not (root / "annotations" / "training_6k.jsonl").exists():
            write_synthetic(root, SynthSpec(seed=cfg.data.seed))
        cfg.data.root = str(root)
        print(f"[{job}] no data.root given: synthetic SEED-Bench-R1-mini at {root}", flush=True)
    from seedr1.model.loading import resolve_for_workers
    from seedr1.storage import absolute

    cfg.model = resolve_for_workers(cfg.model)  # tiny built here first; local paths absolute for the workers
    cfg.data.root, cfg.data.shards = absolute(cfg.data.root), absolute(cfg.data.shards)
    # Ray Train runs each worker in a session folder of its own: a relative checkpoint folder would land there
    # (and resume=auto would never find it again), a relative resume path would not be found.
    cfg.checkpoint.dir = output_path(cfg.checkpoint.dir)
    if cfg.resume not in ("auto", "never"):
        cfg.resume = absolute(cfg.resume)
    from seedr1.train.checkpoint import check_world_size, checkpoint_root, set_aside_after, set_aside_for_fresh_start

    if cfg.resume != "never":  # before anything is moved aside: a refused resume leaves the checkpoints in place
        check_world_size(cfg)
    if cfg.resume == "never":  # start over: an earlier run's checkpoints must not mix with ours
        moved = set_aside_for_fresh_start(checkpoint_root(cfg), cfg.data.s3)
        if moved:
            print(f"[{job}] resume=never: the earlier run's checkpoints were moved to {moved}", flush=True)
    elif cfg.resume != "auto":  # from an explicit checkpoint: later steps of the abandoned line must not mix either
        moved = set_aside_after(checkpoint_root(cfg), cfg.resume, cfg.data.s3)
        if moved:
            print(f"[{job}] resume={cfg.resume}: later checkpoints of the earlier run were moved to {moved}",
                  flush=True)
    save_config(cfg, run_dir)
    print(f"[{job}] outputs: {run_dir}" + (f" (checkpoints: {cfg.checkpoint.dir})" if cfg.checkpoint.dir else ""),
          flush=True)
    return cfg


def ensure_ray(cpus_needed: float, env: dict) -> None:
    """No RAY_ADDRESS: an embedded local Ray sized to the job; with RAY_ADDRESS / under `ray job submit`: join."""
    import ray

    if ray.is_initialized():
        return
    # Logical CPUs sized to the job (threads are pinned to 1 per process, so oversubscription is mild).
    local = None if os.environ.get("RAY_ADDRESS") else max(os.cpu_count() or 1, int(cpus_needed + 2.999))
    ray.init(runtime_env={"env_vars": env}, include_dashboard=False, num_cpus=local, log_to_driver=True,
             ignore_reinit_error=True)  # + 2: the train controller and data tasks


def start_ray(job: str, groups: list, cluster, env: dict) -> None:
    """Ray up (embedded, sized to ``groups``; or the cluster joined) and the job checked to fit it, before any actor
    starts (``seedr1.cluster.check``: a job that cannot fit fails in seconds, naming what would)."""
    from seedr1.cluster.check import check_fits
    from seedr1.cluster.fit import total

    ensure_ray(total(groups).get("CPU", 0.0), env)
    check_fits(job, groups, cluster.wait_for_nodes_s)


def _quiet_train_fn(train_fn, config: dict):
    """``train_fn`` with Ray Train's per-report notes off in the worker (its LoggingConfig reaches the controller)."""
    import logging

    logging.getLogger("ray.train").setLevel(logging.WARNING)
    try:  # "Reporting training result N" comes from a logger named by its file, not under ray.train
        from ray.train.v2._internal.execution import context

        logging.getLogger(context.__file__).setLevel(logging.WARNING)
    except ImportError:  # another Ray Train layout: its notes show
        pass
    return train_fn(config)


def run_trainer_group(train_fn, loop_config: dict, trainer: TrainerConfig, run_dir: str, keep: int) -> None:
    """``train_fn`` on a Ray Train TorchTrainer group of DeepSpeed workers (gloo on CPU, NCCL on GPU).

    A fresh Ray Train run per launch: its checkpoints (pointers to ours) only serve restarts of the group
    within this launch (``FailureConfig``); resuming across launches is ``resume=auto`` over our own folder."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    gpu = trainer.gpus_per_worker > 0
    # Read by Ray Train's controller and workers (propagated from here): a worker group that cannot start fails after
    # start_timeout_s, once (controller_failure_limit=0), instead of retrying every 60 s forever; workers' prints reach
    # the job log once (Ray Train's print patch copies each line to the log a second time).
    os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] = str(trainer.start_timeout_s)
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    name = f"trainer-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    TorchTrainer(
        functools.partial(_quiet_train_fn, train_fn),
        train_loop_config={**loop_config, "launch_id": name},  # restarts find this launch's own checkpoints
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=trainer.num_workers, use_gpu=gpu,
                                     resources_per_worker={"CPU": trainer.cpus_per_worker,
                                                           **({"GPU": trainer.gpus_per_worker} if gpu else {})},
                                     label_selector=dict(trainer.node_labels) or None),
        run_config=RunConfig(name=name,
                             storage_path=str(Path(run_dir) / "ray_train"),
                             checkpoint_config=CheckpointConfig(num_to_keep=keep or None),
                             # Ray Train's own progress notes (each report and checkpoint, the worker list) are
                             # not the job's: warnings and errors still show
                             logging_config=LoggingConfig(log_level="WARNING"),
                             failure_config=FailureConfig(max_failures=trainer.max_failures,
                                                           controller_failure_limit=0)),
    ).fit()
