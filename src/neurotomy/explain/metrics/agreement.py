"""Same-reasons agreement: do two models (say, an original and its pruned copy) point at the same
pixels for the same inputs and targets? Spearman rank correlation of their maps and the overlap
(IoU) of their top-k % pixels, overall and per class (docs/methods.md §D, ours).

Example:
    >>> import torch
    >>> maps = torch.rand(4, 5, 5)
    >>> record = agreement(maps, maps, targets=[0, 1, 1, 0], top=0.2)
    >>> record["spearman"], record["iou"], sorted(record["per_class"])
    (1.0, 1.0, [0, 1])
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import torch
from torch import nn

from neurotomy.errors import NeurotomyWarning
from neurotomy.explain.metrics.checks import (Explainer, MetricError, Targets, check_inputs, check_targets,
                                              explain, resolve_targets)
from neurotomy.explain.metrics.similarity import spearman, top_iou
from neurotomy.models.anatomy import eval_mode


COMPARISON_DEFAULTS: dict[str, dict] = {"rise": {"centered": True}}
"""Options a method takes by default when two models' maps are compared: RISE's own maps share the
masks' coverage pattern whatever the model (see :func:`~neurotomy.explain.perturbation.rise_maps`)."""


def comparison_options(method: str, options: Mapping[str, dict] | None = None) -> dict:
    """``method``'s options for comparing two models: the given ones over :data:`COMPARISON_DEFAULTS`.

    >>> comparison_options("rise"), comparison_options("rise", {"rise": {"centered": False}})
    ({'centered': True}, {'centered': False})
    """
    return {**COMPARISON_DEFAULTS.get(method, {}), **dict((options or {}).get(method, {}))}


def agreement(maps_a: torch.Tensor, maps_b: torch.Tensor, targets: Targets, top: float = 0.1) -> dict:
    """Compare two batches of maps (``B × H × W``) of the same inputs and ``targets``.

    Returns ``{"spearman", "iou", "top", "n", "constant_maps", "per_class": {class: {"spearman", "iou",
    "n"}}}``; values are means over images. Pixels rank by the map values as given (pass ``.abs()`` to
    rank by magnitude). ``constant_maps`` counts the flat maps of each batch ``[a, b]``: two flat maps
    agree perfectly by definition, which says nothing about reasons (a model whose output ignores its
    input explains nothing), so any flat map is also a :class:`~neurotomy.errors.NeurotomyWarning`.
    """
    if not isinstance(maps_a, torch.Tensor) or not isinstance(maps_b, torch.Tensor) \
            or maps_a.shape != maps_b.shape or maps_a.dim() != 3:
        shapes = [tuple(m.shape) if isinstance(m, torch.Tensor) else type(m).__name__ for m in (maps_a, maps_b)]
        raise MetricError(f"maps of shapes {shapes[0]} and {shapes[1]} cannot be compared; give two batches "
                          "B×H×W of the same inputs")
    targets = check_targets(targets, maps_a.shape[0])
    constant = [int((m.flatten(1).amax(1) == m.flatten(1).amin(1)).sum()) for m in (maps_a, maps_b)]
    if any(constant):
        warnings.warn(f"{constant[0]} and {constant[1]} of the {len(targets)} maps of the two models are constant "
                      "(no pixel ranks above another): their agreement is no evidence of shared reasons — check "
                      "that both models' outputs depend on the input", NeurotomyWarning, stacklevel=2)
    rho = spearman(maps_a, maps_b)
    iou = top_iou(maps_a, maps_b, top)
    per_class = {}
    for cls in sorted(set(targets.tolist())):
        chosen = targets == cls
        per_class[int(cls)] = {"spearman": float(rho[chosen].mean()), "iou": float(iou[chosen].mean()),
                               "n": int(chosen.sum())}
    return {"spearman": float(rho.mean()), "iou": float(iou.mean()), "top": float(top),
            "n": int(len(targets)), "constant_maps": constant, "per_class": per_class}


def model_agreement(model_a: nn.Module, model_b: nn.Module, inputs: torch.Tensor, explainer: Explainer,
                    targets: Targets = None, top: float = 0.1) -> dict:
    """Explain the same ``inputs`` and ``targets`` with both models, then :func:`agreement`.

    ``targets=None`` uses ``model_a``'s predictions for both (the original's decision is the one whose
    reasons we check); the record also gives how often the two models predict the same class.
    """
    check_inputs(inputs)
    with eval_mode(model_a), eval_mode(model_b):
        targets = resolve_targets(model_a, inputs, targets)
        with torch.no_grad():
            same = (model_a(inputs).argmax(1) == model_b(inputs).argmax(1)).float().mean()
        maps_a = explain(explainer, model_a, inputs, targets)
        maps_b = explain(explainer, model_b, inputs, targets)
    return {**agreement(maps_a, maps_b, targets, top), "prediction_agreement": float(same)}
