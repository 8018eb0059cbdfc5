"""The gradient family (Captum) checked against independent computations.

Each ``check_<method>(case)`` is a plain function: the tests below run it on the shipped ResNet-20
and real Fashion-MNIST images, the mutation check (:mod:`tests.mutants`) on the small LeNet-5 case
against broken versions of the method.
"""

import torch

from neurotomy.explain import attribute
from tests.crosscheck import expected_value
from tests.explain.cases import lenet_case, resnet20_case


@expected_value
def _autograd_gradient(case):
    x = case.images.clone().requires_grad_(True)
    grad, = torch.autograd.grad(case.model(x).gather(1, case.targets[:, None]).sum(), x)
    return grad


def check_gradient(case):
    grad = _autograd_gradient(case)
    assert (grad < 0).any() and (grad > 0).any()  # signed: |·| would be caught
    torch.testing.assert_close(attribute(case.model, case.images, case.targets, method="gradient"), grad[:, 0])


def check_input_x_gradient(case):
    grad = _autograd_gradient(case)
    torch.testing.assert_close(attribute(case.model, case.images, case.targets, method="input_x_gradient"),
                               (case.images * grad)[:, 0])


@expected_value
def _riemann_ig(case, steps=100):
    """Integrated gradients by a plain midpoint Riemann sum, written independently of Captum."""
    total = torch.zeros_like(case.images)
    n = len(case.images)
    for start in range(0, steps, 25):  # 25 points of the path per backward pass
        alphas = (torch.arange(start, min(steps, start + 25)) + 0.5) / steps
        x = (alphas.view(-1, 1, 1, 1, 1) * case.images).flatten(0, 1).requires_grad_(True)
        logits = case.model(x).gather(1, case.targets.repeat(len(alphas))[:, None])
        total += torch.autograd.grad(logits.sum(), x)[0].view(len(alphas), n, *case.images.shape[1:]).sum(0)
    return case.images * total / steps


@expected_value
def _logit_gap(case):
    with torch.no_grad():
        return (case.model(case.images) - case.model(torch.zeros_like(case.images))).gather(1, case.targets[:, None])[:, 0]


def check_integrated_gradients(case):
    ours = attribute(case.model, case.images, case.targets, method="integrated_gradients", steps=50)
    reference = _riemann_ig(case)[:, 0]
    assert torch.corrcoef(torch.stack([ours.flatten(), reference.flatten()]))[0, 1] > 0.999
    # completeness (Sundararajan et al. axiom): attributions sum to f(x) − f(0)
    gap = _logit_gap(case)
    torch.testing.assert_close(ours.sum((1, 2)), gap, atol=0.02 * gap.abs().max().item(), rtol=0)


# SmoothGrad promises each image's mean gradient over noisy copies x + ε, ε ~ N(0, σ²), σ = 0.15 of the
# batch's input range, drawn from `seed`. Captum draws the noise for the whole batch at once, so a batch
# cannot equal the images done one by one draw for draw; what it must equal is the same expectation.
# We check that statistically against our own Monte Carlo estimate with many more samples.
SAMPLES, REFERENCE_SAMPLES = 500, 4000
BATCH_SAMPLES = 50


