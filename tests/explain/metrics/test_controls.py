import pytest
import torch
from scipy import ndimage

from neurotomy.explain.metrics import MetricError, random_map, sobel_map


def test_sobel_matches_scipy():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 9, 7, generator=g)
    expected = torch.zeros(2, 9, 7, dtype=torch.float64)
    for b in range(2):
        for c in range(3):
            image = x[b, c].double().numpy()
            gx = ndimage.sobel(image, axis=1, mode="nearest")
            gy = ndimage.sobel(image, axis=0, mode="nearest")
            expected[b] += torch.from_numpy(gx ** 2 + gy ** 2)
    assert torch.allclose(sobel_map(x).double(), expected.sqrt(), atol=1e-5)
    assert torch.equal(sobel_map(torch.ones(1, 1, 5, 5)), torch.zeros(1, 5, 5))


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
