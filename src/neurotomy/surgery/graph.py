"""torch-pruning's dependency graph, wrapped: *what depends on what* is torch-pruning's job.

We only add clear errors and a flat view of each coupled group (which modules lose which channels
when one root channel goes), which the planner uses to predict MACs and to zero units.

Two things torch-pruning cannot follow are refused per group instead of failing the whole model,
and named (:func:`prunable_groups`): a **channel shuffle** (ShuffleNet's view → transpose → view,
a permutation of channels that torch-pruning's reshape mapping treats as a flatten and divides by
zero on; a group whose channels pass through it keeps all of them), and any group torch-pruning
raises on while collecting it. A grouped convolution's groups are reported by
:attr:`CoupledGroup.channel_groups` so the planner removes the same positions in every group, as
torch-pruning's own pruners do (anything else breaks its in-channel slicing).

Attention heads are refused too: a group that would cut a ``qkv`` layer's outputs or a ``proj``
layer's inputs (a head's width must change with ``num_heads``, which only
:mod:`neurotomy.surgery.attention` does), or pass through an ``nn.MultiheadAttention`` (whose heads
are tied to the model width), keeps its channels, and the refusal says to prune heads instead.

Cost: torch-pruning re-derives every index mapping of the whole graph before each group it builds,
by recursive shape inference from every reshape — seconds per group on a Swin or MaxViT, minutes for
a plan. A reshape's mapping (a flatten's stride, a ratio of spatial sizes) and an expand's (trace-time
sizes) do not change when channels are removed, so after the trace only the mappings whose offsets do
(concatenations, splits, unbinds, slices) are refreshed (:func:`_refreshed_offsets_only`). The trace
keeps no activations (:func:`dependency_graph`): torch-pruning reads only the shapes autograd saved.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning.dependency import index_mapping

from neurotomy.device import model_device
from neurotomy.errors import PruningError
from neurotomy.models.transformer import attention_sites
from neurotomy.surgery.recipe import RECIPE_OPS, Replay


@contextmanager
def _tolerant_reshape_mapping(unmapped: list) -> Iterator[None]:
    """While torch-pruning maps channel indices through reshapes: a reshape it cannot map (a
    channel shuffle makes its flatten rule divide by zero) or that belongs to a channel shuffle
    (which it would treat as a flatten or an identity, although it permutes channels) is recorded
    in ``unmapped`` and maps no index onward, so a group stops there — and is refused — instead of
    failing the trace or multiplying indices through every later shuffle. (torch-pruning 1.6
    exposes no hook for this, so its module-level mapping function is swapped meanwhile.)"""
    original = index_mapping.update_reshape_index_mapping

    def tolerant(graph, node) -> None:
        try:
            original(graph, node)
            if not _in_channel_shuffle(node):
                return
        except (ZeroDivisionError, IndexError, ValueError):
            pass
        unmapped.append(node.module)
        for dep in node.dependencies:
            dep.index_mapping[0] = _map_nothing

    index_mapping.update_reshape_index_mapping = tolerant
    try:
        yield
    finally:
        index_mapping.update_reshape_index_mapping = original


def _map_nothing(idxs):
    return []


def _input_dims(node) -> int:
    sizes = getattr(node.grad_fn, "_saved_self_sizes", None)
    if sizes is None:  # the name in recent PyTorch
        sizes = getattr(node.grad_fn, "_saved_self_sym_sizes", None)
    return len(sizes) if sizes is not None else 0


def _in_channel_shuffle(node) -> bool:
    """A reshape with a 5-D (or larger) input, or one whose output reaches such a reshape through
    element-wise ops (transpose, contiguous): the two views of a channel shuffle."""
    if _input_dims(node) >= 5:
        return True
    frontier = list(node.outputs)
    for _ in range(4):
        following = []
        for n in frontier:
            if isinstance(n.module, tp.ops._ReshapeOp):
                if _input_dims(n) >= 5:
                    return True
            elif isinstance(n.module, tp.ops._ElementWiseOp):
                following.extend(n.outputs)
        frontier = following
    return False


def _drop_saved_tensor(tensor: torch.Tensor) -> None:
    return None


def _no_saved_tensor(_packed: None) -> torch.Tensor:
    raise RuntimeError("neurotomy traced this graph without keeping activations; it cannot run backward")


@contextmanager
def _traceable(model: nn.Module) -> Iterator[None]:
    """While torch-pruning traces ``model``: every parameter requires grad, and afterwards every
    module's training flag and every parameter's ``requires_grad`` are as they were. torch-pruning
    finds a layer by the autograd node of its output, which a frozen layer fed by the image never
    gets (it would silently never be pruned), and its trace calls ``model.eval()`` and leaves it so."""
    training = [(m, m.training) for m in model.modules()]
    frozen = [p for p in model.parameters() if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(False)
        for m, flag in training:
            m.training = flag


@contextmanager
def _keeps_requires_grad(model: nn.Module) -> Iterator[None]:
    """While torch-pruning cuts ``model``: it replaces each cut weight by a new ``nn.Parameter``,
    which requires grad; afterwards every parameter that was frozen is frozen again (by name)."""
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    try:
        yield
    finally:
        for n, p in model.named_parameters():
            if n in frozen:
                p.requires_grad_(False)


def dependency_graph(model: nn.Module, example: torch.Tensor) -> tp.DependencyGraph:
    """Trace ``model`` on ``example``; any failure becomes a :class:`PruningError`. Reshapes the
    graph cannot map are kept in ``graph.neurotomy_unmapped``. The traced autograd graph keeps no
    saved activations (torch-pruning reads only the sizes and dims autograd records, never a saved
    tensor; a graph traced at 224 px would otherwise hold every activation for as long as it lives).
    Frozen parameters are traced like the others, and the model is left in the mode it was in
    (:func:`_traceable`)."""
    unmapped: list = []
    try:
        with warnings.catch_warnings(), torch.enable_grad(), _tolerant_reshape_mapping(unmapped), \
                _traceable(model), torch.autograd.graph.saved_tensors_hooks(_drop_saved_tensor, _no_saved_tensor):
            warnings.simplefilter("ignore")
            graph = tp.DependencyGraph().build_dependency(model, example_inputs=example, verbose=False)
    except Exception as exc:  # tracing fails in many ways; all mean the same thing to a user
        raise PruningError(f"torch-pruning cannot trace this model ({type(exc).__name__}: {exc}); "
                           "replace the unsupported op or pass it in ignored_layers") from None
    graph.neurotomy_unmapped = set(unmapped)
    return graph


_OFFSET_MAPPINGS = {
    tp.ops.OPTYPE.CONCAT: index_mapping.update_concat_index_mapping,
    tp.ops.OPTYPE.SPLIT: index_mapping.update_split_index_mapping,
    tp.ops.OPTYPE.UNBIND: index_mapping.update_unbind_index_mapping,
    tp.ops.OPTYPE.SLICE: index_mapping.update_slice_index_mapping,
}


def _refresh_offsets(graph: tp.DependencyGraph) -> None:
    """torch-pruning's ``update_index_mapping`` restricted to the mappings that removing channels
    can change: the offsets of concatenations, splits, unbinds and slices."""
    for node in graph.module2node.values():
        update = _OFFSET_MAPPINGS.get(node.type)
        if update is not None:
            update(graph, node)


@contextmanager
def _refreshed_offsets_only() -> Iterator[None]:
    """While torch-pruning builds a group: refresh only the offset mappings (see the module
    docstring; the full refresh, from the trace, stays in place for reshapes and expands)."""
    original = index_mapping.update_index_mapping
    index_mapping.update_index_mapping = _refresh_offsets
    try:
        yield
    finally:
        index_mapping.update_index_mapping = original


def pruning_group(graph: tp.DependencyGraph, module: nn.Module, handler, idxs: list[int]):
    """``graph.get_pruning_group`` with the same tolerance as the trace and without re-deriving
    the reshape mappings the trace made (:func:`_refreshed_offsets_only`)."""
    with _refreshed_offsets_only():
        return graph.get_pruning_group(module, handler, idxs)


def out_channel_handler(graph: tp.DependencyGraph, module: nn.Module):
    pruner = graph.get_pruner_of_module(module)
    if pruner is None:
        raise PruningError(f"torch-pruning has no pruner for {type(module).__name__}; "
                           "it cannot be a pruning root")
    return pruner.prune_out_channels


def prune_out_channels(graph: tp.DependencyGraph, module: nn.Module, idxs: list[int], name: str = "") -> None:
    """Remove output channels ``idxs`` of ``module`` (called ``name``) and every coupled slice
    elsewhere; a failure names the layer."""
    try:
        with _keeps_requires_grad(graph.model):
            pruning_group(graph, module, out_channel_handler(graph, module), list(idxs)).prune()
    except PruningError:
        raise
    except Exception as exc:
        layer = name or type(module).__name__
        raise PruningError(f"torch-pruning failed to cut layer {layer} ({type(exc).__name__}: {exc}); keep it whole "
                           f"(ignored_layers / --ignore {layer})") from None


@RECIPE_OPS.register("prune_out_channels")
def _replay_prune_out_channels(replay: Replay, step: dict) -> None:
    if replay.cache.get("graph") is None:  # traced once, again only after a step that changed the structure
        replay.cache["graph"] = dependency_graph(replay.model, torch.zeros(1, *replay.input_shape, device=model_device(replay.model)))
    prune_out_channels(replay.cache["graph"], replay.model.get_submodule(step["layer"]), step["idxs"], step["layer"])


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
    channel_groups: int = 1  # >1: a grouped conv (or GroupNorm) splits the channels into this many equal blocks

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


def _channel_groups(members: list[GroupMember], channels: int) -> int:
    """How many equal blocks the group's channels form: the most groups of any grouped
    (non-depthwise) convolution or GroupNorm in it; 1 when none or when they do not divide."""
    groups = 1
    for m in members:
        if isinstance(m.module, nn.Conv2d) and m.module.groups > 1 and not _is_depthwise(m.module):
            groups = max(groups, m.module.groups)
        elif isinstance(m.module, nn.GroupNorm):
            groups = max(groups, m.module.num_groups)
    return groups if groups > 1 and channels % groups == 0 else 1


@dataclass
class GroupSurvey:
    """The prunable groups of a model, and the roots refused, with why (torch-pruning cannot map their
    channels, or a filter cut would reach into attention heads)."""

    groups: list[CoupledGroup]
    refused: dict[str, str] = field(default_factory=dict)  # root layer name: reason
    kept_by_ignored: dict[str, str] = field(default_factory=dict)  # layer name: the ignored layer it shares channels with


def prunable_groups(graph: tp.DependencyGraph, model: nn.Module, ignored: list[nn.Module]) -> GroupSurvey:
    """Every prunable group whose root is a Conv2d or Linear not in ``ignored`` and that does not
    narrow the model's output (:func:`reaches_output`) (torch-pruning's
    ``get_all_groups``, one root at a time so one group it cannot follow refuses that group only)."""
    names = {m: n for n, m in model.named_modules()}
    graph.neurotomy_unmapped = getattr(graph, "neurotomy_unmapped", set())
    ignored_all = list(ignored) + list(graph.IGNORED_LAYERS_IN_TRACING)
    visited: set = set()
    survey = GroupSurvey([])
    attention = _attention_internals(model)
    for module in list(graph.module2node):
        if module in visited or module in ignored_all or not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        pruner = graph.get_pruner_of_module(module)
        if pruner is None or pruner.get_out_channels(module) is None:
            continue
        try:
            group = pruning_group(graph, module, pruner.prune_out_channels,
                                   list(range(pruner.get_out_channels(module))))
        except Exception as exc:  # torch-pruning's index mapping fails on ops it does not model
            survey.refused[names[module]] = f"torch-pruning cannot map its channels ({type(exc).__name__})"
            continue
        outputs_cut = [dep.target.module for dep, _ in group if graph.is_out_channel_pruning_fn(dep.handler)]
        visited.update(outputs_cut)
        kept_whole = [t for t in outputs_cut if t in ignored_all]
        if kept_whole:  # an ignored layer would lose outputs: not prunable, nor is anything coupled to it
            for t in outputs_cut:
                if t not in ignored_all and t in names:
                    survey.kept_by_ignored[names[t]] = names.get(kept_whole[0], type(kept_whole[0]).__name__)
            continue
        if reaches_output(graph, group):  # its channels are the logits (a Linear, or a 1×1 conv before a pool)
            continue
        if any(dep.target.module in graph.neurotomy_unmapped for dep, _ in group):
            survey.refused[names[module]] = "its channels pass through a channel shuffle (torch-pruning cannot map it)"
            continue
        inside = _attention_inside(graph, group, attention)
        if inside is not None:
            survey.refused[names[module]] = inside
            continue
        survey.groups.append(_coupled_group(graph, group, names))
    return survey


def reaches_output(graph: tp.DependencyGraph, group) -> bool:
    """True when cutting ``group`` removes channels of the model's output — the classes: one of its
    output-channel dependencies lands on the end of the traced graph (torch-pruning's output op, or a
    node nothing reads). Found structurally, so the layer that writes the logits stays whole whatever
    its type (a final Linear, or SqueezeNet's 1×1 conv before a global pool) and whatever the user
    ignores."""
    for dep, _ in group:
        node = dep.target
        if isinstance(node.module, tp.ops._OutputOp):
            return True
        if not node.outputs and graph.is_out_channel_pruning_fn(dep.handler):
            return True
    return False


def _attention_internals(model: nn.Module) -> dict:
    """Module → (how a filter cut would reach into its heads, attention name): the ``qkv`` outputs
    and ``proj`` inputs of each attention layer, and every ``nn.MultiheadAttention``."""
    internals = {}
    for site in attention_sites(model):
        if site.kind == "mha":
            internals[site.module] = ("any", site.name)
        else:
            internals[site.qkv] = ("out", site.name)
            internals[site.proj] = ("in", site.name)
    return internals


def _attention_inside(graph: tp.DependencyGraph, group, attention: dict) -> str | None:
    """Why a channel group may not be cut as filters: it removes channels of attention heads (a
    head's width and ``num_heads`` must change together, which only a head cut does) or passes
    through an ``nn.MultiheadAttention`` (whose heads are tied to the model width)."""
    for dep, _ in group:
        found = attention.get(dep.target.module)
        if found is None:
            continue
        side, name = found
        out = graph.is_out_channel_pruning_fn(dep.handler)
        if side == "any":
            return (f"its channels pass through nn.MultiheadAttention {name}, whose heads are tied to the model width "
                    "(prune_transformer cuts heads and embedding channels)")
        if (side == "out") == out:
            return f"its channels are the heads of {name} (prune_transformer cuts whole heads)"
    return None


def _coupled_group(graph: tp.DependencyGraph, group, names: dict) -> CoupledGroup:
    root = group[0].dep.target.module
    members = []
    for item in group.items:
        dep, module = item.dep, item.dep.target.module
        if not isinstance(module, nn.Module) or module not in names:
            continue
        kind = "out" if graph.is_out_channel_pruning_fn(dep.handler) else "in"
        members.append(GroupMember(names[module], module, kind, [int(i) for i in item.idxs],
                                   [int(i) for i in item.root_idxs]))
    channels = int(graph.get_out_channels(root))
    return CoupledGroup(names[root], root, channels, members, _channel_groups(members, channels))


def coupled_group(graph: tp.DependencyGraph, model: nn.Module, module: nn.Module) -> CoupledGroup:
    """The group of all of ``module``'s output channels, flattened (no refusal checks: the caller
    knows what the group should hold)."""
    names = {m: n for n, m in model.named_modules()}
    try:
        group = pruning_group(graph, module, out_channel_handler(graph, module),
                              list(range(int(graph.get_out_channels(module)))))
    except PruningError:
        raise
    except Exception as exc:
        raise PruningError(f"torch-pruning cannot map the channels of {names.get(module, type(module).__name__)} "
                           f"({type(exc).__name__}: {exc})") from None
    return _coupled_group(graph, group, names)


def coupled_groups(graph: tp.DependencyGraph, model: nn.Module, ignored: list[nn.Module]) -> list[CoupledGroup]:
    """The prunable groups of :func:`prunable_groups` (refused roots left out)."""
    return prunable_groups(graph, model, ignored).groups
