"""Trainer-group checkpoints: a Hugging Face folder plus everything needed to resume exactly.

    <root>/step_00000010/
        hf/                  save_pretrained of model + processor (rank 0): transformers, vLLM, serve, evaluate load it
        deepspeed/ds/        engine.save_checkpoint: module, optimizer and lr-scheduler state (every rank its shard)
        rng/rank_<r>.pt      python, numpy and torch RNG states of each rank
        trainer_state.json   step, data position, time
        COMPLETE             written last: a folder without it was cut off mid-save and is never resumed from

``<root>`` is a folder (shared by the ranks, as Ray Train's storage is) or ``s3://...``: there every rank stages its
files in a local temp folder and uploads them, and rank 0 writes ``COMPLETE`` after a barrier. Every function that
takes a trainer is collective: all ranks call it.
"""
from __future__ import annotations

import json
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist

from seedr1.config import ConfigError, S3Config
from seedr1.storage import StorageError, get_storage, is_s3, join

STEP_DIR = "step_{:08d}"
MARKER = "COMPLETE"
STATE = "trainer_state.json"
DS_TAG = "ds"


def step_uri(root: str, step: int) -> str:
    """Where the checkpoint of ``step`` lives under ``root``."""
    return join(root, STEP_DIR.format(step))


def complete_steps(root: str, s3: Optional[S3Config] = None) -> list[int]:
    """Steps of the complete checkpoints under ``root`` (those with a COMPLETE marker), ascending."""
    if not is_s3(root):
        return sorted(int(p.parent.name[5:]) for p in Path(root).glob(f"step_*/{MARKER}"))
    base = root.rstrip("/") + "/"
    steps = []
    for uri in get_storage(root, s3).list(base):
        parts = uri[len(base):].split("/")
        if len(parts) == 2 and parts[1] == MARKER and parts[0].startswith("step_"):
            steps.append(int(parts[0][5:]))
    return sorted(steps)


def latest_complete(root: str, s3: Optional[S3Config] = None) -> Optional[str]:
    """URI of the newest complete checkpoint under ``root``, or None."""
    steps = complete_steps(root, s3)
    return step_uri(root, steps[-1]) if steps else None


def is_complete(uri: str, s3: Optional[S3Config] = None) -> bool:
    return get_storage(uri, s3).exists(join(uri, MARKER))


def _rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(trainer, root: str, step: int, data_position: dict, keep: int = 0,
                    s3: Optional[S3Config] = None, launch_id: Optional[str] = None) -> str:
    """Write the checkpoint of ``step`` (collective); COMPLETE goes last. Returns its URI."""
    rank, remote = dist.get_rank(), is_s3(root)
    uri, storage = step_uri(root, step), get_storage(root, s3)
    if rank == 0:
        storage.delete_prefix(uri)  # leftovers of a save of this step that was cut off (no-op when absent)
    dist.barrier()
    stage = Path(tempfile.mkdtemp(prefix="seedr1-ckpt-")) if remote else Path(uri)
    trainer.save_pretrained(stage / "hf")
    trainer.engine.save_checkpoint(str(stage / "deepspeed"), tag=DS_TAG)
    (stage / "rng").mkdir(parents=True, exist_ok=True)
    torch.save(_rng_state(), stage / "rng" / f"rank_{rank}.pt")
    if remote:
        for path in sorted(p for p in stage.rglob("*") if p.is_file()):
            storage.upload_file(path, join(uri, str(path.relative_to(stage))))
        shutil.rmtree(stage, ignore_errors=True)
    dist.barrier()
    if rank == 0:
        state = {"step": step, "data_position": data_position, "world_size": dist.get_world_size(),
                 "time": time.time(), "launch_id": launch_id}
        storage.write_bytes(join(uri, STATE), json.dumps(state, indent=1).encode())
        storage.write_bytes(join(uri, MARKER), b"")
        prune(root, keep, s3)
    dist.barrier()
    return uri


def prune(root: str, keep: int, s3: Optional[S3Config] = None) -> list[int]:
    """Delete all but the newest ``keep`` complete checkpoints (and cut-off ones older than the newest complete one)."""
    steps = complete_steps(root, s3)
    storage = get_storage(root, s3)
    doomed = steps[:-keep] if keep > 0 else []
    if steps and not is_s3(root):
        doomed += [int(p.name[5:]) for p in Path(root).glob("step_*")
                   if not (p / MARKER).exists() and int(p.name[5:]) < steps[-1]]
    for step in doomed:
        storage.delete_prefix(step_uri(root, step))
    return sorted(doomed)


