import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from neurotomy.explain.metrics import MetricError, spearman, ssim, top_iou


def test_spearman_matches_scipy_with_ties():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (6, 7, 7), generator=g).float()  # many ties, like ReLU-gated saliency
    b = a + torch.randn(6, 7, 7, generator=g)
    ours = spearman(a, b)
    for i in range(6):
        expected = spearmanr(a[i].flatten().numpy(), b[i].flatten().numpy()).statistic
        assert float(ours[i]) == pytest.approx(expected, abs=1e-6)


def test_spearman_of_flat_maps_is_defined():
    a = torch.rand(2, 4, 4)
    assert spearman(a, torch.zeros(2, 4, 4)).tolist() == [0.0, 0.0]
    assert spearman(torch.zeros(2, 4, 4), torch.zeros(2, 4, 4)).tolist() == [1.0, 1.0]


def test_ssim_matches_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    g = torch.Generator().manual_seed(1)
    a = torch.rand(4, 12, 10, generator=g)
    b = (a + 0.3 * torch.randn(4, 12, 10, generator=g)).clamp(0, 1)
    ours = ssim(a, b, data_range=1.0)
    for i in range(4):
        expected = metrics.structural_similarity(a[i].double().numpy(), b[i].double().numpy(), data_range=1.0)
        assert float(ours[i]) == pytest.approx(expected, abs=1e-5)
    assert torch.allclose(ssim(a, a, data_range=1.0), torch.ones(4))


def test_ssim_window_must_fit():
    with pytest.raises(MetricError, match="window 7"):
        ssim(torch.rand(1, 5, 5), torch.rand(1, 5, 5))


def test_top_iou_by_hand():
    a = torch.tensor([[[4.0, 3.0], [2.0, 1.0]]])
    b = torch.tensor([[[4.0, 1.0], [3.0, 2.0]]])
    # top half: a keeps pixels {0, 1}, b keeps {0, 2} → IoU 1/3
    assert top_iou(a, b, top=0.5).item() == pytest.approx(1 / 3)
    assert np.isclose(top_iou(a, a, top=0.25).item(), 1.0)
    with pytest.raises(MetricError, match="top=0"):
        top_iou(a, b, top=0)


def naive_ssim(x: np.ndarray, y: np.ndarray, data_range: float, win: int = 7) -> float:
    """Wang et al. 2004, eq. 13, window by window in plain numpy (sample covariances)."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for i in range(x.shape[0] - win + 1):
        for j in range(x.shape[1] - win + 1):
            p, q = x[i:i + win, j:j + win].ravel(), y[i:i + win, j:j + win].ravel()
            cov = np.cov(p, q)  # ddof = 1
            values.append((2 * p.mean() * q.mean() + c1) * (2 * cov[0, 1] + c2)
                          / ((p.mean() ** 2 + q.mean() ** 2 + c1) * (cov[0, 0] + cov[1, 1] + c2)))
    return float(np.mean(values))


def test_ssim_matches_a_window_by_window_computation():
    g = torch.Generator().manual_seed(2)
    a = torch.rand(3, 9, 11, generator=g)
    b = a ** 2
    ours = ssim(a, b, data_range=1.0)
    for i in range(3):
        assert float(ours[i]) == pytest.approx(naive_ssim(a[i].double().numpy(), b[i].double().numpy(), 1.0),
                                               abs=1e-5)
