"""Structural filter pruning: remove the lowest-scoring filters and everything coupled to them.

Three concerns kept apart, as in torch-pruning: *what depends on what* (torch-pruning's dependency
graph, :mod:`neurotomy.surgery.graph`), *how important* (a :class:`UnitScores` from any criterion),
and *how much* (this module: a ratio, or a MACs/params target met by searching the ratio).

Group scores: channels coupled through residual adds or concatenations are removed together; the
score of a coupled channel is the **sum over the group's conv/linear layers of their
mean-normalised scores** (each layer's scores divided by that layer's mean, the torch-pruning
convention, so no single layer's scale dominates). Summing rather than averaging means a channel
that seven layers share (a ResNet stage's residual stream) weighs as much as the seven filters it
stands for; with global scope that protects the residual stream, and on zoo:resnet20-fmnist it
raised accuracy after a −50 % MACs cut and BN recalibration from 70 % to 79 % (L1) and 56 % to
81 % (Taylor) against averaging (2,000 shipped test images). Within one group the ranking, and so
uniform pruning, is the same either way.

Masked vs removed: removing a channel whose BatchNorm β is non-zero also removes the constant it
sent into the next layer; we do not fold that constant into the next bias (zero padding makes the
fold inexact at borders). :func:`mask_filters` therefore zeroes the filter *and* its BN γ, β, which
is exactly what removal computes — the equivalence the tests check.

Example:
    >>> from neurotomy.models import build_model
    >>> from neurotomy.scores import get_criterion
    >>> model = build_model("resnet20", 1, 10, 28).eval()
    >>> result = prune_filters(model, get_criterion("l1")(model), target_macs=0.5, input_shape=(1, 28, 28))
    >>> abs(result.macs_reduction - 0.5) <= 0.01
    True
"""

from __future__ import annotations

import copy
import os
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from neurotomy.checkpoint import describe_model
from neurotomy.device import model_device
from neurotomy.errors import NeurotomyError, NeurotomyWarning, PruningError
from neurotomy.models.anatomy import eval_mode, require_input_shape
from neurotomy.models.transformer import is_transformer
from neurotomy.models.summary import layer_table
from neurotomy.scores.unit_scores import UnitScores
from neurotomy.surgery.copies import owning, sharing_copy
from neurotomy.surgery.graph import CoupledGroup, coupled_groups, dependency_graph, prune_out_channels
from neurotomy.surgery.latency import LatencyRuntime, runtime_named
from neurotomy.surgery.latency_plan import (LATENCY_TOLERANCE, TRANSFORMER_LATENCY, check_latency_request,
                                            latency_model, warn_if_target_missed)
from neurotomy.surgery.planner import Cut, Planner, plan_cuts, resolve_ignored

@dataclass
class PruningResult:
    """The pruned model and what the cut did."""

    model: nn.Module
    cuts: list[Cut]
    ratio: float
    scope: str
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    channels: dict[str, tuple[int, int]] = field(default_factory=dict)  # root layer: (before, after)
    details: dict = field(default_factory=dict)  # how the cut was chosen, when it was not by scores

    @property
    def macs_reduction(self) -> float:
        return 1 - self.macs_after / self.macs_before

    @property
    def params_reduction(self) -> float:
        return 1 - self.params_after / self.params_before

    def summary(self) -> dict:
        return {"ratio": self.ratio, "scope": self.scope, "macs_before": self.macs_before,
                "macs_after": self.macs_after, "macs_reduction": self.macs_reduction,
                "params_before": self.params_before, "params_after": self.params_after,
                "params_reduction": self.params_reduction,
                "channels": {k: list(v) for k, v in self.channels.items()}, **self.details}


def apply_cuts(model: nn.Module, cuts: list[Cut], input_shape: tuple[int, ...]) -> nn.Module:
    """A pruned deep copy of ``model``; the input model is never modified. The copy's checkpoint
    recipe gains the cuts (a model without metadata is described first, see
    :func:`neurotomy.checkpoint.describe_model`, so that it can be saved and rebuilt). A cut
    torch-pruning fails on, or a pruned model that no longer runs, is a :class:`PruningError`
    naming the layer whose cut breaks it."""
    pruned = _cut_copy(model, cuts, input_shape)
    try:
        output = _run(pruned, input_shape)
    except Exception as exc:
        raise PruningError(_does_not_run(model, cuts, input_shape, pruned, exc)) from None
    check_outputs_kept(model, pruned, input_shape, pruned_output=output)
    meta = model_meta(model)
    if meta is not None:
        pruned.neurotomy_meta = copy.deepcopy(meta)
        pruned.neurotomy_meta.recipe = list(meta.recipe) + [c.to_step() for c in cuts]
    # a copy owning its tensors, each module in the mode it has in ``model`` (the trace and test runs restore it)
    return owning(pruned, model)


