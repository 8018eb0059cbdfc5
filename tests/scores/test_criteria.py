"""Each criterion against an independent, deliberately naive computation on a tiny model."""

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from neurotomy.data.tensor_dataset import Normalization, TensorImageDataset
from neurotomy.scores import CRITERIA, UnitScores, clp_outliers, get_criterion


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 5, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(5)
        self.conv2 = nn.Conv2d(5, 4, 3, padding=1, bias=False)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.conv2(x))
        return self.fc(x.mean((2, 3)))


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    model = Tiny()
    with torch.no_grad():
        model.bn1.weight.uniform_(-1, 1.5)
        model.bn1.bias.uniform_(-0.5, 0.5)
        model.bn1.running_mean.uniform_(-0.2, 0.2)
        model.bn1.running_var.uniform_(0.5, 2)
    return model.eval()


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(1)
    images = torch.randn(24, 2, 6, 6, generator=g)
    images[:, :, :3] = 0  # zero rows give the maps rank structure below full
    return TensorImageDataset(images, torch.randint(0, 3, (24,), generator=g), ["a", "b", "c"],
                              Normalization((0.0, 0.0), (1.0, 1.0)))


def responses(model, x):
    """Post-BN responses of conv1 and conv2 (conv2 has no BN), computed without hooks."""
    r1 = model.bn1(model.conv1(x))
    r2 = model.conv2(torch.relu(r1))
    return {"conv1": r1, "conv2": r2}


def score(name, model, data=None):
    return get_criterion(name)(model, data, batch_size=7, quiet=True)


def test_norms_and_fpgm(tiny):
    for layer in ("conv1", "conv2"):
        w = getattr(tiny, layer).weight.detach().double()
        l1 = [float(w[c].abs().sum()) for c in range(w.shape[0])]
        l2 = [float(torch.sqrt((w[c] ** 2).sum())) for c in range(w.shape[0])]
        fp = [sum(float(torch.sqrt(((w[c] - w[j]) ** 2).sum())) for j in range(w.shape[0])) for c in range(w.shape[0])]
        assert np.allclose(score("l1", tiny)[layer], l1)
        assert np.allclose(score("l2", tiny)[layer], l2)
        assert np.allclose(score("fpgm", tiny)[layer], fp)


