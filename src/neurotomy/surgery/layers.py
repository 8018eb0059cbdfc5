"""Layer pruning: remove whole blocks — residual blocks, transformer blocks, or the conv blocks of a plain network.

A residual block whose shortcut is the identity becomes the identity; a down-sampling block keeps
only its shortcut (1×1 conv + BN), so shapes downstream are unchanged.

A pre-norm transformer block (:func:`~neurotomy.models.transformer.transformer_blocks`: ViT, DeiT,
torchvision's ViT, Swin) computes x + attn(norm(x)), then + mlp(norm(x)): it only adds to the
residual stream, whose width it keeps, so it becomes the identity — exactly the model that skips
it, with nothing to refit. Before removing one, a forward pass at the model's input shape checks
that the block keeps the stream's shape and is not post-norm (norm(x + f(x)), whose removal would
hand the next block an unnormalised stream); such a block is refused, by name
(:func:`~neurotomy.models.transformer.block_forms`).

A plain block (conv + BN + ReLU in a VGG, :class:`~neurotomy.models.plain.PlainBlock`) has no
shortcut to fall back on: removing it hands the block's *input* to its successor (the next conv, or
the classifier). Without data the successor is kept as it is — the block simply becomes the
identity, which needs a block that keeps its channel count. With data the successor is refit by
least squares on activations: its new weights W′ (reading the block's input channels) minimise

    Σ ‖W′ ⋆ z_slim − W ⋆ z_orig‖² + λ ‖W′‖²

over sampled positions of a few batches, where z_orig is what the successor reads in the original
model and z_slim what it reads with the blocks gone. The successor's output is linear in its
unfolded input patches, so this is one ridge solve on normal equations accumulated batch by batch
(:class:`LeastSquares`) — the reconstruction step of channel pruning (He, Zhang & Sun, ICCV 2017
§3.1; Luo et al.'s ThiNet), applied to a removed layer. The intercept goes into the successor's
bias or, when it has none, into the running mean of the BatchNorm that follows it
(BN(y + b) with mean μ is BN(y) with mean μ − b), so the architecture stays what the recipe says.
A 1×1 adapter conv would do the same job with a layer more; refitting the successor costs nothing
at inference, whatever the channel counts.

Which blocks go is chosen elsewhere (the layer rules of :mod:`neurotomy.dynamics.layer_rules`, or a
list). Each removal is written into the checkpoint recipe as ``{"op": "remove_block", "layer": NAME}``,
for a plain block with its ``successor`` and how it was ``adapted`` (``least_squares`` or ``none``);
a replay resizes the successor to read the block's input channels, and the weights come from the file.

Example:
    >>> import torch
    >>> from neurotomy.models import build_model
    >>> model = build_model("resnet20", 1, 10, 28).eval()
    >>> slim = remove_blocks(model, ["layer3.2", "layer2.0"])
    >>> slim(torch.zeros(1, 1, 28, 28)).shape, type(slim.layer3[2]).__name__
    (torch.Size([1, 10]), 'Identity')
    >>> from neurotomy.data import load_dataset
    >>> vgg = build_model("vgg16_bn", 1, 10, 28).eval()
    >>> slim = remove_blocks(vgg, ["features.9"], load_dataset("fashion-mnist"), max_images=256)
    >>> slim.features[10].in_channels, slim.neurotomy_meta.recipe[-1]["adapted"]
    (16, 'least_squares')
    >>> vit = build_model("vit_tiny").eval()
    >>> slim = remove_blocks(vit, ["blocks.4"])
    >>> type(slim.blocks[4]).__name__, slim.neurotomy_meta.recipe[-1]
    ('Identity', {'op': 'remove_block', 'layer': 'blocks.4'})
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from neurotomy.data.batches import iterate_batches
from neurotomy.device import model_device, to_device
from neurotomy.errors import CheckpointError, PruningError
from neurotomy.models.activations import ACTIVATED
from neurotomy.models.anatomy import (eval_mode, layer_blocks, model_input_shape, plain_block_table, residual_blocks,
                                      residual_table, set_submodule)
from neurotomy.models.transformer import block_forms, transformer_blocks
from neurotomy.probe import Probe
from neurotomy.surgery.recipe import RECIPE_OPS, Replay


def _input_size(layer: nn.Module) -> int:
    return layer.in_channels if isinstance(layer, nn.Conv2d) else layer.in_features


def _reading(layer: nn.Module, inputs: int) -> nn.Module:
    """A zeroed copy of ``layer`` (a dense conv or a Linear) that reads ``inputs`` channels."""
    weight = layer.weight
    if isinstance(layer, nn.Conv2d):
        new: nn.Module = nn.Conv2d(inputs, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                                   layer.dilation, 1, layer.bias is not None, layer.padding_mode)
    else:
        new = nn.Linear(inputs, layer.out_features, layer.bias is not None)
    new = new.to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        for parameter in new.parameters():
            parameter.zero_()
    return new


def remove_block_in_place(model: nn.Module, name: str, input_shape: tuple[int, ...] | None = None) -> str | None:
    """Remove block ``name``: a residual block becomes its shortcut (down-sampling) or the identity;
    a transformer block becomes the identity (checked residual by :func:`remove_blocks`, not here);
    a plain block's conv, norm and activation become identities and its successor is resized to
    read the block's input channels (zeroed when resized: its weights are to be refit or loaded).
    Returns a plain block's successor, None for a residual or transformer block."""
    residual = residual_table(model, input_shape).get(name)
    if residual is not None:
        shortcut = residual.shortcut
        set_submodule(model, name, model.get_submodule(shortcut) if shortcut is not None else nn.Identity())
        return None
    if name in transformer_blocks(model):
        set_submodule(model, name, nn.Identity())
        return None
    plain = plain_block_table(model, input_shape).get(name)
    if plain is None:
        raise PruningError(f"{name!r} is not a residual block, transformer block or conv block of this model; blocks: "
                           f"{', '.join(layer_blocks(model, input_shape)) or 'none'}")
    for part in (plain.conv, plain.norm, plain.name):
        if part is not None and not part.endswith(ACTIVATED):  # an activation call stays, idempotent
            set_submodule(model, part, nn.Identity())
    successor = model.get_submodule(plain.successor)
    if _input_size(successor) != plain.in_channels:
        set_submodule(model, plain.successor, _reading(successor, plain.in_channels))
    return plain.successor


