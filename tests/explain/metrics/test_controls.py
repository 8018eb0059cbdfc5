"""The model-free controls, as functions and as registered attribution methods.

``check_sobel_method`` and ``check_random_method`` are plain functions that the mutation check
(:mod:`tests.mutants`) also runs against broken versions of the two methods."""

import pytest
import torch
from scipy import ndimage
from scipy.stats import kstest

from neurotomy.explain import attribute
from neurotomy.explain.metrics import MetricError, random_map, sobel_map
from tests.explain.cases import lenet_case


def scipy_sobel(x):
    """√(Σ_channels g_x² + g_y²) with scipy's Sobel filters, borders replicated (mode "nearest")."""
    expected = torch.zeros(x.shape[0], *x.shape[2:], dtype=torch.float64)
    for b in range(x.shape[0]):
        for c in range(x.shape[1]):
            image = x[b, c].double().numpy()
            gx = ndimage.sobel(image, axis=1, mode="nearest")
            gy = ndimage.sobel(image, axis=0, mode="nearest")
            expected[b] += torch.from_numpy(gx ** 2 + gy ** 2)
    return expected.sqrt()


def check_sobel_method(case):
    maps = attribute(case.model, case.images, case.targets, method="sobel")
    torch.testing.assert_close(maps.double(), scipy_sobel(case.images), atol=1e-5, rtol=1e-5)


def check_random_method(case):
    """Uniform noise drawn from ``seed``: reproducible, another seed another map, uniform."""
    n, _, h, w = case.images.shape
    maps = attribute(case.model, case.images, case.targets, method="random", seed=3)
    torch.testing.assert_close(maps, torch.rand(n, h, w, generator=torch.Generator().manual_seed(3)))
    assert not torch.equal(maps, attribute(case.model, case.images, case.targets, method="random", seed=4))
    assert kstest(maps.flatten().numpy(), "uniform").pvalue > 1e-3


def test_sobel_matches_scipy():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 9, 7, generator=g)
    assert torch.allclose(sobel_map(x).double(), scipy_sobel(x), atol=1e-5)
    assert torch.equal(sobel_map(torch.ones(1, 1, 5, 5)), torch.zeros(1, 5, 5))


def test_control_methods_ignore_the_model():
    check_sobel_method(lenet_case())
    check_random_method(lenet_case())


def test_random_map_is_seeded_and_fresh_per_draw_from_a_generator():
    x = torch.zeros(3, 1, 4, 4)
    assert torch.equal(random_map(x, seed=1), random_map(x, seed=1))
    assert not torch.equal(random_map(x, seed=1), random_map(x, seed=2))
    g = torch.Generator().manual_seed(1)
    first, second = random_map(x, generator=g), random_map(x, generator=g)
    assert torch.equal(first, random_map(x, seed=1)) and not torch.equal(first, second)
    assert first.shape == (3, 4, 4)


def test_controls_reject_non_batches():
    with pytest.raises(MetricError, match="N×C×H×W"):
        sobel_map(torch.zeros(4, 4))
