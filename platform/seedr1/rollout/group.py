"""The rollout actors as one group: spread prompts over them, push weights to them, and survive a dead one.

An actor that dies (OOM, a crashed engine, a lost node) is restarted by Ray from the model path, so before it
works again it gets the latest synced weights; its prompts are generated again. A restart between two calls is
caught too: every call names the weights version it expects, and a restarted actor is back at version 0.
Each restart is counted and reported through ``on_event``.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

import ray
from ray.exceptions import ActorUnavailableError, RayActorError

from seedr1.rollout.actor import StaleWeightsError


class RolloutGroup:
    def __init__(self, actors: list, max_recoveries: int = 3, on_event: Optional[Callable[..., None]] = None):
        self.actors = actors
        self.max_recoveries = max_recoveries  # per call: a dead actor is retried this often before giving up
        self.on_event = on_event or (lambda kind, **fields: None)
        self.weights = None  # ObjectRef of the latest synced weights (None: the engines still hold the start model)
        self.version = 0  # syncs so far; the actors' weights_version must match
        self.restarts = 0
        self.restart_timeout_s = 900.0  # an engine can take minutes to come back (weights, compilation)

    def _chunks(self, n: int) -> list[list[int]]:
        return [idx for idx in (list(range(k, n, len(self.actors))) for k in range(len(self.actors))) if idx]

    def launch(self, records: list, seed: int) -> dict:
        """Start generating (non-blocking); ``collect`` returns the completions."""
        chunks = self._chunks(len(records))
        futures = [self.actors[k].generate.remote([records[i] for i in idx], seed + k, self.version)
                   for k, idx in enumerate(chunks)]
        return {"records": records, "seed": seed, "chunks": chunks, "futures": futures}

    def collect(self, pending: dict) -> tuple[list, float]:
        """Completions per prompt (in order) and the slowest actor's generation seconds."""
        records, seed, out, gen_s = pending["records"], pending["seed"], [None] * len(pending["records"]), 0.0
        for k, (idx, future) in enumerate(zip(pending["chunks"], pending["futures"])):
            for attempt in range(self.max_recoveries + 1):
                try:
                    completions, secs = ray.get(future)
                    break
                except (RayActorError, StaleWeightsError) as e:
                    if attempt == self.max_recoveries:
                        raise RuntimeError(f"rollout actor {k} died {attempt + 1} times in one step; giving up") from e
                    self._recover(k, e)
                    future = self.actors[k].generate.remote([records[i] for i in idx], seed + k, self.version)
            gen_s = max(gen_s, secs)
            for i, c in zip(idx, completions):
                out[i] = c
        return out, gen_s

    def generate(self, records: list, seed: int) -> tuple[list, float]:
        return self.collect(self.launch(records, seed))

    def sync(self, weights: bytes) -> float:
        """Send new weights to every actor; returns the slowest actor's load seconds."""
        self.weights, self.version = ray.put(weights), self.version + 1
        secs = 0.0
        for k, actor in enumerate(self.actors):
            for attempt in range(self.max_recoveries + 1):
                try:
                    secs = max(secs, ray.get(actor.update_weights.remote(self.weights, self.version)))
                    break
                except RayActorError as e:
                    if attempt == self.max_recoveries:
                        raise
                    self._recover(k, e)  # reloads self.weights
        return secs

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
        if self.weights is not None:
            ray.get(self.actors[k].update_weights.remote(self.weights, self.version))
        self.restarts += 1
        self.on_event("rollout_actor_restarted", actor=k, error=type(error).__name__,
                      seconds=round(time.perf_counter() - t0, 2))