@RECIPE_OPS.register("remove_block")
def _replay_remove_block(replay: Replay, step: dict) -> None:
    expected = step.get("successor")
    plain = plain_block_table(replay.model, replay.input_shape).get(step["layer"])
    if expected is not None and (plain is None or plain.successor != expected):
        raise CheckpointError(f"surgery recipe removes block {step['layer']!r} whose successor it names "
                              f"{str(expected)[:60]!r}, which this model does not have; the checkpoint is corrupt")
    remove_block_in_place(replay.model, step["layer"], replay.input_shape)
    replay.cache.clear()  # the module structure changed: a traced graph is stale


@dataclass
class LeastSquares:
    """Ridge regression Y ≈ X W + b from normal equations accumulated over batches (float64).

    ``solve(ridge)`` minimises ‖X W + b − Y‖² + λ‖W‖² with λ = ``ridge`` × the mean diagonal of XᵀX
    (scale-free); the intercept b (when ``intercept``) is not penalised.

    Example:
        >>> x = torch.randn(100, 3); y = x @ torch.tensor([[1.], [2.], [3.]]) + 4
        >>> fit = LeastSquares(3, 1); fit.add(x, y); weight, bias = fit.solve(ridge=0.0)
        >>> [round(v, 6) for v in weight[:, 0].tolist()], round(float(bias[0]), 6)
        ([1.0, 2.0, 3.0], 4.0)
    """

    inputs: int
    outputs: int
    intercept: bool = True

    def __post_init__(self) -> None:
        width = self.inputs + self.intercept
        self.xtx = torch.zeros(width, width, dtype=torch.float64)
        self.xty = torch.zeros(width, self.outputs, dtype=torch.float64)
        self.rows = 0

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Add rows ``x`` (N × inputs) with targets ``y`` (N × outputs)."""
        x, y = x.detach().double().cpu(), y.detach().double().cpu()
        if self.intercept:
            x = torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], 1)
        self.xtx += x.T @ x
        self.xty += x.T @ y
        self.rows += len(x)

    def solve(self, ridge: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(W: inputs × outputs, b: outputs or None)."""
        if self.rows == 0:
            raise PruningError("no rows to fit the successor layer on; give data with at least one image")
        penalty = torch.ones(len(self.xtx), dtype=torch.float64)
        if self.intercept:
            penalty[-1] = 0.0
        scale = ridge * float(torch.diagonal(self.xtx)[: self.inputs].mean())
        system = self.xtx + torch.diag(penalty * scale)
        # the intercept row/column is never singular while rows > 0; a feature that is always zero
        # (a 3×3 tap that only sees padding) is, unless ridge > 0: lstsq returns the minimum-norm fit
        solution = torch.linalg.lstsq(system, self.xty, driver="gelsd").solution if ridge == 0 else \
            torch.linalg.solve(system, self.xty)
        if self.intercept:
            return solution[:-1], solution[-1]
        return solution, None


