"""The multiple-choice knapsack that latency-targeted pruning solves (Shen et al., NeurIPS 2022, HALP).

Each item (a coupled channel group) offers a few options (how many of its channels to keep), each
with a value (the kept channels' summed normalised scores) and a cost (milliseconds, from the latency
table); exactly one option is taken per item, and the total cost must stay within a budget.
HALP solves its per-neuron knapsack greedily by value per latency; with one choice per group and a
handful of candidate widths each, the exact answer is cheap, so it is computed here by dynamic
programming over the budget cut into ``bins`` steps. Costs are rounded *up* to a step, so a choice
the table allows is never over budget; with integer costs and ``step=1`` the answer is exact (the
test checks it against brute force).

Example:
    >>> solve_knapsack([[0, 5, 9], [0, 4, 6]], [[0, 3, 6], [0, 2, 5]], budget=8, step=1)
    [2, 1]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def solve_knapsack(values: Sequence[Sequence[float]], costs: Sequence[Sequence[float]], budget: float,
                   bins: int = 2048, step: float | None = None) -> list[int] | None:
    """The option index per item that maximises the summed value with the summed cost within
    ``budget``; ``None`` when no choice fits. ``step``: the cost resolution (default ``budget / bins``)."""
    if len(values) != len(costs) or any(len(v) != len(c) or not v for v, c in zip(values, costs)):
        raise ValueError("values and costs need the same non-empty option lists per item")
    if budget < 0:
        return None
    step = step or (budget / bins if budget > 0 else 1.0)
    cap = int(math.floor(budget / step + 1e-9))
    best = np.full(cap + 1, -np.inf)  # best[c]: the highest value whose rounded cost is exactly c
    best[0] = 0.0
    choices = []
    for item_values, item_costs in zip(values, costs):
        nxt = np.full(cap + 1, -np.inf)
        pick = np.full(cap + 1, -1, dtype=np.int64)
        for option, (value, cost) in enumerate(zip(item_values, item_costs)):
            size = max(0, int(math.ceil(cost / step - 1e-9)))
            if size > cap:
                continue
            shifted = np.full(cap + 1, -np.inf)
            shifted[size:] = best[:cap + 1 - size] + value
            better = shifted > nxt
            nxt[better], pick[better] = shifted[better], option
        best = nxt
        choices.append(pick)
    if not np.isfinite(best).any():
        return None
    spent = int(np.argmax(best))  # the first (cheapest) of the best values
    chosen = []
    for item in range(len(values) - 1, -1, -1):
        option = int(choices[item][spent])
        chosen.append(option)
        spent -= max(0, int(math.ceil(costs[item][option] / step - 1e-9)))
    return chosen[::-1]
