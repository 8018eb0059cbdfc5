"""What every attribution method shares: checking inputs, resolving targets, picking a layer,
turning a per-channel input attribution into one map per image, and display normalisation.

One convention everywhere (as in Captum): ``target=None`` explains the predicted class of *each*
image, an ``int`` explains that class for every image, and a sequence or tensor must give one class
per image — a length mismatch is an error, never a silent "explain only the first image".
"""

from __future__ import annotations

import reprlib
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from neurotomy.errors import ModelError, NeurotomyError
from neurotomy.models.map_layouts import MapLayouts
from neurotomy.probe import Probe
from neurotomy.registry import Registry

Target = int | Sequence[int] | torch.Tensor | None


class ExplainError(NeurotomyError):
    """An explanation request cannot be served (inputs, targets, layer or method)."""


def check_inputs(inputs: torch.Tensor) -> torch.Tensor:
    """A float image batch ``N × C × H × W``; anything else is a user error."""
    if not isinstance(inputs, torch.Tensor):
        raise ExplainError(f"inputs must be a float batch N×C×H×W tensor, got {type(inputs).__name__}")
    if inputs.dim() == 3:
        raise ExplainError(f"inputs have shape {tuple(inputs.shape)}; pass a batch N×C×H×W "
                           "(use inputs.unsqueeze(0) for one image)")
    if inputs.dim() != 4:
        raise ExplainError(f"inputs have shape {tuple(inputs.shape)}; expected a batch N×C×H×W")
    if not inputs.is_floating_point():
        raise ExplainError(f"inputs have dtype {inputs.dtype}; pass normalised float images")
    if inputs.shape[0] == 0 or inputs[0].numel() == 0:
        raise ExplainError(f"inputs have shape {tuple(inputs.shape)}: no image to explain")
    if not bool(torch.isfinite(inputs).all()):
        raise ExplainError("inputs contain NaN or infinity; pass normalised float images")
    return inputs


