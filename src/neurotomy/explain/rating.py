"""Rating methods with the metrics, and comparing two models' reasons — the composition behind
``neurotomy rate-explanations`` and ``neurotomy compare-reasons``.

Each metric is summarised by one number per method (the full curves stay in ``details``):

====================  ===========================================================  =========
metric                number                                                       better
====================  ===========================================================  =========
deletion              mean deletion AUC (RISE)                                     lower
insertion             mean insertion AUC (RISE)                                    higher
morf                  mean over k of |Δp|/p removing the most relevant k %          higher
lerf                  mean over k of |Δp|/p removing the least relevant k %         lower
sanity_cascading      mean Spearman(|map|) to the trained maps over the cascade     lower
sanity_independent    mean Spearman(|map|) over single-block randomisations         lower
====================  ===========================================================  =========

Each metric registers itself in :data:`METRICS`, tagged ``better="lower"`` or ``"higher"``.
ROAR retrains models, so it is not a per-batch metric: see :func:`neurotomy.jobs.roar.roar`.

Example:
    >>> import torch
    >>> from neurotomy.models import build_model
    >>> model = build_model("lenet5", 1, 10, 28)
    >>> rated = rate_explanations(model, torch.randn(4, 1, 28, 28), methods=["gradient", "sobel"],
    ...                           metrics=["deletion", "lerf"], quiet=True)
    >>> sorted(rated["scores"]["gradient"])
    ['deletion', 'lerf']
"""

from __future__ import annotations

import time
import warnings
from typing import Mapping, Sequence

import torch
from torch import nn

from neurotomy.errors import NeurotomyWarning
from neurotomy.explain import METHODS, ExplainError, attribute
from neurotomy.explain.common import Target, resolve_targets
from neurotomy.explain.metrics import (Explainer, cascading_randomization, deletion_curve, independent_randomization,
                                       comparison_options, insertion_curve, model_agreement, morf_lerf)
from neurotomy.models.anatomy import eval_mode
from neurotomy.progress import add_task, progress_bar
from neurotomy.registry import Registry

METRICS: Registry = Registry("metric", error=ExplainError,
                             hint="(ROAR runs in benchmarks/explanations.py: it retrains models)")
"""Metric name → ``rate(model, inputs, targets, maps, explain, *, seed, steps) -> (number, details)``,
tagged ``better``: which direction is better (see :func:`better_direction`)."""


def better_direction(metric: str) -> str:
    """``"lower"`` or ``"higher"``: which values of ``metric``'s number mean a better method."""
    return METRICS.tags(metric)["better"]


@METRICS.register("deletion", better="lower")
def deletion_auc(model, inputs, targets, maps, explain: Explainer, *, seed: int, steps: int) -> tuple[float, dict]:
    curve = deletion_curve(model, inputs, maps, targets, steps=steps)
    return curve.mean_auc, curve.to_dict()


@METRICS.register("insertion", better="higher")
def insertion_auc(model, inputs, targets, maps, explain: Explainer, *, seed: int, steps: int) -> tuple[float, dict]:
    curve = insertion_curve(model, inputs, maps, targets, steps=steps)
    return curve.mean_auc, curve.to_dict()


@METRICS.register("morf", better="higher")
def mean_morf(model, inputs, targets, maps, explain: Explainer, *, seed: int, steps: int) -> tuple[float, dict]:
    record = morf_lerf(model, inputs, maps, targets)
    return sum(record["morf"]) / len(record["morf"]), record


@METRICS.register("lerf", better="lower")
def mean_lerf(model, inputs, targets, maps, explain: Explainer, *, seed: int, steps: int) -> tuple[float, dict]:
    record = morf_lerf(model, inputs, maps, targets)
    return sum(record["lerf"]) / len(record["lerf"]), record


@METRICS.register("sanity_cascading", better="lower")
def cascading_sanity(model, inputs, targets, maps, explain: Explainer, *, seed: int, steps: int) -> tuple[float, dict]:
    record = cascading_randomization(model, inputs, explain, targets, seed=seed, quiet=True)
    return sum(s["spearman_abs"] for s in record["steps"]) / len(record["steps"]), record


@METRICS.register("sanity_independent", better="lower")
def independent_sanity(model, inputs, targets, maps, explain: Explainer, *, seed: int,
                       steps: int) -> tuple[float, dict]:
    record = independent_randomization(model, inputs, explain, targets, seed=seed, quiet=True)
    return sum(s["spearman_abs"] for s in record["steps"]) / len(record["steps"]), record


def explainer(method: str, **opts) -> Explainer:
    """``(model, inputs, targets) -> maps`` for one method, the shape every metric accepts."""
    METHODS.get(method)
    return lambda model, inputs, targets: attribute(model, inputs, targets, method=method, **opts)


def _check(methods: Sequence[str], metrics: Sequence[str], models: Sequence[nn.Module]) -> None:
    """Before any work: every name known, every method able to explain every model."""
    for method in methods:
        why = next(filter(None, (METHODS.get(method).cannot_explain(m) for m in models)), None)
        if why is not None:
            others = [m for m in methods if m != method] or ["gradient", "gradcam"]
            raise ExplainError(f"the {method} method cannot explain this model: {why}; leave it out, "
                               f"e.g. methods={others} (--methods {' '.join(others)})")
    for metric in metrics:
        METRICS.get(metric)


