"""Perturbation attributions — maps computed from a model's outputs alone, so they explain a model
without gradients (an int8 ONNX file in onnxruntime) exactly as they explain a PyTorch model:

- **occlusion** (Zeiler & Fergus, ECCV 2014 §4.2): slide a square of the baseline value over the
  image; a pixel's relevance is the mean drop of the target's softmax probability over the windows
  that cover it. Windows follow Captum's ``Occlusion`` (positions ``0, s, 2s, …`` up to and including
  the first that reaches the border, cropped there), so every pixel is covered; the default window
  is about a seventh of the image side (4 for 28 × 28), the stride half of it.
- **RISE** (Petsiuk et al., BMVC 2018 §3): ``masks`` random binary ``cells × cells`` grids (each cell
  kept with probability ``keep``), upsampled bilinearly to ``(cells + 1) × cell`` pixels and cropped
  at a random shift of less than one cell; the map is ``Σ_i p_c(x ⊙ M_i) M_i / (masks · keep)``. The
  masks come from a ``torch.Generator`` seeded with ``seed`` and are the same for every image, so two
  models are compared on the same masks, and a batch gives the same maps as its images one by one.

Masked pixels take the ``baseline`` value in the model's input space: 0 in normalised images is the
dataset mean, the grey square of Zeiler & Fergus (RISE's code likewise multiplies normalised inputs
by the masks). Scores are softmax probabilities of the target, as in both papers.

The core functions, :func:`occlusion_maps` and :func:`rise_maps`, take any batched callable
``logits = f(images)`` (a torch tensor ``B × C × H × W`` in; logits ``B × classes`` out, as a torch
tensor or a numpy array), e.g. an onnxruntime session; the registered methods ``occlusion`` and
``rise`` call them with the PyTorch model.

Example:
    >>> from neurotomy.loading import load_model
    >>> from neurotomy.data import load_dataset
    >>> model = load_model("zoo:lenet5-digits").eval()
    >>> images = load_dataset("digits", split="test").images[:2]
    >>> targets = model(images).argmax(1)
    >>> occlusion_maps(model, images, targets).shape
    torch.Size([2, 8, 8])
    >>> a = rise_maps(model, images, targets, masks=200, seed=1)
    >>> torch.equal(a, rise_maps(lambda x: model(x).detach().numpy(), images, targets, masks=200, seed=1))
    True
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from neurotomy import validate
from neurotomy.explain.common import ExplainError, check_inputs, check_targets, forward
from neurotomy.explain.methods import register_method

LogitsFunction = Callable[[torch.Tensor], "torch.Tensor | np.ndarray"]
"""A batched classifier: images ``B × C × H × W`` → logits ``B × classes`` (torch or numpy)."""

RISE_MASKS = 1000
"""Masks per RISE map. Petsiuk et al. use 4000 for 224 × 224 ImageNet images. Measured on
zoo:resnet20-fmnist (10 test images, 7 × 7 cells): a 1000-mask map has a Spearman correlation of 0.78
with a 4000-mask map drawn from another seed (250: 0.58, 500: 0.65, 2000: 0.80) — the ranking of the
many weakly relevant pixels converges slowly. Two models compared with the same seed share the same
masks, so that noise is common to both maps and is not counted as a difference of the models."""


def _logits(f: LogitsFunction, images: torch.Tensor) -> torch.Tensor:
    """``f(images)`` as a float tensor on the images' device, checked to be ``B × classes``."""
    out = f(images)
    if not isinstance(out, torch.Tensor):
        out = torch.as_tensor(np.asarray(out))
    if out.dim() != 2 or out.shape[0] != images.shape[0]:
        raise ExplainError(f"the model returns {tuple(out.shape)} for {images.shape[0]} images; perturbation "
                           "maps need class scores N×classes")
    return out.detach().to(images.device, torch.float32)


