"""``check_fits``: a job that does not fit fails at once without an autoscaler; with one it asks for the nodes and
waits for them, up to ``cluster.wait_for_nodes_s``."""
import pytest

from seedr1.cluster import check
from seedr1.cluster.fit import Group, Node

GROUPS = [Group("trainer worker", 2, {"CPU": 1.0}, "trainer.num_workers", {"CPU": "trainer.cpus_per_worker"})]


@pytest.fixture()
def cluster(monkeypatch):
    state = {"nodes": [Node("head", {"CPU": 1.0})], "autoscaler": False, "requests": [], "polls": 0}

    def nodes():
        state["polls"] += 1
        if state["polls"] == 3 and state.get("grow"):  # the autoscaler's node joins on the third look
            state["nodes"] = state["nodes"] + [Node("new", {"CPU": 4.0})]
        return list(state["nodes"])

    monkeypatch.setattr(check, "cluster_nodes", nodes)
    monkeypatch.setattr(check, "autoscaler_running", lambda: state["autoscaler"])
    import ray.autoscaler.sdk

    monkeypatch.setattr(ray.autoscaler.sdk, "request_resources", lambda bundles: state["requests"].append(bundles))
    return state


def test_no_autoscaler_fails_at_once(cluster):
    with pytest.raises(check.ClusterTooSmall, match="no room for: 1 x trainer worker"):
        check.check_fits("grpo", GROUPS, wait_for_nodes_s=600)
    assert cluster["polls"] == 1 and cluster["requests"] == []


def test_an_autoscaler_is_asked_and_waited_for(cluster, capsys):
    cluster.update(autoscaler=True, grow=True)
    check.check_fits("grpo", GROUPS, wait_for_nodes_s=60, poll_s=0.01)
    assert cluster["requests"] == [[{"CPU": 1.0}, {"CPU": 1.0}], []]  # asked for the bundles, then released
    assert "waiting up to" in capsys.readouterr().out


def test_an_autoscaler_that_adds_nothing_fails_after_the_wait(cluster):
    cluster.update(autoscaler=True)
    with pytest.raises(check.ClusterTooSmall, match="cannot hold this grpo job"):
        check.check_fits("grpo", GROUPS, wait_for_nodes_s=0.05, poll_s=0.01)
    assert cluster["polls"] > 1


def test_a_plain_ray_start_head_has_no_autoscaler_that_adds_nodes(ray_cluster):
    assert check.autoscaler_running() is False  # the embedded one: no monitor, or a read-only one
    assert any(n.resources.get("CPU") == 8.0 for n in check.cluster_nodes())
