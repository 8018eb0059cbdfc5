"""Data-driven criteria (neurotomy.scores.base) check the data before any batch reaches the model."""

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from neurotomy.errors import DataError
from neurotomy.models import build_model
from neurotomy.scores import get_classwise_criterion, get_criterion

G = torch.Generator().manual_seed(0)
IMAGES, LABELS = torch.randn(32, 1, 8, 8, generator=G), torch.arange(32) % 10


@pytest.mark.parametrize("criterion", ["hrank", "taylor"])
@pytest.mark.parametrize("images, message", [
    (IMAGES.mul(60).add(100).clamp(0, 255).byte(), "images are uint8 tensors but the model takes float images"),
    (IMAGES[:, 0], "images are 8×8 with no channel axis"),
    (IMAGES.repeat(1, 3, 1, 1), "3-channel images but the model takes 1"),
])
def test_images_the_model_cannot_take_are_one_line(criterion, images, message):
    for model in (build_model("lenet5", 1, 10, 8), nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(),
                                                                   nn.Linear(4 * 6 * 6, 10))):
        with pytest.raises(DataError, match=message):
            get_criterion(criterion)(model, TensorDataset(images, LABELS), quiet=True)


def test_criteria_that_read_the_labels_refuse_impossible_ones():
    model = build_model("lenet5", 1, 10, 8)
    bad = TensorDataset(IMAGES, LABELS + 10)
    for score in (get_criterion("taylor"), get_classwise_criterion("class_taylor")):
        with pytest.raises(DataError, match="the data has label 19 but the model has 10 classes"):
            score(model, bad, quiet=True)
    pairs = [(IMAGES[i], int(LABELS[i]) + 10) for i in range(len(LABELS))]  # not at hand: each batch's
    with pytest.raises(DataError, match="the data has label 19 but the model has 10 classes"):
        get_criterion("taylor")(model, pairs, quiet=True)
    assert get_criterion("hrank")(model, bad, quiet=True)["features.0"].shape == (6,)  # hrank never reads them
