import copy
import warnings

import pytest
import torch

from neurotomy.errors import NeurotomyWarning
from neurotomy.explain.metrics import MetricError, agreement, model_agreement, random_map

from .conftest import gradient_map


def test_a_model_agrees_with_itself(linear_problem):
    model, x, _ = linear_problem
    record = model_agreement(model, copy.deepcopy(model), x, gradient_map, top=0.2)
    assert record["spearman"] == pytest.approx(1.0) and record["iou"] == pytest.approx(1.0)
    assert record["prediction_agreement"] == 1.0
    assert all(c["spearman"] == pytest.approx(1.0) and c["iou"] == pytest.approx(1.0)
               for c in record["per_class"].values())


def test_per_class_and_overall_are_means_over_images():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(6, 5, 5, generator=g)
    b = torch.cat([a[:3], torch.rand(3, 5, 5, generator=g)])  # class 0 identical, class 1 unrelated
    targets = torch.tensor([0, 0, 0, 1, 1, 1])
    record = agreement(a, b, targets, top=0.2)
    assert record["per_class"][0] == {"spearman": pytest.approx(1.0), "iou": pytest.approx(1.0), "n": 3}
    assert record["per_class"][1]["spearman"] < 0.6 and record["per_class"][1]["iou"] < 0.6
    assert record["spearman"] == pytest.approx((1.0 + record["per_class"][1]["spearman"]) / 2)
    assert record["iou"] == pytest.approx((1.0 + record["per_class"][1]["iou"]) / 2)


def test_a_different_model_agrees_less(linear_problem):
    model, x, _ = linear_problem
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.weights.copy_(random_map(x[:1], seed=5)[0] - 0.5)
    record = model_agreement(model, other, x, gradient_map, targets=torch.ones(16, dtype=torch.long))
    assert record["spearman"] < 0.5 and record["iou"] < 0.5


def test_mismatches_are_errors():
    maps = torch.rand(4, 5, 5)
    with pytest.raises(MetricError, match="3 targets for a batch of 4"):
        agreement(maps, maps, [0, 1, 2])
    with pytest.raises(MetricError, match="cannot be compared"):
        agreement(maps, maps[:, :4], [0, 1, 2, 3])


def test_flat_maps_are_counted_and_warned_about():
    """Two flat maps agree 'perfectly' by definition; the record counts them and a warning says it is
    no evidence (a model whose output ignores its input gives all-zero gradient maps)."""
    varied = torch.rand(3, 6, 6)
    flat = varied.clone()
    flat[1] = 0.0
    with pytest.warns(NeurotomyWarning, match="1 and 0 of the 3 maps"):
        record = agreement(flat, varied, targets=[0, 1, 2])
    assert record["constant_maps"] == [1, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert agreement(varied, varied, targets=[0, 1, 2])["constant_maps"] == [0, 0]
