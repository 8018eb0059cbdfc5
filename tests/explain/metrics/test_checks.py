import pytest
import torch
from torch import nn

from neurotomy.errors import NeurotomyError
from neurotomy.explain.metrics import MetricError
from neurotomy.explain.metrics.checks import (check_maps, check_targets, descending_ranks, resolve_targets,
                                              top_pixel_mask)


def test_ranks_put_the_largest_value_first_and_break_ties_by_position():
    maps = torch.tensor([[[0.5, 2.0], [0.5, -1.0]]])
    assert descending_ranks(maps).tolist() == [[1, 0, 2, 3]]
    assert top_pixel_mask(maps, 2).flatten().tolist() == [True, True, False, False]


def test_targets_convention():
    assert check_targets(2, 3).tolist() == [2, 2, 2]
    assert check_targets(torch.tensor([[1], [0]]), 2).tolist() == [1, 0]
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x = torch.randn(5, 1, 2, 2)
    assert torch.equal(resolve_targets(model, x, None), model(x).argmax(1))
    with pytest.raises(MetricError, match="2 targets for a batch of 5"):
        resolve_targets(model, x, [0, 1])


def test_bad_maps_are_user_errors():
    x = torch.zeros(2, 3, 4, 4)
    with pytest.raises(MetricError, match=r"need \(2, 4, 4\)"):
        check_maps(torch.zeros(2, 3, 4, 4), x)
    with pytest.raises(MetricError, match="NaN"):
        check_maps(torch.full((2, 4, 4), float("nan")), x)
    with pytest.raises(MetricError, match="dtype"):
        check_maps(torch.zeros(2, 4, 4), x.long())
    assert issubclass(MetricError, NeurotomyError)


def test_a_model_without_class_scores_is_named():
    with pytest.raises(MetricError, match="class scores"):
        resolve_targets(nn.Identity(), torch.zeros(2, 1, 3, 3), None)
