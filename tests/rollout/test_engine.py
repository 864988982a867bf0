"""What every engine shares: per-prompt sampling seeds, fixed by the question, not by where it sits in a call."""
import pytest

from seedr1.config import GRPOConfig
from seedr1.data.pipeline import PromptRecord
from seedr1.grpo.loop import sampling_seed
from seedr1.rollout.engine import Sampling, prompt_seeds
from seedr1.rollout.group import RolloutGroup


def _records(*ids: str) -> list[PromptRecord]:
    return [PromptRecord(sample_id=i, kind="validation", messages=[], video=None, image=None, gold_letter="A")
            for i in ids]


def test_no_two_samples_share_a_random_stream():
    # vLLM seeds sample j of a prompt with seed + j. Over 3 steps x 8 prompts x n 8, every sample gets its own
    # seed; one seed per call would give sample j of all 8 prompts the same numbers.
    cfg, n = GRPOConfig(), 8
    records = _records(*(f"q{i}" for i in range(8)))
    streams = [s + j for step in range(3) for s in prompt_seeds(Sampling(n=n, seed=sampling_seed(cfg, step)), records)
               for j in range(n)]
    assert len(streams) == len(set(streams)) == 3 * 8 * n
    assert all(0 <= s < 2 ** 63 - n for s in streams)


def test_a_prompts_seed_follows_its_sample_id_not_its_position():
    a, b, c = _records("a", "b", "c")
    abc = prompt_seeds(Sampling(seed=7), [a, b, c])
    ca = prompt_seeds(Sampling(seed=7), [c, a])
    assert (ca[0], ca[1]) == (abc[2], abc[0])  # another batch, another order: the same question, the same seed
    assert prompt_seeds(Sampling(seed=8), [a])[0] != abc[0]
    twice = prompt_seeds(Sampling(seed=7), [a, a])
    assert twice[0] == abc[0] and twice[1] != twice[0]  # the same question twice in a call: two streams
    assert prompt_seeds(Sampling(), [a, b]) is None
    assert prompt_seeds(Sampling(seed=7, seeds=[3, 4]), [a, b]) == [3, 4]  # given (a served request's own)
    with pytest.raises(ValueError, match="2 seeds for 3 prompts"):
        prompt_seeds(Sampling(seeds=[3, 4]), [a, b, c])


class _Actor:
    def __init__(self):
        self.calls = []
        self.generate = self  # ``actor.generate.remote(...)``

    def remote(self, records, seeds, version):
        self.calls.append(dict(zip((r.sample_id for r in records), seeds)))


@pytest.mark.parametrize("num_actors", [1, 2, 3])
def test_a_rollout_groups_seeds_do_not_depend_on_its_actors(num_actors):
    records = _records(*(f"q{i}" for i in range(5)))
    group = RolloutGroup([_Actor() for _ in range(num_actors)])
    group.launch(records, seed=11)
    given = {sid: s for actor in group.actors for call in actor.calls for sid, s in call.items()}
    assert given == dict(zip((r.sample_id for r in records), prompt_seeds(Sampling(seed=11), records)))


def _state():
    import torch

    return {"w": torch.arange(12, dtype=torch.float32).reshape(3, 4), "b": torch.tensor([0.5, -1.0])}


def test_array_payloads_reach_an_engine_core_in_its_own_process():
    """On GPU vLLM's engine core runs in its own process and ``collective_rpc`` goes as a msgpack utility message,
    decoded without types: the weights must arrive whole (the CPU tests run the core in process)."""
    import numpy as np
    import torch
    from vllm.v1.serial_utils import MsgpackDecoder, MsgpackEncoder

    from seedr1.rollout.engine import array_state, named_tensors
    from seedr1.rollout.vllm_engine import engine_core_payload

    state = _state()
    arrays = array_state(state)
    for a in arrays.values():
        a.flags.writeable = False  # as Ray's object store hands them over
    assert engine_core_payload(arrays, in_process=True) is arrays  # in process: no serialisation
    sent = engine_core_payload(arrays, in_process=False)
    message = (0, 1, "collective_rpc", ("seedr1_load_payload", None, (sent,), {}))
    received = MsgpackDecoder().decode(MsgpackEncoder().encode(message))[3][2][0]
    got = dict(named_tensors(received))
    assert sorted(got) == sorted(state) and all(torch.equal(got[k], state[k]) for k in state)
    np.testing.assert_array_equal(dict(named_tensors(arrays))["w"], state["w"].numpy())


def test_array_state_names_a_tensor_numpy_cannot_hold():
    import torch

    from seedr1.rollout.engine import array_state, named_tensors, safetensors_payload

    state = {**_state(), "h": torch.ones(2, dtype=torch.bfloat16)}
    with pytest.raises(TypeError, match=r"array_state: h is torch.bfloat16"):
        array_state(state)
    got = dict(named_tensors(safetensors_payload(state)))  # bytes carry it
    assert got["h"].dtype == torch.bfloat16 and torch.equal(got["w"], state["w"])
