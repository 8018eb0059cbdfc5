"""Feature entropy of a unit: Zhao & Zhang, "Rethinking the Pruning Criteria for Convolutional
Neural Network" / "feature entropy", ICLR 2022 (code: zy452608532/feature-entropy).

For one channel and one class: each of the class's images gives the channel's H×W feature map; a
weighted graph over spatial positions joins neighbouring positions with weight min(F_p, F_q) (the
map's strength on the edge). Edges are added in descending weight up to ``density`` (80 %) of all
edges, and the *birth step* of the first loop is recorded — the first edge whose endpoints are
already connected (0- to 1-dimensional persistent homology, found with union-find). The unit's
entropy for the class is the Shannon entropy of the distribution of non-zero birth steps over the
class's images: low entropy = the unit responds with a stable structure = class-selective.

Simplifications against the reference code, stated: 4-neighbour grid graph instead of a dense
position-affinity graph (keeps it O(HW log HW) per map); birth steps binned into 10 bins of the
filtration; images where no loop appears before the density cap count as birth 0 (excluded).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from neurotomy.data.labels import dataset_targets
from neurotomy.data.subsets import IndexedSubset, balanced_indices
from neurotomy.scores.base import CRITERIA, DataCriterion


def grid_edges(h: int, w: int) -> torch.Tensor:
    """(E, 2) index pairs of 4-neighbour positions of an h×w grid."""
    idx = torch.arange(h * w).view(h, w)
    right = torch.stack([idx[:, :-1].flatten(), idx[:, 1:].flatten()], 1)
    down = torch.stack([idx[:-1, :].flatten(), idx[1:, :].flatten()], 1)
    return torch.cat([right, down])


def first_loop_birth(feature_map: torch.Tensor, density: float = 0.8) -> float:
    """Fraction of the filtration (0, 1] at which the first loop appears; 0 if none appears.

    Adding edges by descending weight (Kruskal's order), the first loop is closed by the first
    edge that the maximum spanning forest leaves out; scipy finds that forest in C.
    """
    import numpy as np
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import minimum_spanning_tree

    h, w = feature_map.shape
    edges = grid_edges(h, w).numpy()
    values = feature_map.flatten().double().numpy()
    weights = np.minimum(values[edges[:, 0]], values[edges[:, 1]])
    order = np.argsort(-weights, kind="stable")
    limit = max(1, int(density * len(order)))
    live = order[:limit][weights[order[:limit]] > 0]  # dead positions carry no structure
    if len(live) < 2:
        return 0.0
    # distinct positive costs following the order, so the forest is exactly Kruskal's
    cost = np.empty(len(edges))
    cost[live] = np.arange(1, len(live) + 1)
    graph = coo_matrix((cost[live], (edges[live, 0], edges[live, 1])), shape=(h * w, h * w)).tocsr()
    forest = minimum_spanning_tree(graph).tocoo()
    in_forest = set(map(int, forest.data))
    for step in range(1, len(live) + 1):
        if step not in in_forest:
            return step / limit
    return 0.0


def birth_entropy(births: list[float], bins: int = 10) -> float:
    """Shannon entropy (nats) of the non-zero birth steps, histogrammed into ``bins`` bins."""
    nonzero = torch.tensor([b for b in births if b > 0], dtype=torch.float64)
    if len(nonzero) == 0:
        return 0.0
    counts = torch.histc(nonzero, bins=bins, min=0.0, max=1.0)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum())


@CRITERIA.register(axis="unit")
class FeatureEntropy(DataCriterion):
    """Per-class feature entropy of each channel; as a pruning score, the class-mean entropy is
    negated so that *high*-entropy (unstable) channels are pruned first."""

    name = "feature_entropy"
    paper = "Zhao & Zhang, ICLR 2022, feature entropy (persistent-homology birth of the first loop)"
    default_images = 64

    def __init__(self, bins: int = 10, density: float = 0.8) -> None:
        self.bins, self.density = bins, density

    def update(self, layer, response, grad):
        maps = response.relu()
        births = [[first_loop_birth(maps[n, c], self.density) for c in range(maps.shape[1])]
                  for n in range(maps.shape[0])]
        self.state[layer].setdefault("births", []).extend(births)

    def result(self, layer):
        births = torch.tensor(self.state[layer]["births"], dtype=torch.float64)  # N × C
        entropy = [birth_entropy(births[:, c].tolist(), self.bins) for c in range(births.shape[1])]
        return -torch.tensor(entropy, dtype=torch.float64)


def class_feature_entropy(model: nn.Module, data: Dataset, per_class: int = 20, seed: int = 0,
                          quiet: bool = True) -> dict[str, torch.Tensor]:
    """Per conv layer, a (classes × channels) tensor of feature entropies."""

    targets = dataset_targets(data)
    out: dict[str, list[torch.Tensor]] = {}
    for c in targets.unique().tolist():
        idx = balanced_indices(targets, per_class, seed)
        idx = idx[targets[idx] == c]
        scores = FeatureEntropy()(model, IndexedSubset(data, idx), max_images=len(idx), seed=seed, quiet=quiet)
        for layer, s in scores.items():
            out.setdefault(layer, []).append(-s)
    return {layer: torch.stack(v) for layer, v in out.items()}


__all__ = ["FeatureEntropy", "birth_entropy", "class_feature_entropy", "first_loop_birth"]
