"""The Ray actor around a rollout engine (one engine per actor, placed on the rollout placement group)."""
from __future__ import annotations

import os
import time

import ray

from seedr1.config import RolloutConfig, S3Config
from seedr1.rollout.engine import Sampling


class StaleWeightsError(RuntimeError):
    """The actor holds other weights than the caller expects: it was restarted (and reloaded the start model)."""


class RolloutWorker:
    def __init__(self, model: str, cfg: RolloutConfig, torch_threads: int = 1, s3: S3Config | None = None):
        """``s3``: how to reach an ``s3://`` model (the job's ``data.s3``; empty fields: the AWS variables)."""
        import torch

        from seedr1.model.loading import resolve_checkpoint

        if not torch.cuda.is_available():
            torch.set_num_threads(torch_threads)
        self.cfg = cfg
        self.weights_version = 0  # 0: the start model; the trainer's syncs count up from there
        self.update_s = 0.0  # seconds this engine spent in the current weight update
        self.updating = False  # between start_weight_update and finish_weight_update
        model = resolve_checkpoint(model, s3)  # into this node's cache, once
        if cfg.engine == "vllm":
            from seedr1.rollout.vllm_engine import VLLMEngine

            self.engine = VLLMEngine(model, cfg.vllm, weight_sync=cfg.weight_sync)
        else:
            from seedr1.rollout.hf_engine import HFEngine

            self.engine = HFEngine(model)

    def generate(self, prompts, seed: int | list[int], weights_version: int = 0):
        """``seed``: the call's seed, or one per prompt (``Sampling.seeds``)."""
        if weights_version != self.weights_version:
            raise StaleWeightsError(f"actor holds weights version {self.weights_version}, caller expects "
                                    f"{weights_version} (restarted?)")
        s = Sampling(n=self.cfg.num_samples, max_tokens=self.cfg.max_tokens, temperature=self.cfg.temperature,
                     top_p=self.cfg.top_p, top_k=self.cfg.top_k, **({"seeds": seed} if isinstance(seed, list) else {"seed": seed}))
        t0 = time.perf_counter()
        out = self.engine.generate(prompts, s)
        return out, time.perf_counter() - t0

    def score(self, prompts, completions):
        return self.engine.score(prompts, completions)

    def update_weights(self, payload, version: int | None = None) -> float:
        t0 = time.perf_counter()
        self.engine.update_weights(payload)
        self.weights_version = self.weights_version + 1 if version is None else version
        return time.perf_counter() - t0

    # A sync: one weight update on vLLM's weight-transfer protocol (rollout.weight_transfer.RolloutActorsClient)
    def weight_transfer_backend(self) -> str:
        return self.engine.weight_transfer_backend()

    def weight_group_size(self) -> int:
        return self.engine.weight_group_size()

    def init_weight_transfer(self, init_info: dict) -> None:
        """Joins a new transfer group; the old one is left first (vLLM's NCCL engine would keep its communicator)."""
        self._end_cut_update()
        try:
            self.engine.shutdown_weight_transfer()
        except Exception:  # never initialised: nothing to leave
            pass
        self.engine.init_weight_transfer(init_info)

    def _end_cut_update(self) -> None:
        """An update cut short (the trainer lost another engine) is ended; the next one rewrites every weight."""
        if self.updating:
            self.updating = False
            try:
                self.engine.finish_weight_update()
            except RuntimeError:  # vLLM already ended it when its update_weights failed
                pass

    def start_weight_update(self) -> None:
        t0 = time.perf_counter()
        self._end_cut_update()
        self.engine.start_weight_update()
        self.updating = True
        self.update_s = time.perf_counter() - t0

    def update_weight_chunk(self, update_info: dict) -> None:
        """One ``update_weights`` call of the engine; a bucket put in the object store (``ref``) goes inline."""
        t0 = time.perf_counter()
        if "ref" in update_info:
            info = {k: v for k, v in update_info.items() if k != "ref"}
            info["packed"] = ray.get(update_info["ref"]).tobytes()  # vLLM's RPC to its engine core keeps bytes
            update_info = info
        try:
            self.engine.update_weight_chunk(update_info)
        except BaseException:
            self.updating = False  # vLLM's worker ended the update when it raised
            raise
        self.update_s += time.perf_counter() - t0

    def finish_weight_update(self, version: int | None = None) -> float:
        """Ends the update; the engine now holds weights ``version``. Returns the update's seconds in the engine."""
        t0 = time.perf_counter()
        self.engine.finish_weight_update()
        self.updating = False
        if version is not None:
            self.weights_version = version
        return self.update_s + time.perf_counter() - t0

    def pid(self) -> int:
        return os.getpid()

    def held_version(self) -> int:
        """The weights version this engine holds (0: the start model)."""
        return self.weights_version


def start_rollout_group(model: str, cfg: RolloutConfig, env: dict | None = None,
                        s3: S3Config | None = None) -> tuple[list, object]:
    """N rollout actors on their own placement group (separate from the trainer group's)."""
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    bundle = {"CPU": cfg.cpus_per_actor, **({"GPU": cfg.gpus_per_actor} if cfg.gpus_per_actor else {})}
    labels = [dict(cfg.node_labels)] * cfg.num_actors if cfg.node_labels else None  # only on the rollout nodes
    pg = placement_group([bundle] * cfg.num_actors, strategy="PACK", bundle_label_selector=labels)
    ray.get(pg.ready(), timeout=600)
    actor_cls = ray.remote(RolloutWorker)
    # A dead actor is restarted by Ray (same bundle); its in-flight calls fail and RolloutGroup re-issues them.
    actors = [actor_cls.options(num_cpus=cfg.cpus_per_actor, num_gpus=cfg.gpus_per_actor,
                                max_restarts=cfg.max_restarts, max_task_retries=0,
                                scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i),
                                runtime_env={"env_vars": env or {}}).remote(model, cfg, s3=s3)
              for i in range(cfg.num_actors)]
    ray.get([a.pid.remote() for a in actors])  # engines up before training starts
    return actors, pg
