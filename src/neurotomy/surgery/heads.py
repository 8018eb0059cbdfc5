"""The decomposed final layer: each class's logit from its own feature subset (Badola et al.,
arXiv 2112.07719, §3.2).

:class:`SubspaceHead` is a sparse Linear layer: logit_c = Σ_{j∈S_c} W_cj f_j + b_c, the mask fixed,
the kept weights trainable. Its cost is the number of kept weights (Σ_c |S_c| multiply-adds per
image) against C·D for the full layer. :func:`neurotomy.train.finetune_head` re-fits the kept
weights with Adam (lr 2e-4, the paper's setting) on cached penultimate features.

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
import math

import torch
import torch.nn.functional as F
from torch import nn

from neurotomy.errors import NeurotomyError
from neurotomy.models.anatomy import set_submodule
from neurotomy.surgery.recipe import RECIPE_OPS, Replay


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


def replace_with_binary_head(model: nn.Module, layer: str, class_index: int | None = None) -> nn.Linear:
    """Replace Linear ``layer`` by a c-vs-rest Linear (2 outputs, output 1 = c), in place.

    With ``class_index`` the new rows start from the old head: row 1 = W_c, row 0 = mean of the
    other rows (bias likewise, plus log(C − 1) so the "rest" logit starts near a log-sum-exp of
    the other classes' logits). Without it (rebuilding from a recipe) the rows are fresh.
    """
    old = model.get_submodule(layer)
    if not isinstance(old, nn.Linear):
        raise NeurotomyError(f"layer {layer!r} is not a Linear classifier")
    head = nn.Linear(old.in_features, 2, bias=old.bias is not None)
    if class_index is not None:
        with torch.no_grad():
            others = [j for j in range(old.out_features) if j != class_index]
            head.weight[1] = old.weight[class_index]
            head.weight[0] = old.weight[others].mean(0)
            if old.bias is not None:
                head.bias[1] = old.bias[class_index]
                head.bias[0] = old.bias[others].mean() + math.log(max(1, len(others)))
    set_submodule(model, layer, head)
    return head


@RECIPE_OPS.register("binary_head")
def _replay_binary_head(replay: Replay, step: dict) -> None:
    replace_with_binary_head(replay.model, step["layer"])
    replay.cache.clear()  # the module structure changed: a traced graph is stale


def head_cost(linear: nn.Linear) -> dict:
    """MACs and parameters of a full Linear head, for comparison with a :class:`SubspaceHead`."""
    return {"macs": linear.in_features * linear.out_features,
            "params": sum(p.numel() for p in linear.parameters())}


def decompose_head(model: nn.Module, layer: str, mask: torch.Tensor) -> nn.Module:
    """A copy of ``model`` whose Linear ``layer`` is replaced by a :class:`SubspaceHead`."""
    model = copy.deepcopy(model)
    linear = model.get_submodule(layer)
    if not isinstance(linear, nn.Linear):
        raise NeurotomyError(f"layer {layer!r} is not a Linear layer; give the classifier's name")
    set_submodule(model, layer, SubspaceHead.from_linear(linear, mask))
    return model


@torch.no_grad()
def head_accuracy(head: nn.Module, features: torch.Tensor, targets: torch.Tensor) -> float:
    """Accuracy of ``head`` on fixed features."""
    return float((head(features.float()).argmax(1) == targets).double().mean())
