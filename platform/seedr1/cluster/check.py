"""The pre-flight check every job runs once Ray is up and before it starts any actor: does the job fit the cluster?

Without it Ray waits forever for a worker no node can hold (Ray Train retries its worker group without bound). A job
that cannot fit fails within seconds with ``ClusterTooSmall`` (what it needs, what the cluster has, the overrides that
would fit). Where an autoscaler can add nodes (KubeRay with autoscaling on), the job first asks it for them
(``ray.autoscaler.sdk.request_resources``) and waits up to ``cluster.wait_for_nodes_s``, saying what it waits for.
"""
from __future__ import annotations

import time

from seedr1.cluster.fit import Group, Node, too_small_message, unplaced
from seedr1.config import ConfigError


class ClusterTooSmall(ConfigError):
    """The job's groups cannot all be placed on the cluster's nodes (a config error: the job exits 2 at once)."""


def cluster_nodes() -> list[Node]:
    """The alive nodes' total resources and labels (what could ever be placed; running jobs free theirs)."""
    import ray

    nodes = []
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        labels = {k: v for k, v in (n.get("Labels") or {}).items() if not k.startswith("ray.io/")}
        head = " (head)" if "node:__internal_head__" in n.get("Resources", {}) else ""
        resources = {k: v for k, v in n.get("Resources", {}).items() if not k.startswith("node:")}
        nodes.append(Node(f"{n.get('NodeManagerAddress', '?')}{head}", resources, labels))
    return nodes


def autoscaler_running() -> bool:
    """Whether an autoscaler watches this cluster (it may add nodes for what does not fit now)."""
    import ray

    try:
        from ray.autoscaler.v2.sdk import get_cluster_status

        status = get_cluster_status(ray.get_runtime_context().gcs_address, timeout=5)
        return bool(getattr(status, "autoscaler_state_version", 0) or getattr(status, "cluster_resource_state_version", 0) and status.pending_launches)
    except Exception:  # no v2 autoscaler state: none reporting to this cluster
        return False


def _bundles(groups: list[Group]) -> list[dict]:
    return [{k: v for k, v in g.resources.items() if v > 0} for g in groups for _ in range(g.count)]


def check_fits(job: str, groups: list[Group], wait_for_nodes_s: float = 0.0, poll_s: float = 5.0) -> None:
    """Raise ClusterTooSmall unless every group fits the cluster's nodes (waiting for an autoscaler, if any)."""
    nodes = cluster_nodes()
    missing = unplaced(groups, nodes)
    if not missing:
        return
    if wait_for_nodes_s > 0 and autoscaler_running():
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=_bundles(groups))
        deadline, said = time.monotonic() + wait_for_nodes_s, 0.0
        while missing and time.monotonic() < deadline:
            if time.monotonic() - said >= 30:
                said = time.monotonic()
                left = deadline - said
                print(f"[{job}] waiting up to {left:.0f} s more for the autoscaler to add nodes for: "
                      + ", ".join(f"{n} x {name}" for name, n in missing.items()), flush=True)
            time.sleep(poll_s)
            nodes = cluster_nodes()
            missing = unplaced(groups, nodes)
        request_resources(bundles=[])  # the job's own placement groups keep the nodes from here on
        if not missing:
            return
    raise ClusterTooSmall(too_small_message(job, groups, nodes, missing))