def target_probabilities(f: LogitsFunction, images: torch.Tensor, targets: torch.Tensor, masks: torch.Tensor,
                         baseline: float = 0.0, batch_size: int = 256) -> torch.Tensor:
    """Softmax probability of each image's target with each mask applied: ``N × K`` for images
    ``N × C × H × W`` and ``masks`` ``K × H × W`` (1 keeps a pixel, 0 sets it to ``baseline``, values
    between blend the two; the same mask for every channel). Image–mask pairs are evaluated
    ``batch_size`` at a time."""
    n, k = images.shape[0], masks.shape[0]
    masks = masks.to(images)
    out = torch.empty(n * k, dtype=torch.float32, device=images.device)
    with torch.no_grad():
        for start in range(0, n * k, batch_size):
            pairs = torch.arange(start, min(n * k, start + batch_size), device=images.device)
            image, mask = pairs // k, pairs % k
            m = masks[mask][:, None]
            masked = images[image] * m + baseline * (1 - m)
            probs = _logits(f, masked).softmax(1)
            bad = targets[(targets < 0) | (targets >= probs.shape[1])] if start == 0 else targets[:0]
            if bad.numel():
                raise ExplainError(f"target class {int(bad[0])} does not exist: the model has {probs.shape[1]} classes")
            out[start:start + len(pairs)] = probs.gather(1, targets[image][:, None]).squeeze(1)
    return out.view(n, k)


def occlusion_windows(height: int, width: int, patch: int, stride: int) -> torch.Tensor:
    """The occluding windows ``K × H × W`` (True inside a window), in Captum's order and positions:
    top-left corners at multiples of ``stride`` up to the first that reaches the border."""
    rows = [i * stride for i in range(math.ceil(max(0, height - patch) / stride) + 1)]
    cols = [j * stride for j in range(math.ceil(max(0, width - patch) / stride) + 1)]
    windows = torch.zeros(len(rows) * len(cols), height, width, dtype=torch.bool)
    for index, (r, c) in enumerate((r, c) for r in rows for c in cols):
        windows[index, r:r + patch, c:c + patch] = True
    return windows


def _check(images: torch.Tensor, targets, baseline: float) -> tuple[torch.Tensor, torch.Tensor]:
    images = check_inputs(images)
    if not isinstance(baseline, (int, float)) or not math.isfinite(baseline):
        raise ExplainError(f"baseline must be a finite number (the value of masked pixels), got {baseline!r}")
    return images, check_targets(targets, images.shape[0]).to(images.device)


