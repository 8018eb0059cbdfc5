"""Activation statistics, forward only (Hu, Peng, Tai & Tang, "Network Trimming", 2016).

* ``mean_activation`` — mean of ReLU(response) over images and positions.
* ``apoz`` — 1 − APoZ, where APoZ is the Average Percentage of Zeros of ReLU(response); a channel
  that is almost always zero scores near 0 and is pruned first.
"""

from __future__ import annotations

from neurotomy.scores.base import CRITERIA, DataCriterion


@CRITERIA.register(axis="unit")
class MeanActivation(DataCriterion):
    name = "mean_activation"
    paper = "Hu et al. 2016, Network Trimming (mean post-ReLU activation)"

    def update(self, layer, response, grad):
        a = response.relu()
        self.accumulate(layer, "sum", a.double().sum((0, 2, 3)))
        self.accumulate(layer, "count", a.new_tensor(a.shape[0] * a.shape[2] * a.shape[3]).double())

    def result(self, layer):
        s = self.state[layer]
        return s["sum"] / s["count"]


@CRITERIA.register(axis="unit")
class APoZ(DataCriterion):
    name = "apoz"
    paper = "Hu et al. 2016, Network Trimming (1 − average percentage of zeros)"

    def update(self, layer, response, grad):
        positive = (response > 0).double()
        self.accumulate(layer, "nonzero", positive.sum((0, 2, 3)))
        self.accumulate(layer, "count", positive.new_tensor(positive[:, 0].numel()))

    def result(self, layer):
        s = self.state[layer]
        return s["nonzero"] / s["count"]
