"""What each job asks of the Ray cluster, as groups of identical workers (``cluster.fit.Group``).

One place that knows which config keys set what a job's Ray workers need, so the pre-flight check, its message and its
suggested overrides all follow the configs. Ray's own helpers (the Train controller, Serve's controller and proxies)
take no CPUs; Ray Data's decode tasks take one CPU each and need at least one free somewhere, or the data stream stalls.
"""
from __future__ import annotations

from seedr1.cluster.fit import Group


def _resources(cpus: float, gpus: float) -> dict[str, float]:
    return {"CPU": cpus, **({"GPU": gpus} if gpus else {})}


def rollout_group(rollout) -> Group:
    return Group("rollout actor", rollout.num_actors, _resources(rollout.cpus_per_actor, rollout.gpus_per_actor),
                 "rollout.num_actors", {"CPU": "rollout.cpus_per_actor", "GPU": "rollout.gpus_per_actor"},
                 dict(rollout.node_labels))


def trainer_group(trainer, count_ok=None) -> Group:
    return Group("trainer worker", trainer.num_workers, _resources(trainer.cpus_per_worker, trainer.gpus_per_worker),
                 "trainer.num_workers", {"CPU": "trainer.cpus_per_worker", "GPU": "trainer.gpus_per_worker"},
                 dict(trainer.node_labels), count_ok)


def decode_task() -> Group:
    """Ray Data's decode tasks (1 CPU each, Ray Data's default): one must find a CPU, the rest only speed it up."""
    return Group("data decode task (Ray Data, 1 CPU)", 1, {"CPU": 1.0})


def grpo_groups(cfg) -> list[Group]:
    batch = cfg.prompts_per_step * cfg.rollout.num_samples
    return [rollout_group(cfg.rollout), trainer_group(cfg.trainer, lambda n: batch % n == 0), decode_task()]


def sft_groups(cfg) -> list[Group]:
    micro = cfg.trainer.micro_batch_size
    return [trainer_group(cfg.trainer, lambda n: cfg.batch_size % n == 0 and (cfg.batch_size // n) % micro == 0),
            decode_task()]


def evaluate_groups(cfg) -> list[Group]:
    if cfg.endpoint:  # an HTTP endpoint answers: only the data tasks run here
        return [decode_task()]
    return [Group("evaluation actor", cfg.num_actors, _resources(cfg.cpus_per_actor, cfg.gpus_per_actor),
                  "num_actors", {"CPU": "cpus_per_actor", "GPU": "gpus_per_actor"}, dict(cfg.node_labels)),
            decode_task()]


def serve_groups(cfg) -> list[Group]:
    return [Group("serve replica", cfg.min_replicas, _resources(cfg.cpus_per_replica, cfg.gpus_per_replica),
                  "min_replicas", {"CPU": "cpus_per_replica", "GPU": "gpus_per_replica"}, dict(cfg.node_labels))]


def prefixed(groups: list[Group], prefix: str) -> list[Group]:
    """The groups of a job nested in another's config (the study's ``grpo.``, ``sft.``, ``evaluate.``)."""
    from dataclasses import replace

    return [replace(g, count_key=prefix + g.count_key if g.count_key else "",
                    keys={k: prefix + v for k, v in g.keys.items()}) for g in groups]
