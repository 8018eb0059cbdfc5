"""Deletion and insertion curves (Petsiuk et al., RISE, BMVC 2018, §4.1 "causal metrics").

Pixels are taken in the order of the map, most relevant first. *Deletion* sets them to the
substrate (0 in normalised space, i.e. the dataset mean) step by step and records the softmax
probability of the target class; a faithful map makes it fall fast, so its area under the curve is
small. *Insertion* starts from a blurred copy of the image and puts the original pixels back; a
faithful map makes the probability rise fast, so its area is large. The area is the trapezoid rule
over the fraction of pixels changed, in [0, 1]. All images of a batch go through the model together:
one forward pass per step.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    >>> x = torch.randn(2, 1, 4, 4)
    >>> curve = deletion_curve(model, x, x[:, 0].abs(), steps=4)
    >>> tuple(curve.probabilities.shape), curve.fractions.tolist()
    ((2, 5), [0.0, 0.25, 0.5, 0.75, 1.0])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from neurotomy.explain.metrics.checks import (MetricError, Targets, check_maps, class_logits,
                                              descending_ranks, resolve_targets)
from neurotomy.models.anatomy import eval_mode


@dataclass
class PerturbationCurve:
    """Target-class probability after each step: ``probabilities`` is ``B × (steps + 1)``, column 0
    the untouched start (the image for deletion, the blurred image for insertion)."""

    fractions: torch.Tensor
    probabilities: torch.Tensor

    @property
    def auc(self) -> torch.Tensor:
        """Area under each image's curve (trapezoid rule over the fraction changed), length B."""
        return torch.trapezoid(self.probabilities, self.fractions, dim=1)

    @property
    def mean_auc(self) -> float:
        return float(self.auc.mean())

    def to_dict(self) -> dict:
        return {"auc": self.mean_auc, "fractions": self.fractions.tolist(),
                "mean_probability": self.probabilities.mean(0).tolist()}


def gaussian_blur(inputs: torch.Tensor, kernel_size: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """Per-channel Gaussian blur with zero padding — the insertion start of the RISE code (an 11×11
    kernel, σ = 5). Zero is the substrate in normalised space, so the borders fade towards it."""
    if kernel_size < 1 or kernel_size % 2 == 0 or sigma <= 0:
        raise MetricError(f"blur kernel {kernel_size} / sigma {sigma}: use an odd size ≥ 1 and sigma > 0")
    offsets = torch.arange(kernel_size, dtype=inputs.dtype, device=inputs.device) - kernel_size // 2
    weights = torch.exp(-offsets.pow(2) / (2 * sigma ** 2))
    weights = weights / weights.sum()
    channels = inputs.shape[1]
    kernel = (weights[:, None] * weights[None, :]).expand(channels, 1, kernel_size, kernel_size)
    return F.conv2d(inputs, kernel, padding=kernel_size // 2, groups=channels)


def _check_steps(steps: int, pixels: int) -> int:
    if not isinstance(steps, int) or steps < 1:
        raise MetricError(f"steps={steps!r}; give a positive number of steps (e.g. 28)")
    return min(steps, pixels)


@torch.no_grad()
def _curve(model: nn.Module, start: torch.Tensor, finish: torch.Tensor, maps: torch.Tensor,
           targets: torch.Tensor, steps: int) -> PerturbationCurve:
    """Move pixels from ``start`` to ``finish`` in map order; probability of ``targets`` per step."""
    pixels = maps[0].numel()
    steps = _check_steps(steps, pixels)
    ranks = descending_ranks(maps).view(maps.shape[0], 1, *maps.shape[1:])
    fractions = torch.linspace(0.0, 1.0, steps + 1)
    probabilities = []
    for fraction in fractions.tolist():
        changed = ranks < round(fraction * pixels)
        images = torch.where(changed, finish, start)
        probs = F.softmax(class_logits(model, images), dim=1)
        probabilities.append(probs.gather(1, targets.view(-1, 1)).squeeze(1).cpu())
    return PerturbationCurve(fractions, torch.stack(probabilities, dim=1))


def deletion_curve(model: nn.Module, inputs: torch.Tensor, maps: torch.Tensor, targets: Targets = None,
                   steps: int = 28, substrate: float = 0.0) -> PerturbationCurve:
    """Delete pixels (set every channel to ``substrate``) in map order; lower AUC is better.

    ``targets=None`` uses each image's predicted class. ``steps`` curve steps of ``H·W / steps``
    pixels each (RISE deletes 224 of 224² pixels per step; 28 steps on 28×28 is one row's worth).
    """
    maps = check_maps(maps, inputs)
    with eval_mode(model):
        targets = resolve_targets(model, inputs, targets)
        return _curve(model, inputs.detach(), torch.full_like(inputs, substrate), maps, targets, steps)


def insertion_curve(model: nn.Module, inputs: torch.Tensor, maps: torch.Tensor, targets: Targets = None,
                    steps: int = 28, blur_kernel: int = 11, blur_sigma: float = 5.0) -> PerturbationCurve:
    """Insert original pixels into a blurred copy in map order; higher AUC is better."""
    maps = check_maps(maps, inputs)
    with eval_mode(model):
        targets = resolve_targets(model, inputs, targets)
        blurred = gaussian_blur(inputs.detach(), blur_kernel, blur_sigma)
        return _curve(model, blurred, inputs.detach(), maps, targets, steps)
