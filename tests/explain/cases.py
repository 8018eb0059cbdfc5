"""Small explanation cases shared by the cross-checks and the mutation check.

The tests of :mod:`neurotomy.explain` check each method on the shipped ResNet-20 with real
Fashion-MNIST images (the ``resnet20`` / ``fmnist_batch`` fixtures). The same check functions also
run on :func:`lenet_case` — the shipped LeNet-5 on four 8×8 digits, trained and confident, yet cheap
enough that the mutation check (:mod:`tests.mutants`) can run every check once per mutant.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn


@dataclass(frozen=True, eq=False)
class ExplainCase:
    """A model, a batch, one target class per image, and a conv layer for the CAM methods —
    ``cam_layer`` by name, with the matching module for the reference library."""

    model: nn.Module
    images: torch.Tensor
    targets: torch.Tensor
    cam_layer: str

    @property
    def cam_module(self) -> nn.Module:
        return self.model.get_submodule(self.cam_layer)


@lru_cache(maxsize=1)
def lenet_case() -> ExplainCase:
    """LeNet-5 on the first test digit of classes 0–3; CAM layer: the ReLU after the second conv (4×4)."""
    from neurotomy.data import load_dataset
    from neurotomy.loading import load_model

    data = load_dataset("digits", split="test")
    picks = [int((data.targets == c).nonzero()[0]) for c in range(4)]
    return ExplainCase(load_model("zoo:lenet5-digits").eval(), data.images[picks].float(), data.targets[picks],
                       "features.4")


def resnet20_case(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], n: int | None = None) -> ExplainCase:
    """The fixtures' ResNet-20 and Fashion-MNIST batch (first ``n`` images); CAM layer ``layer3``."""
    images, targets = batch
    return ExplainCase(model, images[:n], targets[:n], "layer3")
