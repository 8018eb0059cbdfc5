"""The class-level decomposition jobs behind ``neurotomy subsets``, ``split`` and ``patch``.

Each job composes the API (feature subsets in :mod:`neurotomy.scores.class_subsets`, the subspace
head in :mod:`neurotomy.surgery.heads`, modules in :mod:`neurotomy.surgery.class_modules`, patching in
:mod:`neurotomy.surgery.patching`) and returns a JSON-ready record; the CLI only prints it and the
benchmark saves it.

Example:
    >>> from neurotomy.loading import load_model
    >>> from neurotomy.data import load_dataset
    >>> record = subsets_job(load_model("zoo:lenet5-digits"), load_dataset("digits"),
    ...                      load_dataset("digits", split="test"), ks=[5], finetune_epochs=0, quiet=True)
    >>> record["width"], len(record["subsets"]), record["heads"][0]["k"]
    (84, 10, 5)
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from neurotomy.errors import CheckpointError, NeurotomyError


def subsets_job(model: nn.Module, train: Dataset, test: Dataset, *, criterion: str = "frequency",
                k: int = 5, retention: float = 0.99, ks: list[int] | None = None, finetune_epochs: int = 3,
                lr: float = 2e-4, seed: int = 0, quiet: bool = False, features: tuple | None = None) -> dict:
    """Per-class smallest feature subsets (ranked on ``train``, retention checked on ``train``) and
    decomposed heads with ``ks`` features per class: test accuracy before/after the Adam fine-tune.
    ``features``: the (train, test) :class:`PenultimateFeatures` when already computed."""
    from neurotomy.scores.class_subsets import (class_feature_scores, penultimate_features,
                                                smallest_class_subsets, top_k_mask)
    from neurotomy.surgery.heads import SubspaceHead, head_accuracy, head_cost
    from neurotomy.train import finetune_head
    from neurotomy.train import seed_everything

    seed_everything(seed)
    if features is None:
        features = penultimate_features(model, train, quiet=quiet), penultimate_features(model, test, quiet=quiet)
    fit_features, test_features = features
    head = dict(model.named_modules())[fit_features.layer]
    scores = class_feature_scores(fit_features.features, fit_features.targets, head, criterion, k=k,
                                  layer=fit_features.layer)
    subsets = smallest_class_subsets(fit_features.features, fit_features.targets, head, scores, retention)
    acc_full = head_accuracy(head, test_features.features, test_features.targets)
    heads = []
    for size in ks or [k]:
        size = min(size, subsets.width)
        sub = SubspaceHead.from_linear(head, top_k_mask(scores[fit_features.layer], size))
        before = head_accuracy(sub, test_features.features, test_features.targets)
        history = finetune_head(sub, fit_features.features, fit_features.targets, epochs=finetune_epochs, lr=lr,
                                seed=seed, quiet=quiet) if finetune_epochs > 0 else []
        heads.append({"k": size, "acc_full": acc_full, "acc_subsets": before,
                      "acc_subsets_finetuned": head_accuracy(sub, test_features.features, test_features.targets)
                      if finetune_epochs > 0 else None,
                      "macs": sub.macs, "macs_full": head_cost(head)["macs"], "finetune_history": history})
    return {"criterion": criterion, "k_frequency": k, "retention": retention, "width": subsets.width,
            "layer": fit_features.layer, "acc_full": acc_full, "finetune": {"optimizer": "Adam", "lr": lr,
                                                                          "epochs": finetune_epochs},
            "subsets": [{**r, "features": s} for r, s in zip(subsets.records(), subsets.subsets)],
            "heads": heads}


def parse_classes(spec: str, num_classes: int) -> list[int]:
    """``all`` or a comma list of class indices.

    Example:
        >>> parse_classes("all", 3), parse_classes("2,0", 3)
        ([0, 1, 2], [2, 0])
    """
    if spec == "all":
        return list(range(num_classes))
    try:
        classes = [int(c) for c in spec.split(",") if c]
    except ValueError:
        raise NeurotomyError(f"--classes {spec!r}: give 'all' or class indices like 0,3,7") from None
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad or not classes:
        raise NeurotomyError(f"--classes {spec!r}: indices must be in 0…{num_classes - 1}")
    return classes


def split_job(model: nn.Module, train: Dataset, test: Dataset, classes: list[int], out_dir: str | os.PathLike | None,
              *, criterion: str = "class_activation", search: str = "threshold", tolerance: float = 0.99,
              finetune_epochs: int = 1, score_images: int | None = None, calibration_images: int = 500,
              finetune_images: int | None = 2000, ga=None, seed: int = 0, quiet: bool = False) -> dict:
    """One module per class in ``classes``, each saved to ``out_dir/class{c}.safetensors``;
    per-module test metrics and the set's coupling and cohesion (``summary.json`` beside them)."""
    from neurotomy.checkpoint import save_checkpoint
    from neurotomy.files import write_json
    from neurotomy.scores.classwise import get_classwise_criterion
    from neurotomy.jobs.split import split
    from neurotomy.surgery.class_modules import module_metrics, module_set_metrics
    from neurotomy.train import seed_everything

    seed_everything(seed)
    scores = get_classwise_criterion(criterion)(model, train, max_images=score_images, seed=seed, quiet=quiet)
    modules, records = [], []
    for c in classes:
        module = split(model, train, c, scores=scores, search=search, tolerance=tolerance,
                       calibration_images=calibration_images, finetune_epochs=finetune_epochs,
                       finetune_images=finetune_images, ga=ga, others=[m.kept for m in modules],
                       seed=seed, quiet=quiet)
        modules.append(module)
        record = {**module_metrics(module.model, test, c), "kept_fraction": module.kept_fraction,
                  "macs": module.macs, "macs_original": module.macs_original, "search": search,
                  **{k: v for k, v in module.details.items() if k not in ("trace", "history")}}
        if out_dir is not None and getattr(module.model, "neurotomy_meta", None) is not None:
            record["checkpoint"] = str(save_checkpoint(module.model, module.model.neurotomy_meta,
                                                       Path(out_dir) / f"class{c}"))
        records.append(record)
    result = {"criterion": criterion, "search": search, "tolerance": tolerance, "modules": records,
              "set": module_set_metrics(modules)}
    if out_dir is not None:
        write_json(Path(out_dir) / "summary.json", result)
    result["_modules"] = modules  # for callers in Python; not saved
    return result


