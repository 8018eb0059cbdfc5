"""CHIP: Sui, Yin, Xie, Phan, Zonouz & Yuan, "CHIP: CHannel Independence-based Pruning for
Compact Neural Networks", NeurIPS 2021.

Per image, A is the layer's post-ReLU maps as a C × HW matrix; channel independence
CI_c = ‖A‖_* − ‖A with row c zeroed‖_*; the score is the mean over images. A channel whose row
is nearly a combination of the others barely changes the nuclear norm and goes first.

Cost: C + 1 nuclear norms per image. We compute them from the C × C Gram matrix G = AAᵀ — the
nuclear norm is Σ√λ(G), and zeroing row c of A zeroes row and column c of G — so every image
needs C + 1 small symmetric eigenvalue problems, all batched into one ``eigvalsh`` call.
"""

from __future__ import annotations

import torch

from neurotomy.scores.base import CRITERIA, DataCriterion


def nuclear_norms_without_each_row(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For a batch of C × P matrices: (‖A‖_*, ‖A with row c zeroed‖_* for every c), shapes N, N×C."""
    gram = a @ a.transpose(1, 2)  # N × C × C
    n, c, _ = gram.shape
    keep = 1.0 - torch.eye(c, dtype=gram.dtype)  # row c of `keep` zeroes row/col c
    masked = gram.unsqueeze(1) * keep.view(1, c, c, 1) * keep.view(1, c, 1, c)  # N × C × C × C
    full = torch.linalg.eigvalsh(gram).clamp(min=0).sqrt().sum(-1)
    without = torch.linalg.eigvalsh(masked).clamp(min=0).sqrt().sum(-1)
    return full, without


@CRITERIA.register(axis="unit")
class CHIP(DataCriterion):
    name = "chip"
    paper = "Sui et al., NeurIPS 2021, CHIP (channel independence via nuclear-norm drop)"

    def update(self, layer, response, grad):
        a = response.relu().double().flatten(2)  # N × C × HW
        full, without = nuclear_norms_without_each_row(a)
        ci = full.unsqueeze(1) - without
        self.accumulate(layer, "sum", ci.sum(0))
        self.accumulate(layer, "count", ci.new_tensor(ci.shape[0]))

    def result(self, layer):
        s = self.state[layer]
        return s["sum"] / s["count"]
