"""The split job: a class module cut (:func:`neurotomy.surgery.class_modules.cut_class_module`),
then fine-tuned briefly on a balanced c-vs-rest set (CNNSplitter, Qi et al., ASE 2022; the paper
does not retrain, a short fine-tune is ours) with the head's bias shifted to the data's prior.

A fine-tune must not make a module worse: its balanced c-vs-rest accuracy on the calibration set
(the balanced training images the search judged candidates on) is measured before and after, and
when it fell, the module before fine-tuning is kept — said in one line (a
:class:`~neurotomy.errors.NeurotomyWarning`) and in ``details`` (``finetune_kept``) — unless
``force=True``. Like the prune's rule, this keeps the better result rather than stopping the job.

Example:
    >>> from neurotomy.loading import load_model
    >>> from neurotomy.data import load_dataset
    >>> model, data = load_model("zoo:lenet5-digits"), load_dataset("digits")
    >>> module = split(model, data, class_index=3, finetune_epochs=0, calibration_images=100, quiet=True)
    >>> module.model(data[0][0][None]).shape, 0 < module.kept_fraction <= 1
    (torch.Size([1, 2]), True)
"""

from __future__ import annotations

import copy
import math
import warnings

import torch
from torch import nn
from torch.utils.data import Dataset

from neurotomy import validate
from neurotomy.data.labels import dataset_targets
from neurotomy.errors import NeurotomyWarning
from neurotomy.models.anatomy import classifier_layer
from neurotomy.scores.unit_scores import UnitScores
from neurotomy.surgery.class_modules import (ClassModule, cut_class_module, module_metrics, one_vs_rest,
                                             record_module_metrics)
from neurotomy.surgery.class_search import GAConfig
from neurotomy.train import TrainConfig, fit
from neurotomy.run_state import RunState


def split(model: nn.Module, data: Dataset, class_index: int, *, scores: UnitScores | None = None,
          search: str = "threshold", tolerance: float = 0.99, calibration_images: int = 500,
          finetune_epochs: int = 1, finetune_lr: float = 0.01, finetune_images: int | None = 2000,
          ga: GAConfig | None = None, others: list[dict[str, list[int]]] | None = None,
          seed: int = 0, quiet: bool = False, force: bool = False, state: RunState | None = None) -> ClassModule:
    """The module of class ``class_index``: cut, then fine-tuned for ``finetune_epochs`` on
    ``finetune_images`` balanced c-vs-rest images of ``data`` (training data), kept only if that did
    not lower its balanced accuracy on the calibration set (or ``force``). ``state``: save the
    fine-tune's epochs there (key ``class{c}``) and resume from them."""
    check_split_settings(class_index=class_index, tolerance=tolerance, calibration_images=calibration_images,
                         finetune_epochs=finetune_epochs, finetune_lr=finetune_lr, finetune_images=finetune_images,
                         seed=seed)
    module = cut_class_module(model, data, class_index, scores=scores, search=search, tolerance=tolerance,
                              calibration_images=calibration_images, ga=ga, others=others, seed=seed, quiet=quiet)
    if finetune_epochs > 0:
        calibration = one_vs_rest(data, class_index, calibration_images, seed=seed)  # as cut_class_module draws it
        before = module_metrics(module.model, calibration, class_index=1)["balanced_accuracy"]
        untuned = copy.deepcopy(module.model)
        head_name, _ = classifier_layer(module.model)
        train = one_vs_rest(data, class_index, finetune_images, seed=seed + 1)
        fit(module.model, train, TrainConfig(epochs=finetune_epochs, lr=finetune_lr, schedule="cosine", seed=seed,
                                             batch_size=64, quiet=quiet), description=f"fine-tune module {class_index}",
            state=state, state_key=f"class{class_index}")
        shift_to_prior(module.model, head_name, data, class_index)
        module.model.eval()
        after = module_metrics(module.model, calibration, class_index=1)["balanced_accuracy"]
        kept = after >= before or force
        module.details.update({"calibration_balanced_accuracy_before_finetune": before,
                               "calibration_balanced_accuracy_after_finetune": after, "finetune_kept": kept})
        if not kept:
            module.model = untuned
            warnings.warn(f"class {class_index}: fine-tuning lowered the module's balanced accuracy on the calibration "
                          f"set {before:.4f} → {after:.4f}; kept the module before fine-tuning (--force keeps the "
                          "fine-tuned one)", NeurotomyWarning, stacklevel=2)
    module.details["finetune_epochs"] = finetune_epochs
    record_module_metrics(module)
    return module


def check_split_settings(*, class_index: int | None = None, tolerance: float, calibration_images: int,
                         finetune_epochs: int, finetune_lr: float = 0.01, finetune_images: int | None, seed: int) -> None:
    """Every number a split takes, checked before any work (:mod:`neurotomy.validate`)."""
    if class_index is not None:
        validate.non_negative_int(class_index, "class_index")
    validate.fraction(tolerance, "tolerance", "(0, 1]")
    validate.positive_int(calibration_images, "calibration_images")
    validate.non_negative_int(finetune_epochs, "finetune_epochs")
    validate.positive_float(finetune_lr, "finetune_lr")
    if finetune_images is not None:
        validate.positive_int(finetune_images, "finetune_images")
    validate.seed(seed, "seed")


@torch.no_grad()
def shift_to_prior(model: nn.Module, head_name: str, data: Dataset, class_index: int) -> None:
    """Fine-tuning on a balanced set teaches the head a 50 % prior for c; add log(p/(1 − p)), p the
    class's frequency in ``data``, so the module answers on the data's own class frequencies."""
    targets = dataset_targets(data)
    p = float((targets == class_index).double().mean())
    if 0 < p < 1:
        model.get_submodule(head_name).bias[1] += math.log(p / (1 - p))


__all__ = ["check_split_settings", "shift_to_prior", "split"]
