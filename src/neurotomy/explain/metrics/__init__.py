"""Evaluating explanations: are the maps faithful to the model, and do two models decide for the
same reasons? (docs/methods.md §D)

Every metric takes maps as tensors (``B × H × W``, one value per pixel, ranked as given) or an
*explainer* — any callable ``explainer(model, inputs, targets) -> maps`` — so it works with
``neurotomy.explain.attribute`` and with any other attribution code.

- :func:`deletion_curve`, :func:`insertion_curve` — RISE causal metrics (Petsiuk et al. 2018)
- :func:`morf_lerf` — pixel perturbation, |Δp|/p (Khakzar et al. 2021; Srinivas & Fleuret 2019)
- :func:`cascading_randomization`, :func:`independent_randomization` — sanity checks
  (Adebayo et al. 2018), with :func:`spearman` and :func:`ssim`
- :func:`pixel_ranks`, :func:`remove_top_pixels` — the pure steps of remove-and-retrain (Hooker
  et al. 2019); the retraining loop is the job :func:`neurotomy.jobs.roar.roar`
- :func:`agreement`, :func:`model_agreement` — same-reasons check between two models (ours)
- :func:`sobel_map`, :func:`random_map` — model-blind control maps

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    >>> x = torch.rand(3, 1, 4, 4)
    >>> 0.0 <= deletion_curve(model, x, sobel_map(x), steps=4).mean_auc <= 1.0
    True
"""

from neurotomy.explain.metrics.agreement import COMPARISON_DEFAULTS, agreement, comparison_options, model_agreement
from neurotomy.explain.metrics.checks import Explainer, MetricError
from neurotomy.explain.metrics.controls import random_map, sobel_map
from neurotomy.explain.metrics.deletion import PerturbationCurve, deletion_curve, gaussian_blur, insertion_curve
from neurotomy.explain.metrics.perturbation import morf_lerf, relative_probability_change
from neurotomy.explain.metrics.roar import ROAR_TARGETS, control_explainers, pixel_ranks, remove_top_pixels
from neurotomy.explain.metrics.sanity import (cascading_randomization, execution_blocks,
                                              independent_randomization, map_similarity, randomize_modules)
from neurotomy.explain.metrics.similarity import spearman, ssim, top_iou

__all__ = [
    "Explainer", "MetricError", "PerturbationCurve",
    "deletion_curve", "insertion_curve", "gaussian_blur",
    "morf_lerf", "relative_probability_change",
    "cascading_randomization", "independent_randomization", "execution_blocks",
    "randomize_modules", "map_similarity", "spearman", "ssim", "top_iou",
    "ROAR_TARGETS", "control_explainers", "pixel_ranks", "remove_top_pixels",
    "COMPARISON_DEFAULTS", "agreement", "comparison_options", "model_agreement",
    "sobel_map", "random_map",
]