def load_checkpoint(trainer, uri: str, s3: Optional[S3Config] = None) -> dict:
    """Restore module, optimizer, lr scheduler and this rank's RNG from a complete checkpoint (collective);
    returns its trainer state (step, data position)."""
    if not is_complete(uri, s3):
        raise FileNotFoundError(f"{uri} is not a complete checkpoint (no {MARKER} marker): it was cut off mid-save")
    rank = dist.get_rank()
    storage = get_storage(uri, s3)
    local = Path(uri)
    tmp = None
    if is_s3(uri):
        tmp = Path(tempfile.mkdtemp(prefix="seedr1-resume-"))
        for sub in ("deepspeed", "rng"):
            storage.download_dir(join(uri, sub), tmp / sub)
        local = tmp
    load_path, _ = trainer.engine.load_checkpoint(str(local / "deepspeed"), tag=DS_TAG, load_optimizer_states=True,
                                                  load_lr_scheduler_states=True)
    if load_path is None:
        raise RuntimeError(f"DeepSpeed could not load {uri}/deepspeed/{DS_TAG}")
    # The schedule's peak is this run's trainer.lr: LambdaLR's saved state would keep the old run's (a resume with
    # another lr would silently train at the old one).
    sched = trainer.engine.lr_scheduler
    if isinstance(sched, torch.optim.lr_scheduler.LambdaLR):
        sched.base_lrs = [trainer.cfg.lr] * len(sched.base_lrs)
        for group, fn in zip(sched.optimizer.param_groups, sched.lr_lambdas):
            group["initial_lr"], group["lr"] = trainer.cfg.lr, trainer.cfg.lr * fn(sched.last_epoch)
        sched._last_lr = [group["lr"] for group in sched.optimizer.param_groups]
    rng = local / "rng" / f"rank_{rank}.pt"
    if rng.exists():  # absent when the world size grew: that rank starts from its seed
        _set_rng_state(torch.load(rng, weights_only=False))
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    return _state(uri, s3)


def report_to_ray_train(uri: str, step: int) -> None:
    """Tell Ray Train about a complete checkpoint with a small pointer checkpoint (collective: every rank reports;
    rank 0 attaches the pointer), so a trainer group restarted by ``FailureConfig`` resumes from it."""
    import ray.train
    from ray.train import Checkpoint

    if dist.get_rank() != 0:
        ray.train.report({"step": step})
        return
    with tempfile.TemporaryDirectory(prefix="seedr1-pointer-") as d:
        (Path(d) / "pointer.json").write_text(json.dumps({"uri": uri, "step": step}))
        ray.train.report({"step": step}, checkpoint=Checkpoint.from_directory(d))


def ray_train_pointer() -> Optional[str]:
    """The checkpoint URI Ray Train hands back after restarting the trainer group, or None on a first start."""
    import ray.train

    try:
        ckpt = ray.train.get_checkpoint()
    except RuntimeError:  # not inside a Ray Train function (the trainer core on its own)
        return None
    if ckpt is None:
        return None
    with ckpt.as_directory() as d:
        return json.loads((Path(d) / "pointer.json").read_text())["uri"]


def resume_point(resume: str, root: str, s3: Optional[S3Config] = None,
                 launch_id: Optional[str] = None) -> Optional[str]:
    """The checkpoint to start from: after a trainer-group restart, the newest checkpoint this launch wrote (a worker
    may die between a save, which prunes the one before, and its report to Ray Train, whose pointer is then gone),
    else Ray Train's pointer; on a first start per ``resume`` (auto: the newest complete checkpoint under ``root``;
    never; or an explicit checkpoint URI)."""
    uri = ray_train_pointer()
    if launch_id:
        newest = latest_complete(root, s3)
        if newest and _state(newest, s3).get("launch_id") == launch_id:
            uri = newest
    if uri is None and resume == "auto":
        uri = latest_complete(root, s3)
    elif uri is None and resume != "never":
        uri = resume
    return uri


def check_world_size(cfg) -> None:
    """Before anything starts: the checkpoint a first start resumes from was written by as many trainer workers as
    this run has. ZeRO stages 1-3 keep the optimizer state sharded per worker; DeepSpeed refuses another count only
    deep inside the load, in every worker, after the engines and models are up (and again on every retry)."""
    if cfg.resume == "never" or cfg.trainer.zero_stage == 0:
        return
    uri = latest_complete(checkpoint_root(cfg), cfg.data.s3) if cfg.resume == "auto" else cfg.resume
    try:
        written = _state(uri, cfg.data.s3).get("world_size") if uri else None
    except (StorageError, ValueError):  # no readable state: the load itself will say what is wrong
        written = None
    if written is not None and written != cfg.trainer.num_workers:
        raise ConfigError(f"{uri} was written by {written} trainer workers and this run has trainer.num_workers="
                          f"{cfg.trainer.num_workers}: ZeRO stage {cfg.trainer.zero_stage} shards the optimizer state "
                          f"per worker, so it resumes only with the same count. Set trainer.num_workers={written}, or "
                          "resume=never to start afresh (the checkpoints are set aside, not deleted)")


