"""The decomposed final layer: each class's logit from its own feature subset (Badola et al.,
arXiv 2112.07719, §3.2).

:class:`SubspaceHead` is a sparse Linear layer: logit_c = Σ_{j∈S_c} W_cj f_j + b_c, the mask fixed,
the kept weights trainable. Its cost is the number of kept weights (Σ_c |S_c| multiply-adds per
image) against C·D for the full layer. :func:`finetune_head` re-fits the kept weights with Adam
(lr 2e-4, the paper's setting) on cached penultimate features: the backbone is frozen, so one
epoch over 60k images is a few thousand small matrix products.

Example:
    >>> import torch
    >>> from torch import nn
    >>> full = nn.Linear(4, 2)
    >>> head = SubspaceHead.from_linear(full, torch.tensor([[True, False, False, False], [False, True, True, False]]))
    >>> head.macs, head(torch.ones(1, 4)).shape
    (3, torch.Size([1, 2]))
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from neurotomy.errors import NeurotomyError
from neurotomy.progress import add_task, progress_bar


class SubspaceHead(nn.Module):
    """A Linear layer whose class c reads only the features in row c of ``mask``."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, mask: torch.Tensor) -> None:
        super().__init__()
        if mask.shape != weight.shape:
            raise NeurotomyError(f"mask {tuple(mask.shape)} must match the weight {tuple(weight.shape)}")
        self.register_buffer("mask", mask.bool().clone())
        self.weight = nn.Parameter(weight.detach().clone() * self.mask)
        self.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None

    @classmethod
    def from_linear(cls, linear: nn.Linear, mask: torch.Tensor) -> "SubspaceHead":
        return cls(linear.weight, linear.bias, mask)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # the mask is reapplied on every call so the fine-tune cannot revive a dropped weight
        return F.linear(features, self.weight * self.mask, self.bias)

    @property
    def macs(self) -> int:
        """Multiply-adds per image: the kept weights."""
        return int(self.mask.sum())

    @property
    def params(self) -> int:
        return self.macs + (self.bias.numel() if self.bias is not None else 0)


def head_cost(linear: nn.Linear) -> dict:
    """MACs and parameters of a full Linear head, for comparison with a :class:`SubspaceHead`."""
    return {"macs": linear.in_features * linear.out_features,
            "params": sum(p.numel() for p in linear.parameters())}


def decompose_head(model: nn.Module, layer: str, mask: torch.Tensor) -> nn.Module:
    """A copy of ``model`` whose Linear ``layer`` is replaced by a :class:`SubspaceHead`."""
    model = copy.deepcopy(model)
    parent_name, _, child = layer.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    linear = getattr(parent, child)
    if not isinstance(linear, nn.Linear):
        raise NeurotomyError(f"layer {layer!r} is not a Linear layer; give the classifier's name")
    setattr(parent, child, SubspaceHead.from_linear(linear, mask))
    return model


def finetune_head(head: nn.Module, features: torch.Tensor, targets: torch.Tensor, epochs: int = 3,
                  lr: float = 2e-4, batch_size: int = 128, seed: int = 0, quiet: bool = False,
                  on_epoch_end: Callable[[nn.Module, int], None] | None = None) -> list[dict]:
    """Fit ``head`` in place on fixed features with Adam; one ``{"epoch", "loss"}`` per epoch.
    ``on_epoch_end(head, epoch)`` runs after each epoch (e.g. to measure test accuracy)."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    features = features.float()
    history = []
    steps = (len(targets) + batch_size - 1) // batch_size
    head.train()
    with progress_bar(quiet) as bar:
        task = add_task(bar, "fine-tune head", steps * epochs)
        for epoch in range(epochs):
            order = torch.randperm(len(targets), generator=generator)
            total = 0.0
            for start in range(0, len(targets), batch_size):
                idx = order[start:start + batch_size]
                loss = F.cross_entropy(head(features[idx]), targets[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(idx)
                bar.advance(task)
            history.append({"epoch": epoch + 1, "loss": total / len(targets)})
            if on_epoch_end is not None:
                head.eval()
                on_epoch_end(head, epoch)
                head.train()
    head.eval()
    return history


@torch.no_grad()
def head_accuracy(head: nn.Module, features: torch.Tensor, targets: torch.Tensor) -> float:
    """Accuracy of ``head`` on fixed features."""
    return float((head(features.float()).argmax(1) == targets).double().mean())
