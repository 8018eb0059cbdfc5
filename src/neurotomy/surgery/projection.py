"""Acting on subspaces: keep only some directions of a layer's output (or remove one), as a
low-rank 1×1 projection pair recorded in the recipe.

Which directions does the model need? Replace the output a of layer L (``d`` channels) by its
projection onto the kept subspace U (``d × k``, orthonormal columns),

    a ↦ μ + UUᵀ(a − μ),

where μ is the mean activation vector over data (each removed direction is held at its mean — a
mean ablation, so a removed direction stops carrying information without shifting the layer's
average; ``mean=None`` ablates to zero). Then measure accuracy (the job does:
:func:`neurotomy.jobs.concepts.accuracy_kept`). Removing a subspace is keeping its orthogonal
complement (:func:`remove_subspace`).

The projection is built as a pair of layers wrapped around L — :class:`ProjectedLayer`: ``down``
(d → k, weights Uᵀ, no bias) then ``up`` (k → d, weights U, bias (I − UUᵀ)μ) — 1×1 convolutions for a
conv output (``channels_first``), Linear layers for tokens, flat features and channels-last maps
N × H × W × d (``channels_last``: Swin, ConvNeXt blocks, read from the modules as
:class:`~neurotomy.models.map_layouts.MapLayouts` does).
With ``fold=True`` and L a plain conv or Linear, ``down`` is folded into L itself (weights UᵀW, bias
Uᵀb): L then computes only k channels and ``up`` restores d, a rank-k factorisation of L that costs
k·(C_in·kh·kw + d) multiply-adds per position instead of d·C_in·kh·kw. Unfolded, the pair adds
2·d·k per position: it answers the question, and compresses only where the next layer reads the
k-channel code (a fold into the consumer, not done here).

Each projection is written into the recipe as ``{"op": "project_subspace", "layer": L, "channels": d,
"rank": k, "layout": …, "folded": …}``; a replay rebuilds the wrapper with fresh layers of those
shapes and the weights come from the file (:func:`neurotomy.loading.load_model`).

Example:
    >>> import torch
    >>> from neurotomy.models import build_model
    >>> model = build_model("lenet5", 1, 10, 8).eval()
    >>> full = project_layer(model, "features.3", torch.eye(16), input_shape=(1, 8, 8))
    >>> x = torch.randn(2, 1, 8, 8)
    >>> bool(torch.allclose(full(x), model(x), atol=1e-5)), type(full.features[3]).__name__
    (True, 'ProjectedLayer')
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from neurotomy.device import model_device
from neurotomy.errors import CheckpointError, NeurotomyError, PruningError
from neurotomy.models.anatomy import eval_mode, model_input_shape, set_submodule
from neurotomy.probe import Probe
from neurotomy.models.map_layouts import MapLayouts
from neurotomy.scores.subspace import (LAYOUTS, check_orthonormal, layout_of, orthonormal_complement,
                                       parameter_dtype)
from neurotomy.surgery.recipe import RECIPE_OPS, Replay

OP = "project_subspace"


class ProjectedLayer(nn.Module):
    """``layer`` followed by ``down`` (d → k) and ``up`` (k → d): its output projected onto k directions."""

    def __init__(self, layer: nn.Module, down: nn.Module, up: nn.Module) -> None:
        super().__init__()
        self.layer, self.down, self.up = layer, down, up

    def forward(self, *args, **kwargs):
        return self.up(self.down(self.layer(*args, **kwargs)))


def projection_pair(layout: str, channels: int, rank: int, folded: bool = False) -> tuple[nn.Module, nn.Module]:
    """Fresh (``down``, ``up``) layers of a rank-``rank`` projection of ``channels`` channels;
    ``down`` is the identity when it is folded into the layer."""
    if layout == "channels_first":
        down: nn.Module = nn.Conv2d(channels, rank, 1, bias=False)
        up: nn.Module = nn.Conv2d(rank, channels, 1, bias=True)
    else:
        down, up = nn.Linear(channels, rank, bias=False), nn.Linear(rank, channels, bias=True)
    return (nn.Identity() if folded else down), up


def _foldable(layer: nn.Module, layout: str) -> bool:
    if isinstance(layer, nn.Conv2d):
        return layout == "channels_first" and layer.groups == 1 and layer.padding_mode == "zeros"
    return isinstance(layer, nn.Linear) and layout == "channels_last"


def _placement(model: nn.Module, layer: nn.Module) -> dict:
    """Device and dtype of a projection pair around ``layer``: its own parameters', or the model's for a
    parameter-free layer (an activation), whose output has the model's dtype."""
    weight = next((p for p in layer.parameters() if p.is_floating_point()), None)
    if weight is None:
        return {"device": model_device(model), "dtype": parameter_dtype(model)}
    return {"device": weight.device, "dtype": weight.dtype}


