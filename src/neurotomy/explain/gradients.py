"""The gradient family, computed by Captum (the reference implementations): saliency, input ×
gradient, integrated gradients (Sundararajan et al. 2017; 50 steps, zero baseline), SmoothGrad and
SmoothGrad² (Smilkov et al. 2017; noise σ = 0.15 of the input range, 50 samples).

Every function takes ``(model, inputs, targets)`` with targets already resolved to one class per
image and returns the signed ``N × C × H × W`` input attribution; each registers itself as an
attribution method, which :func:`neurotomy.explain.attribute` turns into one map per image.
"""

from __future__ import annotations

import torch
from captum.attr import InputXGradient, IntegratedGradients, NoiseTunnel, Saliency
from torch import nn

from neurotomy import validate
from neurotomy.explain.methods import register_method


def _leaf(inputs: torch.Tensor) -> torch.Tensor:
    """A fresh leaf that requires grad (Captum warns and mutates the caller's tensor otherwise)."""
    return inputs.detach().clone().requires_grad_(True)


@register_method("gradient", family="gradient", signed=True, input_attribution=True,
                 paper="Simonyan et al., 2014 (Captum Saliency)")
def gradient(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """∂y_c/∂x, signed (Simonyan et al. 2014 take its absolute value for display)."""
    return Saliency(model).attribute(_leaf(inputs), target=targets, abs=False)


@register_method("input_x_gradient", family="gradient", signed=True, input_attribution=True,
                 paper="Shrikumar et al., 2016 (Captum InputXGradient)")
def input_x_gradient(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """x · ∂y_c/∂x (Shrikumar et al. 2016)."""
    return InputXGradient(model).attribute(_leaf(inputs), target=targets)


@register_method("integrated_gradients", family="gradient", signed=True, input_attribution=True,
                 paper="Sundararajan et al., ICML 2017 (Captum, 50 steps, zero baseline)")
def integrated_gradients(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *,
                         steps: int = 50, baseline: float = 0.0, internal_batch_size: int | None = 256
                         ) -> torch.Tensor:
    """(x − x′) · mean over the straight path of ∂y_c/∂x (Gauss–Legendre points, Captum's default)."""
    steps = validate.positive_int(steps, "steps")
    if internal_batch_size is not None:
        internal_batch_size = validate.positive_int(internal_batch_size, "internal_batch_size")
    return IntegratedGradients(model).attribute(_leaf(inputs), baselines=baseline, target=targets, n_steps=steps,
                                                internal_batch_size=internal_batch_size)


def _noise_tunnel(kind: str, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                  samples: int, noise: float, seed: int) -> torch.Tensor:
    # σ is a fraction of the input range (Smilkov et al. §3: 10–20 % works best); the draw is seeded
    # without disturbing the caller's global random state.
    samples, seed = validate.positive_int(samples, "samples"), validate.seed(seed, "seed")
    noise = validate.non_negative_float(noise, "noise")
    sigma = noise * float(inputs.amax() - inputs.amin())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tunnel = NoiseTunnel(Saliency(model))
        return tunnel.attribute(_leaf(inputs), nt_type=kind, nt_samples=samples, nt_samples_batch_size=min(samples, 16),
                                stdevs=sigma, target=targets, abs=False)


@register_method("smoothgrad", family="gradient", signed=True, input_attribution=True,
                 paper="Smilkov et al., 2017 (Captum NoiseTunnel, σ = 0.15 range, 50 samples)")
def smoothgrad(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, samples: int = 50,
               noise: float = 0.15, seed: int = 0) -> torch.Tensor:
    """Mean gradient over noisy copies of the input."""
    return _noise_tunnel("smoothgrad", model, inputs, targets, samples, noise, seed)


@register_method("smoothgrad_sq", family="gradient", signed=False, input_attribution=True,
                 paper="Hooker et al., NeurIPS 2019 (SmoothGrad²)")
def smoothgrad_sq(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, samples: int = 50,
                  noise: float = 0.15, seed: int = 0) -> torch.Tensor:
    """Mean *squared* gradient over noisy copies (SmoothGrad², Hooker et al. 2019's best ROAR method)."""
    return _noise_tunnel("smoothgrad_sq", model, inputs, targets, samples, noise, seed)
