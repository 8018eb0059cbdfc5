"""check_data_fits (neurotomy.models.data_fit): one comparison of data with the model's training data."""

import pytest
import torch
from torch import nn

from neurotomy.checkpoint import ModelMeta
from neurotomy.data import Normalization, TensorImageDataset, load_dataset
from neurotomy.errors import DataError
from neurotomy.models import build_model
from neurotomy.models.data_fit import (NORMALIZATION_TOLERANCE, check_data_fits, dataset_for_model,
                                      normalized_as_trained, training_data_of)


def _data(channels=1, size=8, classes=10, mean=0.3, name="mine"):
    norm = Normalization((mean,) * channels, (0.4,) * channels)
    return TensorImageDataset(torch.zeros(classes, channels, size, size), torch.arange(classes),
                              [str(c) for c in range(classes)], norm, name)


def _model(meta_dataset="mine", mean=0.3, classes=10):
    model = build_model("lenet5", 1, classes, 8)
    model.neurotomy_meta = ModelMeta("lenet5", {"in_channels": 1, "num_classes": classes, "input_size": 8},
                                     dataset=meta_dataset, normalization={"mean": [mean], "std": [0.4]},
                                     classes=[str(c) for c in range(classes)])
    return model


def test_the_same_data_fits():
    assert check_data_fits(_model(), _data()) == []
    assert check_data_fits(_model(mean=0.3 + NORMALIZATION_TOLERANCE / 2), _data()) == []


def test_each_difference_is_one_phrase():
    differences = check_data_fits(_model(meta_dataset="digits", mean=0.5), _data(size=12))
    assert len(differences) == 3
    assert differences[0] == "images are 12×12, the model was trained on 8×8 (resize with --input-size 8)"
    assert differences[1].startswith("normalisation mean (0.300) std (0.400), trained with mean (0.500)")
    assert differences[2] == "dataset mine, trained on digits"


def test_class_and_channel_mismatches_are_errors():
    with pytest.raises(DataError, match="the data has 4 classes but the model has 10; .*trained on mine"):
        check_data_fits(_model(), _data(classes=4))
    with pytest.raises(DataError, match="3-channel images but the model takes 1"):
        check_data_fits(_model(), _data(channels=3))


def test_a_bare_module_is_read_from_its_layers():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    assert training_data_of(model).channels == 3 and training_data_of(model).num_classes == 5
    with pytest.raises(DataError, match="10 classes but the model has 5"):
        check_data_fits(model, load_dataset("digits", split="test"))


def test_a_class_module_counts_its_own_two_classes():
    model = _model()
    model.neurotomy_meta.classes = ["not 3", "3"]  # what cut_class_module records
    assert training_data_of(model).num_classes == 2


def test_a_trained_model_sees_any_data_with_its_own_normalisation():
    model = _model(meta_dataset="digits", mean=0.5)
    data = load_dataset("digits", split="test")
    assert normalized_as_trained(model, data).normalization == Normalization((0.5,), (0.4,))
    assert dataset_for_model(model, "test").normalization == Normalization((0.5,), (0.4,))
    assert dataset_for_model(model, "test", as_trained=False).normalization == data.normalization
    fresh = build_model("lenet5", 1, 10, 8)  # records no normalisation: the data keeps its own
    assert normalized_as_trained(fresh, data) is data
    colour = _model(mean=0.5)
    colour.neurotomy_meta.normalization = {"mean": [0.5] * 3, "std": [0.4] * 3}  # another channel count: left
    assert normalized_as_trained(colour, data) is data  # to check_data_fits's error
