"""Prune a transformer to a measured speed-up or latency: search the MACs target whose cut runs that fast.

A CNN's latency target is met through a per-layer latency table and a knapsack
(:func:`neurotomy.surgery.filters.prune_to_latency`): each conv's time depends on its own widths, so
layers can be timed alone. A transformer's cost sits in a few matmuls per block whose sizes are coupled
(heads, MLP neurons and the residual stream that every block shares), so a table of isolated layers
says little; what can be measured is the whole cut model. So this search treats the latency as a
function of the MACs reduction, cuts with :func:`~neurotomy.surgery.transformer.prune_transformer` and
times the cut against the original, interleaved, in the chosen runtime:

1. aim at the MACs reduction whose kept fraction equals the latency goal's (``1 - goal / original``:
   exact if latency were proportional to MACs);
2. time the cut; when it misses the goal by more than 10 %, re-aim and cut again, at most ``attempts``
   times in all, keeping the closest. After one cut the kept MACs are scaled by goal / measured; after
   two, the latency is taken as affine in the kept MACs through the last two cuts (the part that does not
   shrink — LayerNorms, patch embedding, softmax over tokens — is its intercept, which makes the
   proportional first aim too timid), and the aim is where that line meets the goal.

The unit families, their split (calibration) and the scope are :func:`prune_transformer`'s. The
result's ``details`` hold the target, runtime, batch, threads, the measured latencies and speed-up, the
load average of the measurement and every attempt with its MACs aim.

Example:
    >>> import torch
    >>> from neurotomy.models import build_model
    >>> from neurotomy.scores.unit_scores import UnitScores
    >>> model = build_model("vit_tiny", 1, 10, 28).eval()
    >>> prune_transformer_to_latency(model, UnitScores({}, "l1", "unit"), target_speedup=1.0)
    Traceback (most recent call last):
    ...
    neurotomy.errors.PruningError: target_speedup 1.0 is no speed-up; give a number above 1, e.g. 2 for twice as fast
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import nn

from neurotomy import validate
from neurotomy.errors import PruningError
from neurotomy.models.anatomy import require_input_shape
from neurotomy.scores.unit_scores import UnitScores
from neurotomy.surgery.filters import PruningResult
from neurotomy.surgery.latency import LatencyRuntime, runtime_named
from neurotomy.surgery.latency_plan import LATENCY_TOLERANCE, check_latency_request, warn_if_target_missed
from neurotomy.surgery.transformer import prune_transformer

MAX_MACS_REDUCTION = 0.97  # an aim beyond this leaves too little of any block to cut reliably


def prune_transformer_to_latency(model: nn.Module, scores: UnitScores | Sequence[UnitScores], *,
                                 target_speedup: float | None = None, target_latency_ms: float | None = None,
                                 units: str | Sequence[str] = "all", scope: str = "uniform", min_heads: int = 1,
                                 min_channels: int = 1, ignored_layers: list[str] | None = None,
                                 round_to: int | None = None, input_shape: tuple[int, ...] | None = None,
                                 calibration: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
                                 latency_batch: int = 64, threads: int | None = None,
                                 runtime: str | LatencyRuntime = "torch", attempts: int = 4) -> PruningResult:
    """Cut ``model``'s heads / MLP neurons / embedding channels (``units``, as for
    :func:`prune_transformer`; ``round_to`` keeps neuron and embedding counts multiples of it) until it
    runs ``target_speedup`` times faster than the original, or in ``target_latency_ms``, at batch
    ``latency_batch`` with ``threads`` threads in ``runtime`` — measured, not predicted (see the module's
    docstring for the search). Raises :class:`PruningError` in one line for a goal that is no speed-up,
    or that no cut reaches."""
    check_latency_request(None, None, None, target_speedup, target_latency_ms, latency_batch, threads, runtime,
                          min_channels, None)
    validate.positive_int(attempts, "attempts")
    input_shape = tuple(input_shape or require_input_shape(model))
    runtime = runtime_named(runtime)
    threads = threads or torch.get_num_threads()
    calibration = list(calibration) if calibration is not None else None  # reused by every attempt
    (original,) = runtime.time_models([model], input_shape, latency_batch, threads)
    full_ms = original["median_ms"]
    goal = target_latency_ms if target_latency_ms is not None else full_ms / target_speedup
    if goal >= full_ms:
        raise PruningError(f"a latency of {goal:.2f} ms is not below the unpruned model's {full_ms:.2f} ms "
                           f"({runtime.name}, batch {latency_batch}, {threads} thread(s)); nothing to prune — "
                           "give a lower target_latency_ms")
    aim = min(MAX_MACS_REDUCTION, 1 - goal / full_ms)
    tried, points, best = [], [], None  # points: (kept MACs fraction, latency on the goal's scale) per cut
    for _ in range(attempts):
        try:
            result = prune_transformer(model, scores, units=units, target_macs=aim, scope=scope, min_heads=min_heads,
                                       min_channels=min_channels, ignored_layers=ignored_layers,
                                       round_to=round_to, input_shape=input_shape, calibration=calibration)
        except PruningError:
            if best is None:
                raise
            break  # a corrected aim out of reach: keep what was measured
        now, cut = runtime.time_models([model, result.model], input_shape, latency_batch, threads)
        # the cut's latency on the first measurement's scale: a speed-up is relative to the original as timed now
        achieved = cut["median_ms"] * (full_ms / now["median_ms"] if target_latency_ms is None else 1)
        attempt = {"target_macs": aim, "macs_reduction": result.macs_reduction,
                   "latency_ms_measured": cut["median_ms"], "latency_ms_original": now["median_ms"],
                   "speedup_measured": now["median_ms"] / cut["median_ms"],
                   "load_average": [now["load_average"][0], cut["load_average"][-1]],
                   "machine_busy": cut["machine_busy"], "miss": achieved / goal - 1}
        tried.append(attempt)
        if best is None or abs(attempt["miss"]) < abs(best[0]["miss"]):
            best = (attempt, result)
        if abs(attempt["miss"]) <= LATENCY_TOLERANCE:
            break
        points.append((1 - result.macs_reduction, achieved))
        next_aim = min(MAX_MACS_REDUCTION, max(0.0, 1 - kept_fraction_for(goal, points)))
        if abs(next_aim - aim) < 1e-3:
            break  # the correction no longer moves the cut
        aim = next_aim
    attempt, result = best
    warn_if_target_missed(attempt["miss"], target_speedup, target_latency_ms, attempt["speedup_measured"],
                          attempt["latency_ms_measured"])
    target = ({"target_speedup": target_speedup} if target_latency_ms is None
              else {"target_latency_ms": target_latency_ms})
    result.details.update({**target, "latency_runtime": runtime.name, "latency_batch": latency_batch,
                           "threads": threads, "latency_search": "measured: MACs target re-aimed by the timed cut",
                           **{k: attempt[k] for k in ("latency_ms_measured", "latency_ms_original",
                                                      "speedup_measured", "load_average", "machine_busy")},
                           "latency_attempts": tried})
    return result


def kept_fraction_for(goal: float, points: list[tuple[float, float]]) -> float:
    """The kept MACs fraction expected to run in ``goal``: on the line through the last two measured
    (kept, latency) points when it rises with the kept MACs, else proportional to the last point."""
    kept, latency = points[-1]
    if len(points) >= 2:
        (k0, l0), (k1, l1) = points[-2], points[-1]
        if k1 != k0 and (l1 - l0) / (k1 - k0) > 0:
            return k1 + (goal - l1) * (k1 - k0) / (l1 - l0)
    return kept * goal / latency
