"""Scores on what users hand them besides a plain trainable model: frozen parameters (gradient
criteria), a model without BatchNorm (BatchNorm criteria), constant scores (rank correlation), and
counts that are no counts (UnitScores.top / bottom)."""

import math
import warnings

import pytest
import torch
from torch import nn

from neurotomy.data.tensor_dataset import Normalization, TensorImageDataset
from neurotomy.errors import NeurotomyWarning, OptionError
from neurotomy.scores import UnitScores, get_classwise_criterion, get_criterion


class Plain(nn.Module):
    def __init__(self, bn: bool = True):
        super().__init__()
        self.c1 = nn.Conv2d(1, 6, 3, padding=1)
        self.b1 = nn.BatchNorm2d(6) if bn else nn.Identity()
        self.c2 = nn.Conv2d(6, 8, 3, padding=1, stride=2)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = torch.relu(self.c2(torch.relu(self.b1(self.c1(x)))))
        return self.fc(x.mean((2, 3)))


def data(n=24):
    g = torch.Generator().manual_seed(0)
    return TensorImageDataset(torch.randn(n, 1, 8, 8, generator=g), torch.arange(n) % 3, ["a", "b", "c"],
                              Normalization((0.0,), (1.0,)))


def freeze_backbone(model):
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("fc"))


def freeze_all(model):
    model.requires_grad_(False)


@pytest.mark.parametrize("freeze", [freeze_backbone, freeze_all])
@pytest.mark.parametrize("name", ["taylor", "pathway"])
def test_gradient_criteria_score_frozen_models_as_trainable_ones(name, freeze):
    torch.manual_seed(0)
    model = Plain().eval()
    expected = get_criterion(name)(model, data(), quiet=True)
    freeze(model)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    scores = get_criterion(name)(model, data(), quiet=True)
    assert list(scores) == list(expected)
    for layer in expected:
        torch.testing.assert_close(scores[layer], expected[layer])
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags  # frozen stays frozen
    assert all(p.grad is None for p in model.parameters())


def test_classwise_taylor_scores_a_frozen_model():
    torch.manual_seed(0)
    model = Plain().eval()
    expected = get_classwise_criterion("class_taylor")(model, data(), quiet=True)
    model.requires_grad_(False)
    scores = get_classwise_criterion("class_taylor")(model, data(), quiet=True)
    torch.testing.assert_close(scores["c1"], expected["c1"])


@pytest.mark.parametrize("name", ["bn_scale", "bn_stats"])
def test_batchnorm_criteria_on_a_model_without_batchnorm_say_they_are_l1(name):
    model = Plain(bn=False)
    with pytest.warns(NeurotomyWarning, match=f"^{name}: no conv layer .* followed by an affine BatchNorm") as caught:
        scores = get_criterion(name)(model)
    assert len([w for w in caught if issubclass(w.category, NeurotomyWarning)]) == 1
    l1 = get_criterion("l1")(model)
    assert all(torch.equal(scores[n], l1[n]) for n in l1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one BatchNorm is enough: no warning
        get_criterion(name)(Plain(bn=True))


def test_rank_correlation_of_constant_scores_is_nan_and_left_out_of_the_mean():
    a = UnitScores({"flat": torch.ones(4), "c": torch.tensor([1.0, 2.0, 3.0, 4.0])})
    b = UnitScores({"flat": torch.tensor([4.0, 1.0, 2.0, 3.0]), "c": torch.tensor([1.0, 2.0, 4.0, 3.0])})
    rho = a.rank_correlation(b)
    assert math.isnan(rho["flat"]) and rho["c"] == pytest.approx(0.8) and rho["mean"] == pytest.approx(0.8)
    assert math.isnan(UnitScores({"flat": torch.ones(4)}).rank_correlation(UnitScores({"flat": torch.ones(4)}))["mean"])


@pytest.mark.parametrize("k", [-1, 1.5, "two", True])
def test_top_and_bottom_take_a_count(k):
    scores = UnitScores({"c": torch.tensor([0.1, 3.0, 2.0])})
    for select in (scores.top, scores.bottom):
        with pytest.raises(OptionError, match=r"^k: expected an integer ≥ 0, got"):
            select(k)
    assert scores.top(0)["c"].tolist() == [] and scores.bottom(5)["c"].tolist() == [0, 2, 1]
