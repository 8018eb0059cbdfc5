import numpy as np
import pytest
import torch

from neurotomy.dynamics.similarity import (
    cka_from_grams,
    gbs,
    linear_cka,
    rbf_cka,
    similarity_graph,
)


def numpy_linear_cka(x, y):
    x = x - x.mean(0)
    y = y - y.mean(0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


@pytest.fixture
def xy():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 10, generator=g, dtype=torch.float64)
    y = x @ torch.randn(10, 7, generator=g, dtype=torch.float64) + 0.5 * torch.randn(60, 7, generator=g, dtype=torch.float64)
    return x, y


def test_linear_cka_formula_identity_and_invariances(xy):
    x, y = xy
    assert linear_cka(x, y) == pytest.approx(numpy_linear_cka(x.numpy(), y.numpy()), abs=1e-10)
    assert linear_cka(x, x) == pytest.approx(1.0)
    q, _ = torch.linalg.qr(torch.randn(10, 10, dtype=torch.float64))
    assert linear_cka(x @ q, y) == pytest.approx(linear_cka(x, y), abs=1e-10)
    assert linear_cka(4.2 * x, y) == pytest.approx(linear_cka(x, y), abs=1e-10)
    assert linear_cka(x, torch.randn(60, 7, dtype=torch.float64)) < linear_cka(x, y)


def numpy_rbf_cka(x, y, sigma_scale=0.8):
    """CKA with Gaussian kernels from Gretton et al.'s (biased) HSIC, tr(K H L H) / (n − 1)², written
    from the definitions: k(a, b) = exp(−‖a − b‖² / 2σ²), σ = 0.8 × the median pairwise distance.

    "Median" as the module takes it, torch.median's: of an even count, the lower of the two middle
    distances (numpy's median averages them, which moves CKA by ~6e-4 on the 12-sample case)."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n

    def gram(a):
        squared = np.array([[float(((a[i] - a[j]) ** 2).sum()) for j in range(n)] for i in range(n)])
        distances = np.sort(np.sqrt(squared[~np.eye(n, dtype=bool)]))
        sigma = sigma_scale * distances[(len(distances) - 1) // 2]
        return np.exp(-squared / (2 * sigma ** 2))

    def hsic(k, l):
        return np.trace(k @ h @ l @ h) / (n - 1) ** 2
    k, l = gram(x), gram(y)
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def test_rbf_cka_against_gretton_hsic(xy):
    x, y = xy
    tiny_x, tiny_y = x[:12], torch.tanh(y[:12]) ** 2  # a nonlinear relation, where the kernel matters
    expected = numpy_rbf_cka(tiny_x.numpy(), tiny_y.numpy())
    assert rbf_cka(tiny_x, tiny_y) == pytest.approx(expected, abs=1e-10)
    assert abs(expected - numpy_linear_cka(tiny_x.numpy(), tiny_y.numpy())) > 0.01  # not the linear CKA
    assert rbf_cka(x, y) == pytest.approx(numpy_rbf_cka(x.numpy(), y.numpy()), abs=1e-10)
    assert 0.05 < rbf_cka(x, y) < 0.95  # an informative toy case, away from the ends
    assert rbf_cka(x, torch.randn(60, 7, dtype=torch.float64)) < rbf_cka(x, y)


def test_rbf_cka_identity_and_orthogonal_invariance(xy):
    x, y = xy
    assert rbf_cka(x, x) == pytest.approx(1.0)
    q, _ = torch.linalg.qr(torch.randn(10, 10, dtype=torch.float64))
    assert rbf_cka(x @ q, y) == pytest.approx(rbf_cka(x, y), abs=1e-8)
    assert rbf_cka(3 * x, y) == pytest.approx(rbf_cka(x, y), abs=1e-8)  # bandwidth follows the median


def test_gbs_against_definition(xy):
    x, y = xy
    tiny_x, tiny_y = x[:5, :3], y[:5, :2]
    # definition by hand: cosine graphs, then the CKA formula on them
    def graph(a):
        a = a.numpy()
        n = a / np.linalg.norm(a, axis=1, keepdims=True)
        return n @ n.T
    h = np.eye(5) - 1 / 5
    gx, gy = h @ graph(tiny_x) @ h, h @ graph(tiny_y) @ h
    expected = (gx * gy).sum() / np.sqrt((gx * gx).sum() * (gy * gy).sum())
    assert gbs(tiny_x, tiny_y) == pytest.approx(expected, abs=1e-12)
    assert gbs(x, x) == pytest.approx(1.0)
    q, _ = torch.linalg.qr(torch.randn(10, 10, dtype=torch.float64))
    assert gbs(x @ q * 7.0, y, k=5) == pytest.approx(gbs(x, y, k=5), abs=1e-10)
    assert torch.equal(similarity_graph(x, k=4), similarity_graph(x, k=4).T)


def test_cka_from_grams_symmetric(xy):
    x, y = xy
    k, l = x @ x.T, y @ y.T
    assert cka_from_grams(k, l) == pytest.approx(cka_from_grams(l, k))


@pytest.mark.parametrize("measure", [linear_cka, rbf_cka, gbs])
@pytest.mark.parametrize("value", [0.0, 1.0, 3.0, 7.5, 1e3])
def test_constant_layer_has_no_cka(measure, value):
    """A layer constant over the samples (dead, collapsed) makes CKA 0/0: NaN, not the noise left by
    centring its Gram matrix in floating point (which could come out as -0.02 or 0.05)."""
    x = torch.randn(50, 8, generator=torch.Generator().manual_seed(0))
    constant = torch.full((50, 3), value)
    assert np.isnan(measure(x, constant)) and np.isnan(measure(constant, x))


def test_a_nearly_constant_but_varying_layer_still_has_a_cka():
    """The tolerance is relative: a layer that varies by 1e-4 of its offset is not constant."""
    x = torch.randn(50, 8, generator=torch.Generator().manual_seed(0))
    assert linear_cka(x, 1000 + 0.1 * x) == pytest.approx(1.0, abs=1e-6)


def test_cka_of_different_sample_counts_is_one_line():
    from neurotomy.errors import DataError

    with pytest.raises(DataError, match="for 50 and 40 samples; CKA compares the same samples"):
        linear_cka(torch.randn(50, 8), torch.randn(40, 8))


def test_similarity_matrix_of_a_dataset_without_targets_or_classes():
    from torch.utils.data import TensorDataset

    from neurotomy.dynamics.similarity import similarity_matrix
    from neurotomy.models import build_model

    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(40, 1, 8, 8, generator=g), torch.arange(40) % 4)
    result = similarity_matrix(build_model("lenet5", 1, 4, 8), data, samples=20)
    assert result["samples"] == 20  # 5 of each of the 4 classes its labels hold
    assert all(v == pytest.approx(1.0) for v in (result["values"][i][i] for i in range(len(result["layers_a"]))))
