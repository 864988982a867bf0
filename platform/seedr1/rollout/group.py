"""The rollout actors as one group: spread prompts over them, push weights to them, and survive a dead one.

An actor that dies (OOM, a crashed engine, a lost node) is restarted by Ray from the model path, so before it
works again it gets the latest synced weights, through ``resync`` (the GRPO loop's: every trainer rank sends the
current weights again, the same way a sync does); its prompts are generated again. A restart between two calls is
caught too: every call names the weights version it expects, and a restarted actor is back at version 0.
Each restart is counted and reported through ``on_event``. Syncs themselves are ``train.weight_sync``'s.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

import ray
from ray.exceptions import ActorUnavailableError, RayActorError

from seedr1.rollout.actor import StaleWeightsError
from seedr1.rollout.engine import Sampling, prompt_seeds


class RolloutGroup:
    def __init__(self, actors: list, max_recoveries: int = 3, on_event: Optional[Callable[..., None]] = None,
                 resync: Optional[Callable[[], None]] = None):
        self.actors = actors
        self.max_recoveries = max_recoveries  # per call: a dead actor is retried this often before giving up
        self.on_event = on_event or (lambda kind, **fields: None)
        # sends weights ``version`` to every actor again (after a restart); None: only the start weights exist
        self.resync = resync
        self.version = 0  # syncs so far; the actors' weights_version must match
        self.restarts = 0
        self.pids: list = [None] * len(actors)  # each actor's process, as last seen: a new one is a restart
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
        group.pids = ray.get([a.pid.remote() for a in actors])
        return group

    def close(self) -> None:
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

    def wait_for_restart(self, k: int) -> None:
        """Until Ray has actor ``k`` back (ActorDiedError once its restarts are spent)."""
        t0 = time.perf_counter()
        while True:
            try:
                ray.get(self.actors[k].pid.remote(), timeout=self.restart_timeout_s)
                return
            except ActorUnavailableError:
                if time.perf_counter() - t0 > self.restart_timeout_s:
                    raise
                time.sleep(0.5)

    def _recover(self, k: int, error: Exception) -> None:
        t0 = time.perf_counter()
        self.wait_for_restart(k)
        if isinstance(error, StaleWeightsError) and self.version > 0 and \
                ray.get(self.actors[k].held_version.remote()) == self.version:
            return  # stale only for a moment: a resync for another actor has caught it up already
        if self.version > 0:
            if self.resync is None:
                raise RuntimeError(f"rollout actor {k} restarted with the start weights and this group has no way to "
                                   f"send it weights version {self.version}") from error
            self.resync()
        self._count_restart(k, error, t0)

    def wait_for_restarts(self, error: Exception) -> None:
        """After a call every actor took part in failed (a weight sync): until Ray has them all back; the restarted
        ones are counted now, in the step they died in (their weights are resent when the next call finds them
        stale)."""
        t0 = time.perf_counter()
        for k in range(len(self.actors)):
            self.wait_for_restart(k)
            if self.pids[k] is not None:  # unknown processes are counted when found stale
                self._count_restart(k, error, t0)

    def _count_restart(self, k: int, error: Exception, t0: float) -> None:
        """Count and report actor ``k``'s restart once per new process."""
        pid = ray.get(self.actors[k].pid.remote())
        if self.pids[k] is not None and pid == self.pids[k]:
            return  # the same process as before: this restart was counted already
        self.pids[k] = pid
        self.restarts += 1
        self.on_event("rollout_actor_restarted", actor=k, error=type(error).__name__,
                      seconds=round(time.perf_counter() - t0, 2))


def _take(seeds: Optional[list[int]], idx: list[int]) -> Optional[list[int]]:
    return None if seeds is None else [seeds[i] for i in idx]
