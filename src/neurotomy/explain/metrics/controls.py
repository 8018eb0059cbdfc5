"""Control maps that know nothing about the model: a good explanation method must beat them.

``sobel_map`` is the edge magnitude of the input (Adebayo et al. 2018 §3 use an edge detector as the
model-independent baseline: it passes a visual check yet cannot change when the model does);
``random_map`` is uniform noise (the random baseline of ROAR, Hooker et al. 2019 §4). Both are also
registered as attribution methods (family ``control``), so every rating lists them beside the rest.

Example:
    >>> import torch
    >>> x = torch.zeros(1, 1, 5, 5); x[..., 2:] = 1.0      # a vertical edge
    >>> (sobel_map(x)[0, 2] > 0).tolist()
    [False, True, True, False, False]
    >>> torch.equal(random_map(x, seed=3), random_map(x, seed=3))
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from neurotomy.explain.methods import register_method
from neurotomy.explain.metrics.checks import check_inputs

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def sobel_map(inputs: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude per pixel, ``B × H × W``: √(Σ_c g_x² + g_y²) over input channels.

    Borders are replicated, so a flat image has a zero map everywhere (no frame of fake edges).
    """
    inputs = check_inputs(inputs).detach()
    batch, channels, height, width = inputs.shape
    kernels = torch.stack([_SOBEL_X, _SOBEL_X.T]).to(inputs)[:, None]  # 2 × 1 × 3 × 3
    padded = F.pad(inputs.reshape(batch * channels, 1, height, width), (1, 1, 1, 1), mode="replicate")
    gradients = F.conv2d(padded, kernels).view(batch, channels, 2, height, width)
    return gradients.pow(2).sum((1, 2)).sqrt()


def random_map(inputs: torch.Tensor, seed: int = 0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform noise in [0, 1), ``B × H × W``, drawn from ``seed`` (or from ``generator``, so that
    successive batches get fresh maps while the whole run stays reproducible)."""
    inputs = check_inputs(inputs)
    batch, _, height, width = inputs.shape
    if generator is None:
        generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, height, width, generator=generator).to(inputs.device)


@register_method("random", family="control", signed=False, paper="uniform noise (ROAR's random baseline)")
def random_method(model, inputs, targets, *, seed: int = 0) -> torch.Tensor:
    """:func:`random_map` as an attribution method (the model and targets are ignored)."""
    return random_map(inputs, seed=seed)


@register_method("sobel", family="control", signed=False,
                 paper="Sobel edge magnitude (Adebayo et al.'s model-free control)")
def sobel_method(model, inputs, targets) -> torch.Tensor:
    """:func:`sobel_map` as an attribution method (the model and targets are ignored)."""
    return sobel_map(inputs)
