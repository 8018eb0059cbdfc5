"""A dataset's labels whatever its kind (neurotomy.data.labels), and the check that they are class indices."""

import pytest
import torch
from torch.utils.data import Subset, TensorDataset

from neurotomy.data import Normalization, TensorImageDataset
from neurotomy.data.labels import check_labels, class_count, dataset_targets, known_targets, require_class_images
from neurotomy.data.subsets import IndexedSubset, balanced_subset
from neurotomy.errors import DataError

IMAGES = torch.zeros(6, 1, 4, 4)
LABELS = torch.tensor([0, 1, 2, 0, 1, 2])


class Pairs(torch.utils.data.Dataset):
    """A dataset of (image, label) items and nothing else: no targets, no classes."""

    def __len__(self):
        return len(LABELS)

    def __getitem__(self, i):
        return IMAGES[i], int(LABELS[i])


def test_labels_of_every_kind_of_dataset():
    ours = TensorImageDataset(IMAGES, LABELS, ["a", "b", "c"], Normalization((0.0,), (1.0,)))
    pairs = [(IMAGES[i], int(LABELS[i])) for i in range(6)]
    for data in (ours, TensorDataset(IMAGES, LABELS), pairs, Pairs()):
        assert dataset_targets(data).tolist() == LABELS.tolist(), type(data).__name__
    rows = [4, 0]
    assert dataset_targets(Subset(TensorDataset(IMAGES, LABELS), rows)).tolist() == [1, 0]
    assert dataset_targets(IndexedSubset(Pairs(), torch.tensor(rows))).tolist() == [1, 0]
    assert dataset_targets([]).tolist() == []


def test_known_targets_never_reads_the_items():
    assert known_targets(Pairs()) is None and known_targets(Subset(Pairs(), [0])) is None
    assert known_targets(TensorDataset(IMAGES, LABELS)) is LABELS


def test_a_plain_dataset_draws_a_balanced_subset():
    subset = balanced_subset(TensorDataset(IMAGES, LABELS), 3)
    assert sorted(dataset_targets(subset).tolist()) == [0, 1, 2]


def test_an_item_that_is_no_pair_is_one_line():
    with pytest.raises(DataError, match="cannot read the labels of a list .*\\(image, label\\) pairs"):
        dataset_targets([1, 2])


def test_class_count_from_the_classes_else_the_largest_label():
    assert class_count(TensorDataset(IMAGES, LABELS)) == 3
    assert class_count(TensorImageDataset(IMAGES, LABELS, list("abcde"), Normalization((0.0,), (1.0,)))) == 5


@pytest.mark.parametrize("labels, classes, message", [
    (torch.tensor([0, 10]), 10, "the data has label 10 but the model has 10 classes \\(0…9\\)"),
    (torch.tensor([-1, 0]), 10, "the data has label -1; labels are class indices"),
    (torch.tensor([0.0, 1.0]), 10, "the labels are float32 numbers; give integer class indices"),
    (torch.tensor([True, False]), 10, "the labels are bool numbers"),
    (torch.zeros(2, 10), 10, "the labels have shape \\(2, 10\\); give one class index per image"),
    (torch.zeros(0, dtype=torch.long), 10, "the data is empty"),
])
def test_impossible_labels_are_one_line(labels, classes, message):
    with pytest.raises(DataError, match=message):
        check_labels(labels, classes)


def test_possible_labels_pass():
    check_labels(torch.tensor([0, 9], dtype=torch.uint8), 10)
    check_labels(torch.tensor([0, 12]))  # no class count: only non-negative integers


def test_a_class_with_no_image_is_named():
    require_class_images(LABELS, 2)
    with pytest.raises(DataError, match="the data has no image of class 3; give data that covers every class"):
        require_class_images(LABELS, 3)