def _narrowed(layer: nn.Module, rank: int) -> nn.Module:
    """A fresh copy of conv or Linear ``layer`` with ``rank`` outputs (weights to be set or loaded)."""
    if isinstance(layer, nn.Conv2d):
        return nn.Conv2d(layer.in_channels, rank, layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                         1, True).to(device=layer.weight.device, dtype=layer.weight.dtype)
    return nn.Linear(layer.in_features, rank, True).to(device=layer.weight.device, dtype=layer.weight.dtype)


def output_layout(model: nn.Module, layer: str, input_shape: tuple[int, ...] | None = None) -> tuple[str, int]:
    """(layout, channels) of ``layer``'s output, seen in one forward pass of a random image."""
    shape = input_shape or model_input_shape(model)
    if shape is None:
        raise PruningError("the model carries no input shape; load it with neurotomy.load_model or pass "
                           "input_shape=(C, H, W)")
    seen: dict[str, torch.Tensor] = {}
    layouts = MapLayouts()  # a Swin or ConvNeXt block's 4-D map can be N × H × W × d: then Linear layers project it
    with torch.no_grad(), eval_mode(model), layouts.watch(model), \
            Probe(model, [layer], on_output=lambda _, out: seen.update(out=out)):
        # a seeded random image, not zeros: on a constant map both readings of a LayerNorm can agree
        image = torch.randn(1, *shape, generator=torch.Generator().manual_seed(0))
        model(image.to(device=model_device(model), dtype=parameter_dtype(model)))
    if "out" not in seen or not isinstance(seen["out"], torch.Tensor):
        raise PruningError(f"layer {layer!r} does not run on the model's input or returns no tensor; choose a layer "
                           "whose output is a feature map, tokens or features")
    layout = layout_of(seen["out"], layouts.channels_last.get(layer))
    return layout, seen["out"].shape[1 if layout == "channels_first" else -1]


