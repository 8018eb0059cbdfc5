"""torch-pruning's dependency graph, wrapped: *what depends on what* is torch-pruning's job.

We only add clear errors and a flat view of each coupled group (which modules lose which channels
when one root channel goes), which the planner uses to predict MACs and to zero units.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

from neurotomy.errors import PruningError
from neurotomy.surgery.recipe import RECIPE_OPS, Replay


def dependency_graph(model: nn.Module, example: torch.Tensor) -> tp.DependencyGraph:
    """Trace ``model`` on ``example``; any failure becomes a :class:`PruningError`."""
    try:
        with warnings.catch_warnings(), torch.enable_grad():
            warnings.simplefilter("ignore")
            return tp.DependencyGraph().build_dependency(model, example_inputs=example, verbose=False)
    except Exception as exc:  # tracing fails in many ways; all mean the same thing to a user
        raise PruningError(f"torch-pruning cannot trace this model ({type(exc).__name__}: {exc}); "
                           "replace the unsupported op or pass it in ignored_layers") from None


def out_channel_handler(graph: tp.DependencyGraph, module: nn.Module):
    pruner = graph.get_pruner_of_module(module)
    if pruner is None:
        raise PruningError(f"torch-pruning has no pruner for {type(module).__name__}; "
                           "it cannot be a pruning root")
    return pruner.prune_out_channels


def prune_out_channels(graph: tp.DependencyGraph, module: nn.Module, idxs: list[int]) -> None:
    """Remove output channels ``idxs`` of ``module`` and every coupled slice elsewhere."""
    graph.get_pruning_group(module, out_channel_handler(graph, module), list(idxs)).prune()


@RECIPE_OPS.register("prune_out_channels")
def _replay_prune_out_channels(replay: Replay, step: dict) -> None:
    if replay.cache.get("graph") is None:  # traced once, again only after a step that changed the structure
        replay.cache["graph"] = dependency_graph(replay.model, torch.zeros(1, *replay.input_shape))
    prune_out_channels(replay.cache["graph"], replay.model.get_submodule(step["layer"]), step["idxs"])


@dataclass
class GroupMember:
    """One module touched by a coupled group: which of its channels follow which root channel."""

    name: str
    module: nn.Module
    kind: str  # "out" (its output channels / BN features) or "in" (its input channels)
    idxs: list[int]
    root_idxs: list[int]


@dataclass
class CoupledGroup:
    """Channels that must be removed together, indexed by the root module's output channels."""

    root_name: str
    root: nn.Module
    channels: int
    members: list[GroupMember]

    @property
    def out_layers(self) -> list[GroupMember]:
        """Conv/linear members whose *outputs* are removed: the filters the group's units are."""
        return [m for m in self.members if m.kind == "out" and isinstance(m.module, (nn.Conv2d, nn.Linear))]

    @property
    def through_residual(self) -> bool:
        """True when several full (non-depthwise) layers share these channels, e.g. through a
        residual add; the classic papers prune only groups where this is False ("inner" convs)."""
        full = [m for m in self.out_layers if not _is_depthwise(m.module)]
        return len(full) > 1


def _is_depthwise(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.out_channels


def coupled_groups(graph: tp.DependencyGraph, model: nn.Module, ignored: list[nn.Module]) -> list[CoupledGroup]:
    """Every prunable group whose root is a Conv2d or Linear not in ``ignored``."""
    names = {m: n for n, m in model.named_modules()}
    groups = []
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=(nn.Conv2d, nn.Linear)):
        root = group[0].dep.target.module
        members = []
        for item in group.items:
            dep, module = item.dep, item.dep.target.module
            if not isinstance(module, nn.Module) or module not in names:
                continue
            kind = "out" if graph.is_out_channel_pruning_fn(dep.handler) else "in"
            members.append(GroupMember(names[module], module, kind, [int(i) for i in item.idxs],
                                       [int(i) for i in item.root_idxs]))
        channels = graph.get_out_channels(root)
        groups.append(CoupledGroup(names[root], root, int(channels), members))
    return groups