def test_bn_scale_and_stats_monte_carlo(tiny):
    gamma, beta = tiny.bn1.weight.detach().double(), tiny.bn1.bias.detach().double()
    assert np.allclose(score("bn_scale", tiny)["conv1"], gamma.abs())
    samples = torch.randn(400_000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mc = (beta + gamma * samples).relu().mean(0)
    assert np.allclose(score("bn_stats", tiny)["conv1"], mc, atol=5e-3)
    # conv2 has no BN: falls back to L1
    assert np.allclose(score("bn_stats", tiny)["conv2"], score("l1", tiny)["conv2"])


def test_clp_against_svd_loop(tiny):
    bn = tiny.bn1
    expected = []
    for c in range(5):
        scale = abs(bn.weight[c].item()) / float(torch.sqrt(bn.running_var[c] + bn.eps))
        m = (tiny.conv1.weight[c].detach().double() * scale).reshape(2, 9)
        expected.append(float(torch.linalg.svdvals(m)[0]))
    assert np.allclose(score("clp", tiny)["conv1"], expected)
    s = UnitScores({"x": torch.tensor([1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 1.0, 1.02, 0.98, 1.0, 9.0])})
    assert clp_outliers(s, u=2.5)["x"].tolist() == [10]


def test_activation_statistics(tiny, data):
    with torch.no_grad():
        r = responses(tiny, data.images)
    for layer in ("conv1", "conv2"):
        a = r[layer].relu().double()
        assert np.allclose(score("mean_activation", tiny, data)[layer], a.mean((0, 2, 3)))
        assert np.allclose(score("apoz", tiny, data)[layer], (a > 0).double().mean((0, 2, 3)))


def test_hrank_against_per_map_rank(tiny, data):
    with torch.no_grad():
        r = responses(tiny, data.images)
    for layer in ("conv1", "conv2"):
        maps = r[layer].relu().float()
        ranks = [[int(torch.linalg.matrix_rank(maps[n, c])) for c in range(maps.shape[1])]
                 for n in range(maps.shape[0])]
        expected = torch.tensor(ranks, dtype=torch.float64).mean(0)
        got = score("hrank", tiny, data)[layer]
        assert np.allclose(got, expected)
        assert got.min() < 6  # not all maps full-rank: the check can tell ranks apart


def test_chip_against_nuclear_norm_loop(tiny, data):
    with torch.no_grad():
        r = responses(tiny, data.images)
    for layer in ("conv1", "conv2"):
        a = r[layer].relu().double().flatten(2)
        ci = torch.zeros(a.shape[1], dtype=torch.float64)
        for n in range(a.shape[0]):
            full = torch.linalg.matrix_norm(a[n], ord="nuc")
            for c in range(a.shape[1]):
                zeroed = a[n].clone()
                zeroed[c] = 0
                ci[c] += full - torch.linalg.matrix_norm(zeroed, ord="nuc")
        assert np.allclose(score("chip", tiny, data)[layer], ci / a.shape[0], atol=1e-6)


def test_taylor_against_per_sample_autograd(tiny, data):
    expected = {"conv1": torch.zeros(5, dtype=torch.float64), "conv2": torch.zeros(4, dtype=torch.float64)}
    for x, y in zip(data.images, data.targets):
        r = responses(tiny, x[None])
        for t in r.values():
            t.retain_grad()
        logits = tiny.fc(torch.relu(r["conv2"]).mean((2, 3)))
        nn.functional.cross_entropy(logits, y[None]).backward()
        for layer, t in r.items():
            expected[layer] += (t * t.grad).mean((2, 3)).abs()[0].detach().double()
        tiny.zero_grad()
    got = score("taylor", tiny, data)
    for layer in expected:
        assert np.allclose(got[layer], expected[layer] / len(data), rtol=1e-4, atol=1e-9)
    assert all(p.grad is None for p in tiny.parameters())


def test_random_is_seeded(tiny):
    c = get_criterion("random")
    assert torch.equal(c(tiny, seed=3)["conv1"], c(tiny, seed=3)["conv1"])
    assert not torch.equal(c(tiny, seed=3)["conv1"], c(tiny, seed=4)["conv1"])


def test_data_criteria_are_reproducible(tiny, data):
    for name in CRITERIA.names(axis="unit"):
        if CRITERIA[name].needs_data:
            a = get_criterion(name)(tiny, data, seed=2, max_images=10, batch_size=4, quiet=True)
            b = get_criterion(name)(tiny, data, seed=2, max_images=10, batch_size=4, quiet=True)
            assert all(torch.equal(a[k], b[k]) for k in a), name


def test_needs_data_message(tiny):
    from neurotomy.errors import NeurotomyError
    with pytest.raises(NeurotomyError, match="needs data"):
        score("hrank", tiny)


def test_unit_scores_round_trip_and_rank_correlation(tmp_path):
    g = torch.Generator().manual_seed(0)
    a = UnitScores({"c1": torch.rand(9, generator=g), "c2": torch.rand(3, 5, generator=g)}, "hrank",
                   axis="class", info={"n": 640})
    path = a.save(tmp_path / "s.npz")
    b = UnitScores.load(path)
    assert b.criterion == "hrank" and b.axis == "class" and b.info == {"n": 640}
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = UnitScores({"c1": torch.rand(9, generator=g)})
    rho = a.rank_correlation(other)
    assert rho["c1"] == pytest.approx(spearmanr(a["c1"], other["c1"]).statistic)
    assert a.bottom(2)["c1"].tolist() == np.argsort(a["c1"].numpy())[:2].tolist()
    assert a.normalized("minmax")["c1"].max() == pytest.approx(1.0)