def _cut_copy(model: nn.Module, cuts: list[Cut], input_shape: tuple[int, ...],
              after_each: Callable[[nn.Module, Cut], None] | None = None) -> nn.Module:
    pruned = sharing_copy(model)  # the cuts make new tensors for the layers they narrow, never change one in place
    graph = dependency_graph(pruned, torch.zeros(1, *input_shape, device=model_device(pruned)))
    modules = dict(pruned.named_modules())
    for cut in cuts:
        prune_out_channels(graph, modules[cut.layer], cut.idxs, cut.layer)
        if after_each is not None:
            after_each(pruned, cut)
    return pruned


def _run(model: nn.Module, input_shape: tuple[int, ...], batch: int = 2):
    with torch.no_grad(), eval_mode(model):
        return model(torch.zeros(batch, *input_shape, device=model_device(model)))


def _per_image_shape(output) -> tuple:
    return tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else ()


def check_outputs_kept(model: nn.Module, pruned: nn.Module, input_shape: tuple[int, ...],
                       pruned_output=None) -> None:
    """A :class:`PruningError` when ``pruned`` no longer gives as many outputs (classes) as ``model``:
    the last guard before a model that lost classes could be saved, whatever let the cut through."""
    # the caller's forward of the pruned model, when it made one, is not run again
    after = _per_image_shape(_run(pruned, input_shape) if pruned_output is None else pruned_output)
    before = _per_image_shape(_run(model, input_shape))
    if before != after:
        raise PruningError(f"the cut changes the model's output from {list(before)} to {list(after)} values "
                           "(its classes), so it is refused; keep the layers that write the logits whole (--ignore)")


def model_meta(model: nn.Module):
    """The model's metadata, or a description of how to rebuild it; None when it cannot be
    described (it prunes all the same, and saving it says why it cannot)."""
    try:
        return describe_model(model)
    except NeurotomyError:
        return None


def describe_failure(model: nn.Module, exc: Exception) -> str:
    """``layer NAME (Type) fails (Error: message)``: the innermost module of ``model`` on the
    traceback of ``exc`` (the model itself when the failing code is its own forward)."""
    names = {id(m): n for n, m in model.named_modules()}
    failing, tb = None, exc.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if isinstance(owner, nn.Module) and id(owner) in names:
            failing = names[id(owner)]
        tb = tb.tb_next
    reason = " ".join(f"{type(exc).__name__}: {exc}".split())
    if failing is None:
        return f"an op outside its modules fails ({reason})"
    return f"layer {failing or '(model)'} ({type(model.get_submodule(failing)).__name__}) fails ({reason})"


class _Broken(Exception):
    def __init__(self, cut: Cut, where: str) -> None:
        super().__init__(where)
        self.cut, self.where = cut, where


def _does_not_run(model: nn.Module, cuts: list[Cut], input_shape: tuple[int, ...], pruned: nn.Module,
                  exc: Exception) -> str:
    """The error of a pruned model that fails its test forward pass. Which cut broke it is found by
    cutting a fresh copy again, one cut at a time, running it after each (the failing module alone
    can mislead: a stale width attribute fails in the model's own forward, far from the cut)."""
    def check(copy_: nn.Module, cut: Cut) -> None:
        try:
            _run(copy_, input_shape, batch=1)
        except Exception as failure:
            raise _Broken(cut, describe_failure(copy_, failure)) from None

    try:
        _cut_copy(model, cuts, input_shape, after_each=check)
    except _Broken as broken:
        layer = broken.cut.layer
        return (f"the pruned model does not run after cutting {len(broken.cut.idxs)} channel(s) of layer {layer}: "
                f"{broken.where}; torch-pruning does not handle an op its channels reach: keep {layer} whole "
                f"(ignored_layers / --ignore {layer})")
    return (f"the pruned model does not run ({describe_failure(pruned, exc)}) although each cut alone runs; "
            "an op in the model is not handled by torch-pruning: add the layers feeding it to ignored_layers")


