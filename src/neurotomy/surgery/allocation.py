"""How a MACs/params target is split between a transformer's unit families (heads, MLP neurons,
embedding channels = the residual stream) when several are pruned at once.

One ratio for every family (the old rule) lets the residual stream lose as large a share as the MLPs;
on ``zoo:vit-tiny-fmnist`` at −50 % MACs that removed 40 of the 128 stream channels and left 46 % test
accuracy right after the cut (2,000 images; 82 % with the stream whole). A stream channel feeds every
block, and removing it shifts every LayerNorm's statistics — a damage first-order unit scores do not
see. Three common scales were measured and rejected (heads, neurons and stream ranked together by
layer-normalised score, i.e. each family's value proportional to its MACs; torch-pruning's pooling of
stream channels with neurons; raw Taylor score per MAC, HALP-style): each cut the stream or the heads
too deeply somewhere between −30 and −70 %. What held on every criterion and target:

* **data-free** (:func:`stream_last`): heads and neurons share the ratio (as before), and the stream
  is cut last — the smallest stream share (of :data:`STREAM_SHARES`) that lets the target be reached,
  0 when heads and neurons suffice; the old equal ratio only when nothing else reaches the target.
  Where heads are too coarse for a shared ratio to land within 1 pt, the smallest heads share of
  :data:`HEAD_SHARES` that does is fixed instead.
* **with calibration batches** (:func:`search`): the split is measured. Starting from the data-free
  choice, a coordinate search fixes the heads' share (:data:`HEAD_SHARES`), then the stream's
  (:data:`CALIBRATION_STREAM_SHARES`), then the heads' again; for each candidate the remaining family
  (neurons) takes the ratio that meets the target on predicted costs, the candidate is cut, and the
  one with the lowest mean cross-entropy on the calibration batches is kept (the first on ties, so
  the same batches always give the same cut). The calibration loss picked the best or a near-best
  split on 512 training images in every measured case.

The planner these functions steer is :class:`neurotomy.surgery.transformer.TransformerPlanner`: its
``fixed`` maps a family to the share of its units it loses; families not in ``fixed`` follow the
ratio the target search moves.

Example:
    >>> STREAM_SHARES[:3], HEAD_SHARES[:3]
    ((0.0, 0.015625, 0.03125), (0.0, 0.125, 0.25))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from neurotomy.device import model_device, to_device
from neurotomy.errors import PruningError
from neurotomy.models.anatomy import eval_mode
from neurotomy.surgery.planner import Cut

EMBEDDING = "embedding"
STREAM_SHARES = (0.0, 1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2)  # data-free: the first that reaches the target
CALIBRATION_STREAM_SHARES = (0.0, 1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4)
HEAD_SHARES = tuple(k / 8 for k in range(8))
TOLERANCE = 0.01  # a candidate's predicted reduction must land within ±1 pt of the target


@dataclass
class Allocation:
    """The shares fixed per family (the rest follow the ratio), how they were chosen, and — when
    measured — the calibration loss of the chosen cut and how many distinct cuts were measured."""

    fixed: dict[str, float]
    chosen_by: str
    loss: float | None = None
    measured: int = 0
    candidates: list[dict] = field(default_factory=list)  # each measured split's shares and loss, in order

    def describe(self) -> dict:
        """A JSON-ready summary for a result's ``details``."""
        out = {"chosen_by": self.chosen_by, **{f"{k}_share": v for k, v in sorted(self.fixed.items())}}
        if self.loss is not None:
            out.update(calibration_loss=round(self.loss, 6), candidates_measured=self.measured,
                       candidates=list(self.candidates))
        return out


def free_family(families: Iterable[str]) -> str:
    """The family whose ratio the target search moves: neurons when pruned, else heads, else the stream."""
    families = list(families)
    return next(f for f in ("neurons", "heads", EMBEDDING) if f in families)


def _reduction(planner, ratio: float, scope: str, which: str) -> float:
    index, before = (0, planner.macs_before) if which == "macs" else (1, planner.params_before)
    return 1 - planner.predict(planner.plan(ratio, scope))[index] / before


def _meets(planner, fixed: dict[str, float], target: float, which: str, scope: str) -> float | None:
    """The ratio meeting ``target`` (±1 pt, predicted) with ``fixed`` shares; None when none does."""
    planner.fixed = dict(fixed)
    try:
        ratio = planner.ratio_for(target, which, scope)
    except PruningError:
        return None
    return ratio if abs(_reduction(planner, ratio, scope, which) - target) <= TOLERANCE else None


