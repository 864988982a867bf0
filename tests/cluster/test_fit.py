"""The pre-flight fit rule (``seedr1.cluster.fit``) on hand-built clusters: what fits, what does not, and the override
the message suggests."""
from seedr1.cluster.demands import grpo_groups, prefixed, sft_groups
from seedr1.cluster.fit import Group, Node, fixes, total, too_small_message, unplaced
from seedr1.config import GRPOConfig, SFTConfig, load_config

TINY = "configs/grpo/tiny.yaml"


def tiny_grpo(**overrides) -> GRPOConfig:
    import os

    root = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
    return load_config(GRPOConfig, os.path.join(root, TINY), [f"{k}={v}" for k, v in overrides.items()])


def test_the_tiny_grpo_job_needs_four_cpus_and_a_two_cpu_head_is_too_small():
    groups = grpo_groups(tiny_grpo())
    assert total(groups) == {"CPU": 4.0}  # 1 rollout actor + 2 trainer workers + 1 decode task
    assert unplaced(groups, [Node("head", {"CPU": 4.0})]) == {}
    missing = unplaced(groups, [Node("head", {"CPU": 2.0, "memory": 8e9})])
    assert sum(missing.values()) == 2 and missing["trainer worker"] == 1


def test_bundles_never_straddle_nodes():
    # 4 CPUs in all, but no node holds a 1.5-CPU trainer worker next to another
    groups = [Group("trainer worker", 2, {"CPU": 1.5}, "trainer.num_workers")]
    assert unplaced(groups, [Node("a", {"CPU": 2.0}), Node("b", {"CPU": 1.0})]) == {"trainer worker": 1}
    assert unplaced(groups, [Node("a", {"CPU": 2.0}), Node("b", {"CPU": 2.0})]) == {}


def test_gpus_and_labels_are_matched_per_node():
    rollout = Group("rollout actor", 2, {"CPU": 1.0, "GPU": 1.0}, labels={"seedr1.io/group": "rollout"})
    trainer = Group("trainer worker", 2, {"CPU": 1.0, "GPU": 1.0}, labels={"seedr1.io/group": "trainer"})
    nodes = [Node("r", {"CPU": 8.0, "GPU": 2.0}, {"seedr1.io/group": "rollout"}),
             Node("t", {"CPU": 8.0, "GPU": 2.0}, {"seedr1.io/group": "trainer"})]
    assert unplaced([rollout, trainer], nodes) == {}
    # three rollout GPUs wanted, the rollout node has two; the trainer node's free GPU does not count
    assert unplaced([Group("rollout actor", 3, rollout.resources, labels=rollout.labels), trainer], nodes) == \
        {"rollout actor": 1}
    assert unplaced([rollout], [Node("x", {"CPU": 8.0, "GPU": 8.0})]) == {"rollout actor": 2}  # no such label


def test_the_suggested_worker_count_divides_the_batch():
    cfg = tiny_grpo(**{"trainer.num_workers": 4, "prompts_per_step": 3, "rollout.num_samples": 4})  # batch 12
    groups = grpo_groups(cfg)
    # 5 CPUs: the rollout actor and the decode task leave 3 for workers, and 3 divides 12
    assert fixes(groups, [Node("a", {"CPU": 5.0})]) == ["trainer.num_workers=3"]
    cfg = tiny_grpo(**{"trainer.num_workers": 4, "prompts_per_step": 1, "rollout.num_samples": 4})  # batch 4
    assert fixes(grpo_groups(cfg), [Node("a", {"CPU": 5.0})]) == ["trainer.num_workers=2"]  # 3 does not divide 4


def test_when_no_count_fits_the_cpus_per_worker_are_halved():
    groups = [Group("trainer worker", 2, {"CPU": 2.0}, "trainer.num_workers", {"CPU": "trainer.cpus_per_worker"})]
    assert fixes(groups, [Node("a", {"CPU": 1.0})]) == ["trainer.cpus_per_worker=0.5"]


def test_the_message_names_demands_cluster_and_fixes():
    groups = grpo_groups(tiny_grpo())
    nodes = [Node("10.0.0.5 (head)", {"CPU": 3.0, "memory": 4e9})]
    text = too_small_message("grpo", groups, nodes, unplaced(groups, nodes))
    for part in ("1 x rollout actor: {CPU: 1} each (rollout.num_actors, rollout.cpus_per_actor)",
                 "2 x trainer worker: {CPU: 1} each (trainer.num_workers, trainer.cpus_per_worker)",
                 "= {CPU: 4} in all", "10.0.0.5 (head): {CPU: 3}", "no room for: 1 x",
                 "fits with: trainer.num_workers=1 or give the cluster {CPU: 4}", "ray start --head --num-cpus 4"):
        assert part in text, (part, text)
    assert "gpus_per_worker" not in text  # no GPUs asked: not named


def test_sft_and_study_prefixes():
    sft = load_config(SFTConfig, None, ["batch_size=8", "trainer.num_workers=4", "trainer.micro_batch_size=2"])
    groups = prefixed(sft_groups(sft), "sft.")
    assert groups[0].count_key == "sft.trainer.num_workers" and groups[0].keys["CPU"] == "sft.trainer.cpus_per_worker"
    # 8 / n must be a whole number of micro-batches of 2 per worker: 3 is refused, 2 fits
    assert fixes(groups, [Node("a", {"CPU": 4.0})]) == ["sft.trainer.num_workers=2"]


def test_gpu_requests_on_a_cluster_without_gpus_suggest_none():
    cfg = tiny_grpo(**{"trainer.gpus_per_worker": 1, "rollout.gpus_per_actor": 1})
    groups = grpo_groups(cfg)
    nodes = [Node("head", {"CPU": 6.0})]
    assert unplaced(groups, nodes) == {"rollout actor": 1, "trainer worker": 2}
    assert fixes(groups, nodes) == ["rollout.gpus_per_actor=0 trainer.gpus_per_worker=0"]
    assert "fits with: rollout.gpus_per_actor=0 trainer.gpus_per_worker=0 or give" in \
        too_small_message("grpo", groups, nodes, unplaced(groups, nodes))
