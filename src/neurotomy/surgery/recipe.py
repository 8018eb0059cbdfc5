"""Surgery recipes: the structural edits that turn a freshly built model into a pruned one.

Each step is JSON with an ``op`` and the ``layer`` it acts on: ``prune_out_channels`` (``idxs``;
applied through torch-pruning's dependency graph, so one step removes the channel everywhere it is
coupled: batch norm, the next layer's inputs, residual partners — :mod:`neurotomy.surgery.graph`),
``remove_block`` (:mod:`neurotomy.surgery.layers`) or ``binary_head`` (a class module's c-vs-rest
classifier, :mod:`neurotomy.surgery.heads`). Replaying the recipe on a fresh model gives exactly
the pruned architecture, ready for its saved weights.

Each operation registers its replay function in :data:`RECIPE_OPS` where the edit itself is
defined; ``neurotomy/surgery/__init__.py`` imports those modules, so a replay knows every op.

Example:
    >>> import torch
    >>> from neurotomy.models import build_model
    >>> model = build_model("resnet20", 1, 10, 8)
    >>> _ = replay_recipe(model, [{"op": "prune_out_channels", "layer": "conv1", "idxs": [0, 1]}], (1, 8, 8))
    >>> model.conv1.out_channels, RECIPE_OPS.names()
    (14, ['prune_out_channels', 'binary_head', 'remove_block'])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from neurotomy.errors import CheckpointError
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
        op = RECIPE_OPS.get(str(step.get("op")))
        if step.get("layer") not in dict(model.named_modules()):
            raise CheckpointError(f"surgery recipe names layer {step.get('layer')!r} that the model lacks")
        op(replay, step)
    return model
