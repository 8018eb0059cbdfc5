"""Gradient-quality measures for the gradient-mask study (our definitions, docs/methods.md §E5).

The gradient-mask paper (arXiv 2208.06918) proposes "a criterion for gradient quality" whose
formula could not be read here; we measure two things instead:

- **coherence** of a mini-batch gradient: ‖mean_i g_i‖² / mean_i ‖g_i‖² over the per-sample
  parameter gradients g_i. It is 1 when every sample pulls the weights the same way and ≈ 1/n
  when their pulls are unrelated noise (Jensen: it never exceeds 1). Samples are taken with the
  model in eval mode, so BatchNorm uses its running statistics and the g_i are independent;
  pass a :class:`~neurotomy.grad_mask.GradMaskConfig` to measure the masked gradients.
- **saliency focus**: the share of input-gradient mass |∂y_c/∂x| (y_c the true class's logit)
  that lies on non-background pixels — pixels whose value before normalisation is not 0.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    >>> x = torch.randn(1, 1, 2, 2).repeat(5, 1, 1, 1)          # five copies of one image
    >>> round(gradient_coherence(model, x, torch.zeros(5, dtype=torch.long)), 6)
    1.0
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Iterable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from neurotomy.data.batches import iterate_batches
from neurotomy.device import model_device, to_device
from neurotomy.grad_mask import GradientMask, GradMaskConfig
from neurotomy.models.anatomy import eval_mode


def per_sample_gradients(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                         mask: GradMaskConfig | None = None,
                         parameters: Iterable[nn.Parameter] | None = None) -> torch.Tensor:
    """(n, number of parameters) matrix of each sample's cross-entropy gradient, model in eval mode;
    ``parameters`` (default: all trainable ones) picks the columns, e.g. only conv weights, which
    the mask acts on while fully-connected layers may hold most of the parameters.

    One backward pass per sample, so the gradient mask (a tensor hook, which ``torch.func``
    transforms do not run) applies exactly as in training.
    """
    params = [p for p in (model.parameters() if parameters is None else parameters) if p.requires_grad]
    rows = []
    context = GradientMask(model, mask, only_in_training=False) if mask is not None else nullcontext()
    with eval_mode(model), context:
        for x, y in zip(images, targets):
            loss = F.cross_entropy(model(x[None]), y[None])
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                                   for g, p in zip(grads, params)]))
    return torch.stack(rows).double()


def coherence_of(gradients: torch.Tensor) -> float:
    """‖mean_i g_i‖² / mean_i ‖g_i‖² of the rows of ``gradients`` (0 when every g_i is zero)."""
    mean_sq = gradients.pow(2).sum(1).mean()
    if mean_sq == 0:
        return 0.0
    return float(gradients.mean(0).pow(2).sum() / mean_sq)


def gradient_coherence(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                       mask: GradMaskConfig | None = None,
                       parameters: Iterable[nn.Parameter] | None = None) -> float:
    """Coherence of the per-sample parameter gradients on one batch (see module doc)."""
    return coherence_of(per_sample_gradients(model, images, targets, mask, parameters))


class SaliencyFocus(NamedTuple):
    focus: float  # mean over images of the saliency share on non-background pixels
    foreground_share: float  # mean share of non-background pixels: the focus of a uniform map


def foreground_pixels(images: torch.Tensor, normalization) -> torch.Tensor:
    """(N, H, W) boolean: pixels that are not background (value > half a grey level in some channel
    before normalisation)."""
    mean = torch.tensor(normalization.mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(normalization.std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return ((images * std + mean) > 0.5 / 255).any(1)


def saliency_focus(model: nn.Module, data: Dataset, max_images: int | None = 1000,
                   batch_size: int = 256) -> SaliencyFocus:
    """Share of |∂y_c/∂x| (summed over channels) on non-background pixels, averaged over images.

    Example:
        >>> from neurotomy.data import load_dataset
        >>> from neurotomy.models import build_model
        >>> f = saliency_focus(build_model("lenet5", 1, 10, 8), load_dataset("digits", split="test"), 64)
        >>> 0 <= f.focus <= 1 and 0 < f.foreground_share < 1
        True
    """
    focus, share, n = 0.0, 0.0, 0
    with eval_mode(model):
        for images, targets in iterate_batches(data, batch_size, max_images=max_images):
            images, targets = to_device(model_device(model), images, targets)
            x = images.clone().requires_grad_(True)
            class_logits = model(x).gather(1, targets[:, None]).sum()
            (grad,) = torch.autograd.grad(class_logits, x)
            saliency = grad.abs().sum(1)
            foreground = foreground_pixels(images, data.normalization)
            total = saliency.sum((1, 2))
            on_object = (saliency * foreground).sum((1, 2))
            focus += float((on_object / total.clamp_min(torch.finfo(total.dtype).tiny)).sum())
            share += float(foreground.float().mean((1, 2)).sum())
            n += len(images)
    return SaliencyFocus(focus / n, share / n)
