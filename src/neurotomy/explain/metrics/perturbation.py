"""Pixel perturbation, MoRF and LeRF (as evaluated by Khakzar et al. 2021 §5 and FullGrad,
Srinivas & Fleuret 2019 §5.1).

Remove (set to 0 in normalised space) the k % *most* relevant pixels (MoRF) or the k % *least*
relevant (LeRF) and measure how much the target-class probability moves, relative to where it
started: |p_c(x) − p_c(x̃)| / p_c(x), averaged over images. A faithful map moves the output a lot
under MoRF and little under LeRF.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    >>> x = torch.randn(4, 1, 4, 4)
    >>> record = morf_lerf(model, x, x[:, 0], fractions=(0.1, 0.5))
    >>> sorted(record), len(record["morf"])
    (['fractions', 'lerf', 'morf'], 2)
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from neurotomy.explain.metrics.checks import (Targets, check_fraction, check_maps, class_logits,
                                              pixel_count, resolve_targets, top_pixel_mask)
from neurotomy.models.anatomy import eval_mode

FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)


@torch.no_grad()
def relative_probability_change(model: nn.Module, inputs: torch.Tensor, maps: torch.Tensor,
                                targets: Targets = None, fraction: float = 0.1,
                                most_relevant_first: bool = True) -> torch.Tensor:
    """|p_c(x) − p_c(x̃)| / p_c(x) per image (length B) after removing ``fraction`` of the pixels,
    the most relevant ones (MoRF) or, with ``most_relevant_first=False``, the least (LeRF)."""
    maps = check_maps(maps, inputs)
    fraction = check_fraction(fraction, "fraction")
    inputs = inputs.detach()
    with eval_mode(model):
        targets = resolve_targets(model, inputs, targets)
        count = pixel_count(fraction, maps[0].numel())
        removed = top_pixel_mask(maps if most_relevant_first else -maps, count)
        perturbed = inputs.masked_fill(removed, 0.0)
        probs = F.softmax(class_logits(model, torch.cat([inputs, perturbed])), dim=1)
    p = probs.gather(1, torch.cat([targets, targets]).view(-1, 1)).squeeze(1)
    original, changed = p[: len(inputs)], p[len(inputs):]
    return ((original - changed).abs() / original.clamp(min=1e-12)).cpu()


def morf_lerf(model: nn.Module, inputs: torch.Tensor, maps: torch.Tensor, targets: Targets = None,
              fractions: Sequence[float] = FRACTIONS) -> dict:
    """Mean relative probability change at each fraction, both orders:
    ``{"fractions": [...], "morf": [...], "lerf": [...]}`` (MoRF: higher is better; LeRF: lower)."""
    maps = check_maps(maps, inputs)
    with eval_mode(model):
        targets = resolve_targets(model, inputs, targets)
    record: dict = {"fractions": [float(f) for f in fractions], "morf": [], "lerf": []}
    for fraction in fractions:
        for key, most_first in (("morf", True), ("lerf", False)):
            change = relative_probability_change(model, inputs, maps, targets, fraction, most_first)
            record[key].append(float(change.mean()))
    return record
