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
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from neurotomy import validate
from neurotomy.errors import CheckpointError, NeurotomyError, NeurotomyWarning, WorseResultError
from neurotomy.run_state import RunState


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
              finetune_images: int | None = 2000, ga=None, seed: int = 0, quiet: bool = False,
              force: bool = False, state: RunState | None = None) -> dict:
    """One module per class in ``classes``, each saved to ``out_dir/class{c}.safetensors``;
    per-module test metrics and the set's coupling and cohesion (``summary.json`` beside them).
    ``force``: keep every fine-tuned module, even one the fine-tune made worse (see
    :func:`neurotomy.jobs.split.split`). ``state``: the class-wise scores and each finished module
    are stages (the module's record in the state, its checkpoint in ``out_dir``), skipped on resume."""
    from dataclasses import asdict

    from neurotomy.checkpoint import save_checkpoint
    from neurotomy.files import write_json
    from neurotomy.jobs.prune import scores_stage
    from neurotomy.scores.classwise import get_classwise_criterion
    from neurotomy.jobs.split import check_split_settings, split
    from neurotomy.surgery.class_modules import module_metrics, module_set_metrics
    from neurotomy.train import seed_everything
    from neurotomy.run_state import weights_digest

    check_split_settings(tolerance=tolerance, calibration_images=calibration_images, finetune_epochs=finetune_epochs,
                         finetune_images=finetune_images, seed=seed)
    validate.each(classes, validate.non_negative_int, "classes")
    if score_images is not None:
        validate.positive_int(score_images, "score_images")
    if out_dir is not None:
        validate.output_dir(out_dir, "out_dir")  # before the first module is cut, not when it is saved
    if state is not None:
        state.expect({"job": "split", "classes": classes, "criterion": criterion, "search": search,
                      "tolerance": tolerance, "finetune_epochs": finetune_epochs, "score_images": score_images,
                      "calibration_images": calibration_images, "finetune_images": finetune_images,
                      "ga": asdict(ga) if ga is not None else None, "seed": seed, "model": weights_digest(model),
                      "data": f"{getattr(train, 'name', '')}:{len(train)}"})
    seed_everything(seed)
    scores = scores_stage(state, "split/scores", lambda: get_classwise_criterion(criterion)(
        model, train, max_images=score_images, seed=seed, quiet=quiet))
    modules, records = [], []
    for c in classes:
        restored = _restore_module(state, c)
        if restored is not None:
            modules.append(restored[0])
            records.append(restored[1])
            continue
        module = split(model, train, c, scores=scores, search=search, tolerance=tolerance,
                       calibration_images=calibration_images, finetune_epochs=finetune_epochs,
                       finetune_images=finetune_images, ga=ga, others=[m.kept for m in modules],
                       seed=seed, quiet=quiet, force=force, state=state)
        modules.append(module)
        record = {**module_metrics(module.model, test, c), "kept_fraction": module.kept_fraction,
                  "macs": module.macs, "macs_original": module.macs_original, "search": search,
                  **{k: v for k, v in module.details.items() if k not in ("trace", "history")}}
        if record["recall"] == 0:  # it never says "class c": written all the same, but the user must know
            warnings.warn(f"class {c}: the module finds none of the class's test images (recall 0), so it is "
                          "useless as written; give more data, fine-tune longer (--finetune-epochs) or try another "
                          "--criterion", NeurotomyWarning, stacklevel=2)
        if out_dir is not None and getattr(module.model, "neurotomy_meta", None) is not None:
            record["checkpoint"] = str(save_checkpoint(module.model, module.model.neurotomy_meta,
                                                       Path(out_dir) / f"class{c}"))
        records.append(record)
        if state is not None and "checkpoint" in record:
            state.forget_fit(f"class{c}")  # the module's checkpoint now holds what the fine-tune made
            state.save_stage(f"split/class{c}", {"record": record, "kept": module.kept,
                                                 "kept_fraction": module.kept_fraction, "macs": module.macs,
                                                 "macs_original": module.macs_original, "search": module.search,
                                                 "details": module.details})
    result = {"criterion": criterion, "search": search, "tolerance": tolerance, "modules": records,
              "set": module_set_metrics(modules)}
    if out_dir is not None:
        write_json(Path(out_dir) / "summary.json", result)
    result["_modules"] = modules  # for callers in Python; not saved
    return result


def _restore_module(state: RunState | None, c: int):
    """(module, record) of class ``c`` as an interrupted split finished it, or None."""
    from neurotomy.loading import load_model
    from neurotomy.surgery.class_modules import ClassModule

    stage = f"split/class{c}"
    if state is None or not state.has_stage(stage):
        return None
    saved = state.load_stage(stage)
    checkpoint = saved["record"]["checkpoint"]
    if not Path(checkpoint).is_file():
        raise CheckpointError(f"--resume: the module {checkpoint} that the interrupted split wrote is gone; "
                              "run without --resume to start over")
    module = ClassModule(load_model(checkpoint), c, saved["kept"], saved["kept_fraction"], saved["macs"],
                         saved["macs_original"], saved["search"], saved["details"])
    return module, saved["record"]


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
    precision, recall = tp / max(1, int(said.sum())), tp / max(1, int(is_c.sum()))
    return {"precision": precision, "recall": recall,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "other_acc": float((predicted[~is_c] == targets[~is_c]).double().mean()), "accuracy":
            float((predicted == targets).double().mean())}


def patch_job(weak: nn.Module, module: nn.Module, calibration: Dataset, test: Dataset, quiet: bool = False,
              force: bool = False):
    """Patch ``weak`` with ``module``; the patched model and a before/after record on ``test``.

    A patch that lowers the weak model's F1 of the target class or its accuracy on ``calibration``
    is refused (:class:`~neurotomy.errors.WorseResultError`, before anything is written) unless
    ``force``; the calibration numbers are in the record either way (``calibration_check``)."""
    from neurotomy.surgery.patching import patch
    from neurotomy.train import predict

    patched = patch(weak, module, calibration, quiet=quiet)
    c = patched.target_class
    weak_logits, calibration_targets = predict(weak, calibration, quiet=quiet)
    patched_logits, _ = predict(patched, calibration, quiet=quiet)
    was = class_report(weak_logits.argmax(1), calibration_targets, c)
    now = class_report(patched_logits.argmax(1), calibration_targets, c)
    check = {"f1_before": was["f1"], "f1_after": now["f1"], "accuracy_before": was["accuracy"],
             "accuracy_after": now["accuracy"], "images": len(calibration_targets)}
    if (now["f1"] < was["f1"] or now["accuracy"] < was["accuracy"]) and not force:
        raise WorseResultError(f"the patch makes the weak model worse on the calibration set (class {c} F1 "
                               f"{was['f1']:.4f} → {now['f1']:.4f}, accuracy {was['accuracy']:.4f} → "
                               f"{now['accuracy']:.4f}); nothing written (--force writes it anyway)")
    before_logits, targets = predict(weak, test, quiet=quiet)
    after_logits, _ = predict(patched, test, quiet=quiet)
    before, after = class_report(before_logits.argmax(1), targets, c), class_report(after_logits.argmax(1), targets, c)
    record = {"target_class": c, **{f"{k}_before": v for k, v in before.items()},
              **{f"{k}_after": v for k, v in after.items()},
              "calibration": {"low": float(patched.low), "high": float(patched.high)}, "calibration_check": check}
    return patched, record
