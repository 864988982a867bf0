"""The rollout actors as one group: spread prompts over them, push weights to them, and survive a dead one.

An actor that dies (OOM, a crashed engine, a lost node) is restarted by Ray from the model path, so before it
works again it gets the latest synced weights; its prompts are generated again. A restart between two calls is
caught too: every call names the weights version it expects, and a restarted actor is back at version 0.
Each restart is counted and reported through ``on_event``.

Weights travel either as numpy arrays through the object store (``engine.array_state``), or (``sender``, a
``CollectiveSender``) as broadcast buckets over a process group of their own. A failed broadcast (an actor died in
it) falls back to the object store for that sync, and the group is formed again at the next one.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

import ray
from ray.exceptions import ActorUnavailableError, RayActorError

from seedr1.rollout.actor import StaleWeightsError
from seedr1.rollout.engine import Sampling, array_state, prompt_seeds


class RolloutGroup:
    def __init__(self, actors: list, max_recoveries: int = 3, on_event: Optional[Callable[..., None]] = None,
                 sender=None):
        self.actors = actors
        self.sender = sender  # a weight_sync.CollectiveSender, or None: the object store carries the weights
        self.max_recoveries = max_recoveries  # per call: a dead actor is retried this often before giving up
        self.on_event = on_event or (lambda kind, **fields: None)
        self.weights = None  # ObjectRef of the latest synced weights' bytes (made when needed)
        self.state = None  # the latest synced weights as tensors (collective sync keeps them for a restarted actor)
        self.version = 0  # syncs so far; the actors' weights_version must match
        self.restarts = 0
        self.restart_timeout_s = 900.0  # an engine can take minutes to come back (weights, compilation)
        self.placement_group = None  # set by ``start``: the group's own resources, released by ``close``

    @classmethod
    def start(cls, model: str, cfg, env: dict | None = None, s3=None, **kwargs) -> "RolloutGroup":
        """Start ``cfg.num_actors`` rollout actors on a placement group of their own (``close`` releases both).
        ``s3``: the S3Config an ``s3://`` model is fetched with."""
        from seedr1.rollout.actor import start_rollout_group

        actors, pg = start_rollout_group(model, cfg, env, s3)
        group = cls(actors, **kwargs)
        group.placement_group = pg
        return group

    def close(self) -> None:
        if self.sender is not None:
            self.sender.close()
        for actor in self.actors:
            ray.kill(actor)
        if self.placement_group is not None:
            ray.util.remove_placement_group(self.placement_group)
            self.placement_group = None

    def _chunks(self, n: int) -> list[list[int]]:
        return [idx for idx in (list(range(k, n, len(self.actors))) for k in range(len(self.actors))) if idx]

    def launch(self, records: list, seed: Optional[int]) -> dict:
        """Start generating (non-blocking); ``collect`` returns the completions. Each prompt's seed is fixed here,
        over the whole call, so it does not depend on the actor or chunk the prompt lands in."""
        chunks = self._chunks(len(records))
        seeds = prompt_seeds(Sampling(seed=seed), records)
        futures = [self.actors[k].generate.remote([records[i] for i in idx], _take(seeds, idx), self.version)
                   for k, idx in enumerate(chunks)]
        return {"records": records, "seeds": seeds, "chunks": chunks, "futures": futures}

    def collect(self, pending: dict) -> tuple[list, float]:
        """Completions per prompt (in order) and the slowest actor's generation seconds."""
        records, seeds, out, gen_s = pending["records"], pending["seeds"], [None] * len(pending["records"]), 0.0
        for k, (idx, future) in enumerate(zip(pending["chunks"], pending["futures"])):
            for attempt in range(self.max_recoveries + 1):
                try:
                    completions, secs = ray.get(future)
                    break
                except (RayActorError, StaleWeightsError) as e:
                    if attempt == self.max_recoveries:
                        raise RuntimeError(f"rollout actor {k} died {attempt + 1} times in one step; giving up") from e
                    self._recover(k, e)
                    future = self.actors[k].generate.remote([records[i] for i in idx], _take(seeds, idx), self.version)
            gen_s = max(gen_s, secs)
            for i, c in zip(idx, completions):
                out[i] = c
        return out, gen_s

    def generate(self, records: list, seed: Optional[int]) -> tuple[list, float]:
        return self.collect(self.launch(records, seed))

    def sync(self, weights) -> float:
        """Send new weights (a CPU state dict, or safetensors bytes) to every actor; returns the slowest load
        seconds."""
        self.version += 1
        if isinstance(weights, (bytes, bytearray)):
            self.state, self.weights = None, ray.put(weights)
        else:
            self.state, self.weights = weights, None
        if self.sender is not None and self.state is not None:
            try:
                return self.sender.send(self.state, self.version)
            except Exception as e:  # a dead peer breaks the whole group: this time the object store carries it
                self.sender.close()
                self.on_event("weight_sync_fallback", error=f"{type(e).__name__}: {e}"[:300])
        ref = self._weights_ref()
        if self.sender is None:
            self.state = None  # the object store holds them now; one copy on this host is enough
        # every engine loads at once: one at a time made a sync cost num_actors times one load
        futures = [actor.update_weights.remote(ref, self.version) for actor in self.actors]
        secs = 0.0
        for k, future in enumerate(futures):
            for attempt in range(self.max_recoveries + 1):
                try:
                    secs = max(secs, ray.get(future))
                    break
                except RayActorError as e:
                    if attempt == self.max_recoveries:
                        raise
                    self._recover(k, e)  # reloads the latest weights
                    future = self.actors[k].update_weights.remote(ref, self.version)
        return secs

    def _weights_ref(self):
        if self.weights is None and self.state is not None:
            self.weights = ray.put(array_state(self.state))
        return self.weights

    def _recover(self, k: int, error: Exception) -> None:
        t0 = time.perf_counter()
        while True:  # wait out Ray's restart; ActorDiedError (max_restarts spent) propagates
            try:
                ray.get(self.actors[k].pid.remote(), timeout=self.restart_timeout_s)
                break
            except ActorUnavailableError:
                if time.perf_counter() - t0 > self.restart_timeout_s:
                    raise
                time.sleep(0.5)
        if self.version > 0:
            ray.get(self.actors[k].update_weights.remote(self._weights_ref(), self.version))
        if self.sender is not None:
            self.sender.close()  # the restarted actor is not in the group: form it again at the next sync
        self.restarts += 1
        self.on_event("rollout_actor_restarted", actor=k, error=type(error).__name__,
                      seconds=round(time.perf_counter() - t0, 2))


def _take(seeds: Optional[list[int]], idx: list[int]) -> Optional[list[int]]:
    return None if seeds is None else [seeds[i] for i in idx]
