"""Under ZeRO-3 the reference model is sharded over the ranks (a DeepSpeed ZeRO-3 engine without optimizer), not a
full copy per rank, and gives the same log-probs as an unsharded copy; full_state_dict gathers the policy one layer
group at a time. Two real processes over gloo (tests/train/zero3_worker.py), each with its own micro-batches."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import math
import pytest

WORKER = Path(__file__).with_name("zero3_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("zero3")
    port, world = str(_free_port()), 2
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, str(WORKER), tiny_model_dir, str(out), str(rank), str(world), port],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in range(world)]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=420)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for rank, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"rank {rank} failed:\n{log[-6000:]}"
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(world)]


def test_reference_is_sharded_across_ranks(two_ranks):
    for rank in two_ranks:
        assert rank["ref_is_engine"] == "DeepSpeedEngine"
        assert rank["ref_partitioned"] > rank["ref_params"] // 2  # all but the small ones (norms, biases)
        # this rank's share: about half of the whole, nowhere near a full copy
        assert rank["ref_local"] < 0.6 * rank["ref_total"]


def test_sharded_reference_gives_the_unsharded_log_probs(two_ranks):
    r0, r1 = two_ranks
    assert r0["could_share"] == [True, True, True] and r1["could_share"] == [True, False, True]  # paths differ
    for rank in two_ranks:
        assert rank["ref_max_diff"] < 1e-5


def test_full_state_dict_gathers_one_layer_group_at_a_time_in_the_models_dtype(two_ranks):
    r0, r1 = two_ranks
    assert r0["state_keys_match"] and r0["state_max_diff"] == 0 and r0["state_dtypes"] == ["torch.float32"]
    assert r1["state_is_none"]
    for rank in two_ranks:
        assert len(rank["gathers"]) > 4 and sum(rank["gathers"]) == rank["model_numel"]
        assert max(rank["gathers"]) < rank["model_numel"] / 3


def test_a_step_with_the_sharded_reference(two_ranks):
    for rank in two_ranks:
        assert math.isfinite(rank["loss"]) and rank["kl"] == pytest.approx(0.0, abs=1e-6)  # reference == policy
