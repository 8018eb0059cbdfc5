"""Checking what a metric is given: maps that fit the inputs, one target per image, a model that
returns class scores — so a mismatch is a one-line error, never a silently wrong number.

Maps are ``B × H × W`` (one value per pixel, whatever the number of input channels) and raw: the
metrics rank pixels by the value as given, so pass ``maps.abs()`` to rank by magnitude.

Example:
    >>> import torch
    >>> check_maps(torch.zeros(2, 4, 4), torch.zeros(2, 3, 4, 4)).shape
    torch.Size([2, 4, 4])
    >>> check_targets([1, 0], 2).tolist()
    [1, 0]
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

# The batch, target and eval-mode conventions are the attribution methods' own (one way to do it);
# metrics re-export them under the names they use.
from neurotomy.explain.common import ExplainError, check_inputs, check_targets, resolve_targets  # noqa: F401
from neurotomy.explain.common import Target as Targets  # noqa: F401
from neurotomy.explain.common import forward as class_logits  # noqa: F401

Explainer = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
"""``explainer(model, inputs, targets) -> maps (B × H × W)``; e.g.
``lambda m, x, t: attribute(m, x, t, method="gradient")``."""


MetricError = ExplainError
"""Maps, inputs, targets or settings given to an explanation metric do not fit together — the same
error family as the attribution methods', so one ``except ExplainError`` catches both."""


def check_maps(maps: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """``maps`` as a float ``B × H × W`` tensor matching the batch and image size of ``inputs``."""
    check_inputs(inputs)
    batch, _, height, width = inputs.shape
    if not isinstance(maps, torch.Tensor) or tuple(maps.shape) != (batch, height, width):
        shape = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise MetricError(f"maps have shape {shape} but inputs {tuple(inputs.shape)} need "
                          f"{(batch, height, width)}: one map per image, one value per pixel")
    if not torch.isfinite(maps).all():
        raise MetricError("maps contain NaN or infinite values; fix the explanation method first")
    return maps.detach().float()


def check_fraction(value: float, name: str, low_open: bool = True) -> float:
    """A fraction in (0, 1] (or [0, 1] when ``low_open`` is False)."""
    value = float(value)
    ok = (0.0 < value <= 1.0) if low_open else (0.0 <= value <= 1.0)
    if not ok:
        bound = "(0, 1]" if low_open else "[0, 1]"
        raise MetricError(f"{name}={value} is not a fraction in {bound}; give e.g. 0.1 for 10 %")
    return value


def explain(explainer: Explainer, model: nn.Module, inputs: torch.Tensor,
            targets: torch.Tensor) -> torch.Tensor:
    """Call ``explainer`` and check that what it returns is one map per image."""
    maps = explainer(model, inputs, targets)
    return check_maps(maps, inputs)


def descending_ranks(maps: torch.Tensor) -> torch.Tensor:
    """``B × HW``: each pixel's position when the image's pixels are sorted by decreasing map value
    (0 = most relevant). Ties keep pixel order (stable sort), so results never depend on chance."""
    flat = maps.flatten(1)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    positions = torch.arange(flat.shape[1], device=flat.device).expand_as(order)
    ranks.scatter_(1, order, positions)
    return ranks


def top_pixel_mask(maps: torch.Tensor, count: int | torch.Tensor) -> torch.Tensor:
    """``B × 1 × H × W`` boolean mask of each image's ``count`` highest-ranked pixels."""
    ranks = descending_ranks(maps)
    return (ranks < count).view(maps.shape[0], 1, *maps.shape[1:])


def pixel_count(fraction: float, pixels: int) -> int:
    """How many of ``pixels`` a fraction stands for (rounded, as the curves' x-axis assumes)."""
    return int(round(fraction * pixels))
