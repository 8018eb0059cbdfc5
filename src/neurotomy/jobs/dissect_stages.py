"""The measuring stages of :func:`neurotomy.jobs.dissect.dissect`, one function each. Every
function runs the library on the models and data and returns a plain record (dicts, lists,
numbers); the matching section of :mod:`neurotomy.report` only renders that record.

- :func:`layer_records` → :func:`neurotomy.report.sections.layers_section`
- :func:`score_records` → :func:`neurotomy.report.sections.scores_section`
- :func:`dynamics_records` → :func:`neurotomy.report.sections.dynamics_section`
- :func:`subset_records` → :func:`neurotomy.report.class_subsets_section.class_subsets_section`
- :func:`reason_records` → :func:`neurotomy.report.explanations_section.explanations_section`

Example:
    >>> from neurotomy.loading import load_model
    >>> lenet = load_model("zoo:lenet5-digits")
    >>> layers = layer_records(lenet, lenet, (1, 8, 8))  # 8 × 8 digits
    >>> layers["original"]["total_params"] == layers["pruned"]["total_params"] == sum(
    ...     p.numel() for p in lenet.parameters())
    True
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from neurotomy.data.batches import iterate_batches
from neurotomy.device import model_device, to_device
from neurotomy.dynamics.modularity import modularity_curve
from neurotomy.dynamics.similarity import similarity_matrix
from neurotomy.explain import METHODS as EXPLAIN_METHODS
from neurotomy.explain import attribute
from neurotomy.explain.figure import attribution_grid
from neurotomy.explain.rating import compare_reasons
from neurotomy.jobs.budget import DissectBudget
from neurotomy.models.anatomy import classifier_layer
from neurotomy.models.summary import layer_table
from neurotomy.scores import get_criterion
from neurotomy.scores.class_subsets import class_feature_scores, penultimate_features, smallest_class_subsets
from neurotomy.scores.unit_scores import UnitScores
from neurotomy.surgery.heads import SubspaceHead, head_accuracy

FREQUENCY_K = 5  # Badola et al.'s k for ResNet-20
RETENTION = 0.99  # a subset must keep ≥ 99 % of its class's precision and recall (on the training images)
REASON_METHODS = ("gradcam", "gradient", "pathway")  # Selvaraju et al. 2017; Simonyan et al. 2014; Khakzar et al. 2021
TOP = 0.10  # top-k % pixels for the IoU
SHOWN = 6  # images drawn side by side


def layer_records(original: nn.Module, pruned: nn.Module, input_shape: tuple[int, ...]) -> dict:
    """The layer table (every leaf layer: output shape, parameters, MACs) of both models."""
    return {"original": layer_table(original, input_shape).to_dict(),
            "pruned": layer_table(pruned, input_shape).to_dict()}


def score_records(scores: dict[str, UnitScores], pruning_criterion: str) -> dict:
    """Each criterion's paper, what it needs and its cost; the Spearman rank agreement of every
    pair (mean over layers); and each other criterion's per-layer agreement with the pruning one."""
    names = list(scores)
    agreement = [[1.0 if a == b else scores[a].rank_correlation(scores[b])["mean"] for b in names] for a in names]
    criteria = []
    for name in names:
        crit = get_criterion(name)
        criteria.append({"name": name, "paper": crit.paper, "needs": "data" if crit.needs_data else "weights",
                         "seconds": scores[name].info.get("seconds")})
    layers = list(scores[pruning_criterion])
    others = [n for n in names if n != pruning_criterion]
    series = {o: [scores[pruning_criterion].rank_correlation(scores[o]).get(layer) for layer in layers]
              for o in others}
    return {"pruning_criterion": pruning_criterion, "criteria": criteria, "agreement": agreement,
            "per_layer": {"layers": layers, "spearman": series}}


