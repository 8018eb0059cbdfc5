"""Adversarial attacks FGSM and PGD (L∞), on normalised inputs with ε in pixel units.

Models here see normalised images x = (p − mean) / std with pixels p ∈ [0, 1]. A budget of ε
pixels is ε / std in the model's input space, and valid images stay within
[(0 − mean)/std, (1 − mean)/std], channel by channel; both conversions use the dataset's
:class:`~neurotomy.data.tensor_dataset.Normalization`.

- FGSM (Goodfellow et al., ICLR 2015, §3): x' = x + ε · sign(∇ₓ loss), clipped to valid pixels.
- PGD (Madry et al., ICLR 2018, §2.1): from a uniform random start in the ε-ball, ``steps`` signed
  gradient steps of ``step_size`` (default 2.5 ε / steps), each projected back onto the ε-ball
  around x and onto valid pixels.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from neurotomy.data.tensor_dataset import Normalization
    >>> norm = Normalization((0.5,), (0.25,))
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> x = torch.zeros(3, 1, 2, 2)
    >>> adv = fgsm(model, x, torch.tensor([0, 1, 0]), eps=0.1, normalization=norm)
    >>> round(float((adv - x).abs().max() * 0.25), 6)                 # back in pixel units
    0.1
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from neurotomy.data.batches import iterate_batches, num_batches
from neurotomy.device import model_device, to_device
from neurotomy.errors import OptionError
from neurotomy.models.anatomy import eval_mode
from neurotomy.progress import add_task, progress_bar

ATTACKS = ("fgsm", "pgd")


def _scales(normalization, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(1/std, lowest, highest) per channel, shaped to broadcast over (N, C, H, W)."""
    mean = torch.tensor(normalization.mean, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)
    std = torch.tensor(normalization.std, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)
    return 1 / std, (0 - mean) / std, (1 - mean) / std


def _check_eps(eps: float) -> None:
    if not 0 <= eps <= 1:
        raise OptionError(f"attack budget eps={eps} is in pixel units and must lie in [0, 1] (e.g. 0.05)")


def _loss_gradient(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    x = images.detach().requires_grad_(True)
    # Sum, not mean: the sign is the same, and per-image gradients do not shrink with batch size.
    loss = F.cross_entropy(model(x), targets, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def fgsm(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, eps: float,
         normalization) -> torch.Tensor:
    """One signed-gradient step of ``eps`` pixels (Goodfellow et al. 2015)."""
    _check_eps(eps)
    scale, low, high = _scales(normalization, images)
    step = eps * scale * _loss_gradient(model, images, targets).sign()
    return torch.max(torch.min(images + step, high), low).detach()


def pgd(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, eps: float, normalization,
        steps: int = 10, step_size: float | None = None, random_start: bool = True,
        generator: torch.Generator | None = None) -> torch.Tensor:
    """Projected gradient descent on the loss within the L∞ ball of ``eps`` pixels (Madry et al. 2018)."""
    _check_eps(eps)
    if steps < 1:
        raise OptionError(f"PGD needs at least one step, got steps={steps}")
    step_size = 2.5 * eps / steps if step_size is None else step_size
    scale, low, high = _scales(normalization, images)
    radius = eps * scale
    lower, upper = torch.max(images - radius, low), torch.min(images + radius, high)
    adv = images.clone()
    if random_start:
        noise = torch.rand(images.shape, generator=generator, dtype=images.dtype).to(images.device) * 2 - 1
        adv = torch.max(torch.min(images + noise * radius, upper), lower)
    for _ in range(steps):
        adv = adv + step_size * scale * _loss_gradient(model, adv, targets).sign()
        adv = torch.max(torch.min(adv, upper), lower)
    return adv.detach()


def adversarial_accuracy(model: nn.Module, data: Dataset, attack: str, eps: float,
                         max_images: int | None = None, batch_size: int = 256, steps: int = 10,
                         seed: int = 0, quiet: bool = False) -> float:
    """Accuracy of ``model`` on ``data`` attacked by ``attack`` ("fgsm" or "pgd") with ``eps`` pixels.

    Example:
        >>> from neurotomy.data import load_dataset
        >>> from neurotomy.models import build_model
        >>> model, test = build_model("lenet5", 1, 10, 8), load_dataset("digits", split="test")
        >>> 0 <= adversarial_accuracy(model, test, "pgd", 0.1, max_images=32, steps=2, quiet=True) <= 1
        True
    """
    if attack not in ATTACKS:
        raise OptionError(f"unknown attack {attack!r}; use fgsm or pgd")
    generator = torch.Generator().manual_seed(seed)
    correct = seen = 0
    with eval_mode(model), progress_bar(quiet) as bar:
        task = add_task(bar, f"attack {attack} ε={eps}", num_batches(data, batch_size, max_images))
        for images, targets in iterate_batches(data, batch_size, max_images=max_images):
            images, targets = to_device(model_device(model), images, targets)
            if attack == "fgsm":
                adv = fgsm(model, images, targets, eps, data.normalization)
            else:
                adv = pgd(model, images, targets, eps, data.normalization, steps=steps, generator=generator)
            with torch.no_grad():
                correct += int((model(adv).argmax(1) == targets).sum())
            seen += len(targets)
            bar.advance(task)
    return correct / max(1, seen)
