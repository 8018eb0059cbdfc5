"""The pure steps of ROAR: pixel ranks by a method's map, and removing the top pixels."""

import pytest
import torch

from neurotomy.explain.metrics import ROAR_TARGETS, MetricError, pixel_ranks, remove_top_pixels
from tests.toy_data import patch_dataset



def test_remove_top_pixels_fills_with_the_channel_mean():
    data = patch_dataset(4, 0)
    ranks = torch.arange(64).repeat(4, 1)  # pixel p has rank p: the first rows go first
    fill = torch.tensor([7.0])
    out = remove_top_pixels(data, ranks, 0.25, fill)
    assert torch.all(out.images[:, 0, :2] == 7.0)
    assert torch.equal(out.images[:, 0, 2:], data.images[:, 0, 2:])
    assert torch.equal(out.targets, data.targets)


def test_pixel_ranks_follow_the_map_and_the_chosen_targets():
    data = patch_dataset(6, 0)
    seen = []

    def by_target(model, inputs, targets):
        seen.append(targets.clone())
        return torch.arange(64.0).flip(0).view(1, 8, 8).repeat(len(inputs), 1, 1) * (1 + targets.view(-1, 1, 1))

    ranks = pixel_ranks(None, data, by_target, batch_size=4, quiet=True)
    assert ranks.shape == (6, 64) and ranks.dtype == torch.int32
    assert torch.equal(ranks, torch.arange(64, dtype=torch.int32).repeat(6, 1))  # pixel 0 has the largest value
    assert torch.equal(torch.cat(seen), data.targets)

    seen.clear()
    always_one = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    with torch.no_grad():
        always_one[1].weight.zero_(), always_one[1].bias.copy_(torch.tensor([0.0, 1.0]))
    pixel_ranks(always_one, data, by_target, batch_size=4, targets="predicted", quiet=True)
    assert torch.equal(torch.cat(seen), torch.ones(6, dtype=torch.long))


def test_unknown_target_names_the_choices():
    assert ROAR_TARGETS.names() == ["label", "predicted"]
    with pytest.raises(MetricError, match="unknown ROAR target 'truth'; use one of label, predicted"):
        pixel_ranks(None, patch_dataset(2, 0), lambda m, x, t: x[:, 0], targets="truth", quiet=True)
