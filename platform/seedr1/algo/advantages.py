"""Group-relative advantages for GRPO: samples are laid out group by group, `group_size` completions per prompt."""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch


def _grouped(rewards: torch.Tensor | Sequence[float], group_size: int) -> torch.Tensor:
    """Rewards as a float tensor of shape [num_groups, group_size]."""
    r = torch.as_tensor(rewards)
    r = r.to(torch.float32) if not r.is_floating_point() else r
    if r.dim() != 1:
        raise ValueError(f"rewards must be 1-D, got shape {tuple(r.shape)}")
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if r.numel() % group_size != 0:
        raise ValueError(f"{r.numel()} rewards is not a multiple of group_size={group_size}")
    return r.view(-1, group_size)


def group_advantages(
    rewards: torch.Tensor | Sequence[float],
    group_size: int,
    scale_by_std: bool = True,
    eps: float = 1e-4,
) -> torch.Tensor:
    """Per-sample advantage `(r - mean(group)) / (std(group) + eps)`, shape [num_groups * group_size].

    std is the unbiased (n-1) sample std, as in TRL's GRPO. `scale_by_std=False` is Dr. GRPO: `r - mean(group)`.
    """
    g = _grouped(rewards, group_size)
    centered = g - g.mean(dim=1, keepdim=True)
    if scale_by_std:
        if group_size < 2:
            raise ValueError("scale_by_std needs group_size >= 2 (the unbiased std of one sample is undefined)")
        centered = centered / (g.std(dim=1, keepdim=True) + eps)
    return centered.reshape(-1)


def informative_groups(rewards: torch.Tensor | Sequence[float], group_size: int, atol: float = 1e-6) -> torch.Tensor:
    """Bool [num_groups]: False where all rewards in the group are equal (zero advantage, no learning signal)."""
    g = _grouped(rewards, group_size)
    return (g.amax(dim=1) - g.amin(dim=1)) > atol


class GroupFilter(NamedTuple):
    keep: torch.Tensor  # bool [num_groups * group_size]: True for samples of informative groups
    num_dropped: int  # groups dropped


def drop_uninformative(rewards: torch.Tensor | Sequence[float], group_size: int, atol: float = 1e-6) -> GroupFilter:
    """Per-sample keep mask that drops whole uninformative groups (DAPO-style dynamic sampling filter)."""
    informative = informative_groups(rewards, group_size, atol)
    keep = informative.repeat_interleave(group_size)
    return GroupFilter(keep=keep, num_dropped=int((~informative).sum()))
