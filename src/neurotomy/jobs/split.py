"""The split job: a class module cut (:func:`neurotomy.surgery.class_modules.cut_class_module`),
then fine-tuned briefly on a balanced c-vs-rest set (CNNSplitter, Qi et al., ASE 2022; the paper
does not retrain, a short fine-tune is ours) with the head's bias shifted to the data's prior.

Example:
    >>> from neurotomy.loading import load_model
    >>> from neurotomy.data import load_dataset
    >>> model, data = load_model("zoo:lenet5-digits"), load_dataset("digits")
    >>> module = split(model, data, class_index=3, finetune_epochs=0, calibration_images=100, quiet=True)
    >>> module.model(data[0][0][None]).shape, 0 < module.kept_fraction <= 1
    (torch.Size([1, 2]), True)
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.data import Dataset

from neurotomy.models.anatomy import classifier_layer
from neurotomy.scores.unit_scores import UnitScores
from neurotomy.surgery.class_modules import (ClassModule, as_tensors, cut_class_module, one_vs_rest,
                                             record_module_metrics)
from neurotomy.surgery.class_search import GAConfig
from neurotomy.train import TrainConfig, fit


def split(model: nn.Module, data: Dataset, class_index: int, *, scores: UnitScores | None = None,
          search: str = "threshold", tolerance: float = 0.99, calibration_images: int = 500,
          finetune_epochs: int = 1, finetune_lr: float = 0.01, finetune_images: int | None = 2000,
          ga: GAConfig | None = None, others: list[dict[str, list[int]]] | None = None,
          seed: int = 0, quiet: bool = False) -> ClassModule:
    """The module of class ``class_index``: cut, then fine-tuned for ``finetune_epochs`` on
    ``finetune_images`` balanced c-vs-rest images of ``data`` (training data)."""
    module = cut_class_module(model, data, class_index, scores=scores, search=search, tolerance=tolerance,
                              calibration_images=calibration_images, ga=ga, others=others, seed=seed, quiet=quiet)
    if finetune_epochs > 0:
        head_name, _ = classifier_layer(module.model)
        train = one_vs_rest(data, class_index, finetune_images, seed=seed + 1)
        fit(module.model, train, TrainConfig(epochs=finetune_epochs, lr=finetune_lr, schedule="cosine", seed=seed,
                                             batch_size=64, quiet=quiet), description=f"fine-tune module {class_index}")
        shift_to_prior(module.model, head_name, data, class_index)
        module.model.eval()
    module.details["finetune_epochs"] = finetune_epochs
    record_module_metrics(module)
    return module


@torch.no_grad()
def shift_to_prior(model: nn.Module, head_name: str, data: Dataset, class_index: int) -> None:
    """Fine-tuning on a balanced set teaches the head a 50 % prior for c; add log(p/(1 − p)), p the
    class's frequency in ``data``, so the module answers on the data's own class frequencies."""
    targets = as_tensors(data).targets
    p = float((targets == class_index).double().mean())
    if 0 < p < 1:
        model.get_submodule(head_name).bias[1] += math.log(p / (1 - p))


__all__ = ["shift_to_prior", "split"]