def _with_coarse_heads(planner, fixed: dict[str, float]) -> list[dict[str, float]]:
    """``fixed`` with heads following the ratio, then — where heads are not the free family — with
    each share of :data:`HEAD_SHARES`: a few heads per layer move the MACs in steps too coarse for a
    shared ratio to land within 1 pt (2 heads per layer under ``uniform``: half of the attention)."""
    families = {layer.family for layer in planner.layers}
    if "heads" not in families or free_family(families) == "heads":
        return [fixed]
    return [fixed] + [{**fixed, "heads": share} for share in HEAD_SHARES]


def stream_last(planner, target: float, which: str, scope: str) -> Allocation:
    """The data-free split: heads and neurons share the ratio; the stream loses the smallest share of
    :data:`STREAM_SHARES` with which the target is met (the equal ratio when none is)."""
    families = {layer.family for layer in planner.layers}
    if EMBEDDING not in families or free_family(families) == EMBEDDING:
        for fixed in _with_coarse_heads(planner, {}):
            if _meets(planner, fixed, target, which, scope) is not None:
                return Allocation(fixed, "one ratio" if not fixed else "one ratio missed: heads fixed")
        planner.fixed = {}
        return Allocation({}, "one ratio")
    for share in STREAM_SHARES:
        for fixed in _with_coarse_heads(planner, {EMBEDDING: share}):
            if _meets(planner, fixed, target, which, scope) is not None:
                return Allocation(fixed, "stream last")
    planner.fixed = {}
    return Allocation({}, "one ratio (the stream had to go as far as the rest)")


def search(planner, target: float, which: str, scope: str, loss_of: Callable[[list[Cut]], float]) -> Allocation:
    """The split with the lowest ``loss_of(cuts)`` among the candidates of the coordinate search
    (module docstring), starting from :func:`stream_last`'s; ``planner.fixed`` is left at the choice."""
    families = {layer.family for layer in planner.layers}
    free = free_family(families)
    grids = {"heads": HEAD_SHARES, EMBEDDING: CALIBRATION_STREAM_SHARES}
    dims = [f for f in ("heads", EMBEDDING) if f in families and f != free]
    start = stream_last(planner, target, which, scope)
    seen: dict[tuple, float] = {}
    history: list[dict] = []

    def measure(fixed: dict[str, float]) -> float | None:
        ratio = _meets(planner, fixed, target, which, scope)
        if ratio is None:
            return None
        cuts = planner.plan(ratio, scope)
        key = tuple(sorted((type(c).__name__, c.layer, tuple(c.idxs)) for c in cuts))
        if key not in seen:
            seen[key] = float(loss_of(cuts))
            history.append({**{f"{k}_share": v for k, v in sorted(fixed.items())}, "loss": round(seen[key], 6)})
        return seen[key]

    best_fixed, best_loss = dict(start.fixed), measure(start.fixed)  # None: the data-free split misses the target
    for dim in dims + dims[:1] if len(dims) > 1 else dims:
        for share in grids[dim]:
            candidate = {**best_fixed, dim: share}
            loss = measure(candidate)
            if loss is not None and (best_loss is None or loss < best_loss):
                best_fixed, best_loss = candidate, loss
    planner.fixed = dict(best_fixed)
    if best_loss is None:  # no candidate lands within 1 pt: the data-free split, re-aimed on the measured model
        return start
    return Allocation(best_fixed, "calibration loss", best_loss, len(seen), history)


def calibration_batches(calibration: Iterable) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``calibration`` as a list of (images, integer labels) batches, checked before any work."""
    try:
        batches = list(calibration)
    except TypeError:
        raise PruningError("calibration must be an iterable of (images, labels) batches, e.g. a DataLoader or "
                           "a list of tensor pairs") from None
    if not batches:
        raise PruningError("calibration has no batches; pass at least one (images, labels) batch, or leave it out "
                           "for the data-free split")
    for images, labels in (b if isinstance(b, (tuple, list)) and len(b) == 2 else (None, None) for b in batches):
        if not (isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor)) or labels.ndim != 1 \
                or labels.is_floating_point() or len(labels) != len(images):
            raise PruningError("each calibration batch must be (images, labels): an image tensor and a 1-D integer "
                               "label tensor of the same length")
    return batches


@torch.no_grad()
def calibration_loss(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Mean cross-entropy of ``model`` (in eval mode) over every image of ``batches``.

    Example:
        >>> net = nn.Linear(2, 2)
        >>> with torch.no_grad():
        ...     _ = net.weight.zero_(), net.bias.zero_()
        >>> round(calibration_loss(net, [(torch.zeros(3, 2), torch.tensor([0, 1, 1]))]), 4)  # log 2
        0.6931
    """
    device, total, count = model_device(model), 0.0, 0
    with eval_mode(model):
        for images, labels in batches:
            images, labels = to_device(device, images, labels)
            total += float(F.cross_entropy(model(images), labels, reduction="sum"))
            count += len(labels)
    return total / count
