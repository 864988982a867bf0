"""The pre-flight check every job runs once Ray is up and before it starts any actor: does the job fit the cluster?

Without it Ray waits forever for a worker no node can hold (Ray Train retries its worker group without bound). A job
that cannot fit fails within seconds with ``ClusterTooSmall`` (what it needs, what the cluster has, the overrides that
would fit). Where an autoscaler can add nodes (KubeRay with autoscaling on), the job first asks it for them
(``ray.autoscaler.sdk.request_resources``) and waits up to ``cluster.wait_for_nodes_s``, saying what it waits for.
"""
from __future__ import annotations

import time

from seedr1.cluster.fit import Group, Node, bundles, too_small_message, unplaced
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


def autoscaler_running(max_age_s: float = 60.0) -> bool:
    """Whether an autoscaler that can add nodes watches this cluster. A plain ``ray start --head`` runs one too, but
    with the read-only provider, which names every node ``node_<id>``; KubeRay's names them by worker group."""
    import json

    import ray

    try:
        from ray.autoscaler.v2.utils import is_autoscaler_v2

        if is_autoscaler_v2(fetch_from_server=True):
            from ray.autoscaler.v2.sdk import get_cluster_status

            status = get_cluster_status(ray.get_runtime_context().gcs_address)
            if not status.stats or status.stats.autoscaler_version in (None, "", "0"):
                return False
            nodes = status.active_nodes + status.idle_nodes + status.pending_nodes
            return any(n.ray_node_type_name != f"node_{n.node_id}" for n in nodes)
        from ray.experimental.internal_kv import _internal_kv_get

        raw = _internal_kv_get("__autoscaling_status")  # the v1 monitor's report
        if not raw:
            return False
        report = json.loads(raw)
        if time.time() - float(report.get("time", 0)) > max_age_s:  # its monitor is gone
            return False
        mapping = (report.get("autoscaler_report") or {}).get("node_type_mapping") or {}
        return any(kind != f"node_{node}" for node, kind in mapping.items())
    except Exception:  # noqa: BLE001 - no autoscaler state to read: none that can add nodes
        return False


def check_fits(job: str, groups: list[Group], wait_for_nodes_s: float = 0.0, poll_s: float = 5.0) -> None:
    """Raise ClusterTooSmall unless every group fits the cluster's nodes (waiting for an autoscaler, if any)."""
    nodes = cluster_nodes()
    missing = unplaced(groups, nodes)
    if not missing:
        return
    if wait_for_nodes_s > 0 and autoscaler_running():
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=bundles(groups))
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
