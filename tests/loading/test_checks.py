"""The checks a loaded model passes before any work (neurotomy.loading.checks): a forward that returns
N × classes logits, a second model made for the first one's inputs and classes; and the one-line
errors of a builder or a forward that refuses the input size."""

import re

import pytest

from neurotomy import load_model
from neurotomy.errors import ModelError
from neurotomy.jobs.new_model import train_new_model
from neurotomy.loading import build_fresh, check_classifier_output, check_compatible
from neurotomy.models import build_model
from neurotomy.train import TrainConfig

ODD_NETS = '''
import torch
from torch import nn


class Body(nn.Module):
    def __init__(self, num_classes=4):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.head = nn.Linear(8, num_classes)

    def features(self, x):
        return self.conv(x).mean((2, 3))


class DictOut(Body):
    def forward(self, x):
        f = self.features(x)
        return {"logits": self.head(f), "aux": f}


class TupleOut(Body):
    def forward(self, x):
        f = self.features(x)
        return self.head(f), f


class Needs16(Body):
    def forward(self, x):
        assert x.shape[-1] % 16 == 0, "side must be a multiple of 16"
        return self.head(self.features(x))


def make_dict(num_classes=4):
    return DictOut(num_classes)


def make_tuple(num_classes=4):
    return TupleOut(num_classes)


def make_map(num_classes=4):
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Conv2d(8, num_classes, 1))


def make_needs16(num_classes=4):
    return Needs16(num_classes)


class TwoInputs(Body):
    def forward(self, x, meta):
        return self.head(self.features(x)) + meta


class ByKeyword(Body):
    def forward(self, *, image):
        return self.head(self.features(image))


class Optional(Body):
    def forward(self, x, mask=None, *args, **kwargs):
        return self.head(self.features(x))


def make_two(num_classes=4):
    return TwoInputs(num_classes)


def make_keyword(num_classes=4):
    return ByKeyword(num_classes)


def make_optional(num_classes=4):
    return Optional(num_classes)
'''


@pytest.fixture
def odd_nets(tmp_path):
    path = tmp_path / "odd_nets.py"
    path.write_text(ODD_NETS)
    return path


@pytest.mark.parametrize("factory,said,fix", [
    ("make_dict", "a dict with keys logits, aux", "wrap it so forward returns the N × classes logits tensor"),
    ("make_tuple", "a tuple of 2 (tensor of shape 2×4, tensor of shape 2×8)", "wrap it"),
    ("make_map", "a tensor of shape 2×4×1×1", "add nn.Flatten()"),
])
def test_a_forward_without_n_by_classes_logits_fails_at_load(odd_nets, factory, said, fix):
    with pytest.raises(ModelError) as caught:
        load_model(f"{odd_nets}:{factory}", input_size=8, num_classes=4)
    message = str(caught.value)
    assert "\n" not in message and f"{odd_nets}:{factory}: forward returned {said}" in message and fix in message


def test_training_a_model_without_logits_stops_before_the_first_epoch(odd_nets):
    with pytest.raises(ModelError, match="forward returned a dict with keys logits, aux"):
        train_new_model(f"{odd_nets}:make_dict", "digits", None, TrainConfig(epochs=1, quiet=True, max_images=64))


def test_a_forward_that_refuses_the_input_size_names_it_and_the_model_message(odd_nets):
    with pytest.raises(ModelError, match=r"make_needs16 cannot run on 1×8×8 inputs \(AssertionError: side must be "
                                         r"a multiple of 16\); try another --input-size"):
        load_model(f"{odd_nets}:make_needs16", input_size=8)
    assert load_model(f"{odd_nets}:make_needs16", input_size=16).neurotomy_meta.input_shape == (1, 16, 16)


def test_a_builder_that_refuses_the_input_size_is_one_line():
    with pytest.raises(ModelError, match=r"torchvision:vit_b_16 cannot be built for 30×30 inputs \(AssertionError: "
                                         r"Input shape indivisible by patch size!\); try another --input-size"):
        build_fresh("torchvision:vit_b_16", 3, 10, 30)


def test_check_classifier_output_counts_the_classes():
    assert check_classifier_output(build_model("lenet5", 1, 7, 8), "lenet5") == 7


def test_check_compatible_names_both_models_and_shapes():
    model = build_model("lenet5", 1, 10, 8)
    check_compatible(model, build_model("lenet5", 1, 10, 8), "a", "b")
    with pytest.raises(ModelError, match=r"^--teacher t takes 3×8×8 inputs but student takes 1×8×8; give a second "
                                         r"model made for the same inputs and classes$"):
        check_compatible(model, build_model("lenet5", 3, 10, 8), "student", "--teacher t")
    with pytest.raises(ModelError, match=r"^--teacher t takes 1×16×16 inputs but student takes 1×8×8"):
        check_compatible(model, build_model("lenet5", 1, 10, 16), "student", "--teacher t")
    with pytest.raises(ModelError, match=r"^--teacher t gives 4 classes but student gives 10; give"):
        check_compatible(model, build_model("lenet5", 1, 4, 8), "student", "--teacher t")


def test_training_with_a_teacher_of_other_inputs_stops_before_the_first_epoch():
    teacher = build_model("lenet5", 3, 10, 8)
    with pytest.raises(ModelError, match=r"the teacher \(lenet5\) takes 3×8×8 inputs but lenet5 takes 1×8×8"):
        train_new_model("lenet5", "digits", None, TrainConfig(epochs=1, quiet=True), teacher=teacher)


@pytest.mark.parametrize("factory,takes", [("make_two", "x, meta"), ("make_keyword", "*, image")])
def test_a_forward_that_needs_more_than_the_images_is_one_line_not_an_input_size(odd_nets, factory, takes):
    with pytest.raises(ModelError, match=rf"{factory}: forward\({re.escape(takes)}\) does not take one images "
                                         r"tensor as its only input; wrap the model"):
        load_model(f"{odd_nets}:{factory}", input_size=8)
    assert check_classifier_output(load_model(f"{odd_nets}:make_optional", input_size=8), "optional") == 4
