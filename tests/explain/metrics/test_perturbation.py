import pytest
import torch

from neurotomy.explain.metrics import MetricError, morf_lerf, random_map, relative_probability_change


def test_oracle_morf_exceeds_lerf_and_beats_random(linear_problem):
    model, x, w = linear_problem
    target = torch.ones(len(x), dtype=torch.long)
    oracle = (w * x)[:, 0].abs()  # magnitude of each pixel's exact contribution
    record = morf_lerf(model, x, oracle, target)
    control = morf_lerf(model, x, random_map(x, seed=2), target)
    assert record["fractions"] == [0.1, 0.3, 0.5, 0.7, 0.9]
    for k in range(5):
        assert record["morf"][k] > record["lerf"][k]
        assert record["lerf"][k] < control["lerf"][k]
    # Removing the 10 % least relevant pixels barely moves the oracle's class probability.
    assert record["lerf"][0] < 0.05 < record["morf"][0]


def test_relative_change_by_hand(linear_problem):
    model, x, w = linear_problem
    maps = (w * x)[:, 0]
    change = relative_probability_change(model, x, maps, torch.ones(16, dtype=torch.long), fraction=0.25)
    # Independent computation: zero each image's 16 highest-valued pixels, compare probabilities.
    perturbed = x.clone()
    for i in range(len(x)):
        top = maps[i].flatten().argsort(descending=True)[:16]
        perturbed[i, 0].view(-1)[top] = 0.0
    p = torch.softmax(model(x), 1)[:, 1]
    q = torch.softmax(model(perturbed), 1)[:, 1]
    assert torch.allclose(change, ((p - q).abs() / p).detach(), atol=1e-6)


def test_bad_fraction_and_shapes(linear_problem):
    model, x, w = linear_problem
    with pytest.raises(MetricError, match="fraction=1.5"):
        relative_probability_change(model, x, x[:, 0], fraction=1.5)
    with pytest.raises(MetricError, match="maps have shape"):
        morf_lerf(model, x, x[:3, 0])
