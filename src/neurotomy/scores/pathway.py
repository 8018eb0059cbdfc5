"""Pathway relevance as a pruning criterion: the mean over images of each filter's per-input
critical-pathway score (Khakzar et al., CVPR 2021; see :mod:`neurotomy.explain.pathway`).

Per image, a filter's score is Σ_positions |a · ∂y_c/∂a| at its response, for the image's predicted
class c — the quantity the pathway explanation thresholds, summed per channel. It differs from
Taylor (Molchanov et al.) in differentiating the predicted logit rather than the loss, and in summing
magnitudes over positions rather than taking the magnitude of the mean. The per-input scores
themselves (``axis="input"``) come from :func:`neurotomy.explain.pathway.pathway_channel_scores`.
"""

from __future__ import annotations

import torch

from neurotomy.scores.base import CRITERIA, DataCriterion


@CRITERIA.register(axis="unit")
class PathwayRelevance(DataCriterion):
    name = "pathway"
    paper = "Khakzar et al., CVPR 2021 (critical-pathway relevance Σ|a·∂y_c/∂a| per filter, mean over images)"
    needs_grad = True

    def objective(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # each image's predicted-class logit; one backward of the sum gives every image its own
        return logits.gather(1, logits.argmax(1, keepdim=True)).sum()

    def update(self, layer, response, grad):
        self.accumulate(layer, "sum", (response * grad).abs().sum((2, 3)).double().sum(0))
        self.accumulate(layer, "count", response.new_tensor(response.shape[0]).double())

    def result(self, layer):
        state = self.state[layer]
        return state["sum"] / state["count"]
