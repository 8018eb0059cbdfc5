"""Surgery recipes: the structural edits that turn a freshly built model into a pruned one.

Each step is JSON: ``{"op": "prune_out_channels", "layer": NAME, "idxs": [...]}`` (applied through
torch-pruning's dependency graph, so one step removes the channel everywhere it is coupled: batch
norm, the next layer's inputs, residual partners), ``{"op": "remove_block", "layer": NAME}`` or
``{"op": "binary_head", "layer": NAME, "class_index": C}`` (a class module's c-vs-rest classifier). Replaying the recipe on a fresh model gives
exactly the pruned architecture, ready for its saved weights.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from neurotomy.errors import CheckpointError


def replay_recipe(model: nn.Module, recipe: list[dict[str, Any]], input_shape: tuple[int, ...]) -> nn.Module:
    """Apply every step of ``recipe`` to ``model`` in place, in order."""
    from neurotomy.surgery.graph import dependency_graph, prune_out_channels
    from neurotomy.surgery.layers import remove_block_in_place

    graph = None  # traced lazily, and again after any step that changes the module structure
    for step in recipe:
        op = step.get("op")
        modules = dict(model.named_modules())
        if step.get("layer") not in modules:
            raise CheckpointError(f"surgery recipe names layer {step.get('layer')!r} that the model lacks")
        if op == "prune_out_channels":
            if graph is None:
                graph = dependency_graph(model, torch.zeros(1, *input_shape))
            prune_out_channels(graph, modules[step["layer"]], step["idxs"])
        elif op == "remove_block":
            remove_block_in_place(model, step["layer"])
            graph = None
        elif op == "binary_head":
            from neurotomy.surgery.class_modules import replace_with_binary_head

            replace_with_binary_head(model, step["layer"])
            graph = None
        else:
            raise CheckpointError(f"unknown surgery step {op!r}; upgrade neurotomy")
    return model