def prune_filters(model: nn.Module, scores: UnitScores, *, ratio: float | None = None,
                  target_macs: float | None = None, target_params: float | None = None,
                  target_speedup: float | None = None, target_latency_ms: float | None = None,
                  scope: str = "uniform", min_channels: int = 1, ignored_layers: list[str] | None = None,
                  round_to: int | None = None, inner_only: bool = False,
                  input_shape: tuple[int, ...] | None = None, latency_batch: int = 64, threads: int | None = None,
                  runtime: str | LatencyRuntime = "torch", latency_cache: str | os.PathLike | None = None,
                  quiet: bool | None = None) -> PruningResult:
    """Physically remove the lowest-scoring filters.

    Amount: ``ratio`` of each group's channels (uniform) or of all channels (global), or a
    ``target_macs`` / ``target_params`` *reduction* (0.5 = remove half) met within ±1 pt by
    searching the ratio on predicted counts, then checked on the pruned model as measured
    (:func:`neurotomy.models.summary.layer_table`) and re-aimed up to twice when the measurement
    misses. ``min_channels`` per layer survive; ``ignored_layers`` (default: the classifier) keep
    their outputs, and so, always, do the layers whose outputs are the model's (the classes);
    ``round_to`` keeps channel counts multiples of it; ``inner_only`` prunes only channels not coupled
    through residual adds (the classic papers' setting). The result's model has the cuts appended to its checkpoint recipe; layers whose filters cannot be cut (torch-pruning
    cannot map their channels, or the cut would reach into attention heads) are listed with the
    reason in ``details["refused_layers"]``.

    Or a latency: ``target_speedup`` (> 1, against the unpruned model) or ``target_latency_ms``
    per batch of ``latency_batch`` images with ``threads`` threads in ``runtime`` (``torch``,
    ``onnx``, ``onnx-int8``): widths are chosen from a measured, cached latency table by a knapsack
    (:mod:`neurotomy.surgery.latency_plan`; ``scope`` and ``round_to`` do not apply), calibrated on
    measured cuts; the pruned model is measured, and cut again (up to twice) when the measurement
    misses by more than 10 %. ``details`` then hold ``speedup_predicted``, ``speedup_measured``,
    ``latency_ms_predicted``, ``latency_ms_measured``, ``threads`` and ``load_average`` (see
    :func:`prune_to_latency`).
    """
    input_shape = input_shape or require_input_shape(model)
    if target_speedup is not None or target_latency_ms is not None:
        check_latency_request(ratio, target_macs, target_params, target_speedup, target_latency_ms, latency_batch,
                              threads, runtime, min_channels, round_to)
        return prune_to_latency(model, scores, target_speedup=target_speedup, target_latency_ms=target_latency_ms,
                                min_channels=min_channels, ignored_layers=ignored_layers, inner_only=inner_only,
                                input_shape=input_shape, latency_batch=latency_batch, threads=threads,
                                runtime=runtime, latency_cache=latency_cache, quiet=quiet)
    cuts, ratio, planner = plan_cuts(model, scores, ratio=ratio, target_macs=target_macs,
                                     target_params=target_params, scope=scope, min_channels=min_channels,
                                     ignored_layers=ignored_layers, round_to=round_to,
                                     inner_only=inner_only, input_shape=input_shape)
    pruned = apply_cuts(model, cuts, input_shape)
    after = _measure(pruned, input_shape)
    before = (planner.total_macs, planner.total_params)
    which, target = ("macs", target_macs) if target_macs is not None else ("params", target_params)
    if target is not None:
        ratio, cuts, pruned, after = meet_measured(planner, scope, which, target, (ratio, cuts, pruned, after), before,
                                                   lambda c: apply_cuts(model, c, input_shape),
                                                   lambda m: _measure(m, input_shape))
    channels = {g.root_name: (g.channels, g.channels - len(c.idxs))
                for g in planner.groups for c in cuts if c.layer == g.root_name}
    details = {"refused_layers": dict(planner.refused)} if planner.refused else {}
    return PruningResult(pruned, cuts, ratio, scope, before[0], after[0], before[1], after[1], channels, details)


