import math

import pytest
import torch

from seedr1.algo.advantages import drop_uninformative, group_advantages, informative_groups


def test_group_of_four_unbiased_std():
    # [1, 0, 0, 1]: mean 0.5, deviations ±0.5, unbiased var = 4 * 0.25 / 3 = 1/3, std = sqrt(1/3) = 0.57735
    # advantages = ±0.5 / (0.57735 + 1e-4) = ±0.865875
    a = 0.5 / (math.sqrt(1 / 3) + 1e-4)
    assert a == pytest.approx(0.865875, abs=1e-6)
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), group_size=4)
    torch.testing.assert_close(adv, torch.tensor([a, -a, -a, a]))


def test_groups_are_independent_and_list_input():
    # group 1 as above; group 2 [2, 2, 2, 2]: std 0 -> 0 / (0 + 1e-4) = 0
    adv = group_advantages([1, 0, 0, 1, 2, 2, 2, 2], group_size=4)
    a = 0.865875
    torch.testing.assert_close(adv, torch.tensor([a, -a, -a, a, 0.0, 0.0, 0.0, 0.0]), atol=1e-6, rtol=0)
    assert adv.dtype == torch.float32


def test_group_of_two():
    # [3, 1]: mean 2, deviations ±1, unbiased var = (1 + 1) / 1 = 2, std = 1.414214 -> ±1 / 1.414314 = ±0.707057
    adv = group_advantages(torch.tensor([3.0, 1.0]), group_size=2)
    torch.testing.assert_close(adv, torch.tensor([0.707057, -0.707057]), atol=1e-6, rtol=0)


def test_eps_is_added_to_std():
    # [1, 0]: mean 0.5, deviations ±0.5, unbiased var = (0.25 + 0.25) / 1 = 0.5, std = 0.707107
    # eps = 1 -> ±0.5 / 1.707107 = ±0.292893
    adv = group_advantages([1.0, 0.0], group_size=2, eps=1.0)
    torch.testing.assert_close(adv, torch.tensor([0.292893, -0.292893]), atol=1e-6, rtol=0)


def test_dr_grpo_no_std_scaling():
    # Dr. GRPO: r - mean. [1,0,0,1] -> ±0.5; [0.5, 1.5, 2.5] (mean 1.5) -> [-1, 0, 1]
    torch.testing.assert_close(group_advantages([1, 0, 0, 1], 4, scale_by_std=False),
                               torch.tensor([0.5, -0.5, -0.5, 0.5]))
    torch.testing.assert_close(group_advantages([0.5, 1.5, 2.5], 3, scale_by_std=False),
                               torch.tensor([-1.0, 0.0, 1.0]))
    # G=1 is allowed without std scaling: every advantage is 0
    torch.testing.assert_close(group_advantages([5.0, 7.0], 1, scale_by_std=False), torch.zeros(2))


def test_validation():
    with pytest.raises(ValueError, match="multiple of group_size=4"):
        group_advantages([1.0, 0.0, 1.0, 0.0, 1.0], group_size=4)
    with pytest.raises(ValueError, match="group_size"):
        group_advantages([1.0], group_size=0)
    with pytest.raises(ValueError, match="group_size >= 2"):
        group_advantages([1.0, 0.0], group_size=1)
    with pytest.raises(ValueError, match="1-D"):
        group_advantages(torch.zeros(2, 2), group_size=2)
    with pytest.raises(ValueError, match="multiple"):
        informative_groups([1.0, 0.0, 1.0], group_size=2)


def test_informative_groups_and_drop():
    # groups of 4: [1,0,0,1] varies; [2,2,2,2] constant; [0,0,1e-9,0] differs by < atol
    rewards = torch.tensor([1, 0, 0, 1, 2, 2, 2, 2, 0, 0, 1e-9, 0], dtype=torch.float64)
    assert informative_groups(rewards, 4).tolist() == [True, False, False]
    keep, dropped = drop_uninformative(rewards, 4)
    assert keep.dtype == torch.bool
    assert keep.tolist() == [True] * 4 + [False] * 8
    assert dropped == 2
    # a looser atol treats 0.5 spreads as "all equal"
    assert informative_groups([1.0, 0.5, 3.0, 3.0], 2, atol=0.6).tolist() == [False, False]
    assert informative_groups([1.0, 0.5, 3.0, 3.0], 2).tolist() == [True, False]


def test_drop_nothing():
    res = drop_uninformative([1.0, 0.0, 0.0, 1.0], 2)
    assert res.keep.tolist() == [True] * 4 and res.num_dropped == 0
