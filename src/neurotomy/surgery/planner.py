"""How much, and which channels: turning unit scores and an amount into cuts.

The planner traces the dependency graph once (:mod:`neurotomy.surgery.graph`), scores each coupled
group (the sum over its conv/linear layers of their mean-normalised scores — see
:mod:`neurotomy.surgery.filters` for why a sum), and for a ratio and scope predicts the MACs and
parameters of the result without touching the model, so a MACs or params target is met by
bisection on the ratio (±1 pt). :func:`plan_cuts` is the entry point; the cuts it returns are
applied by :func:`neurotomy.surgery.filters.apply_cuts` or zeroed by ``mask_filters``.

Example:
    >>> from neurotomy.models import build_model
    >>> from neurotomy.scores import get_criterion
    >>> model = build_model("resnet20", 1, 10, 28).eval()
    >>> cuts, ratio, planner = plan_cuts(model, get_criterion("l1")(model), ratio=0.5, input_shape=(1, 28, 28))
    >>> len(planner.groups), sum(len(c.idxs) for c in cuts) / sum(g.channels for g in planner.groups)
    (12, 0.5)
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from neurotomy import validate
from neurotomy.device import model_device
from neurotomy.errors import ModelError, NeurotomyWarning, PruningError
from neurotomy.models.anatomy import classifier_layer, require_input_shape
from neurotomy.models.summary import layer_table
from neurotomy.models.transformer import is_transformer
from neurotomy.scores.unit_scores import UnitScores
from neurotomy.surgery.graph import CoupledGroup, GroupSurvey, dependency_graph, prunable_groups

SCOPES = ("uniform", "global")


@dataclass
class Cut:
    """Remove root channels ``idxs`` of layer ``layer`` (and their coupled slices)."""

    layer: str
    idxs: list[int]

    def to_step(self) -> dict:
        return {"op": "prune_out_channels", "layer": self.layer, "idxs": list(self.idxs)}


class Planner:
    """Turns scores + a ratio into cuts, and predicts the MACs/params of the result without
    touching the model (so a target can be met by bisection on the ratio cheaply).

    A group's *units* are what is removed together: one root channel, or — when a grouped
    convolution splits the group into G blocks — the same position in every block (G channels;
    torch-pruning's grouped-conv pruning slices every group alike), scored by their mean, so
    channel counts stay multiples of G. Groups torch-pruning cannot follow (a channel shuffle)
    keep all their channels and are listed in :attr:`refused` (and warned about, one line).
    """

    def __init__(self, model: nn.Module, scores: UnitScores, input_shape: tuple[int, ...],
                 ignored: list[nn.Module], min_channels: int, round_to: int | None, inner_only: bool) -> None:
        self.graph = dependency_graph(model, torch.zeros(1, *input_shape, device=model_device(model)))
        survey = prunable_groups(self.graph, model, ignored)
        self.refused: dict[str, str] = survey.refused
        groups = survey.groups
        if inner_only:
            groups = [g for g in groups if not g.through_residual]
        normalized = scores.normalized("mean")
        self.groups: list[CoupledGroup] = []
        self.scores: list[torch.Tensor] = []
        for g in groups:
            s = _group_scores(g, normalized)
            if s is not None:
                self.groups.append(g)
                self.scores.append(s)
        if not self.groups:
            raise PruningError(_nothing_scored_prunable(model, scores, survey, ignored))
        if self.refused:
            warnings.warn(refusal_line(self.refused), NeurotomyWarning, stacklevel=3)
        self.min_channels, self.round_to = min_channels, round_to
        self.units = [_units(g, s) for g, s in zip(self.groups, self.scores)]
        self._feasible = [self._feasible_order(g) for g in range(len(self.groups))]
        table = layer_table(model, input_shape)
        self.table = {r["name"]: r for r in table.rows}
        self.total_macs = table.total_macs
        self.total_params = sum(p.numel() for p in model.parameters())
        self.macs_before, self.params_before = self.predict([])

    def _feasible_order(self, g: int) -> list[list[int]]:
        """Units of group ``g`` (lists of root channels), lowest score first, that can go without
        leaving any coupled layer with fewer than ``min_channels`` outputs (a concatenation can tie
        one root channel to a small branch, so the root's own width is not the only limit)."""
        group = self.groups[g]
        floor = max(1, self.min_channels)
        left = {i: len(m.idxs) for i, m in enumerate(group.out_layers)}
        touches: dict[int, list[int]] = {}
        for i, m in enumerate(group.out_layers):
            for r in m.root_idxs:
                touches.setdefault(r, []).append(i)
        order, removed = [], 0
        unit_scores = torch.tensor([score for score, _ in self.units[g]], dtype=torch.float64)
        for u in torch.argsort(unit_scores, stable=True).tolist():
            unit = self.units[g][u][1]
            hit = [i for r in unit for i in touches.get(r, [])]
            if all(left[i] - hit.count(i) >= floor for i in set(hit)) and group.channels - removed - len(unit) >= floor:
                for i in hit:
                    left[i] -= 1
                order.append(unit)
                removed += len(unit)
        return order

    def capacity(self, g: int) -> int:
        """How many channels group ``g`` may lose at most."""
        return sum(len(u) for u in self._feasible[g])

    def _rounded(self, g: int, n_remove: int) -> int:
        """``n_remove`` made feasible: at most the capacity, whole units, and (``round_to``) a kept
        count that is a multiple of ``round_to`` where whole units allow one."""
        channels, unit = self.groups[g].channels, self.groups[g].channel_groups
        n_remove = min(n_remove, self.capacity(g))
        n_remove -= n_remove % unit
        if self.round_to and self.round_to > 1:
            keep = max(self.round_to, int(math.ceil((channels - n_remove) / self.round_to) * self.round_to))
            n_remove = max(0, min(channels - keep, self.capacity(g)))
            n_remove -= n_remove % unit
            while n_remove > 0 and (channels - n_remove) % self.round_to:
                n_remove -= unit
        return n_remove

    def plan(self, ratio: float, scope: str) -> list[Cut]:
        return self.cuts_for_counts(self._counts(ratio, scope))

    def cuts_for_counts(self, counts: list[int]) -> list[Cut]:
        """Remove the ``counts[g]`` lowest-scoring feasible channels of each group ``g`` (whole
        units, rounded down; used by searches that choose a count per group themselves, e.g.
        splitting into class modules)."""
        cuts = []
        for g, n in enumerate(counts):
            chosen: list[int] = []
            for unit in self._feasible[g]:
                if len(chosen) + len(unit) > n:
                    break
                chosen.extend(unit)
            if chosen:
                cuts.append(Cut(self.groups[g].root_name, sorted(chosen)))
        return cuts

    def _counts(self, ratio: float, scope: str) -> list[int]:
        if scope == "uniform":
            return [self._rounded(g, int(math.floor(ratio * grp.channels + 1e-9)))
                    for g, grp in enumerate(self.groups)]
        # global: one threshold over all groups' normalised unit scores, capped per group
        total = sum(grp.channels for grp in self.groups)
        budget = int(math.floor(ratio * total + 1e-9))
        entries = sorted((float(score), g, len(unit)) for g, units in enumerate(self.units) for score, unit in units)
        counts = [0] * len(self.groups)
        for _, g, size in entries:
            if budget <= 0:
                break
            if counts[g] + size <= self.capacity(g):
                counts[g] += size
                budget -= size
        return [self._rounded(g, n) for g, n in enumerate(counts)]

    def removal_steps(self, g: int) -> list[tuple[int, float]]:
        """How group ``g`` can shrink: (channels removed, their summed score) after each feasible
        unit, lowest score first, starting from (0, 0.0) — the widths a latency target may choose
        from and the score each costs."""
        score_of = {tuple(unit): score for score, unit in self.units[g]}
        steps, removed, lost = [(0, 0.0)], 0, 0.0
        for unit in self._feasible[g]:
            removed, lost = removed + len(unit), lost + score_of[tuple(unit)]
            steps.append((removed, lost))
        return steps

    def removed_channels(self, cuts: list[Cut]) -> dict[tuple[str, str], int]:
        """Channels each member layer loses to ``cuts``: ``(layer name, "out" | "in")`` → count."""
        removed: dict[tuple[str, str], int] = {}
        by_root = {g.root_name: g for g in self.groups}
        for cut in cuts:
            chosen = set(cut.idxs)
            for m in by_root[cut.layer].members:
                n = sum(1 for r in m.root_idxs if r in chosen)
                removed[(m.name, m.kind)] = removed.get((m.name, m.kind), 0) + n
        return removed

    def predict(self, cuts: list[Cut]) -> tuple[int, int]:
        """(MACs, params) after ``cuts``, from channel counts: the measured totals of the unpruned
        model minus what each cut conv/linear layer (its measured MACs scaled by the share of its
        weights that stay) and normalisation layer lose. MACs that do not scale with a layer's
        channels (attention's matmuls) are kept as measured, so a prediction errs on the side of
        removing too little; :func:`neurotomy.surgery.filters.prune_filters` measures the result."""
        removed = self.removed_channels(cuts)
        macs, params = self.total_macs, self.total_params
        for name, module in self.graph.model.named_modules():
            out_rm, in_rm = removed.get((name, "out"), 0), removed.get((name, "in"), 0)
            if not (out_rm or in_rm):
                continue
            weights = _weight_shape(module)
            if weights is not None:
                (out_c, per), (new_out, new_per) = weights, _weight_shape(module, out_rm, in_rm)
                k = module.weight[0, 0].numel() if isinstance(module, nn.Conv2d) else 1
                bias = module.bias is not None
                params -= (out_c * per * k + bias * out_c) - (new_out * new_per * k + bias * new_out)
                row_macs = self.table.get(name, {}).get("macs", 0)
                macs -= row_macs - row_macs * (new_out * new_per) / (out_c * per)
            elif isinstance(module, (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)):
                per_channel = sum(p.numel() for p in module.parameters(recurse=False)) // max(1, _features(module))
                params -= per_channel * max(out_rm, in_rm)
        return int(round(macs)), int(params)

    @property
    def limits(self) -> str:
        """The settings that keep channels from going, as the user gave them."""
        return f"min_channels={self.min_channels}" + (f", round_to={self.round_to}" if self.round_to else "")

    def ratio_for(self, target: float, which: str, scope: str) -> float:
        """The ratio whose predicted ``which`` (``macs`` or ``params``) reduction lands within
        ±1 pt of ``target`` (bisection); an unreachable target is a :class:`PruningError`."""
        return _search_ratio(self, scope, target, which)


def refusal_line(refused: dict[str, str], units: str = "channels") -> str:
    """One line naming the layers that keep all their ``units`` and why each: a reason says its own
    cause (torch-pruning cannot map the channels, a form whose heads cannot be cut, …), so the line
    claims none for all of them.

    Example:
        >>> refusal_line({"a.0": "torch-pruning cannot map its channels", "b.0": "torch-pruning cannot map its channels"})
        '2 layer(s) keep all their channels: a.0, b.0 (torch-pruning cannot map its channels)'
    """
    by_reason: dict[str, list[str]] = {}
    for layer, reason in refused.items():
        by_reason.setdefault(reason, []).append(layer)
    parts = [f"{', '.join(layers[:4])}{f' and {len(layers) - 4} more' if len(layers) > 4 else ''} ({reason})"
             for reason, layers in by_reason.items()]
    return f"{len(refused)} layer(s) keep all their {units}: {'; '.join(parts)}"


def _nothing_scored_prunable(model: nn.Module, scores: UnitScores, survey: GroupSurvey,
                             ignored: list[nn.Module]) -> str:
    """Why no group the planner could cut has scores, in one line: the scores hold no layer, the
    scored layers are ignored or share their channels with an ignored layer, are inside groups
    torch-pruning or attention refuses (a transformer: its units are heads and neurons), left out by
    ``inner_only``, or write the model's output."""
    groups, refused = survey.groups, survey.refused
    if not len(scores):
        return "the scores hold no layer; score the model you prune (neurotomy.scores.get_criterion)"
    names = {m: n for n, m in model.named_modules()}
    scored = list(scores)
    shown = ", ".join(scored[:4]) + (f" and {len(scored) - 4} more" if len(scored) > 4 else "")
    lead = f"none of the scored layers ({shown}) can be cut"
    kept_whole = [names[m] for m in ignored if m in names]
    if all(n in kept_whole for n in scored):
        return f"{lead}: they are all in ignored_layers ({', '.join(kept_whole[:4])}); give fewer ignored_layers"
    coupled = {n: survey.kept_by_ignored[n] for n in scored if n in survey.kept_by_ignored}
    if coupled and all(n in kept_whole or n in coupled for n in scored):
        name, keeper = next(iter(coupled.items()))
        return (f"{lead}: {name} shares its channels with the ignored {keeper} (a residual stream or a "
                f"concatenation), and keeping that whole keeps them whole; give fewer ignored_layers")
    if refused and is_transformer(model):
        return (f"{lead} as filters: {refusal_line(refused)}; prune a transformer with "
                "neurotomy.surgery.transformer.prune_transformer (PruneJob and `neurotomy prune` do)")
    if refused:
        return f"{lead}: {refusal_line(refused)}; no other scored layer is prunable"
    if any(m.name in scores for g in groups for m in g.out_layers):  # scored, but left out by inner_only
        return f"{lead}: inner_only leaves out every group coupled through residual adds; leave out inner_only"
    return (f"{lead}: they are in ignored_layers or write the model's output (its classes); "
            "score the model's inner conv layers")


def _units(group: CoupledGroup, scores: torch.Tensor) -> list[tuple[float, list[int]]]:
    """(score, root channels) of each unit of ``group``: single channels, or with G channel
    groups the same position in each of the G blocks (scored by their mean, as torch-pruning does)."""
    if group.channel_groups == 1:
        return [(float(s), [r]) for r, s in enumerate(scores)]
    block = group.channels // group.channel_groups
    units = []
    for p in range(block):
        unit = [p + b * block for b in range(group.channel_groups)]
        units.append((float(scores[unit].mean()), unit))
    return units


def _features(module: nn.Module) -> int:
    if isinstance(module, nn.BatchNorm2d):
        return module.num_features
    if isinstance(module, nn.GroupNorm):
        return module.num_channels
    return int(module.normalized_shape[0]) if module.normalized_shape else 1


def _weight_shape(module: nn.Module, out_rm: int = 0, in_rm: int = 0) -> tuple[int, int] | None:
    """(outputs, inputs per output) of a conv/linear layer's weight after removing ``out_rm``
    outputs and ``in_rm`` inputs; None for other modules. A depthwise conv loses the same
    channels on both sides; a grouped one keeps its number of groups."""
    if isinstance(module, nn.Conv2d):
        if module.groups > 1 and module.groups == module.out_channels:
            return module.out_channels - max(out_rm, in_rm), module.in_channels // module.groups
        return module.out_channels - out_rm, (module.in_channels - in_rm) // module.groups
    if isinstance(module, nn.Linear):
        return module.out_features - out_rm, module.in_features - in_rm
    return None


def _group_scores(group: CoupledGroup, scores: UnitScores) -> torch.Tensor | None:
    """Sum over the group's scored out-layers of their normalised scores, per root channel (a
    layer covering only some root channels, e.g. one branch of a concatenation, adds only to those)."""
    total = torch.zeros(group.channels, dtype=torch.float64)
    scored = False
    for m in group.out_layers:
        if m.name not in scores:
            continue
        s = scores[m.name]
        if s.ndim != 1:
            raise PruningError(f"scores for {m.name} have shape {tuple(s.shape)}; pruning needs one score "
                               "per unit (reduce a class/input axis first)")
        units = m.module.out_channels if isinstance(m.module, nn.Conv2d) else m.module.out_features
        if s.shape[0] != units:
            raise PruningError(f"scores for {m.name} cover {s.shape[0]} units but the layer has "
                               f"{units}; score the model you prune")
        total.index_add_(0, torch.tensor(m.root_idxs), s[torch.tensor(m.idxs)])
        scored = True
    if not scored:
        return None
    return total


def default_ignored(model: nn.Module) -> list[str]:
    """The classifier: the last Linear layer (its outputs are the classes); none when there is none."""
    try:
        return [classifier_layer(model)[0]]
    except ModelError:
        return []


def ignored_names(model: nn.Module, names: str | list[str] | None) -> list[str]:
    """The layer names to keep whole: ``names`` (one name given as a string is that one layer, not
    its characters), or :func:`default_ignored` when None; a name the model lacks is a
    :class:`PruningError`.

    Example:
        >>> from torch import nn
        >>> ignored_names(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3)), "2")
        ['2']
    """
    if names is None:
        return default_ignored(model)
    names = [names] if isinstance(names, str) else list(names)
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise PruningError(f"ignored layer {missing[0]!r} is not in the model; see `neurotomy info` for names")
    return names


def resolve_ignored(model: nn.Module, names: str | list[str] | None) -> list[nn.Module]:
    """The modules of :func:`ignored_names`."""
    modules = dict(model.named_modules())
    return [modules[n] for n in ignored_names(model, names)]


def check_request(ratio, target_macs, target_params, scope, min_channels, round_to) -> None:
    """One amount (a fraction in [0, 1)), a known scope, positive limits — else a one-line error."""
    given = [x for x in (ratio, target_macs, target_params) if x is not None]
    if len(given) != 1:
        raise PruningError("give exactly one of ratio, target_macs or target_params")
    value = given[0]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise PruningError(f"pruning amount {value!r} is impossible; give a fraction in [0, 1), "
                           "e.g. 0.5 to remove half")
    if scope not in SCOPES:
        raise PruningError(f"unknown scope {scope!r}; use uniform or global")
    validate.positive_int(min_channels, "min_channels")
    if round_to is not None:
        validate.positive_int(round_to, "round_to")


def search_ratio(reduction: Callable[[float], float], target: float, which: str, limits: str) -> float:
    """The ratio whose ``reduction(ratio)`` (predicted, monotone in the ratio) lands within ±1 pt of
    ``target``, by bisection; the closer end when none does. An unreachable target is a
    :class:`PruningError` naming ``limits`` (what keeps units from going).

    Example:
        >>> round(search_ratio(lambda r: r / 2, 0.25, "macs", "min_channels=1"), 2)
        0.5
    """
    most = reduction(0.999)
    if most < target - 0.01:
        raise PruningError(f"a {which} reduction of {target:.0%} cannot be reached: with {limits} and the "
                           f"ignored layers, at most {most:.1%} is possible; lower the target or those limits")
    lo, hi = 0.0, 0.999
    for _ in range(40):
        mid = (lo + hi) / 2
        if reduction(mid) < target:
            lo = mid
        else:
            hi = mid
        if abs(reduction(hi) - target) <= 0.002:
            break
    return hi if abs(reduction(hi) - target) <= abs(reduction(lo) - target) else lo


def _search_ratio(planner: Planner, scope: str, target: float, which: str) -> float:
    """Smallest ratio whose predicted reduction lands within ±1 pt of ``target`` (bisection)."""
    index, before = (0, planner.macs_before) if which == "macs" else (1, planner.params_before)
    return search_ratio(lambda r: 1 - planner.predict(planner.plan(r, scope))[index] / before, target, which,
                        planner.limits)


def check_removes_something(planner: Planner, cuts: list[Cut], ratio: float, scope: str, *,
                            strict: bool = False) -> None:
    """A ``ratio`` above 0 that cuts nothing is never silent: a :class:`PruningError` when no
    ratio could cut anything under the planner's limits (``min_channels``, ``round_to``), else a
    one-line warning that the ratio rounds down to no channel (an error too with ``strict``)."""
    if cuts or ratio <= 0:
        return
    if not planner.plan(0.999, scope):
        widest = max(g.channels for g in planner.groups)
        raise PruningError(f"ratio {ratio} removes no channel: with {planner.limits} every layer keeps all its "
                           f"channels (the widest prunable layer has {widest}); lower those limits")
    message = (f"ratio {ratio} removes no channel: it rounds down to 0 channels in every layer; "
               "raise the ratio")
    if strict:
        raise PruningError(message)
    warnings.warn(f"{message} (nothing was pruned)", NeurotomyWarning, stacklevel=3)


def check_reachable(model: nn.Module, *, ratio: float | None = None, target_macs: float | None = None,
                    target_params: float | None = None, scope: str = "uniform", min_channels: int = 1,
                    ignored_layers: str | list[str] | None = None, round_to: int | None = None,
                    inner_only: bool = False, input_shape: tuple[int, ...] | None = None) -> None:
    """Whether a filter prune of ``model`` can remove anything, and reach its target, found before any
    scoring: the same plan as :func:`plan_cuts`, made with equal scores for every conv layer's
    filters (how much a group can lose depends on its widths and the limits, not on which channels
    go). An amount out of reach, or a ratio that cuts nothing, is a :class:`PruningError`.

    Example:
        >>> from neurotomy.models import build_model
        >>> check_reachable(build_model("lenet5", 1, 10, 28), ratio=0.5, min_channels=100, input_shape=(1, 28, 28))
        Traceback (most recent call last):
        ...
        neurotomy.errors.PruningError: ratio 0.5 removes no channel: with min_channels=100 every layer keeps \
all its channels (the widest prunable layer has 16); lower those limits
    """
    check_request(ratio, target_macs, target_params, scope, min_channels, round_to)
    input_shape = input_shape or require_input_shape(model)
    equal = UnitScores({n: torch.ones(m.out_channels) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)})
    if not equal:
        return  # nothing a filter criterion scores: the criterion says so itself
    planner = Planner(model, equal, input_shape, resolve_ignored(model, ignored_layers), min_channels, round_to,
                      inner_only)
    if ratio is not None:
        check_removes_something(planner, planner.plan(ratio, scope), ratio, scope, strict=True)
    else:
        which, target = ("macs", target_macs) if target_macs is not None else ("params", target_params)
        _search_ratio(planner, scope, target, which)


def plan_cuts(model: nn.Module, scores: UnitScores, *, ratio: float | None = None,
              target_macs: float | None = None, target_params: float | None = None,
              scope: str = "uniform", min_channels: int = 1, ignored_layers: list[str] | None = None,
              round_to: int | None = None, inner_only: bool = False,
              input_shape: tuple[int, ...] | None = None) -> tuple[list[Cut], float, Planner]:
    """Which channels a prune would remove, without removing them."""
    check_request(ratio, target_macs, target_params, scope, min_channels, round_to)
    scores.check_fits(model)
    input_shape = input_shape or require_input_shape(model)
    planner = Planner(model, scores, input_shape, resolve_ignored(model, ignored_layers),
                       min_channels, round_to, inner_only)
    if ratio is None:
        which, target = ("macs", target_macs) if target_macs is not None else ("params", target_params)
        ratio = _search_ratio(planner, scope, target, which)
        return planner.plan(ratio, scope), ratio, planner
    cuts = planner.plan(ratio, scope)
    check_removes_something(planner, cuts, ratio, scope)
    return cuts, ratio, planner