def prune_to_latency(model: nn.Module, scores: UnitScores, *, target_speedup: float | None = None,
                     target_latency_ms: float | None = None, min_channels: int = 1,
                     ignored_layers: list[str] | None = None, inner_only: bool = False,
                     input_shape: tuple[int, ...] | None = None, latency_batch: int = 64, threads: int | None = None,
                     runtime: str | LatencyRuntime = "torch", latency_cache: str | os.PathLike | None = None,
                     quiet: bool | None = None) -> PruningResult:
    """Prune to ``target_speedup`` or ``target_latency_ms`` (see :func:`prune_filters`): measure the
    latency table (or read it from the cache); time the fastest cut it finds against the original
    (interleaved, in the same runtime) and calibrate the table's prediction on it
    (:meth:`~neurotomy.surgery.latency_plan.LatencyModel.calibrate`) — a goal slower than that cut
    by more than 10 % is out of reach; choose widths by the knapsack, cut, measure, and when the
    measured latency misses the goal by more than 10 % calibrate on that cut too and choose again
    (at most twice), keeping the closest. ``details`` record the target, the runtime, batch, threads,
    the predicted and measured latency and speed-up, the load average of the measurement, every
    attempt (its prediction made before it was measured), and in ``latency_table`` the fastest cut's
    latency and the ``calibration`` knots.

    Example:
        >>> import tempfile
        >>> from neurotomy.models import build_model
        >>> from neurotomy.scores import get_criterion
        >>> model = build_model("resnet20", 1, 10, 28).eval()
        >>> scores = get_criterion("l1")(model)
        >>> # result = prune_to_latency(model, scores, target_speedup=2, threads=1)  # measures: seconds
        >>> prune_to_latency(model, scores, target_speedup=0.5, latency_cache=tempfile.mkdtemp())
        Traceback (most recent call last):
        ...
        neurotomy.errors.PruningError: target_speedup 0.5 is no speed-up; give a number above 1, e.g. 2 for twice as fast
    """
    if is_transformer(model):
        raise PruningError(TRANSFORMER_LATENCY)
    check_latency_request(None, None, None, target_speedup, target_latency_ms, latency_batch, threads, runtime,
                          min_channels, None)
    input_shape = input_shape or require_input_shape(model)
    scores.check_fits(model)
    runtime = runtime_named(runtime)
    planner = Planner(model, scores, input_shape, resolve_ignored(model, ignored_layers), min_channels, None, inner_only)
    table = latency_model(model, planner, input_shape, runtime, latency_batch, threads, latency_cache, quiet)
    goal = target_latency_ms if target_latency_ms is not None else table.full_ms / target_speedup
    if goal >= table.full_ms:
        raise PruningError(f"a latency of {goal:.2f} ms is not below the unpruned model's {table.full_ms:.2f} ms "
                           f"({runtime.name}, batch {latency_batch}, {table.threads} thread(s)); nothing to prune — "
                           "give a lower target_latency_ms")

    def measured(choice: list[int]) -> dict:
        """Cut to ``choice`` and time it against the original, interleaved, in the same runtime."""
        cuts = table.cuts(choice)
        pruned = apply_cuts(model, cuts, input_shape)
        original, cut = runtime.time_models([model, pruned], input_shape, latency_batch, table.threads)
        # the cut model's latency on the table's scale: for a speed-up, relative to the original as measured now
        achieved = cut["median_ms"] * (table.full_ms / original["median_ms"] if target_latency_ms is None else 1)
        return {"choice": choice, "cuts": cuts, "pruned": pruned, "achieved": achieved, "attempt": {
            "latency_ms_measured": cut["median_ms"], "latency_ms_original": original["median_ms"],
            "speedup_measured": original["median_ms"] / cut["median_ms"], "widths": table.widths(choice),
            "load_average": [original["load_average"][0], cut["load_average"][-1]],
            "machine_busy": cut["machine_busy"], "miss": achieved / goal - 1}}

    # Calibrate on two measured models before aiming: the unpruned one (the table's own) and the
    # fastest cut, so the prediction is measured at both ends (LatencyModel.calibrate says why).
    fastest = measured(table.fastest())
    points, tried, best = [(fastest["choice"], fastest["achieved"])], {}, None
    table.calibrate(points)
    for _ in range(3):
        try:
            choice = table.allocate(goal)
        except PruningError:  # the fastest cut measured slower than the goal: out of reach, unless near enough
            if abs(fastest["attempt"]["miss"]) > LATENCY_TOLERANCE:
                raise
            choice = fastest["choice"]
        if tuple(choice) in tried:
            break  # the calibration did not move: measuring again would add nothing
        predicted = table.predict(choice)  # before this cut is measured: the prediction as it stood
        trial = fastest if choice == fastest["choice"] else measured(choice)
        trial["attempt"].update(aim_ms=goal, latency_ms_predicted=predicted,
                                speedup_predicted=table.full_ms / predicted)
        tried[tuple(choice)] = trial
        if best is None or abs(trial["attempt"]["miss"]) < abs(best["attempt"]["miss"]):
            best = trial
        if abs(trial["attempt"]["miss"]) <= LATENCY_TOLERANCE:
            break
        points.append((choice, trial["achieved"]))
        table.calibrate(points)
    attempts = [trial["attempt"] for trial in tried.values()]
    attempt, cuts, pruned = best["attempt"], best["cuts"], best["pruned"]
    warn_if_target_missed(attempt["miss"], target_speedup, target_latency_ms, attempt["speedup_measured"],
                          attempt["latency_ms_measured"])
    after = _measure(pruned, input_shape)
    channels = {g.root_name: (g.channels, g.channels - len(c.idxs))
                for g in planner.groups for c in cuts if c.layer == g.root_name}
    target = {"target_speedup": target_speedup} if target_latency_ms is None else {"target_latency_ms": target_latency_ms}
    details = {**target, "latency_runtime": runtime.name, "latency_batch": latency_batch, "threads": table.threads,
               **{k: attempt[k] for k in ("latency_ms_predicted", "latency_ms_measured", "latency_ms_original",
                                          "speedup_predicted", "speedup_measured", "load_average", "machine_busy")},
               "latency_table": {**table.info, "full_ms": table.full_ms, "rest_ms": table.rest_ms,
                                 "fastest_ms": fastest["achieved"],
                                 "calibration": [{"table_ms": t, "ms": m} for t, m in table.knots]},
               "latency_attempts": attempts}
    if planner.refused:
        details["refused_layers"] = dict(planner.refused)
    removed = sum(len(c.idxs) for c in cuts)
    return PruningResult(pruned, cuts, removed / sum(g.channels for g in planner.groups), "latency",
                         planner.total_macs, after[0], planner.total_params, after[1], channels, details)


