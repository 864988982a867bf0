"""Prompt groups ordered so that trainer ranks' contiguous shares carry about equal tokens (numbers by hand)."""
import pytest

from seedr1.grpo.balance import balance_ranks, balanced_group_order
from seedr1.grpo.loop import rank_shard
from seedr1.rollout.engine import Completion


def test_two_heavy_groups_go_to_different_ranks():
    # arrival order would give rank 0 both heavy groups (20 vs 2): 0 -> r0, 1 -> r1, 2 -> r0 (tie), 3 -> r1
    assert balanced_group_order([10, 10, 1, 1], 2) == [0, 2, 1, 3]


def test_three_ranks_costliest_first_into_the_lightest_share_not_yet_full():
    # 5 -> r0, 4 -> r1, 3 (g2) -> r2, 3 (g3) -> r2 (3 < 4 < 5; r2 full), 2 -> r1 (4 < 5; full), 1 -> r0: 6 / 6 / 6
    assert balanced_group_order([5, 4, 3, 3, 2, 1], 3) == [0, 5, 1, 4, 2, 3]


@pytest.mark.parametrize("costs, world", [([3, 1, 2], 2), ([5, 1], 1), ([], 2)])
def test_order_unchanged_when_groups_do_not_divide_evenly_or_one_rank(costs, world):
    assert balanced_group_order(costs, world) == list(range(len(costs)))


def test_balance_ranks_moves_whole_groups_by_prompt_and_completion_tokens():
    def group(prompt_tokens, lengths):
        return [Completion(text="", token_ids=[7] * n, prompt_tokens=prompt_tokens) for n in lengths]

    # costs: 2*(100)+5+5 = 210, 2*100+20+20 = 240, 2*10+1+1 = 22, 2*10+20+20 = 60
    groups = [group(100, [5, 5]), group(100, [20, 20]), group(10, [1, 1]), group(10, [20, 20])]
    samples = [f"g{g}c{c}" for g in range(4) for c in range(2)]
    ordered = balance_ranks(samples, groups, 2)
    # 240 (g1) -> r0, 210 (g0) -> r1, 60 (g3) -> r1 (210 < 240), 22 (g2) -> r0: 262 / 270
    assert [rank_shard(ordered, r, 2) for r in range(2)] == [["g1c0", "g1c1", "g2c0", "g2c1"],
                                                            ["g0c0", "g0c1", "g3c0", "g3c1"]]
    with pytest.raises(ValueError, match="7 samples for 8 completions"):
        balance_ranks(samples[:7], groups, 2)
