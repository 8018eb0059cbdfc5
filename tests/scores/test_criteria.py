"""Each criterion against an independent, deliberately naive computation on a tiny model.

The cross-checks are plain functions (``check_<criterion>``) so that the mutation check
(:mod:`tests.mutants`) can run the very same assertions against broken versions of each criterion
and confirm they fail.
"""

import copy
from functools import lru_cache

import numpy as np
import pytest
import torch
from scipy.stats import kstest, spearmanr
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


@lru_cache(maxsize=1)
def tiny_model() -> Tiny:
    """Two convs (the first with a BatchNorm of uneven γ of both signs, β, statistics), seeded."""
    torch.manual_seed(0)
    model = Tiny()
    with torch.no_grad():
        model.bn1.weight.uniform_(-1, 1.5)
        model.bn1.bias.uniform_(-0.5, 0.5)
        model.bn1.running_mean.uniform_(-0.2, 0.2)
        model.bn1.running_var.uniform_(0.5, 2)
    return model.eval()


@lru_cache(maxsize=1)
def tiny_data() -> TensorImageDataset:
    g = torch.Generator().manual_seed(1)
    images = torch.randn(24, 2, 6, 6, generator=g)
    images[:, :, :3] = 0  # zero rows give the maps rank structure below full
    return TensorImageDataset(images, torch.randint(0, 3, (24,), generator=g), ["a", "b", "c"],
                              Normalization((0.0, 0.0), (1.0, 1.0)))


@pytest.fixture
def tiny():
    return tiny_model()


@pytest.fixture
def data():
    return tiny_data()


def responses(model, x):
    """Post-BN responses of conv1 and conv2 (conv2 has no BN), computed without hooks."""
    r1 = model.bn1(model.conv1(x))
    r2 = model.conv2(torch.relu(r1))
    return {"conv1": r1, "conv2": r2}


def score(name, model, data=None, **kw):
    return get_criterion(name)(model, data, batch_size=7, quiet=True, **kw)


def assert_scores(got: UnitScores, expected: dict, **tol):
    assert set(got) == set(expected), (set(got), set(expected))
    for layer, values in expected.items():
        torch.testing.assert_close(got[layer], torch.as_tensor(values, dtype=torch.float64), **tol)


def _weights(model, layer):
    return getattr(model, layer).weight.detach().double()


# ------------------------------------------------------------------ data-free criteria

def check_l1(model):
    expected = {}
    for layer in ("conv1", "conv2"):
        w = _weights(model, layer)
        expected[layer] = [sum(abs(float(v)) for v in w[c].flatten()) for c in range(w.shape[0])]
    assert_scores(score("l1", model), expected)


def check_l2(model):
    expected = {}
    for layer in ("conv1", "conv2"):
        w = _weights(model, layer)
        expected[layer] = [float(np.sqrt(sum(float(v) ** 2 for v in w[c].flatten()))) for c in range(w.shape[0])]
    assert_scores(score("l2", model), expected)


def check_fpgm(model):
    expected = {}
    for layer in ("conv1", "conv2"):
        w = _weights(model, layer).numpy()
        expected[layer] = [sum(float(np.sqrt(((w[c] - w[j]) ** 2).sum())) for j in range(len(w))) for c in range(len(w))]
    assert_scores(score("fpgm", model), expected)


def check_bn_scale(model):
    # conv2 has no BatchNorm: the criterion falls back to the L1 norm of the filter
    gamma = model.bn1.weight.detach().double()
    assert (gamma < 0).any()  # the fixture has negative γ: |γ| is not γ
    assert_scores(score("bn_scale", model), {"conv1": gamma.abs(), "conv2": _weights(model, "conv2").abs().sum((1, 2, 3))})


