"""Filter norms: Li, Kadav, Durdanovic, Samet & Graf, "Pruning Filters for Efficient ConvNets",
ICLR 2017. A filter with a small weight norm produces weak feature maps and is removed first."""

from __future__ import annotations

from neurotomy.scores.base import CRITERIA, ConvUnit, WeightCriterion


@CRITERIA.register(axis="unit")
class L1Norm(WeightCriterion):
    """Σ|W_c| over the filter's C_in × k × k weights (Li et al. 2017, §3.1)."""

    name = "l1"
    paper = "Li et al., ICLR 2017, Pruning Filters for Efficient ConvNets"

    def score_layer(self, unit: ConvUnit):
        return unit.conv.weight.flatten(1).abs().sum(1)


@CRITERIA.register(axis="unit")
class L2Norm(WeightCriterion):
    """‖W_c‖₂ of the flattened filter (the L2 variant Li et al. compare against)."""

    name = "l2"
    paper = "Li et al., ICLR 2017, Pruning Filters for Efficient ConvNets (L2 variant)"

    def score_layer(self, unit: ConvUnit):
        return unit.conv.weight.flatten(1).norm(dim=1)
