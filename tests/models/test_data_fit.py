"""check_data_fits (neurotomy.models.data_fit): one comparison of data with the model's training data."""

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from neurotomy.checkpoint import ModelMeta
from neurotomy.data import Normalization, TensorImageDataset, load_dataset
from neurotomy.errors import DataError
from neurotomy.models import build_model
from neurotomy.models.data_fit import (NORMALIZATION_TOLERANCE, check_data_fits, check_data_runs, check_images_fit,
                                      dataset_for_model, normalized_as_trained, training_data_of)


def _data(channels=1, size=8, classes=10, mean=0.3, name="mine"):
    norm = Normalization((mean,) * channels, (0.4,) * channels)
    return TensorImageDataset(torch.zeros(classes, channels, size, size), torch.arange(classes),
                              [str(c) for c in range(classes)], norm, name)


def _model(meta_dataset="mine", mean=0.3, classes=10, arch="lenet5"):
    model = build_model(arch, 1, classes, 8)
    model.neurotomy_meta = ModelMeta(arch, {"in_channels": 1, "num_classes": classes, "input_size": 8},
                                     dataset=meta_dataset, normalization={"mean": [mean], "std": [0.4]},
                                     classes=[str(c) for c in range(classes)])
    return model


def test_the_same_data_fits():
    assert check_data_fits(_model(), _data()) == []
    assert check_data_fits(_model(mean=0.3 + NORMALIZATION_TOLERANCE / 2), _data()) == []


def test_each_difference_is_one_phrase():
    # resnet20 pools globally: it runs at 12 px too, so the size is a difference, not an error
    differences = check_data_fits(_model(meta_dataset="digits", mean=0.5, arch="resnet20"), _data(size=12))
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


def test_data_without_targets_or_classes_is_compared_by_its_labels():
    images, labels = torch.zeros(10, 1, 8, 8), torch.arange(10)
    assert check_data_fits(_model(), TensorDataset(images, labels)) == []
    assert check_data_fits(_model(), [(images[i], i) for i in range(10)]) == []
    assert check_data_fits(_model(), TensorDataset(images[:3], labels[:3])) == []  # not every class: still fits
    with pytest.raises(DataError, match="the data has label 10 but the model has 10 classes"):
        check_data_fits(_model(), TensorDataset(images, labels + 1))


@pytest.mark.parametrize("images, message", [
    (torch.zeros(4, 1, 8, 8, dtype=torch.uint8), "images are uint8 tensors but the model takes float images; .*/ 255"),
    (torch.zeros(4, 8, 8), "images are 8×8 with no channel axis but the model takes 1-channel images; .*unsqueeze"),
    (torch.zeros(4, 3, 8, 8), "the data has 3-channel images but the model takes 1; give grey images"),
    (torch.zeros(4, 2, 1, 8, 8), "images have shape \\(2, 1, 8, 8\\) but the model takes 1-channel images"),
])
def test_images_the_model_cannot_take_are_one_line(images, message):
    with pytest.raises(DataError, match=message):
        check_images_fit(_model(), TensorDataset(images, torch.zeros(4, dtype=torch.long)))
    with pytest.raises(DataError, match=message):  # a bare module: its first convolution tells
        check_images_fit(build_model("lenet5", 1, 10, 8), TensorDataset(images, torch.zeros(4, dtype=torch.long)))


def test_the_image_check_reads_one_item_only():
    class Counting(torch.utils.data.Dataset):
        reads = 0

        def __len__(self):
            return 60_000

        def __getitem__(self, i):
            Counting.reads += 1
            return torch.zeros(1, 8, 8), 0

    assert check_data_runs(_model(), Counting()) is False  # its labels are not at hand: checked per batch
    assert Counting.reads == 1


def test_empty_data_and_impossible_labels_before_any_pass():
    with pytest.raises(DataError, match="the data is empty"):
        check_data_runs(_model(), TensorDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long)))
    images = torch.zeros(4, 1, 8, 8)
    assert check_data_runs(_model(), TensorDataset(images, torch.tensor([0, 1, 2, 9])))
    for labels in (torch.tensor([0, 1, 2, 10]), torch.tensor([0, -1, 2, 3]), torch.tensor([0.0, 1.0, 2.0, 3.0])):
        with pytest.raises(DataError):
            check_data_runs(_model(), TensorDataset(images, labels))
    assert check_data_runs(_model(), TensorDataset(images, torch.tensor([0, 1, 2, 10])), labels=False)


def test_a_module_that_tells_nothing_of_its_input_is_not_judged():
    head = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))  # takes H×W as well as 1×H×W
    check_images_fit(head, TensorDataset(torch.zeros(4, 8, 8), torch.zeros(4, dtype=torch.long)))


def test_a_size_the_model_cannot_run_at_is_one_line_before_any_pass():
    # LeNet-5 flattens into a linear layer sized for 8 px: 12 px images fail in the first forward
    with pytest.raises(DataError, match=r"^the data's images are 12×12 but the model was trained on 8×8 and does "
                                        r"not run on them \(mat1 and mat2.*\); resize them \(--input-size 8"):
        check_data_fits(_model(), _data(size=12))
    model = _model().train()
    with pytest.raises(DataError, match="resize them"):
        check_images_fit(model, _data(size=12))  # the API's evaluate/fit/criteria check, too
    assert model.training  # the trial forward ran in eval mode and left the caller's mode


def test_a_class_at_another_label_index_is_an_error_other_names_a_warning():
    model = _model(classes=2)
    model.neurotomy_meta.classes = ["a", "b"]
    renamed = _data(classes=2)
    renamed.classes = ["b", "z"]  # folder a renamed to z: b moved from label 1 to 0
    with pytest.raises(DataError, match=r"^class 'b' is label 0 in the data but 1 for the model \(the data's "
                                        r"classes \(b, z\), the model's \(a, b\)\)"):
        check_data_fits(model, renamed)
    other = _data(classes=2)
    other.classes = ["cat", "dog"]
    assert check_data_fits(model, other) == ["classes (cat, dog), the model's (a, b)"]