def dynamics_records(model: nn.Module, pruned: nn.Module, test: Dataset, budget: DissectBudget, seed: int,
                     quiet: bool) -> dict:
    """Modularity curves of both models on the same class-balanced probe set (Lu et al., ECCV 2022),
    and linear CKA between their layers (Kornblith et al., ICML 2019)."""
    graph = min(500, budget.modularity_per_class * len(test.classes))  # the authors' graphs of 500
    curves = [modularity_curve(m, test, per_class=budget.modularity_per_class, graph_size=graph, seed=seed,
                               quiet=quiet) for m in (model, pruned)]
    cka = similarity_matrix(model, test, pruned, samples=budget.cka_samples, seed=seed)
    return {"original": curves[0].to_dict(), "pruned": curves[1].to_dict(), "cka": cka}


def _class_subsets(model: nn.Module, train: Dataset, test: Dataset, images: int | None, quiet: bool) -> dict:
    name, head = classifier_layer(model)
    fit = penultimate_features(model, train, max_images=images, quiet=quiet)
    scores = class_feature_scores(fit.features, fit.targets, head, "frequency", k=FREQUENCY_K, layer=name)
    subsets = smallest_class_subsets(fit.features, fit.targets, head, scores, retention=RETENTION)
    held_out = penultimate_features(model, test, quiet=quiet)
    sparse = SubspaceHead.from_linear(head, subsets.mask())
    return {"sizes": subsets.sizes, "width": subsets.width, "recall_subset": subsets.recall_subset,
            "acc_full": head_accuracy(head, held_out.features, held_out.targets),
            "acc_subsets": head_accuracy(sparse, held_out.features, held_out.targets),
            "head_macs_full": head.in_features * head.out_features, "head_macs_subsets": sparse.macs}


def subset_records(model: nn.Module, pruned: nn.Module, train: Dataset, test: Dataset,
                   images: int | None = None, quiet: bool = False) -> dict:
    """Class feature subsets of the final layer (Badola et al., arXiv 2112.07719) of both models:
    per class, the fewest penultimate features (frequency rule, k = :data:`FREQUENCY_K`, §3) whose
    logit alone keeps :data:`RETENTION` of the class's precision and recall on ``train``; and the
    ``test`` accuracy of the decomposed head (:mod:`neurotomy.surgery.heads`, no fine-tune)."""
    models = {"original": _class_subsets(model, train, test, images, quiet),
              "pruned": _class_subsets(pruned, train, test, images, quiet)}
    classes = [str(c) for c in getattr(test, "classes", range(len(models["original"]["sizes"])))]
    return {"k": FREQUENCY_K, "retention": RETENTION, "classes": classes, **models}


def reason_records(model: nn.Module, pruned: nn.Module, data: Dataset, methods: tuple[str, ...] = REASON_METHODS,
                   seed: int = 0, quiet: bool = False) -> tuple[dict, object]:
    """Explain ``data`` (a small class-balanced set) with both models and compare the maps: the
    record of :func:`neurotomy.explain.rating.compare_reasons` (Spearman of the maps by magnitude,
    IoU of their top :data:`TOP` pixels, overall and per class) with each method's paper, and the
    figure (:func:`neurotomy.explain.figure.attribution_grid`) of the first :data:`SHOWN` images:
    input, then each method's map from both models. Returns ``(record, figure)``."""
    images, labels = next(iterate_batches(data, len(data)))
    agreement = compare_reasons(model, pruned, images, methods=methods, top=TOP, seed=seed, quiet=quiet)
    classes = [str(c) for c in getattr(data, "classes", [])]
    shown = images[:SHOWN]
    with torch.no_grad():
        targets = model(to_device(model_device(model), shown)).argmax(1).cpu()
    maps = {f"{m}, {who}": attribute(net, shown, targets, method=m).detach().abs()
            for m in methods for who, net in (("original", model), ("pruned", pruned))}
    record = {"agreement": agreement, "top": TOP, "primary": methods[0], "classes": classes,
              "papers": {m: EXPLAIN_METHODS[m].paper for m in agreement["methods"]},
              "targets": targets.tolist(), "labels": labels[:SHOWN].tolist()}
    names = [classes[int(t)] if int(t) < len(classes) else str(t) for t in targets]
    figure = attribution_grid(shown, maps, signed={k: False for k in maps}, row_titles=names)
    return record, figure


__all__ = ["FREQUENCY_K", "REASON_METHODS", "RETENTION", "SHOWN", "TOP", "dynamics_records", "layer_records",
           "reason_records", "score_records", "subset_records"]
