"""Representation similarity between layers (of one model, or the same layers of two models).

* Linear CKA (Kornblith, Norouzi, Lee & Hinton, ICML 2019): for centred X (n×p), Y (n×q),
  CKA = ‖YᵀX‖_F² / (‖XᵀX‖_F ‖YᵀY‖_F). Computed through the n×n Gram matrices, which is the same
  number and works when p, q ≫ n (flattened early layers).
* RBF CKA: HSIC with Gaussian kernels, bandwidth σ = 0.8 × the median pairwise distance.
* GBS, graph-based similarity (Chen et al. 2021): per layer the sample×sample cosine-similarity
  graph (optionally kept to each sample's k nearest neighbours), compared with the CKA formula.
  Invariant to orthogonal transforms and isotropic scaling of either layer.

All three are NaN for a layer that is constant over the samples (CKA is 0/0 there).

Example:
    >>> import torch
    >>> x = torch.randn(50, 8)
    >>> round(linear_cka(x, 3 * x), 6)
    1.0
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.data import Dataset

from neurotomy.distributed import gather_rows, probe_shard
from neurotomy.data.labels import class_count, dataset_targets
from neurotomy.data.subsets import balanced_indices
from neurotomy.dynamics.features import default_layers, stream_features
from neurotomy.errors import DataError


def _centre_gram(gram: torch.Tensor) -> torch.Tensor:
    n = gram.shape[0]
    h = torch.eye(n, dtype=gram.dtype) - 1.0 / n
    return h @ gram @ h


CONSTANT_TOLERANCE = 1e-12
"""A centred Gram matrix whose Frobenius norm is at most this fraction of the Gram's own counts as
zero: its layer is constant over the samples up to rounding (features that vary by less than about a
millionth of their common value, a few float32 steps; centring a constant Gram leaves ~1e-17)."""


def _is_constant(gram: torch.Tensor, centred: torch.Tensor) -> bool:
    return bool(centred.norm() <= CONSTANT_TOLERANCE * gram.norm())


def cka_from_grams(k: torch.Tensor, l: torch.Tensor) -> float:
    """CKA = HSIC(K, L) / √(HSIC(K, K) HSIC(L, L)) with centred Gram matrices.

    NaN when either layer is constant over the samples (a dead or collapsed layer; an all-zero
    one): HSIC(K, K) is then 0 and CKA is 0/0, undefined — not the rounding noise of dividing two
    residues, which could be any number (:data:`CONSTANT_TOLERANCE`). Callers skip NaN (heatmaps
    leave the cell blank). Both Grams must be over the same samples (a one-line :class:`DataError`).

    Example:
        >>> x = torch.randn(20, 4)
        >>> linear_cka(x, torch.full((20, 3), 7.5))
        nan
    """
    if k.shape != l.shape:
        raise DataError(f"the two layers' features are for {k.shape[0]} and {l.shape[0]} samples; CKA compares "
                        "the same samples in both, give features of the same images")
    k, l = k.double(), l.double()
    kc, lc = _centre_gram(k), _centre_gram(l)
    if _is_constant(k, kc) or _is_constant(l, lc):
        return math.nan
    hsic = (kc * lc).sum()
    return float(hsic / torch.sqrt((kc * kc).sum() * (lc * lc).sum()))


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.flatten(1).double(), y.flatten(1).double()
    return cka_from_grams(x @ x.T, y @ y.T)


def rbf_gram(x: torch.Tensor, sigma_scale: float = 0.8) -> torch.Tensor:
    x = x.flatten(1).double()
    d2 = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist").pow(2)  # exact, no mm shortcut
    off_diagonal = ~torch.eye(len(x), dtype=torch.bool)
    median = torch.sqrt(d2[off_diagonal].median()) if len(x) > 1 else torch.tensor(1.0, dtype=torch.float64)
    sigma = sigma_scale * median.clamp(min=1e-12)
    return torch.exp(-d2 / (2 * sigma * sigma))


def rbf_cka(x: torch.Tensor, y: torch.Tensor, sigma_scale: float = 0.8) -> float:
    return cka_from_grams(rbf_gram(x, sigma_scale), rbf_gram(y, sigma_scale))


def similarity_graph(x: torch.Tensor, k: int | None = None) -> torch.Tensor:
    """Cosine-similarity graph of the samples; with ``k``, each row keeps its k strongest edges
    (symmetrised by max), as the kNN graphs of the modularity analysis."""
    z = torch.nn.functional.normalize(x.flatten(1).double(), dim=1)
    graph = z @ z.T
    if k is not None:
        off = graph.clone().fill_diagonal_(-float("inf"))
        values, idx = off.topk(k, dim=1)
        sparse = torch.zeros_like(graph).scatter_(1, idx, values)
        graph = torch.maximum(sparse, sparse.T)
    return graph


def gbs(x: torch.Tensor, y: torch.Tensor, k: int | None = None) -> float:
    """Graph-based similarity: CKA between the two layers' sample-similarity graphs."""
    return cka_from_grams(similarity_graph(x, k), similarity_graph(y, k))


MEASURES = {"linear_cka": linear_cka, "rbf_cka": rbf_cka, "gbs": gbs}


def similarity_matrix(model_a: nn.Module, data: Dataset, model_b: nn.Module | None = None,
                      layers_a: list[str] | None = None, layers_b: list[str] | None = None,
                      measure: str = "linear_cka", samples: int = 500, seed: int = 0) -> dict:
    """Pairwise similarity of ``layers_a`` (model A) with ``layers_b`` (model B, default A itself)
    on one class-balanced batch of ``samples`` images; a pair with a layer that is constant on
    that batch is NaN (:func:`cka_from_grams`)."""
    model_b = model_b or model_a
    layers_a = layers_a or default_layers(model_a)
    layers_b = layers_b or default_layers(model_b)
    targets = dataset_targets(data)
    per_class = max(1, samples // class_count(data, targets))
    indices = balanced_indices(targets, per_class, seed)
    fa = _features(model_a, data, layers_a, indices)
    fb = _features(model_b, data, layers_b, indices)
    fn = MEASURES[measure]
    values = [[fn(fa[a], fb[b]) for b in layers_b] for a in layers_a]
    return {"measure": measure, "layers_a": layers_a, "layers_b": layers_b, "values": values,
            "samples": len(indices)}


def _features(model: nn.Module, data: Dataset, layers: list[str], indices: torch.Tensor) -> dict[str, torch.Tensor]:
    """Features of the whole sample batch. Several processes (accelerate launch) each compute their
    rows and gather the rest: CKA compares every pair of samples, so it needs all of them."""
    shard = probe_shard()
    feats, _ = next(stream_features(model, data, layers, batch_size=len(indices), indices=indices,
                                    shard=shard, split_batches=True))
    return {layer: gather_rows(f, len(indices)) for layer, f in feats.items()}
