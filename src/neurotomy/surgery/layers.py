"""Layer pruning: remove whole residual blocks.

A block whose shortcut is the identity becomes the identity; a down-sampling block keeps only its
shortcut (1×1 conv + BN), so shapes downstream are unchanged. Which blocks go is chosen elsewhere
(the layer rules of :mod:`neurotomy.dynamics.layer_rules`, or a list).
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

from neurotomy.errors import PruningError
from neurotomy.models.anatomy import block_shortcut, residual_blocks, set_submodule
from neurotomy.surgery.recipe import RECIPE_OPS, Replay


def remove_block_in_place(model: nn.Module, name: str) -> None:
    """Replace block ``name`` by its shortcut (down-sampling) or by the identity."""
    if name not in residual_blocks(model):
        raise PruningError(f"{name!r} is not a residual block of this model; blocks: "
                           f"{', '.join(residual_blocks(model)) or 'none'}")
    block = model.get_submodule(name)
    if isinstance(block, nn.Identity):
        return
    shortcut = block_shortcut(block)
    set_submodule(model, name, shortcut if shortcut is not None else nn.Identity())



@RECIPE_OPS.register("remove_block")
def _replay_remove_block(replay: Replay, step: dict) -> None:
    remove_block_in_place(replay.model, step["layer"])
    replay.cache.clear()  # the module structure changed: a traced graph is stale


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