def project_layer(model: nn.Module, layer: str, basis: torch.Tensor, mean: torch.Tensor | None = None, *,
                  fold: bool = False, input_shape: tuple[int, ...] | None = None) -> nn.Module:
    """A copy of ``model`` whose ``layer`` output is projected onto the span of ``basis`` (``d × k``,
    orthonormal columns; a list of bases is joined), removed directions held at ``mean`` (``d``;
    ``None``: zero). With ``fold`` a plain conv/Linear ``layer`` computes the k-channel code itself.
    The recipe records the step; the copy is in eval mode."""
    if isinstance(basis, (list, tuple)):
        basis = torch.cat([torch.as_tensor(b).double() for b in basis], 1)
    modules = dict(model.named_modules())
    if layer not in modules or not layer:
        raise PruningError(f"model has no layer {layer!r}; see `neurotomy info` for layer names")
    layout, channels = output_layout(model, layer, input_shape)
    try:
        basis = check_orthonormal(basis, channels)
    except NeurotomyError as exc:
        raise PruningError(str(exc)) from None
    rank = basis.shape[1]
    if fold and not _foldable(modules[layer], layout):
        raise PruningError(f"layer {layer!r} is a {type(modules[layer]).__name__}; only a plain Conv2d or Linear can "
                           "take the projection folded in: pass fold=False")
    mean = torch.zeros(channels, dtype=torch.float64) if mean is None else torch.as_tensor(mean).double().cpu()
    if mean.shape != (channels,):
        raise PruningError(f"the mean has shape {tuple(mean.shape)}; give one value per channel ({channels})")
    projected = copy.deepcopy(model).eval()
    inner = projected.get_submodule(layer)
    placement = _placement(projected, inner)
    down, up = projection_pair(layout, channels, rank, fold)
    down, up = down.to(**placement), up.to(**placement)
    with torch.no_grad():
        if fold:
            narrowed = _narrowed(inner, rank)
            flat = inner.weight.double().flatten(1)  # d × (C_in·kh·kw) or d × in_features
            narrowed.weight.copy_((basis.T.to(flat.device) @ flat).view_as(narrowed.weight))
            bias = inner.bias.double() if inner.bias is not None else flat.new_zeros(channels)
            narrowed.bias.copy_(basis.T.to(flat.device) @ bias)
            inner = narrowed
        else:
            down.weight.copy_(basis.T.reshape(down.weight.shape))
        up.weight.copy_(basis.reshape(up.weight.shape))
        up.bias.copy_(mean - basis @ (basis.T @ mean))
    set_submodule(projected, layer, ProjectedLayer(inner, down, up))
    meta = getattr(model, "neurotomy_meta", None)
    if meta is not None:
        projected.neurotomy_meta = copy.deepcopy(meta)
        projected.neurotomy_meta.recipe = list(meta.recipe) + [
            {"op": OP, "layer": layer, "channels": int(channels), "rank": int(rank), "layout": layout,
             "folded": bool(fold)}]
    return projected


def remove_subspace(model: nn.Module, layer: str, basis: torch.Tensor, mean: torch.Tensor | None = None, *,
                    input_shape: tuple[int, ...] | None = None) -> nn.Module:
    """A copy of ``model`` without the directions of ``basis`` at ``layer``'s output (they are held
    at ``mean``): the projection onto the orthogonal complement. Removing every direction is refused."""
    if isinstance(basis, (list, tuple)):
        basis = torch.cat([torch.as_tensor(b).double() for b in basis], 1)
    try:
        complement = orthonormal_complement(basis)
    except NeurotomyError as exc:
        raise PruningError(str(exc)) from None
    if complement.shape[1] == 0:
        raise PruningError(f"removing all {basis.shape[0]} directions of {layer!r} leaves nothing; keep at least one")
    return project_layer(model, layer, complement, mean, input_shape=input_shape)


def projection_macs(channels: int, rank: int, positions: int) -> int:
    """Multiply-adds per image of an unfolded pair (down and up) over ``positions`` positions."""
    return 2 * channels * rank * positions


@RECIPE_OPS.register(OP)
def _replay_project_subspace(replay: Replay, step: dict) -> None:
    channels, rank, layout, folded = step.get("channels"), step.get("rank"), step.get("layout"), step.get("folded")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (channels, rank)) or rank > channels \
            or layout not in LAYOUTS or not isinstance(folded, bool):
        raise CheckpointError(f"surgery recipe: the projection of {step['layer']!r} has channels {channels!r}, rank "
                              f"{rank!r}, layout {layout!r}, folded {folded!r}; the checkpoint is corrupt")
    inner = replay.model.get_submodule(step["layer"])
    if folded and not _foldable(inner, layout):
        raise CheckpointError(f"surgery recipe folds a projection into {step['layer']!r}, a {type(inner).__name__}; "
                              "the checkpoint is corrupt")
    placement = _placement(replay.model, inner)
    down, up = projection_pair(layout, channels, rank, folded)
    set_submodule(replay.model, step["layer"],
                  ProjectedLayer(_narrowed(inner, rank) if folded else inner, down.to(**placement), up.to(**placement)))
    replay.cache.clear()  # the module structure changed: a traced graph is stale


__all__ = ["OP", "ProjectedLayer", "output_layout", "project_layer", "projection_macs", "projection_pair",
           "remove_subspace"]
