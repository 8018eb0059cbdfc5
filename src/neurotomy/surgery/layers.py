"""Layer pruning: remove whole residual blocks.

A block whose shortcut is the identity becomes the identity; a down-sampling block keeps only its
shortcut (1×1 conv + BN), so shapes downstream are unchanged. Which blocks go can come from the
modularity rule (:meth:`ModularityCurve.redundant`), a layer-level ``UnitScores``, or a list.
The removal is written into the checkpoint recipe as ``{"op": "remove_block", "layer": NAME}``.

Example:
    >>> import torch
    >>> from neurotomy.models import build_model
    >>> model = build_model("resnet20", 1, 10, 28).eval()
    >>> slim = remove_blocks(model, ["layer3.2", "layer2.0"])
    >>> slim(torch.zeros(1, 1, 28, 28)).shape, type(slim.layer3[2]).__name__
    (torch.Size([1, 10]), 'Identity')
"""

from __future__ import annotations

import copy

from torch import nn

from neurotomy.dynamics.features import residual_blocks
from neurotomy.errors import PruningError


def block_shortcut(block: nn.Module) -> nn.Module | None:
    """The block's shortcut branch if it transforms its input, else None (identity)."""
    for attr in ("shortcut", "downsample"):
        branch = getattr(block, attr, None)
        if isinstance(branch, nn.Module) and not isinstance(branch, nn.Identity) and len(list(branch.parameters())):
            return branch
    return None


def is_downsampling(block: nn.Module) -> bool:
    return block_shortcut(block) is not None


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def remove_block_in_place(model: nn.Module, name: str) -> None:
    """Replace block ``name`` by its shortcut (down-sampling) or by the identity."""
    if name not in residual_blocks(model):
        raise PruningError(f"{name!r} is not a residual block of this model; blocks: "
                           f"{', '.join(residual_blocks(model)) or 'none'}")
    block = model.get_submodule(name)
    if isinstance(block, nn.Identity):
        return
    shortcut = block_shortcut(block)
    _set_module(model, name, shortcut if shortcut is not None else nn.Identity())


def remove_blocks(model: nn.Module, names: list[str]) -> nn.Module:
    """A copy of ``model`` without the blocks ``names``; the recipe records each removal."""
    blocks = residual_blocks(model)
    unknown = [n for n in names if n not in blocks]
    if unknown:
        raise PruningError(f"{unknown[0]!r} is not a residual block; blocks: {', '.join(blocks) or 'none'}")
    slim = copy.deepcopy(model)
    for name in names:
        remove_block_in_place(slim, name)
    meta = getattr(model, "neurotomy_meta", None)
    if meta is not None:
        slim.neurotomy_meta = copy.deepcopy(meta)
        slim.neurotomy_meta.recipe = list(meta.recipe) + [{"op": "remove_block", "layer": n} for n in names]
    return slim


def removable_blocks(model: nn.Module, keep_downsampling: bool = True) -> list[str]:
    """Blocks a layer-pruning rule may remove (by default: not the down-sampling ones)."""
    modules = dict(model.named_modules())
    return [b for b in residual_blocks(model) if not (keep_downsampling and is_downsampling(modules[b]))]