def occlusion_maps(f: LogitsFunction | nn.Module, images: torch.Tensor, targets, *, patch: int | None = None,
                   stride: int | None = None, baseline: float = 0.0, batch_size: int = 256) -> torch.Tensor:
    """Occlusion maps ``N × H × W`` (signed: occluding a pixel may raise the target's probability) of
    ``f`` for one target class per image. ``patch`` defaults to ⌈side / 7⌉, ``stride`` to half the
    patch (at least 1); a stride above the patch would leave pixels unexplained and is refused."""
    images, targets = _check(images, targets, baseline)
    height, width = images.shape[-2:]
    patch = validate.positive_int(patch if patch is not None else math.ceil(min(height, width) / 7), "patch",
                                  maximum=min(height, width))
    stride = validate.positive_int(stride if stride is not None else max(1, patch // 2), "stride", maximum=patch)
    batch_size = validate.positive_int(batch_size, "batch_size")
    windows = occlusion_windows(height, width, patch, stride).to(images.device)
    whole = target_probabilities(f, images, targets, torch.ones_like(windows[:1], dtype=images.dtype), baseline,
                                 batch_size)
    occluded = target_probabilities(f, images, targets, (~windows).to(images.dtype), baseline, batch_size)
    flat = windows.flatten(1).to(images.dtype)
    # each pixel: the mean drop over the windows that cover it (Captum's Occlusion divides likewise)
    maps = (whole - occluded) @ flat / flat.sum(0)
    return maps.view(-1, height, width)


def rise_masks(height: int, width: int, masks: int = RISE_MASKS, cells: int = 7, keep: float = 0.5,
               seed: int = 0) -> torch.Tensor:
    """RISE's random masks ``masks × H × W`` in [0, 1] (Petsiuk et al. §3.2), drawn from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    grid = (torch.rand(masks, cells, cells, generator=generator) < keep).float()
    cell_h, cell_w = math.ceil(height / cells), math.ceil(width / cells)
    up = F.interpolate(grid[:, None], size=((cells + 1) * cell_h, (cells + 1) * cell_w), mode="bilinear",
                       align_corners=False)[:, 0]
    dy = torch.randint(0, cell_h, (masks,), generator=generator)
    dx = torch.randint(0, cell_w, (masks,), generator=generator)
    rows = (dy[:, None] + torch.arange(height))[:, :, None]
    cols = (dx[:, None] + torch.arange(width))[:, None, :]
    return up[torch.arange(masks)[:, None, None], rows, cols]


def rise_maps(f: LogitsFunction | nn.Module, images: torch.Tensor, targets, *, masks: int = RISE_MASKS,
              cells: int = 7, keep: float = 0.5, baseline: float = 0.0, seed: int = 0,
              batch_size: int = 256, centered: bool = False) -> torch.Tensor:
    """RISE maps ``N × H × W`` (non-negative) of ``f`` for one target class per image: the mean of
    the masks weighted by the target's probability on each masked image, divided by ``keep``.

    ``centered`` weights the masks by the probability minus its mean over the masks (signed maps): the
    paper's map also holds the mean probability times the masks' own uneven coverage, a pattern that
    depends on the seed and not on the model — two models compared with the same masks then agree
    even when their outputs ignore the image. Compare models with centered maps.
    """
    images, targets = _check(images, targets, baseline)
    height, width = images.shape[-2:]
    masks = validate.positive_int(masks, "masks")
    cells = validate.positive_int(cells, "cells", maximum=min(height, width))
    keep = validate.fraction(keep, "keep", interval="(0, 1]")
    batch_size = validate.positive_int(batch_size, "batch_size")
    m = rise_masks(height, width, masks, cells, keep, seed).to(images)
    scores = target_probabilities(f, images, targets, m, baseline, batch_size)
    if centered:
        scores = scores - scores.mean(1, keepdim=True)
    return (scores @ m.flatten(1) / (masks * keep)).view(-1, height, width)


def _model_logits(model: nn.Module) -> LogitsFunction:
    return lambda x: forward(model, x)


@register_method("occlusion", family="black-box", signed=True,
                 paper="Zeiler & Fergus, ECCV 2014 (softmax drop, window ⌈side/7⌉, stride half of it)")
def occlusion(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, patch: int | None = None,
              stride: int | None = None, baseline: float = 0.0, batch_size: int = 256) -> torch.Tensor:
    """:func:`occlusion_maps` of the PyTorch model."""
    return occlusion_maps(_model_logits(model), inputs, targets, patch=patch, stride=stride, baseline=baseline,
                          batch_size=batch_size)


@register_method("rise", family="black-box", signed=False,
                 paper="Petsiuk et al., BMVC 2018 (1000 masks, 7×7 cells, p = 0.5)")
def rise(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, masks: int = RISE_MASKS, cells: int = 7,
         keep: float = 0.5, baseline: float = 0.0, seed: int = 0, batch_size: int = 256,
         centered: bool = False) -> torch.Tensor:
    """:func:`rise_maps` of the PyTorch model."""
    return rise_maps(_model_logits(model), inputs, targets, masks=masks, cells=cells, keep=keep, baseline=baseline,
                     seed=seed, batch_size=batch_size, centered=centered)


__all__ = ["RISE_MASKS", "LogitsFunction", "occlusion", "occlusion_maps", "occlusion_windows", "rise", "rise_maps",
           "rise_masks", "target_probabilities"]