def _patches(layer: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """What ``layer``'s output is linear in: B × D × L (unfolded conv patches, or B × D × 1)."""
    if isinstance(layer, nn.Linear):
        return inputs.flatten(1)[:, :, None]
    padding = layer.padding if layer.padding != "same" else tuple(k // 2 for k in layer.kernel_size)
    return F.unfold(inputs, layer.kernel_size, layer.dilation, padding, layer.stride)


def _sample(rows: torch.Tensor, targets: torch.Tensor, positions: int,
            generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """At most ``positions`` random positions per image: (N × D, N × O)."""
    batch, _, length = rows.shape
    if length > positions:
        pick = torch.rand(batch, length, generator=generator).argsort(1)[:, :positions].to(rows.device)
        rows = rows.gather(2, pick[:, None].expand(-1, rows.shape[1], -1))
        targets = targets.gather(2, pick[:, None].expand(-1, targets.shape[1], -1))
    return rows.permute(0, 2, 1).flatten(0, 1), targets.permute(0, 2, 1).flatten(0, 1)


def _following_norm(model: nn.Module, name: str) -> nn.BatchNorm2d | None:
    """The BatchNorm right after ``name`` in its Sequential, if there is one."""
    parent_name, _, key = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if not isinstance(parent, nn.Sequential):
        return None
    keys = list(parent._modules)
    after = parent._modules[keys[keys.index(key) + 1]] if keys.index(key) + 1 < len(keys) else None
    return after if isinstance(after, nn.BatchNorm2d) else None


@torch.no_grad()
def refit_successor(original: nn.Module, slim: nn.Module, name: str, data: Dataset, *, max_images: int = 1024,
                    positions: int = 16, ridge: float = 1e-3, batch_size: int = 128, seed: int = 0) -> LeastSquares:
    """Refit layer ``name`` of ``slim`` (a conv or Linear) so that, on ``data``, its output
    reproduces what layer ``name`` of ``original`` outputs (ridge least squares over at most
    ``positions`` sampled positions per image, ``max_images`` images); returns the fit."""
    target_layer, layer = original.get_submodule(name), slim.get_submodule(name)
    norm = _following_norm(slim, name) if layer.bias is None else None
    width = layer.weight[0].numel()  # a conv's C × kh × kw patch, a Linear's input
    fit = LeastSquares(width, target_layer.weight.shape[0], intercept=layer.bias is not None or norm is not None)
    generator = torch.Generator().manual_seed(seed)
    seen: dict[str, torch.Tensor] = {}
    where = model_device(slim)
    with eval_mode(original), eval_mode(slim), \
            Probe(original, [name], on_output=lambda _, out: seen.update(target=out)), \
            Probe(slim, [name], on_module=lambda _, module, inputs, out: seen.update(inputs=inputs[0])):
        for images, _ in iterate_batches(data, batch_size, max_images=max_images):
            images = to_device(where, images)
            original(images)
            slim(images)
            targets = seen["target"].flatten(2) if seen["target"].dim() > 2 else seen["target"][:, :, None]
            fit.add(*_sample(_patches(layer, seen["inputs"]), targets, positions, generator))
    weight, bias = fit.solve(ridge)
    layer.weight.copy_(weight.T.reshape(layer.weight.shape).to(layer.weight.dtype))
    if bias is not None and layer.bias is not None:
        layer.bias.copy_(bias.to(layer.bias.dtype))
    elif bias is not None:
        norm.running_mean -= bias.to(norm.running_mean.dtype)
    return fit


def _check_transformer_blocks(model: nn.Module, names: list[str], input_shape: tuple[int, ...] | None) -> None:
    """Refuse, by name, a transformer block that is not residual at ``input_shape``
    (:class:`~neurotomy.models.transformer.BlockForm`)."""
    if not names:
        return
    if input_shape is None:
        raise PruningError(f"cannot check that transformer block {names[0]!r} is residual without an input shape: "
                           "load the model with neurotomy.load_model, or pass data or input_shape=(C, H, W)")
    forms = block_forms(model, tuple(input_shape), names)
    for name in names:
        problem = forms[name].problem() if name in forms else None
        if problem is not None:
            raise PruningError(f"cannot remove {problem}; remove other blocks")


def _check_runs(slim: nn.Module, names: list[str], input_shape: tuple[int, ...]) -> None:
    """The model without ``names`` still runs (a block called with extra arguments cannot be an nn.Identity)."""
    parameter = next(slim.parameters(), None)
    x = torch.zeros(1, *input_shape) if parameter is None else \
        torch.zeros(1, *input_shape, device=parameter.device, dtype=parameter.dtype)
    try:
        with torch.no_grad(), eval_mode(slim):
            slim(x)
    except Exception as error:  # any failure of the user's forward: say which removal caused it
        raise PruningError(f"the model does not run without {', '.join(names)} ({str(error).splitlines()[0][:120]}); "
                           "remove other blocks") from None


def remove_blocks(model: nn.Module, names: list[str], data: Dataset | None = None, *, max_images: int = 1024,
                  positions: int = 16, ridge: float = 1e-3, seed: int = 0,
                  input_shape: tuple[int, ...] | None = None) -> nn.Module:
    """A copy of ``model`` without the blocks ``names``; the recipe records each removal.

    Plain blocks: with ``data``, each successor whose input changed is refit by least squares
    (:func:`refit_successor`, in forward order, each on the model with the earlier ones refit);
    without, the successors are kept, which needs blocks that keep their channel count.
    Transformer blocks are checked residual first, by a forward pass at ``input_shape`` (default:
    the model's, else the first image of ``data``), and become identities.
    """
    shape = input_shape or model_input_shape(model, data)
    blocks = layer_blocks(model, shape)
    unknown = [n for n in names if n not in blocks]
    if unknown:
        raise PruningError(f"{unknown[0]!r} is not a residual block, transformer block or conv block; blocks: "
                           f"{', '.join(blocks) or 'none'}")
    if len(set(names)) != len(names):
        raise PruningError(f"blocks to remove are listed twice: {', '.join(names)}; name each once")
    transformer = [n for n in names if n in set(transformer_blocks(model)) - set(residual_blocks(model, shape))]
    _check_transformer_blocks(model, transformer, shape)
    slim = copy.deepcopy(model)
    steps = []
    for name in names:
        successor = remove_block_in_place(slim, name, shape)
        steps.append({"op": "remove_block", "layer": name} if successor is None else
                     {"op": "remove_block", "layer": name, "successor": successor,
                      "adapted": "none" if data is None else "least_squares"})
    modules, order = dict(slim.named_modules()), [n for n, _ in model.named_modules()]
    # a successor that was itself removed later — an identity now, or gone with the wrapper block
    # that held it — reads nothing to refit
    successors = sorted({s["successor"] for s in steps if "successor" in s and s["successor"] in modules
                         and not isinstance(modules[s["successor"]], nn.Identity)}, key=order.index)
    if data is None:
        resized = [s for s in successors if _input_size(modules[s]) != _input_size(model.get_submodule(s))]
        if resized:
            raise PruningError(f"removing {', '.join(names)} changes the channels {resized[0]!r} reads; pass data "
                               "so that it is refit by least squares, or remove blocks that keep their channels")
    else:
        for name in successors:
            refit_successor(model, slim, name, data, max_images=max_images, positions=positions, ridge=ridge,
                            seed=seed)
    if transformer:
        _check_runs(slim, transformer, shape)
    meta = getattr(model, "neurotomy_meta", None)
    if meta is not None:
        slim.neurotomy_meta = copy.deepcopy(meta)
        slim.neurotomy_meta.recipe = list(meta.recipe) + steps
    return slim


__all__ = ["LeastSquares", "refit_successor", "remove_block_in_place", "remove_blocks"]
