"""Random scores: the control every criterion must beat."""

from __future__ import annotations

import torch

from neurotomy.scores.base import CRITERIA, Criterion


@CRITERIA.register(axis="unit")
class RandomCriterion(Criterion):
    """Uniform random scores drawn from ``seed`` (same seed → same scores)."""

    name = "random"
    paper = "control (uniform random)"

    def compute(self, model, units, data, *, seed, **kw):
        generator = torch.Generator().manual_seed(seed)
        return {u.conv_name: torch.rand(u.conv.out_channels, generator=generator) for u in units}