def check_bn_stats(model):
    """E[ReLU(β + γ z)], z ~ N(0, 1), by Monte Carlo (standard error ≈ 1.5e-3 for |γ| ≤ 1.5)."""
    gamma, beta = model.bn1.weight.detach().double(), model.bn1.bias.detach().double()
    samples = torch.randn(400_000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mc = (beta + gamma * samples).relu().mean(0)
    assert_scores(score("bn_stats", model), {"conv1": mc, "conv2": _weights(model, "conv2").abs().sum((1, 2, 3))},
                  atol=5e-3, rtol=0)


def check_clp(model):
    bn = model.bn1
    expected = []
    for c in range(5):
        scale = abs(bn.weight[c].item()) / float(torch.sqrt(bn.running_var[c] + bn.eps))
        m = (model.conv1.weight[c].detach().double() * scale).reshape(2, 9)
        expected.append(float(torch.linalg.svdvals(m)[0]))
    conv2 = [float(torch.linalg.svdvals(model.conv2.weight[c].detach().double().reshape(5, 9))[0]) for c in range(4)]
    assert_scores(score("clp", model), {"conv1": expected, "conv2": conv2})


def check_random(model):
    """Uniform draws from ``seed``, layer after layer in execution order: reproducible, different
    for another seed, and uniform (a Kolmogorov–Smirnov test over many draws)."""
    g = torch.Generator().manual_seed(3)
    expected = {"conv1": torch.rand(5, generator=g), "conv2": torch.rand(4, generator=g)}
    assert_scores(score("random", model, seed=3), expected)
    assert not torch.equal(score("random", model, seed=4)["conv1"], score("random", model, seed=3)["conv1"])
    draws = torch.cat([torch.cat(list(score("random", model, seed=s).values())) for s in range(40)])
    assert kstest(draws.numpy(), "uniform").pvalue > 1e-3


def test_norms_and_fpgm(tiny):
    check_l1(tiny)
    check_l2(tiny)
    check_fpgm(tiny)


def test_bn_scale_and_stats_monte_carlo(tiny):
    check_bn_scale(tiny)
    check_bn_stats(tiny)


def test_clp_against_svd_loop(tiny):
    check_clp(tiny)
    s = UnitScores({"x": torch.tensor([1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 1.0, 1.02, 0.98, 1.0, 9.0])})
    assert clp_outliers(s, u=2.5)["x"].tolist() == [10]


def test_random_is_seeded_and_uniform(tiny):
    check_random(tiny)


# ------------------------------------------------------------------ data-driven criteria

def check_mean_activation(model, data):
    with torch.no_grad():
        r = responses(model, data.images)
    assert (min(float(t.min()) for t in r.values())) < 0  # the ReLU matters
    assert_scores(score("mean_activation", model, data), {k: t.relu().double().mean((0, 2, 3)) for k, t in r.items()})


def check_apoz(model, data):
    with torch.no_grad():
        r = responses(model, data.images)
    assert_scores(score("apoz", model, data), {k: (t > 0).double().mean((0, 2, 3)) for k, t in r.items()})


def check_hrank(model, data):
    with torch.no_grad():
        r = responses(model, data.images)
    expected = {}
    for layer, t in r.items():
        maps = t.relu().float()
        ranks = [[int(torch.linalg.matrix_rank(maps[n, c])) for c in range(maps.shape[1])] for n in range(maps.shape[0])]
        expected[layer] = torch.tensor(ranks, dtype=torch.float64).mean(0)
    got = score("hrank", model, data)
    assert_scores(got, expected)
    assert got["conv1"].min() < 6  # not all maps full-rank: the check can tell ranks apart


def check_chip(model, data):
    with torch.no_grad():
        r = responses(model, data.images)
    expected = {}
    for layer, t in r.items():
        a = t.relu().double().flatten(2)
        ci = torch.zeros(a.shape[1], dtype=torch.float64)
        for n in range(a.shape[0]):
            full = torch.linalg.matrix_norm(a[n], ord="nuc")
            for c in range(a.shape[1]):
                zeroed = a[n].clone()
                zeroed[c] = 0
                ci[c] += full - torch.linalg.matrix_norm(zeroed, ord="nuc")
        expected[layer] = ci / a.shape[0]
    assert_scores(score("chip", model, data), expected, atol=1e-6, rtol=1e-5)


def _per_image_grads(model, data, objective):
    """Per image: post-BN responses and the gradient of ``objective(logits, y)`` w.r.t. them."""
    for x, y in zip(data.images, data.targets):
        r = responses(model, x[None])
        logits = model.fc(torch.relu(r["conv2"]).mean((2, 3)))
        grads = torch.autograd.grad(objective(logits, y), list(r.values()))
        yield {k: (t.detach(), g) for (k, t), g in zip(r.items(), grads)}


def check_taylor(model, data):
    expected = {"conv1": torch.zeros(5, dtype=torch.float64), "conv2": torch.zeros(4, dtype=torch.float64)}
    for seen in _per_image_grads(model, data, lambda logits, y: nn.functional.cross_entropy(logits, y[None])):
        for layer, (t, g) in seen.items():
            expected[layer] += (t * g).mean((2, 3)).abs()[0].double()
    got = score("taylor", model, data)
    assert_scores(got, {k: v / len(data) for k, v in expected.items()}, rtol=1e-4, atol=1e-9)
    assert all(p.grad is None for p in model.parameters())


def check_pathway_criterion(model, data):
    """Σ_positions |a · ∂y_ĉ/∂a| per filter for each image's predicted class ĉ, mean over images."""
    expected = {"conv1": torch.zeros(5, dtype=torch.float64), "conv2": torch.zeros(4, dtype=torch.float64)}
    for seen in _per_image_grads(model, data, lambda logits, y: logits[0, logits[0].argmax()]):
        for layer, (t, g) in seen.items():
            expected[layer] += (t * g).abs().sum((0, 2, 3)).double()
    assert_scores(score("pathway", model, data), {k: v / len(data) for k, v in expected.items()}, rtol=1e-4, atol=1e-9)


def test_activation_statistics(tiny, data):
    check_mean_activation(tiny, data)
    check_apoz(tiny, data)


def test_hrank_against_per_map_rank(tiny, data):
    check_hrank(tiny, data)


def test_chip_against_nuclear_norm_loop(tiny, data):
    check_chip(tiny, data)


def test_taylor_against_per_sample_autograd(tiny, data):
    check_taylor(tiny, data)


def test_pathway_against_per_sample_autograd(tiny, data):
    check_pathway_criterion(tiny, data)


def test_data_criteria_are_reproducible(tiny, data):
    for name in CRITERIA.names(axis="unit"):
        if CRITERIA[name].needs_data:
            a = get_criterion(name)(tiny, data, seed=2, max_images=10, batch_size=4, quiet=True)
            b = get_criterion(name)(tiny, data, seed=2, max_images=10, batch_size=4, quiet=True)
            assert all(torch.equal(a[k], b[k]) for k in a), name


def test_every_criterion_leaves_the_model_as_it_found_it(tiny, data):
    """A criterion reads the model: weights, BatchNorm statistics, modes, gradients and hooks are as
    before (a benchmark scores several criteria on one model, then fine-tunes against it as teacher)."""
    for name in CRITERIA.names(axis="unit"):
        model = copy.deepcopy(tiny).eval()
        model.conv2.train()  # a mixed mode must survive too
        before = {k: v.clone() for k, v in model.state_dict().items()}
        modes = [m.training for m in model.modules()]
        kwargs = dict(seed=2, max_images=10, batch_size=4) if CRITERIA[name].needs_data else {"seed": 2}
        get_criterion(name)(model, data if CRITERIA[name].needs_data else None, quiet=True, **kwargs)
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), name
        assert [m.training for m in model.modules()] == modes, name
        assert all(p.grad is None and p.requires_grad for p in model.parameters()), name
        assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules()), name


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