def default_methods(defaults: Sequence[str], *models: nn.Module) -> list[str]:
    """The ``defaults`` that can explain every one of ``models``; each one left out is a one-line
    warning saying why (pathway on a model without activations, rollout on a CNN)."""
    chosen = []
    for method in defaults:
        why = next(filter(None, (METHODS[method].cannot_explain(m) for m in models)), None)
        if why is None:
            chosen.append(method)
        else:
            warnings.warn(f"the {method} explanation is skipped: {why}", NeurotomyWarning, stacklevel=3)
    return chosen


def _seeded(method: str, seed: int, options: Mapping[str, dict] | None = None) -> dict:
    """The method's options, plus the seed where the method draws random numbers."""
    opts = dict((options or {}).get(method, {}))
    if "seed" in METHODS[method].options():
        opts.setdefault("seed", seed)
    return opts


RATED_METHODS = ("gradient", "integrated_gradients", "gradcam", "pathway", "sobel", "random")
"""What ``rate_explanations`` rates by default: two gradient methods, a CAM, pathway and both controls."""
RATED_METRICS = ("deletion", "insertion", "morf", "lerf")
"""Its default metrics (the sanity checks cost a model randomisation per block: ask for them)."""
COMPARED_METHODS = ("gradient", "gradcam", "pathway")
"""What ``compare_reasons`` compares by default."""
SHOWN_METHODS = ("gradcam", "pathway")
"""What ``neurotomy explain`` draws by default."""


def rate_explanations(model: nn.Module, inputs: torch.Tensor, target: Target = None,
                      methods: Sequence[str] | None = None,
                      metrics: Sequence[str] = RATED_METRICS, *, steps: int = 28,
                      options: Mapping[str, dict] | None = None, seed: int = 0, quiet: bool | None = None) -> dict:
    """Every method × every metric on one batch: ``{"scores": {method: {metric: number}}, "details": …,
    "seconds": {method: seconds to compute the maps}, "better": {metric: "lower"|"higher"}}``.

    ``methods=None`` rates those of :data:`RATED_METHODS` that can explain ``model`` (a warning names
    any left out). Deletion/insertion and pixel perturbation rank pixels by |map| (a strongly negative
    pixel matters as much as a positive one; for non-negative maps this is the map itself). ``options``
    gives per-method options, e.g. ``{"gradcam": {"layer": "layer2"}}``.
    """
    methods = default_methods(RATED_METHODS, model) if methods is None else methods
    _check(methods, metrics, [model])
    record: dict = {"scores": {}, "details": {}, "seconds": {}, "n": int(len(inputs)),
                    "better": {m: better_direction(m) for m in metrics}}
    with eval_mode(model):
        targets = resolve_targets(model, inputs, target)
        with progress_bar(quiet) as bar:
            task = add_task(bar, "rate explanations", len(methods) * len(metrics))
            for method in methods:
                start = time.perf_counter()
                maps = attribute(model, inputs, targets, method=method, **_seeded(method, seed, options)).abs()
                record["seconds"][method] = time.perf_counter() - start
                record["scores"][method], record["details"][method] = {}, {}
                for metric in metrics:
                    explain = explainer(method, **_seeded(method, seed, options))
                    value, detail = METRICS.get(metric)(model, inputs, targets, maps, explain, seed=seed, steps=steps)
                    record["scores"][method][metric] = value
                    record["details"][method][metric] = detail
                    bar.advance(task)
    record["targets"] = targets.tolist()
    return record


def compare_reasons(original: nn.Module, pruned: nn.Module, inputs: torch.Tensor, target: Target = None,
                    methods: Sequence[str] | None = None, top: float = 0.1,
                    options: Mapping[str, dict] | None = None, seed: int = 0, quiet: bool | None = None) -> dict:
    """Do the two models decide for the same reasons? Per method: Spearman correlation of the maps
    and IoU of their top-``top`` pixels, overall and per class, for the original's predicted classes
    (or ``target``), plus how often the two models predict the same class.

    ``methods=None`` compares with those of :data:`COMPARED_METHODS` that can explain both models (a
    warning names any left out). Maps are compared by magnitude (|map|): a pixel that pushes strongly
    either way is a reason.
    """
    methods = default_methods(COMPARED_METHODS, original, pruned) if methods is None else methods
    _check(methods, [], [original, pruned])
    out: dict = {"methods": {}, "top": top, "n": int(len(inputs))}
    with eval_mode(original), eval_mode(pruned):
        targets = resolve_targets(original, inputs, target)
        with progress_bar(quiet) as bar:
            task = add_task(bar, "compare reasons", len(methods))
            for method in methods:
                explain = explainer(method, **_seeded(method, seed, {method: comparison_options(method, options)}))
                out["methods"][method] = model_agreement(
                    original, pruned, inputs, lambda m, x, t, e=explain: e(m, x, t).abs(), targets, top)
                bar.advance(task)
    out["prediction_agreement"] = next(iter(out["methods"].values()))["prediction_agreement"] if methods else None
    return out
