"""Modularity of layer graphs: Lu, Yang, Yang, Zhao & Wang, "Understanding the Dynamics of DNNs
Using Graph Modularity", ECCV 2022 (code: yaolu-zjut/dynamic-graphs-construction).

Nodes are samples; each sample is joined to its k most cosine-similar samples in a layer's
(flattened) feature space, the graph symmetrised as A = max(A, Aᵀ) with similarity weights; the
communities are the true classes, and Q = (1/2m) Σ_ij [A_ij − k_i k_j / 2m] δ(c_i, c_j).
Q rises with depth as classes separate; where it stops rising, layers add little.

Protocol (the authors'): class-balanced graphs of ``graph_size`` samples (500), Q averaged over the
graphs; ``graph_size=None`` builds one graph over all samples. The kNN step is one matrix product
per graph and one ``topk`` — no loop over samples.

Example:
    >>> import torch
    >>> feats = torch.tensor([[1., 0], [1, .1], [0, 1], [.1, 1]]); labels = torch.tensor([0, 0, 1, 1])
    >>> round(modularity(knn_graph(feats, k=1), labels), 3)
    0.5
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.utils.data import Dataset

from neurotomy.distributed import gather_records, probe_shard
from neurotomy.data.subsets import balanced_indices
from neurotomy.data.labels import dataset_targets
from neurotomy.dynamics.features import TOKEN_VIEWS, default_layers, split_view, stream_features
from neurotomy.errors import NeurotomyError
from neurotomy.progress import add_task, progress_bar


def knn_graph(features: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Symmetric weighted adjacency: each row joined to its ``k`` most cosine-similar other rows."""
    x = torch.nn.functional.normalize(features.float(), dim=1)
    sim = x @ x.T
    sim.fill_diagonal_(-float("inf"))
    values, idx = sim.topk(k, dim=1)
    adjacency = torch.zeros_like(sim)
    adjacency.scatter_(1, idx, values)
    return torch.maximum(adjacency, adjacency.T)


def modularity(adjacency: torch.Tensor, labels: torch.Tensor) -> float:
    """Newman's weighted modularity of the partition given by ``labels``."""
    a = adjacency.double()
    two_m = a.sum()
    if two_m <= 0:
        return 0.0
    onehot = torch.nn.functional.one_hot(labels.long()).double()
    inside = torch.trace(onehot.T @ a @ onehot)
    degree_per_class = onehot.T @ a.sum(1)
    return float((inside - (degree_per_class ** 2).sum() / two_m) / two_m)


@dataclass
class ModularityCurve:
    """Q per layer, with how it was measured; finds redundant blocks and plots itself."""

    layers: list[str]
    q: list[float]
    k: int
    n_samples: int
    graph_size: int | None
    seconds: float
    q_std: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def delta_q(self) -> list[float]:
        """Q after minus Q before each layer (the first layer's change is measured from 0)."""
        return [self.q[0]] + [b - a for a, b in zip(self.q, self.q[1:])]

    def redundant(self, candidates: list[str], threshold: float = 0.25, count: int | None = None) -> list[str]:
        """Blocks that add little class separation: ΔQ below ``threshold`` × the curve's *mean*
        per-layer rise ((Q_last − Q_first) / (layers − 1)), listed tail first — the documented rule.

        Scaling by the mean rise rather than the whole range keeps the rule meaningful for deep
        nets: ResNet-56's 27 blocks share one rise, so each block's ΔQ is small against the range
        (a 5 %-of-range rule flagged 19 of its 24 removable blocks), while a block that adds a
        quarter of an average block's separation or less is redundant at any depth.
        With ``count``, the ``count`` candidates of smallest ΔQ instead (ties tail first).
        """
        deltas = dict(zip(self.layers, self.delta_q()))
        mean_rise = (self.q[-1] - self.q[0]) / max(1, len(self.q) - 1)
        # a transformer's curve names views of blocks ("blocks.3:cls"): the block is the candidate
        deltas = {split_view(layer)[0] if split_view(layer)[1] in TOKEN_VIEWS else layer: d
                  for layer, d in deltas.items()}
        pool = [block for block in reversed(list(deltas)) if block in candidates]
        if count is not None:
            return sorted(pool, key=lambda block: deltas[block])[:count]
        return [block for block in pool if deltas[block] < threshold * mean_rise]


def modularity_curve(model: nn.Module, data: Dataset, layers: list[str] | None = None, k: int = 3,
                     per_class: int = 500, graph_size: int | None = 500, seed: int = 0,
                     quiet: bool = False) -> ModularityCurve:
    """Q of every layer on a class-balanced probe set of ``per_class`` samples per class.

    Memory is bounded by one graph's features: graphs are built batch by batch as they stream.
    """
    layers = layers or default_layers(model)
    indices = balanced_indices(dataset_targets(data), per_class, seed)
    batch = graph_size or len(indices)
    if batch < k + 1:
        raise NeurotomyError(f"a graph of {batch} samples cannot have {k} neighbours per sample")
    start = time.perf_counter()
    # Several processes (accelerate launch): each builds every N-th graph; the per-graph Q values are
    # gathered and put back in graph order, so mean and std are exactly those of one process.
    shard = probe_shard()
    graphs = range((len(indices) + batch - 1) // batch)
    mine = graphs if shard is None else graphs[shard[0]::shard[1]]
    records = []
    with progress_bar(quiet) as bar:
        task = add_task(bar, "modularity", len(mine))
        for graph, (feats, labels) in zip(mine, stream_features(model, data, layers, batch_size=batch,
                                                                indices=indices, shard=shard)):
            if len(labels) > k:
                records.append((graph, [modularity(knn_graph(feats[layer], k), labels) for layer in layers]))
            bar.advance(task)
    per_graph: dict[str, list[float]] = {layer: [] for layer in layers}
    for _, values in sorted(gather_records(records)):
        for layer, q in zip(layers, values):
            per_graph[layer].append(q)
    q = [float(torch.tensor(v).mean()) for v in per_graph.values()]
    q_std = [float(torch.tensor(v).std()) if len(v) > 1 else 0.0 for v in per_graph.values()]
    return ModularityCurve(list(layers), q, k, len(indices), graph_size, time.perf_counter() - start, q_std)
