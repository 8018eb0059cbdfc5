"""Class feature subsets of the final layer (Badola et al., arXiv 2112.07719).

The penultimate layer of a CNN classifier is a globally pooled feature vector f ∈ ℝ^D; the final
Linear turns it into logits y = W f + b. Badola et al. observe that each class's decision rests on a
few of the D features. Here:

1. :func:`penultimate_features` reads f (the final Linear's input), the logits and the labels.
2. A class-wise ranking of the D features, as a :class:`UnitScores` over the classifier layer with a
   class axis (C × D): :func:`frequency_scores` is the paper's rule (§3: normalise each image's f to
   sum 1, keep its top-k entries, count per class how often each feature is among them);
   ``contribution`` (mean of W_cj·f_j over the images of c) and ``weight`` (W_cj) are others, and
   any class-wise UnitScores of shape C × D can be used instead.
3. :func:`smallest_class_subsets`: per class c, the smallest k such that class c's logit computed
   from its k best-ranked features only (every other logit unchanged) keeps **both the precision
   and the recall of class c at ≥ ``retention`` × the full layer's** on the given data. With
   ``retention=1.0`` the subset must do at least as well as the full layer on both.

Example:
    >>> import torch
    >>> from torch import nn
    >>> head = nn.Linear(3, 2); _ = head.weight.data.copy_(torch.tensor([[4., 0., 0.], [0., 4., 0.]]))
    >>> _ = head.bias.data.zero_()
    >>> f = torch.rand(200, 3, generator=torch.Generator().manual_seed(0)); y = head(f).argmax(1)
    >>> result = smallest_class_subsets(f, y, head, class_feature_scores(f, y, head, "weight"))
    >>> result.sizes, result.width
    ([1, 1], 3)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import Dataset

from neurotomy.data.batches import iterate_batches, num_batches
from neurotomy.device import model_device, to_device
from neurotomy.models.anatomy import classifier_layer
from neurotomy.errors import NeurotomyError
from neurotomy.probe import Probe
from neurotomy.progress import add_task, progress_bar
from neurotomy.registry import Registry
from neurotomy.scores.unit_scores import UnitScores

FEATURE_CRITERIA: Registry = Registry("feature criterion")
"""Rankings of the penultimate features by name: ``(features, targets, weight, k) -> C × D``
(``weight`` the classifier's C × D weight, detached, float64)."""


@dataclass
class PenultimateFeatures:
    """The final layer's inputs ``features`` (N × D), the model's ``logits`` and ``targets``."""

    features: torch.Tensor
    logits: torch.Tensor
    targets: torch.Tensor
    layer: str


@torch.no_grad()
def penultimate_features(model: nn.Module, data: Dataset, batch_size: int = 256,
                         max_images: int | None = None, quiet: bool = False) -> PenultimateFeatures:
    """Run ``data`` through ``model`` once, keeping the classifier's input vectors."""
    name, _ = classifier_layer(model)
    seen: list[torch.Tensor] = []
    logits, targets = [], []
    model.eval()
    with progress_bar(quiet) as bar, Probe(model, [name], on_module=lambda n, m, inputs, out: seen.append(
            inputs[0].detach().flatten(1).cpu())):
        task = add_task(bar, "features", num_batches(data, batch_size, max_images))
        for images, y in iterate_batches(data, batch_size, max_images=max_images):
            logits.append(model(to_device(model_device(model), images)).cpu())
            targets.append(y)
            bar.advance(task)
    return PenultimateFeatures(torch.cat(seen), torch.cat(logits), torch.cat(targets), name)


def frequency_scores(features: torch.Tensor, targets: torch.Tensor, k: int, num_classes: int) -> torch.Tensor:
    """Badola et al.'s frequency rule: C × D, the fraction of class-c images whose normalised
    feature vector has feature j among its top ``k`` entries.

    Example:
        >>> f = torch.tensor([[3., 1., 0.], [2., 0., 1.], [0., 1., 5.]])
        >>> frequency_scores(f, torch.tensor([0, 0, 1]), k=1, num_classes=2).tolist()
        [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    """
    if not 1 <= k <= features.shape[1]:
        raise NeurotomyError(f"k={k} must be between 1 and the feature width {features.shape[1]}")
    # the paper normalises each vector to sum 1; pooled post-ReLU features are non-negative, and the
    # ranking inside one vector is unchanged by the normalisation, so it matters only for ties at 0
    normalised = features / features.sum(1, keepdim=True).clamp(min=1e-12)
    top = torch.argsort(-normalised, dim=1, stable=True)[:, :k]
    hits = torch.zeros_like(normalised, dtype=torch.float64).scatter_(1, top, 1.0)
    counts = torch.zeros(num_classes, features.shape[1], dtype=torch.float64).index_add_(0, targets, hits)
    per_class = torch.bincount(targets, minlength=num_classes).double().clamp(min=1)
    return counts / per_class[:, None]


@FEATURE_CRITERIA.register("frequency")
def top_k_frequency(features: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor, k: int) -> torch.Tensor:
    """Badola et al.'s rule (:func:`frequency_scores`), ``k`` capped at the feature width."""
    return frequency_scores(features, targets, min(k, features.shape[1]), weight.shape[0])


@FEATURE_CRITERIA.register("contribution")
def mean_contribution(features: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor, k: int) -> torch.Tensor:
    """Mean W_cj·f_j over the images of class c: how much feature j adds to the class's own logit."""
    classes = weight.shape[0]
    sums = torch.zeros(classes, features.shape[1], dtype=torch.float64).index_add_(0, targets, features.double())
    means = sums / torch.bincount(targets, minlength=classes).double().clamp(min=1)[:, None]
    return means * weight


@FEATURE_CRITERIA.register("weight")
def classifier_weight(features: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor, k: int) -> torch.Tensor:
    """W_cj itself."""
    return weight.clone()


def class_feature_scores(features: torch.Tensor, targets: torch.Tensor, head: nn.Linear,
                         criterion: str = "frequency", k: int = 5, layer: str = "fc") -> UnitScores:
    """Class-wise scores of the D penultimate features (C × D) as a :class:`UnitScores`.

    ``criterion`` is one of :data:`FEATURE_CRITERIA`: ``frequency`` (Badola et al., top-``k``
    counts), ``contribution`` (mean W_cj·f_j over the images of c: how much feature j adds to the
    class's own logit) or ``weight`` (W_cj).
    """
    rank_features = FEATURE_CRITERIA.get(criterion)
    scores = rank_features(features, targets, head.weight.detach().double(), k)
    return UnitScores({layer: scores}, criterion, "class", {"k": k} if criterion == "frequency" else {})


def ranking(scores: torch.Tensor) -> torch.Tensor:
    """Per class (row), feature indices from highest to lowest score; ties keep index order."""
    return torch.argsort(-scores, dim=-1, stable=True)


def top_k_mask(scores: torch.Tensor, k: int | list[int]) -> torch.Tensor:
    """Boolean C × D mask of each class's ``k`` best features (one k for all, or one per class)."""
    order = ranking(scores)
    sizes = [k] * scores.shape[0] if isinstance(k, int) else list(k)
    mask = torch.zeros(scores.shape, dtype=torch.bool)
    for c, size in enumerate(sizes):
        mask[c, order[c, :size]] = True
    return mask


def _precision_recall(is_c: torch.Tensor, predicted_c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Precision and recall of class c for each column of ``predicted_c`` (N × K booleans)."""
    tp = (predicted_c & is_c[:, None]).sum(0).double()
    precision = tp / predicted_c.sum(0).clamp(min=1)
    recall = tp / is_c.sum().clamp(min=1)
    return precision, recall


@dataclass
class ClassSubsets:
    """Smallest subset per class: ``sizes[c]`` features ``subsets[c]`` (best first) of ``width``."""

    sizes: list[int]
    subsets: list[list[int]]
    width: int
    retention: float
    criterion: str
    precision_full: list[float]
    recall_full: list[float]
    precision_subset: list[float]
    recall_subset: list[float]

    def mask(self) -> torch.Tensor:
        mask = torch.zeros(len(self.sizes), self.width, dtype=torch.bool)
        for c, subset in enumerate(self.subsets):
            mask[c, subset] = True
        return mask

    def records(self) -> list[dict]:
        return [{"class": c, "size": s, "width": self.width, "precision_full": self.precision_full[c],
                 "recall_full": self.recall_full[c], "precision_subset": self.precision_subset[c],
                 "recall_subset": self.recall_subset[c]} for c, s in enumerate(self.sizes)]


@torch.no_grad()
def smallest_class_subsets(features: torch.Tensor, targets: torch.Tensor, head: nn.Linear,
                           scores: UnitScores | torch.Tensor, retention: float = 0.99) -> ClassSubsets:
    """Per class, the fewest best-ranked features that keep its precision and recall (see module doc).

    The other classes' logits stay those of the full layer, so each class is judged on its own.
    All prefix sizes are evaluated at once: class c's logit from its top-k features is the k-th
    cumulative sum of the ranked contributions W_cj·f_j.
    """
    if not 0 < retention <= 1:
        raise NeurotomyError(f"retention {retention} must be in (0, 1]; e.g. 0.99 keeps 99 % of each class's "
                             "precision and recall")
    table = scores if isinstance(scores, torch.Tensor) else _single_layer(scores)
    w, b = head.weight.detach().double(), head.bias.detach().double() if head.bias is not None else None
    f = features.double()
    classes, width = w.shape
    if table.shape != (classes, width):
        raise NeurotomyError(f"scores have shape {tuple(table.shape)} but the classifier is {classes} × {width}; "
                             "score the same model's final layer")
    full = f @ w.T + (b if b is not None else 0)
    order = ranking(table)
    out = {key: [] for key in ("sizes", "subsets", "pf", "rf", "ps", "rs")}
    for c in range(classes):
        others = full.clone()
        others[:, c] = -torch.inf
        rival = others.amax(1)
        is_c = targets == c
        p_full, r_full = _precision_recall(is_c, (full.argmax(1) == c)[:, None])
        prefix = torch.cumsum(f[:, order[c]] * w[c, order[c]], dim=1) + (b[c] if b is not None else 0)
        p, r = _precision_recall(is_c, prefix > rival[:, None])  # column k-1: top-k features
        # full-layer argmax ties go to the lower index; the prefix rule must match it at k = D
        ok = (p >= retention * p_full - 1e-12) & (r >= retention * r_full - 1e-12)
        ok[-1] = True  # all D features are the full layer by construction
        size = int(torch.nonzero(ok)[0]) + 1
        out["sizes"].append(size)
        out["subsets"].append(order[c, :size].tolist())
        out["pf"].append(float(p_full[0])); out["rf"].append(float(r_full[0]))
        out["ps"].append(float(p[size - 1])); out["rs"].append(float(r[size - 1]))
    name = scores.criterion if isinstance(scores, UnitScores) else "given"
    return ClassSubsets(out["sizes"], out["subsets"], width, retention, name, out["pf"], out["rf"],
                        out["ps"], out["rs"])


def _single_layer(scores: UnitScores) -> torch.Tensor:
    if scores.axis != "class" or len(scores) != 1:
        raise NeurotomyError("feature subsets need class-wise scores of one layer (classes × features); "
                             "use class_feature_scores")
    return next(iter(scores.values()))