def forward(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Logits ``N × classes``, with a clear error when the inputs do not fit the model; computed on
    the model's device, returned on the inputs' device."""
    try:
        logits = model(inputs.to(next((p.device for p in model.parameters()), inputs.device))).to(inputs.device)
    except RuntimeError as exc:
        first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        # name the channels only when they are what does not fit (not for a size a flatten cannot take)
        wrong_channels = first_conv is not None and inputs.dim() == 4 and inputs.shape[1] != first_conv.in_channels
        expects = f" (its first conv takes {first_conv.in_channels} channels)" if wrong_channels else ""
        raise ExplainError(f"inputs of shape {tuple(inputs.shape)} do not fit the model{expects}: "
                           f"{str(exc).splitlines()[0]}") from None
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != inputs.shape[0]:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ExplainError(f"the model returns {shape}; explanations need class scores N×classes")
    return logits


def check_targets(target: int | Sequence[int] | torch.Tensor, batch: int) -> torch.Tensor:
    """One class index per image as a ``long`` tensor of length ``batch`` (an integer is repeated)."""
    if isinstance(target, int):
        return torch.full((batch,), target, dtype=torch.long)
    try:
        values = torch.as_tensor(target)
    except (TypeError, ValueError, RuntimeError):
        values = None
    if values is None or values.is_complex() or (values.is_floating_point() and not _whole(values)):
        raise ExplainError(f"target must be an integer class index (one for all images, one per image, or None "
                           f"for the predicted classes), got {' '.join(reprlib.repr(target).split())}")
    if values.dim() == 0:  # a numpy or 0-d tensor integer: that class for every image
        return torch.full((batch,), int(values), dtype=torch.long)
    targets = values.long().flatten()
    if targets.numel() != batch:
        raise ExplainError(f"{targets.numel()} targets for a batch of {batch} images; give one class "
                           "per image, one int for all, or None for the predicted classes")
    return targets


def _whole(values: torch.Tensor) -> bool:
    """Whether every value of a float tensor is a finite whole number (labels stored as floats)."""
    return bool(torch.isfinite(values).all() and (values == values.round()).all())


def resolve_targets(model: nn.Module, inputs: torch.Tensor, target: Target) -> torch.Tensor:
    """One class index per image (a ``long`` tensor of length N)."""
    if target is None:
        with torch.no_grad():
            return forward(model, inputs).argmax(1)
    targets = check_targets(target, inputs.shape[0])
    with torch.no_grad():
        classes = forward(model, inputs[:1]).shape[1]
    bad = targets[(targets < 0) | (targets >= classes)]
    if bad.numel():
        raise ExplainError(f"target class {int(bad[0])} does not exist: the model has {classes} classes")
    return targets.to(inputs.device)


def class_scores(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each image's logit for its own target (length N)."""
    return logits.gather(1, targets.view(-1, 1)).squeeze(1)


def pixel_map(attribution: torch.Tensor) -> torch.Tensor:
    """``N × C × H × W`` → ``N × H × W``: per pixel the channel value of largest magnitude, sign kept
    (the display rule of Khakzar et al.; for one channel it is the identity)."""
    if attribution.shape[1] == 1:
        return attribution[:, 0]
    index = attribution.abs().argmax(1, keepdim=True)
    return attribution.gather(1, index).squeeze(1)


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``N × h × w`` → ``N × H × W``, bilinear with half-pixel centres (what OpenCV's resize does)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


DISPLAY_SCALES: Registry = Registry("normalisation", error=ExplainError)
"""Per-image display rescalings of flattened maps ``N × pixels``, by name."""


@DISPLAY_SCALES.register("minmax")
def minmax_scale(flat: torch.Tensor) -> torch.Tensor:
    """To [0, 1] (pytorch-grad-cam's convention)."""
    lo, hi = flat.amin(1), flat.amax(1)
    return (flat - lo[:, None]) / (hi - lo).clamp(min=1e-12)[:, None]


@DISPLAY_SCALES.register("maxabs")
def maxabs_scale(flat: torch.Tensor) -> torch.Tensor:
    """To [−1, 1], keeping the sign and zero (Khakzar et al.'s display)."""
    return flat / flat.abs().amax(1).clamp(min=1e-12)[:, None]


def normalize(maps: torch.Tensor, how: str = "minmax") -> torch.Tensor:
    """Per-image rescaling for display: ``minmax`` → [0, 1] (pytorch-grad-cam's convention),
    ``maxabs`` → [−1, 1] keeping the sign and zero (Khakzar et al.'s display).

    Example:
        >>> normalize(torch.tensor([[[1.0, 3.0]]])).tolist()
        [[[0.0, 1.0]]]
    """
    return DISPLAY_SCALES.get(how)(maps.flatten(1)).view_as(maps)


# Channels-last maps (Swin, ConvNeXt blocks: N × h × w × C): the rule that reads a 4-D map's layout from the
# module that produced it lives one floor down, in neurotomy.scores.subspace, because the subspace scores need
# it too; CAMs, CRP and spatial_layers use it from here.


def channels_first(output: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A 4-D map as N × C × h × w: channels-last ones permuted, the others as they are."""
    return output.permute(0, 3, 1, 2) if channels_last and output.dim() == 4 else output


def spatial_layers(model: nn.Module, inputs: torch.Tensor) -> list[str]:
    """Names of modules (any depth) whose output is a 4-D feature map of more than one position (channels
    first or last), in the order they finish."""
    sizes: dict[str, tuple[int, int]] = {}
    names = [n for n, _ in model.named_modules() if n]
    layouts = MapLayouts()

    def record(name: str, module: nn.Module, inputs: tuple, output) -> None:
        layouts(name, module, inputs, output)
        if name in layouts.channels_last and name not in sizes:
            sizes[name] = tuple(output.shape[1:3] if layouts.channels_last[name] else output.shape[2:])

    with torch.no_grad(), Probe(model, names, on_module=record):
        forward(model, inputs[:1])
    return [name for name, (h, w) in sizes.items() if h * w > 1]


def default_cam_layer(model: nn.Module, inputs: torch.Tensor) -> str:
    """The last module to produce a spatial feature map — for ResNets the last stage, for VGG the
    feature extractor, for timm's Swin its final (channels-last) ``norm``: the layer Grad-CAM's authors
    recommend."""
    layers = spatial_layers(model, inputs)
    if not layers:
        raise ModelError("the model has no layer with a spatial output; CAM methods need a conv layer")
    return layers[-1]