def _state(uri: str, s3: Optional[S3Config] = None) -> dict:
    return json.loads(get_storage(uri, s3).read_bytes(join(uri, STATE)))


def _replaced_name(root: str) -> str:
    return f"{root.rstrip('/')}.replaced-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"


def set_aside_after(root: str, resume: str, s3: Optional[S3Config] = None) -> Optional[str]:
    """``resume=<checkpoint>``: checkpoints under ``root`` of later steps than it are moved to
    ``<root>.replaced-<UTC time>`` (kept, not deleted): left in place, pruning (by step) would delete the resumed
    run's new checkpoints and a later ``resume=auto`` would jump back to the abandoned line. On s3:// it refuses
    instead. Also checks, before anything starts, that ``resume`` is a complete checkpoint."""
    if not is_complete(resume, s3):
        raise ConfigError(f"resume={resume} is not a complete checkpoint (no {MARKER} marker: missing, or cut off "
                         f"mid-save)")
    step = int(_state(resume, s3)["step"])
    if is_s3(root):
        later = [n for n in complete_steps(root, s3) if n > step]
        if later:
            raise ConfigError(f"resume={resume} (step {step}), but {root} also holds later checkpoints (steps "
                             f"{later[:3]}{'...' if len(later) > 3 else ''}) that would mix with this run's; use "
                             f"another checkpoint.dir, or delete them yourself")
        return None
    later = sorted(p for p in Path(root).glob("step_*") if p.name[5:].isdigit() and int(p.name[5:]) > step)
    if not later:
        return None
    dest = Path(_replaced_name(root))
    dest.mkdir(parents=True)
    for path in later:
        shutil.move(str(path), str(dest / path.name))
    return str(dest)


def set_aside_for_fresh_start(root: str, s3: Optional[S3Config] = None) -> Optional[str]:
    """``resume=never`` over a root that already holds checkpoints: move them to ``<root>.replaced-<UTC time>``
    (kept, not deleted). Left in place they would mix with this run's: pruning and ``resume=auto`` go by step number,
    so an earlier run's higher steps would delete this run's checkpoints and win a later resume. On s3:// (no cheap
    move) it refuses instead, naming the root."""
    if is_s3(root):
        steps = complete_steps(root, s3)
        if steps:
            raise ConfigError(f"resume=never, but {root} holds checkpoints of an earlier run (steps {steps[:3]}"
                             f"{'...' if len(steps) > 3 else ''}); use another checkpoint.dir, or delete them yourself")
        return None
    if not any(Path(root).glob("step_*")):
        return None
    dest = _replaced_name(root)
    shutil.move(root, dest)
    return dest


def checkpoint_root(cfg) -> str:
    """Where a job's checkpoints go: ``cfg.checkpoint.dir`` or ``<run_dir>/checkpoints``."""
    return cfg.checkpoint.dir or str(Path(cfg.run_dir) / "checkpoints")


def resume_trainer(trainer, cfg, launch_id: Optional[str] = None) -> tuple[int, Optional[dict], Optional[str]]:
    """Collective: rank 0 picks the checkpoint (``resume_point``), every rank loads it. Returns
    (steps done, data position, checkpoint URI), or (0, None, None) for a fresh start."""
    box = [resume_point(cfg.resume, checkpoint_root(cfg), cfg.data.s3, launch_id) if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)  # one decision for all ranks
    if not box[0]:
        return 0, None, None
    state = load_checkpoint(trainer, box[0], cfg.data.s3)
    return state["step"], state["data_position"], box[0]


def save_if_due(trainer, cfg, done: int, total: int, data_position: Optional[dict],
                launch_id: Optional[str] = None) -> Optional[str]:
    """Collective: at every ``checkpoint.every``-th step and at the last one, save and report to Ray Train."""
    if done != total and not (cfg.checkpoint.every and done % cfg.checkpoint.every == 0):
        return None
    uri = save_checkpoint(trainer, checkpoint_root(cfg), done, data_position, cfg.checkpoint.keep, cfg.data.s3,
                          launch_id)
    report_to_ray_train(uri, done)
    return uri
