"""Which prompt groups go to which trainer rank, so that the ranks carry about equal work.

Ranks wait for each other at every gradient reduction, so a step takes as long as its busiest rank. Prompts differ
(a video of 16 frames or none) and so do completions (a few tokens or ``max_tokens``): cut in arrival order, one
rank can get several times the tokens of another. Like verl's ``balance_batch``, the batch is reordered before it
is split, here by whole prompt groups (a micro-batch encodes a prompt's media once for its G completions) and with
an equal number of groups per rank (every rank runs the same number of micro-batches). The loss is normalised over
the whole batch whatever the split, so the reordering changes the step's results only by floating-point rounding.
"""
from __future__ import annotations

from itertools import accumulate


def balanced_group_order(costs: list[float], world: int) -> list[int]:
    """Group indices in the order to split contiguously into ``world`` equal shares of ``len(costs) // world``
    groups, the shares' cost sums as even as the greedy rule makes them: the costliest group still unplaced goes
    to the share with the least cost among those not yet full (ties: the lower share). Each share keeps its groups
    in their original order. Unchanged order when the groups do not divide evenly between the ranks."""
    n = len(costs)
    if world <= 1 or n % world:
        return list(range(n))
    per = n // world
    shares: list[list[int]] = [[] for _ in range(world)]
    load = [0.0] * world
    for g in sorted(range(n), key=lambda i: (-costs[i], i)):
        k = min((r for r in range(world) if len(shares[r]) < per), key=lambda r: (load[r], r))
        shares[k].append(g)
        load[k] += costs[g]
    return [g for share in shares for g in sorted(share)]


def balance_ranks(samples: list, groups: list, world: int) -> list:
    """``samples`` (one per completion, group after group as in ``groups``) reordered so that ``rank_shard``'s
    contiguous shares carry about equal tokens. A group's cost: the tokens its sequences take through the trainer,
    each its prompt with media expanded (``Completion.prompt_tokens``) plus its completion."""
    costs = [float(sum(c.prompt_tokens + len(c.token_ids) for c in group)) for group in groups]
    starts = list(accumulate((len(group) for group in groups), initial=0))
    if starts[-1] != len(samples):
        raise ValueError(f"{len(samples)} samples for {starts[-1]} completions")
    return [samples[i] for g in balanced_group_order(costs, world) for i in range(starts[g], starts[g + 1])]
