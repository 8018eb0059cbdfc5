"""Surgery recipes: the structural edits that turn a freshly built model into a pruned one.

Each step is JSON with an ``op`` and the ``layer`` it acts on: ``prune_out_channels`` (``idxs``;
applied through torch-pruning's dependency graph, so one step removes the channel everywhere it is
coupled: batch norm, the next layer's inputs, residual partners — :mod:`neurotomy.surgery.graph`),
``remove_block`` (:mod:`neurotomy.surgery.layers`; a plain network's conv block names its
``successor``, resized on replay to read the block's input channels), ``binary_head`` (a class module's c-vs-rest
classifier, :mod:`neurotomy.surgery.heads`) or ``project_subspace`` (a rank-k 1×1 projection pair
around a layer, :mod:`neurotomy.surgery.projection`); for transformers ``unpack_attention``,
``prune_heads`` (``heads``; :mod:`neurotomy.surgery.attention`) and ``prune_embedding`` (``idxs`` of
the residual stream, width attributes following; :mod:`neurotomy.surgery.transformer`). Replaying
the recipe on a fresh model gives exactly the pruned architecture, ready for its saved weights.

Each operation registers its replay function in :data:`RECIPE_OPS` where the edit itself is
defined; ``neurotomy/surgery/__init__.py`` imports those modules, so a replay knows every op.

Example:
    >>> import torch
    >>> from neurotomy.models import build_model
    >>> model = build_model("resnet20", 1, 10, 8)
    >>> _ = replay_recipe(model, [{"op": "prune_out_channels", "layer": "conv1", "idxs": [0, 1]}], (1, 8, 8))
    >>> model.conv1.out_channels, RECIPE_OPS.names()[:3]
    (14, ['prune_out_channels', 'binary_head', 'remove_block'])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from neurotomy.errors import CheckpointError
from neurotomy.models.activations import ACTIVATED
from neurotomy.registry import Registry


@dataclass
class Replay:
    """What a replay step sees: the model being rebuilt, its input shape, and a cache that ops
    share (the traced dependency graph) and clear when they change the module structure."""

    model: nn.Module
    input_shape: tuple[int, ...]
    cache: dict[str, Any] = field(default_factory=dict)


RecipeOp = Callable[[Replay, dict[str, Any]], None]
RECIPE_OPS: Registry[RecipeOp] = Registry("surgery step", CheckpointError,
                                          hint="(the checkpoint was written by a newer neurotomy; upgrade)")


def replay_recipe(model: nn.Module, recipe: list[dict[str, Any]], input_shape: tuple[int, ...]) -> nn.Module:
    """Apply every step of ``recipe`` to ``model`` in place, in order."""
    replay = Replay(model, tuple(input_shape))
    for step in recipe:
        if not isinstance(step, dict):
            raise CheckpointError(f"surgery recipe step {str(step)[:40]!r} is not a JSON object; the checkpoint is corrupt")
        op = RECIPE_OPS.get(str(step.get("op")))
        modules = dict(model.named_modules())
        # a block named by its activation call ("bn2:activated") is named by the module it activates
        module = step["layer"].removesuffix(ACTIVATED) if isinstance(step.get("layer"), str) else None
        if module not in modules:
            raise CheckpointError(f"surgery recipe names layer {str(step.get('layer'))[:60]!r} that the model lacks")
        check_channels(step, modules[module])
        op(replay, step)
    return model


def check_channels(step: dict[str, Any], module: nn.Module) -> None:
    """A step's channel indices (``idxs``), if it has them: distinct integers inside the layer's
    width, leaving at least one channel — a recipe that says otherwise is corrupt, not a model."""
    if "idxs" not in step:
        return
    idxs, layer = step["idxs"], step["layer"]
    width = getattr(module, "out_channels", getattr(module, "out_features", None))
    if not isinstance(idxs, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in idxs) \
            or len(set(idxs)) != len(idxs):
        raise CheckpointError(f"surgery recipe: the channels removed from {layer!r} are not distinct integers; "
                              "the checkpoint is corrupt")
    if isinstance(width, int) and (any(not 0 <= i < width for i in idxs) or len(idxs) >= width):
        raise CheckpointError(f"surgery recipe removes channels {str(idxs)[:40]} from {layer!r}, which has {width}; "
                              "the checkpoint is corrupt")
