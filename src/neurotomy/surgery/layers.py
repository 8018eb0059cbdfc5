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

from neurotomy.models.anatomy import residual_blocks, set_submodule
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


LAYER_METHODS = ("modularity", "random", "last")


def choose_blocks(model: nn.Module, method: str, data=None, count: int | None = None,
                  threshold: float = 0.25, seed: int = 0, per_class: int = 100,
                  quiet: bool = False) -> tuple[list[str], dict]:
    """Blocks to remove, and what the choice was based on.

    ``modularity``: blocks whose ΔQ is below ``threshold`` × the curve's range, tail first (or the
    ``count`` of smallest ΔQ); ``random``: ``count`` random removable blocks; ``last``: the last
    ``count`` removable blocks; or a comma-separated list of block names. Down-sampling blocks are
    never chosen by a rule.
    """
    candidates = removable_blocks(model)
    if method not in LAYER_METHODS:
        return [name.strip() for name in method.split(",") if name.strip()], {"method": "list"}
    if method == "modularity":
        from neurotomy.dynamics.modularity import modularity_curve

        if data is None:
            raise PruningError("the modularity rule needs data; pass --data")
        curve = modularity_curve(model, data, per_class=per_class, seed=seed, quiet=quiet)
        chosen = curve.redundant(candidates, threshold=threshold, count=count)
        return chosen, {"method": method, "curve": curve.to_dict(), "threshold": threshold}
    if count is None:
        raise PruningError(f"layer method {method!r} needs a number of blocks: give --blocks N")
    if count > len(candidates):
        raise PruningError(f"cannot remove {count} blocks: only {len(candidates)} are removable")
    if method == "last":
        return candidates[len(candidates) - count:], {"method": method}
    import torch

    order = torch.randperm(len(candidates), generator=torch.Generator().manual_seed(seed)).tolist()
    return [candidates[i] for i in sorted(order[:count])], {"method": method, "seed": seed}
