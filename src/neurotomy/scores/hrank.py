"""HRank: Lin, Ji, Wang, Zhang, Zhang, Tian & Shao, "HRank: Filter Pruning using High-Rank Feature
Map", CVPR 2020 (code: lmbxmu/HRank).

Score of channel c = mean over N images of rank(A_c(x)), A_c the H×W post-ReLU feature map. The
paper observes that a filter's average rank is stable across batches, so N = 640 suffices. Ranks of
a whole batch of maps come from one batched ``torch.linalg.matrix_rank`` call, in float32 with
its default tolerance, as the reference code (``torch.matrix_rank`` on float32 maps) does.
"""

from __future__ import annotations

import torch

from neurotomy.scores.base import CRITERIA, DataCriterion


@CRITERIA.register(axis="unit")
class HRank(DataCriterion):
    name = "hrank"
    paper = "Lin et al., CVPR 2020, HRank (mean rank of feature maps)"

    def update(self, layer, response, grad):
        maps = response.relu().float()  # N × C × H × W
        ranks = torch.linalg.matrix_rank(maps).double()  # batched over N × C
        self.accumulate(layer, "sum", ranks.sum(0))
        self.accumulate(layer, "count", ranks.new_tensor(ranks.shape[0]))

    def result(self, layer):
        s = self.state[layer]
        return s["sum"] / s["count"]
