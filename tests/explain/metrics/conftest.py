"""Small models with known answers for the metric tests."""

import pytest
import torch
from torch import nn


class LinearEvidence(nn.Module):
    """Two classes: logit₁ = w·x + b, logit₀ = 0, so each pixel's contribution to the class-1
    evidence is exactly w_p·x_p — the oracle map is known."""

    def __init__(self, weights: torch.Tensor, bias: float) -> None:
        super().__init__()
        self.weights = nn.Parameter(weights.clone())
        self.bias = nn.Parameter(torch.tensor(float(bias)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        evidence = (x * self.weights).flatten(1).sum(1) + self.bias
        return torch.stack([torch.zeros_like(evidence), evidence], dim=1)


@pytest.fixture
def linear_problem():
    """(model, inputs in [0, 1], weights) on 16 images of 1×8×8; class 1 is likely at the start."""
    g = torch.Generator().manual_seed(0)
    weights = torch.randn(1, 8, 8, generator=g)
    inputs = torch.rand(16, 1, 8, 8, generator=g)
    bias = 2.0 - float((inputs * weights).flatten(1).sum(1).mean())
    return LinearEvidence(weights, bias).eval(), inputs, weights


def gradient_map(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Plain saliency (signed input gradient of the target logit), channels summed — a local
    explainer so the metric tests do not depend on neurotomy.explain's methods."""
    inputs = inputs.detach().clone().requires_grad_(True)
    score = model(inputs).gather(1, targets.view(-1, 1)).sum()
    (grad,) = torch.autograd.grad(score, inputs)
    return grad.sum(1)


@pytest.fixture
def saliency():
    return gradient_map
