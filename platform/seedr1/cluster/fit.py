"""Does a job fit a Ray cluster? Its demands (groups of identical Ray workers) against the nodes' totals, before
anything starts: Ray itself would only wait, forever, for a worker no node can hold.

Pure functions over plain dicts, so the rule is tested without a cluster. Every group is placed bundle by bundle,
largest first, on the first node with room and the group's labels (Ray's PACK placement groups may spread over nodes,
so a bundle only needs one node that holds it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

# resources Ray reports that no seedr1 worker asks for (memory is Ray's bookkeeping, not a reservation we make)
_IGNORED = ("memory", "object_store_memory")


@dataclass(frozen=True)
class Group:
    """``count`` Ray workers of one kind, each needing ``resources`` on a node whose labels include ``labels``."""

    name: str  # what one of them is, for messages: "rollout actor", "trainer worker"
    count: int
    resources: dict[str, float]  # per worker: {"CPU": 1.0, "GPU": 1.0, "seedr1_rollout": 1.0}
    count_key: str = ""  # the override that changes ``count`` ("trainer.num_workers"); "" for none
    keys: dict[str, str] = field(default_factory=dict)  # resource -> the config key that sets it
    labels: dict[str, str] = field(default_factory=dict)
    count_ok: Optional[Callable[[int], bool]] = None  # counts the job accepts (e.g. dividing the batch)


@dataclass(frozen=True)
class Node:
    name: str  # "10.0.0.5 (head)"
    resources: dict[str, float]
    labels: dict[str, str] = field(default_factory=dict)


def _demand(resources: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in resources.items() if v > 0 and k not in _IGNORED}


def bundles(groups: list[Group]) -> list[dict[str, float]]:
    """One resource bundle per worker, as the job's placement groups ask Ray (and an autoscaler) for them."""
    return [_demand(g.resources) for g in groups for _ in range(g.count)]


def unplaced(groups: list[Group], nodes: list[Node]) -> dict[str, int]:
    """How many workers of each group no node has room for (empty: the job fits)."""
    free = [dict(n.resources) for n in nodes]
    bundles = [(g, _demand(g.resources)) for g in groups for _ in range(g.count)]
    # largest first: GPUs, then custom resources, then CPUs (first-fit decreasing)
    bundles.sort(key=lambda b: (-b[1].get("GPU", 0), -sum(v for k, v in b[1].items() if k not in ("GPU", "CPU")),
                                -b[1].get("CPU", 0)))
    missing: dict[str, int] = {}
    for g, need in bundles:
        for node, room in zip(nodes, free):
            if all(node.labels.get(k) == v for k, v in g.labels.items()) and \
                    all(room.get(k, 0.0) + 1e-9 >= v for k, v in need.items()):
                for k, v in need.items():
                    room[k] = room.get(k, 0.0) - v
                break
        else:
            missing[g.name] = missing.get(g.name, 0) + 1
    return missing


def fixes(groups: list[Group], nodes: list[Node]) -> list[str]:
    """Overrides that would make the job fit, one group changed at a time: no GPUs where the cluster has none, the
    largest count it accepts, else (the count at 1 still not fitting) the CPUs per worker halved until it fits."""
    out = []
    if not any(n.resources.get("GPU", 0) for n in nodes):  # a CPU cluster: every GPU request to 0, together
        cpu_only = [replace(g, resources={k: v for k, v in g.resources.items() if k != "GPU"}) for g in groups]
        asked = [g.keys["GPU"] for g in groups if g.resources.get("GPU", 0) > 0 and g.keys.get("GPU")]
        if asked and not unplaced(cpu_only, nodes):
            return [" ".join(f"{key}=0" for key in asked)]
    for i, g in enumerate(groups):
        if not g.count_key and not g.keys.get("CPU"):
            continue
        for n in range(g.count - 1, 0, -1):
            if g.count_key and (g.count_ok is None or g.count_ok(n)) and \
                    not unplaced(groups[:i] + [replace(g, count=n)] + groups[i + 1:], nodes):
                out.append(f"{g.count_key}={n}")
                break
        else:
            cpus, key = g.resources.get("CPU", 0.0), g.keys.get("CPU")
            while key and cpus > 0.125:
                cpus /= 2
                trial = replace(g, resources={**g.resources, "CPU": cpus})
                if not unplaced(groups[:i] + [trial] + groups[i + 1:], nodes):
                    out.append(f"{key}={cpus:g}")
                    break
    return out


def _fmt(resources: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(resources.items(), key=lambda kv: kv[0] != "CPU")) + "}"


def total(groups: list[Group]) -> dict[str, float]:
    out: dict[str, float] = {}
    for g in groups:
        for k, v in _demand(g.resources).items():
            out[k] = out.get(k, 0.0) + v * g.count
    return out


def too_small_message(job: str, groups: list[Group], nodes: list[Node], missing: dict[str, int]) -> str:
    """What the job needs, what the cluster has, what does not fit and the overrides that would."""
    lines = [f"the Ray cluster cannot hold this {job} job (Ray would wait for it forever):", "  needs:"]
    for g in groups:
        keys = ", ".join(k for k in [g.count_key, *(v for r, v in g.keys.items() if r in _demand(g.resources))] if k)
        where = f" on nodes labelled {g.labels}" if g.labels else ""
        lines.append(f"    {g.count} x {g.name}: {_fmt(_demand(g.resources))} each{where}" + (f" ({keys})" if keys else ""))
    lines.append(f"    = {_fmt(total(groups))} in all")
    lines.append(f"  has: {len(nodes)} node{'s' * (len(nodes) != 1)}:")
    for n in nodes:
        lines.append(f"    {n.name}: {_fmt(_demand(n.resources))}" + (f" labels {n.labels}" if n.labels else ""))
    lines.append("  no room for: " + ", ".join(f"{k} x {name}" for name, k in missing.items()))
    hint = fixes(groups, nodes)
    need = total(groups)
    more = f"give the cluster {_fmt(need)} or more in all (on one machine: ray start --head --num-cpus " \
           f"{math.ceil(need.get('CPU', 0))}" + (f" --num-gpus {math.ceil(need['GPU'])}" if need.get("GPU") else "") + ")"
    lines.append("  fits with: " + " or ".join(hint + [more]))
    return "\n".join(lines)
