"""Taylor first-order: Molchanov, Tyree, Karras, Aila & Kautz, "Pruning Convolutional Neural
Networks for Resource Efficient Inference", ICLR 2017.

The loss change from removing channel c is approximated to first order by |mean over positions of
A_c · ∂L/∂A_c| for one image; the score is its mean over images (the 2017 form, eq. 8, without the
per-layer L2 rescaling — our planner normalises layers itself). A_c is the post-BN response.
"""

from __future__ import annotations

from neurotomy.scores.base import CRITERIA, DataCriterion


@CRITERIA.register(axis="unit")
class TaylorFirstOrder(DataCriterion):
    name = "taylor"
    paper = "Molchanov et al., ICLR 2017, Taylor expansion (|mean_positions A·dL/dA|, mean over images)"
    needs_grad = True

    def update(self, layer, response, grad):
        per_image = (response * grad).mean((2, 3)).abs()  # N × C
        self.accumulate(layer, "sum", per_image.double().sum(0))
        self.accumulate(layer, "count", per_image.new_tensor(per_image.shape[0]).double())

    def result(self, layer):
        s = self.state[layer]
        return s["sum"] / s["count"]
