"""The gradient family (Captum) checked against independent computations."""

import torch

from neurotomy.explain import attribute


def test_gradient_equals_autograd(resnet20, fmnist_batch):
    images, targets = fmnist_batch
    x = images.clone().requires_grad_(True)
    resnet20(x).gather(1, targets[:, None]).sum().backward()
    torch.testing.assert_close(attribute(resnet20, images, targets, method="gradient"), x.grad[:, 0])
    torch.testing.assert_close(attribute(resnet20, images, targets, method="input_x_gradient"),
                               (images * x.grad)[:, 0])


def _riemann_ig(model, images, targets, steps=200):
    """Integrated gradients by a plain midpoint Riemann sum, written independently of Captum."""
    total = torch.zeros_like(images)
    for k in range(steps):
        x = ((k + 0.5) / steps * images).requires_grad_(True)
        model(x).gather(1, targets[:, None]).sum().backward()
        total += x.grad
    return images * total / steps


def test_integrated_gradients_matches_riemann_sum_and_completeness(resnet20, fmnist_batch):
    images, targets = fmnist_batch[0][:3], fmnist_batch[1][:3]
    ours = attribute(resnet20, images, targets, method="integrated_gradients", steps=100)
    reference = _riemann_ig(resnet20, images, targets)[:, 0]
    assert torch.corrcoef(torch.stack([ours.flatten(), reference.flatten()]))[0, 1] > 0.999
    # completeness (Sundararajan et al. axiom): attributions sum to f(x) − f(0)
    with torch.no_grad():
        gap = (resnet20(images) - resnet20(torch.zeros_like(images))).gather(1, targets[:, None]).squeeze(1)
    torch.testing.assert_close(ours.sum((1, 2)), gap, atol=0.02 * gap.abs().max().item(), rtol=0)


def test_smoothgrad_is_seeded_and_averages_noisy_gradients(resnet20, fmnist_batch):
    images, targets = fmnist_batch[0][:2], fmnist_batch[1][:2]
    a = attribute(resnet20, images, targets, method="smoothgrad", samples=8, seed=1)
    b = attribute(resnet20, images, targets, method="smoothgrad", samples=8, seed=1)
    c = attribute(resnet20, images, targets, method="smoothgrad", samples=8, seed=2)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    # without noise, SmoothGrad is the gradient and SmoothGrad² its square
    grad = attribute(resnet20, images, targets, method="gradient")
    torch.testing.assert_close(attribute(resnet20, images, targets, method="smoothgrad", samples=4, noise=0.0), grad)
    torch.testing.assert_close(attribute(resnet20, images, targets, method="smoothgrad_sq", samples=4, noise=0.0),
                               grad ** 2)
