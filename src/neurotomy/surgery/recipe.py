"""Surgery recipes: the structural edits that turn a freshly built model into a pruned one.

Each step is JSON: ``{"op": "prune_out_channels", "layer": NAME, "idxs": [...]}``. Steps are applied
through torch-pruning's dependency graph, so one step removes the channel everywhere it is coupled
(batch norm, the next layer's inputs, residual partners). Replaying the recipe on a fresh model gives
exactly the pruned architecture, ready for its saved weights.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from neurotomy.errors import CheckpointError


def replay_recipe(model: nn.Module, recipe: list[dict[str, Any]], input_shape: tuple[int, ...]) -> nn.Module:
    """Apply every step of ``recipe`` to ``model`` in place."""
    from neurotomy.surgery.graph import dependency_graph, prune_out_channels

    if not recipe:
        return model
    graph = dependency_graph(model, torch.zeros(1, *input_shape))
    modules = dict(model.named_modules())
    for step in recipe:
        if step.get("op") != "prune_out_channels":
            raise CheckpointError(f"unknown surgery step {step.get('op')!r}; upgrade neurotomy")
        if step["layer"] not in modules:
            raise CheckpointError(f"surgery recipe names layer {step['layer']!r} that the model lacks")
        prune_out_channels(graph, modules[step["layer"]], step["idxs"])
    return model