@expected_value
def _noisy_gradients(case):
    """Our own draw: per image, REFERENCE_SAMPLES gradients at x + ε (samples × N × C × H × W)."""
    sigma = 0.15 * float(case.images.amax() - case.images.amin())
    g = torch.Generator().manual_seed(12345)
    grads = []
    for _ in range(REFERENCE_SAMPLES // 100):
        noisy = case.images[None] + sigma * torch.randn(100, *case.images.shape, generator=g)
        x = noisy.flatten(0, 1).requires_grad_(True)
        targets = case.targets.repeat(100)
        grads.append(torch.autograd.grad(case.model(x).gather(1, targets[:, None]).sum(), x)[0].view_as(noisy))
    return torch.cat(grads)


def _within_monte_carlo_error(maps, samples, reference_samples):
    """Each image's map lies within Monte Carlo error of the reference mean of ``samples``.

    For an unbiased mean of S draws compared with an independent mean of M draws, the expected
    squared distance is Σ_pixels Var · (1/S + 1/M). Measured on the LeNet case (S = 500, M = 4000)
    over 200 seeds × 4 images, the ratio distance / that has mean 1.02 (SmoothGrad) and 1.01
    (SmoothGrad²) — unbiased, σ as claimed — and maximum 3.0; we allow 6. Broken versions lie beyond
    it on some image for every seed: σ = 0.10 instead of 0.15 at 21 or more, the plain gradient at
    340–590, a constant at 200–600, another image's map at 650–1100.
    """
    mean, var = samples.mean(0)[:, 0], samples.var(0)[:, 0]
    bound = var.sum((1, 2)) * (1 / SAMPLES + 1 / reference_samples)
    distance = (maps - mean).pow(2).sum((1, 2))
    assert (distance <= 6 * bound).all(), (distance / bound).tolist()


def check_smoothgrad(case):
    m, x, t = case.model, case.images, case.targets
    a = attribute(m, x, t, method="smoothgrad", samples=SAMPLES, seed=1)
    torch.testing.assert_close(a, attribute(m, x, t, method="smoothgrad", samples=SAMPLES, seed=1))
    assert not torch.allclose(a, attribute(m, x, t, method="smoothgrad", samples=SAMPLES, seed=2))
    _within_monte_carlo_error(a, _noisy_gradients(case), REFERENCE_SAMPLES)
    # without noise, SmoothGrad is the gradient
    torch.testing.assert_close(attribute(m, x, t, method="smoothgrad", samples=4, noise=0.0), _autograd_gradient(case)[:, 0])


def check_smoothgrad_sq(case):
    m, x, t = case.model, case.images, case.targets
    a = attribute(m, x, t, method="smoothgrad_sq", samples=SAMPLES, seed=1)
    _within_monte_carlo_error(a, _noisy_gradients(case) ** 2, REFERENCE_SAMPLES)
    torch.testing.assert_close(attribute(m, x, t, method="smoothgrad_sq", samples=4, noise=0.0),
                               _autograd_gradient(case)[:, 0] ** 2)


def check_smoothgrad_batch_consistency(case, method="smoothgrad"):
    """Batched and one image at a time (same seed) estimate the same expectation: their distance is
    the Monte Carlo error of two independent means of S = BATCH_SAMPLES draws each, expected Σ Var · 2/S.
    Over 50 seeds × 4 images the ratio has mean 0.77 and maximum 2.6; we allow 4 (a batch whose
    maps belong to the wrong images lies at 29–54). Valid only when every image spans the batch's
    range, as σ is a fraction of the batch's range."""
    ranges = case.images.amax((1, 2, 3)) - case.images.amin((1, 2, 3))
    assert torch.allclose(ranges, ranges.max())
    batched = attribute(case.model, case.images, case.targets, method=method, samples=BATCH_SAMPLES, seed=1)
    single = torch.cat([attribute(case.model, case.images[i:i + 1], case.targets[i:i + 1], method=method,
                                  samples=BATCH_SAMPLES, seed=1) for i in range(len(case.images))])
    samples = _noisy_gradients(case) ** (2 if method == "smoothgrad_sq" else 1)
    distance = (batched - single).pow(2).sum((1, 2))
    bound = samples.var(0)[:, 0].sum((1, 2)) * 2 / BATCH_SAMPLES
    assert (distance <= 4 * bound).all(), (distance / bound).tolist()


def test_gradient_equals_autograd(resnet20, fmnist_batch):
    case = resnet20_case(resnet20, fmnist_batch)
    check_gradient(case)
    check_input_x_gradient(case)


def test_integrated_gradients_matches_riemann_sum_and_completeness(resnet20, fmnist_batch):
    check_integrated_gradients(resnet20_case(resnet20, fmnist_batch, n=2))


def test_smoothgrad_is_seeded_and_averages_noisy_gradients():
    check_smoothgrad(lenet_case())
    check_smoothgrad_sq(lenet_case())


def test_smoothgrad_batch_equals_images_one_by_one_in_expectation():
    for method in ("smoothgrad", "smoothgrad_sq"):
        check_smoothgrad_batch_consistency(lenet_case(), method)