def resolve_checkpoint(spec: str) -> str:
    """``modules/class3`` → ``modules/class3.safetensors`` when only the latter exists."""
    if spec.startswith("zoo:") or Path(spec).exists():
        return spec
    with_suffix = Path(spec + ".safetensors")
    if with_suffix.exists():
        return str(with_suffix)
    raise CheckpointError(f"{spec}: no such checkpoint (nor {with_suffix.name}); make modules with `neurotomy split`")


def class_report(predicted: torch.Tensor, targets: torch.Tensor, c: int) -> dict:
    """Precision and recall of class c, and accuracy on the images of every other class."""
    said, is_c = predicted == c, targets == c
    tp = int((said & is_c).sum())
    return {"precision": tp / max(1, int(said.sum())), "recall": tp / max(1, int(is_c.sum())),
            "other_acc": float((predicted[~is_c] == targets[~is_c]).double().mean()), "accuracy":
            float((predicted == targets).double().mean())}


def patch_job(weak: nn.Module, module: nn.Module, calibration: Dataset, test: Dataset, quiet: bool = False):
    """Patch ``weak`` with ``module``; the patched model and a before/after record on ``test``."""
    from neurotomy.surgery.patching import patch
    from neurotomy.train import predict

    patched = patch(weak, module, calibration, quiet=quiet)
    c = patched.target_class
    before_logits, targets = predict(weak, test, quiet=quiet)
    after_logits, _ = predict(patched, test, quiet=quiet)
    before, after = class_report(before_logits.argmax(1), targets, c), class_report(after_logits.argmax(1), targets, c)
    record = {"target_class": c, **{f"{k}_before": v for k, v in before.items()},
              **{f"{k}_after": v for k, v in after.items()},
              "calibration": {"low": float(patched.low), "high": float(patched.high)}}
    return patched, record