def _measure(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, int]:
    return layer_table(model, input_shape).total_macs, sum(p.numel() for p in model.parameters())


def meet_measured(planner, scope: str, which: str, target: float, first: tuple, before: tuple[int, int],
                  apply: Callable[[list[Cut]], nn.Module], measure: Callable[[nn.Module], tuple[int, int]]) -> tuple:
    """Re-aim the ratio search when the measured reduction misses ``target`` by more than 1 pt
    (a prediction cannot see everything a cut changes: attention matmuls, layer-scale parameters).
    ``first`` and the result are (ratio, cuts, pruned model, measured (MACs, params)); ``apply``
    cuts a copy, ``measure`` measures it; the closest of at most three tries is kept. The aim is
    corrected by the ratio of target to measured (a prediction off by a factor stays off by about
    that factor), additively when nothing was measured."""
    index = 0 if which == "macs" else 1
    best, aim = first, target
    for _ in range(2):
        measured = 1 - best[3][index] / before[index]
        if abs(measured - target) <= 0.01:
            break
        aim = aim * target / measured if measured > 0 else aim + target - measured
        aim = min(0.99, max(0.0, aim))
        try:
            ratio = planner.ratio_for(aim, which, scope)
        except PruningError:
            break
        cuts = planner.plan(ratio, scope)
        pruned = apply(cuts)
        after = measure(pruned)
        if abs(1 - after[index] / before[index] - target) < abs(measured - target):
            best = (ratio, cuts, pruned, after)
    reached = 1 - best[3][index] / before[index]
    if abs(reached - target) > 0.01:  # never silent: the widths' steps (channel groups, round_to) jump over it
        other = "global" if scope == "uniform" else "uniform"
        warnings.warn(f"a {which} reduction of {target:.0%} was asked; the cut reaches {reached:.1%}: the ratio "
                      f"search found no closer cut with scope {scope} (channel groups and round_to make coarse "
                      f"steps); try scope {other} (--scope {other}) or another target", NeurotomyWarning,
                      stacklevel=3)
    return best


@torch.no_grad()
def mask_filters(model: nn.Module, cuts: list[Cut], input_shape: tuple[int, ...],
                 groups: list[CoupledGroup] | None = None) -> None:
    """Zero, in place, exactly what :func:`apply_cuts` would remove: each cut filter's weights and
    bias, and the γ, β of every BatchNorm slice coupled to it (input weights are left alone).
    ``groups`` (e.g. a planner's, traced on a model of the same architecture) saves re-tracing
    when many masks are tried; members are looked up by name in ``model``."""
    if groups is None:
        groups = coupled_groups(dependency_graph(model, torch.zeros(1, *input_shape, device=model_device(model))), model, [])
    modules = dict(model.named_modules())
    groups = {g.root_name: g for g in groups}
    for cut in cuts:
        chosen = set(cut.idxs)
        if cut.layer not in groups:
            raise PruningError(f"layer {cut.layer!r} is not a pruning root of this model")
        for m in groups[cut.layer].members:
            idxs = [i for i, r in zip(m.idxs, m.root_idxs) if r in chosen]
            module = modules[m.name]
            if isinstance(module, nn.BatchNorm2d) and module.affine:
                module.weight[idxs] = 0
                module.bias[idxs] = 0
            elif m.kind == "out" and isinstance(module, (nn.Conv2d, nn.Linear)):
                module.weight[idxs] = 0
                if module.bias is not None:
                    module.bias[idxs] = 0
