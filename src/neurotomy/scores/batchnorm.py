"""Criteria read off BatchNorm parameters, data-free.

* ``bn_scale`` — |γ_c| (Liu et al., "Learning Efficient Convolutional Networks through Network
  Slimming", ICCV 2017): a channel scaled towards zero contributes little.
* ``bn_stats`` — if the BN output of channel c is N(β_c, γ_c²), the expected ReLU output is
  E = β Φ(β/|γ|) + |γ| φ(β/|γ|) (the mean of a rectified Gaussian); a channel whose expected
  activation is ≈0 is rarely on. Convs without a BN fall back to their L1 norm; on a model with no
  BatchNorm at all both criteria *are* L1, which a one-line warning says.
"""

from __future__ import annotations

import math
import warnings

import torch

from neurotomy.errors import NeurotomyWarning
from neurotomy.scores.base import CRITERIA, ConvUnit, WeightCriterion
from neurotomy.scores.norms import L1Norm


def expected_relu_of_gaussian(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """E[max(0, X)] for X ~ N(mean, std²); equals max(0, mean) when std = 0."""
    std = std.abs()
    safe = std.clamp(min=1e-12)
    z = mean / safe
    cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    pdf = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return torch.where(std > 0, mean * cdf + std * pdf, mean.clamp(min=0))


class _BatchNormCriterion(WeightCriterion):
    """Scores from the BatchNorm after each conv; a conv without an affine BN falls back to L1."""

    def compute(self, model, units, data, **kw) -> dict[str, torch.Tensor]:
        if not any(_has_affine_batchnorm(u) for u in units):
            warnings.warn(f"{self.name}: no conv layer of this model is followed by an affine BatchNorm, so every "
                          "layer is scored by its L1 norm (the same scores as criterion l1)", NeurotomyWarning,
                          stacklevel=3)
        return super().compute(model, units, data, **kw)

    def score_layer(self, unit: ConvUnit):
        if not _has_affine_batchnorm(unit):
            return L1Norm().score_layer(unit)
        return self.score_batchnorm(unit.bn)

    def score_batchnorm(self, bn) -> torch.Tensor:
        raise NotImplementedError


def _has_affine_batchnorm(unit: ConvUnit) -> bool:
    return unit.bn is not None and unit.bn.weight is not None


@CRITERIA.register(axis="unit")
class BNScale(_BatchNormCriterion):
    name = "bn_scale"
    paper = "Liu et al., ICCV 2017, Network Slimming (|γ| of the following BatchNorm)"

    def score_batchnorm(self, bn):
        return bn.weight.abs()


@CRITERIA.register(axis="unit")
class BNStatistics(_BatchNormCriterion):
    name = "bn_stats"
    paper = "data-free expected post-BN/ReLU activation from γ, β (rectified-Gaussian mean)"

    def score_batchnorm(self, bn):
        return expected_relu_of_gaussian(bn.bias.double(), bn.weight.double())
