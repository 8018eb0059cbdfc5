"""FPGM: He, Liu, Wang, Hu & Yang, "Filter Pruning via Geometric Median for Deep Convolutional
Neural Networks Acceleration", CVPR 2019.

Score of filter c = Σ_j ‖W_c − W_j‖₂ over the layer's filters. A filter close to the geometric
median of its layer (small sum of distances) is the most replaceable by the others, so it goes first.
"""

from __future__ import annotations

import torch

from neurotomy.scores.base import CRITERIA, ConvUnit, WeightCriterion


@CRITERIA.register(axis="unit")
class FPGM(WeightCriterion):
    name = "fpgm"
    paper = "He et al., CVPR 2019, Filter Pruning via Geometric Median"

    def score_layer(self, unit: ConvUnit):
        w = unit.conv.weight.flatten(1).double()
        return torch.cdist(w, w).sum(1)
