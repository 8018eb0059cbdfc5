"""The split job (neurotomy.jobs.split) on datasets that carry no ``targets``: the labels are derived,
and a class the data has no image of is named before any work."""

import copy
import math

import pytest
import torch
from torch.utils.data import TensorDataset

from neurotomy.data import batch_at
from neurotomy.errors import DataError
from neurotomy.jobs.split import shift_to_prior, split
from neurotomy.models.anatomy import classifier_layer
from neurotomy.scores import get_classwise_criterion


def _plain(data):
    """``data`` as a torch TensorDataset: images and labels, no targets, no classes."""
    images, labels = batch_at(data, torch.arange(len(data)))
    return TensorDataset(images, labels)


def test_a_plain_tensor_dataset_splits(lenet_digits, one_thread):
    model, train, _ = lenet_digits
    plain = _plain(train)
    scores = get_classwise_criterion("class_activation")(model, plain, max_images=400, quiet=True)
    module = split(model, plain, 3, scores=scores, calibration_images=100, finetune_epochs=1, finetune_images=100,
                   quiet=True)
    assert module.model(plain[0][0][None]).shape == (1, 2)


def test_the_prior_shift_reads_the_labels_of_any_dataset(lenet_digits):
    model, train, _ = lenet_digits
    labels = torch.tensor([3, 0, 0, 0])
    pairs = [(train[i][0], int(c)) for i, c in enumerate(labels)]
    head = copy.deepcopy(model)
    name, layer = classifier_layer(head)
    before = layer.bias[1].item()
    shift_to_prior(head, name, pairs, 3)
    assert head.get_submodule(name).bias[1].item() == pytest.approx(before + math.log(0.25 / 0.75))


def test_a_class_without_images_is_named_before_any_work(lenet_digits, monkeypatch):
    model, train, _ = lenet_digits
    images, labels = batch_at(train, torch.arange(len(train)))
    keep = labels != 3

    def no_scoring(*args, **kwargs):
        raise AssertionError("scored before checking the data")

    monkeypatch.setattr("neurotomy.surgery.class_modules.ClassActivation.__call__", no_scoring)
    with pytest.raises(DataError, match="the data has no image of class 3; give data that covers every class"):
        split(model, TensorDataset(images[keep], labels[keep]), 3, finetune_epochs=0, quiet=True)
