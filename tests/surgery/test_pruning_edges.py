"""prune_filters on what users hand it besides a zoo model in eval mode: frozen parameters, a model
in training mode, limits that leave nothing to cut, one ignored layer given as a string, a
transformer scored by a conv criterion."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from neurotomy.errors import NeurotomyWarning, PruningError
from neurotomy.scores import get_criterion
from neurotomy.surgery.filters import prune_filters

SHAPE = (1, 12, 12)


class Concat(nn.Module):
    """A stem whose channels are concatenated into later inputs (as in a DenseNet)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(8)
        self.d1 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.trans = nn.Conv2d(16, 16, 1)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        x0 = F.relu(self.bn0(self.stem(x)))
        x1 = torch.cat([x0, F.relu(self.bn1(self.d1(x0)))], 1)
        return self.fc(self.drop(F.relu(self.trans(x1)).mean((2, 3))))


def concat_net():
    torch.manual_seed(0)
    return Concat()


def widths(model):
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def test_frozen_layers_are_pruned_like_trainable_ones_and_stay_frozen():
    model = concat_net().eval()
    expected = widths(prune_filters(model, get_criterion("l1")(model), ratio=0.5, input_shape=SHAPE).model)
    for p in model.stem.parameters():  # a frozen stem fed by the image gets no autograd node of its own
        p.requires_grad_(False)
    result = prune_filters(model, get_criterion("l1")(model), ratio=0.5, input_shape=SHAPE)
    assert widths(result.model) == expected and expected["stem"] == 4
    assert {n: p.requires_grad for n, p in result.model.named_parameters()} == \
        {n: p.requires_grad for n, p in model.named_parameters()}
    assert not model.stem.weight.requires_grad and model.d1.weight.requires_grad


def test_a_fully_frozen_model_is_pruned():
    model = concat_net().eval().requires_grad_(False)
    result = prune_filters(model, get_criterion("l1")(model), ratio=0.5, input_shape=SHAPE)
    assert widths(result.model)["stem"] == 4 and result.macs_reduction > 0
    assert not any(p.requires_grad for p in result.model.parameters())
    assert not any(p.requires_grad for p in model.parameters())


def test_training_flags_of_the_model_and_the_pruned_copy_are_the_callers():
    model = concat_net().train()
    model.bn0.eval()  # a BatchNorm frozen inside a model that trains
    flags = {n: m.training for n, m in model.named_modules()}
    result = prune_filters(model, get_criterion("l1")(model), ratio=0.5, input_shape=SHAPE)
    assert {n: m.training for n, m in model.named_modules()} == flags
    assert {n: m.training for n, m in result.model.named_modules()} == flags


@pytest.mark.parametrize("limits", [dict(round_to=32), dict(min_channels=100)])
def test_limits_that_leave_nothing_to_cut_are_an_error(limits):
    model = concat_net().eval()
    needle = r"^ratio 0.3 removes no channel: with min_channels=\d+.* lower those limits$"
    with pytest.raises(PruningError, match=needle):
        prune_filters(model, get_criterion("l1")(model), ratio=0.3, input_shape=SHAPE, **limits)


def test_a_ratio_too_small_to_cut_a_channel_warns():
    model = concat_net().eval()
    with pytest.warns(NeurotomyWarning, match="ratio 0.05 removes no channel: it rounds down"):
        result = prune_filters(model, get_criterion("l1")(model), ratio=0.05, input_shape=SHAPE)
    assert result.cuts == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert prune_filters(model, get_criterion("l1")(model), ratio=0.0, input_shape=SHAPE).cuts == []


def test_one_ignored_layer_may_be_given_as_a_string():
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    scores = get_criterion("l1")(model)
    as_str = prune_filters(model, scores, ratio=0.5, ignored_layers="2", input_shape=SHAPE)
    as_list = prune_filters(model, scores, ratio=0.5, ignored_layers=["2"], input_shape=SHAPE)
    assert widths(as_str.model) == widths(as_list.model) == {"0": 4, "2": 8, "4": 4}
    with pytest.raises(PruningError, match="ignored layer '24' is not in the model"):
        prune_filters(model, scores, ratio=0.5, ignored_layers="24", input_shape=SHAPE)


class TinyViT(nn.Module):
    """A ViT from torch's own nn.TransformerEncoderLayer."""

    def __init__(self, d=16):
        super().__init__()
        self.embed = nn.Conv2d(1, d, 4, stride=4)
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.blocks = nn.TransformerEncoder(nn.TransformerEncoderLayer(d, 2, 32, dropout=0.0, batch_first=True), 1)
        self.head = nn.Linear(d, 4)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        return self.head(self.blocks(torch.cat([self.cls.expand(len(t), -1, -1), t], 1))[:, 0])


def test_a_transformer_scored_by_a_conv_criterion_is_told_how_to_prune_it():
    model = TinyViT().eval()
    with pytest.raises(PruningError) as info:
        prune_filters(model, get_criterion("l1")(model), ratio=0.3, input_shape=SHAPE)
    message = str(info.value)
    assert "none of the scored layers (embed) can be cut" in message and "prune_transformer" in message
    assert "layer names must match" not in message and "\n" not in message


class _GroupNormNet(nn.Module):
    """A GroupNorm(4) first layer: its 16 channels go in steps of 4, which a uniform ratio can jump over."""

    def __init__(self):
        super().__init__()
        self.c1, self.gn = nn.Conv2d(1, 16, 3, padding=1), nn.GroupNorm(4, 16)
        self.c2, self.inorm = nn.Conv2d(16, 32, 3, 2, 1), nn.InstanceNorm2d(32, affine=True)
        self.c3, self.bn = nn.Conv2d(32, 32, 3, 2, 1), nn.BatchNorm2d(32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = F.relu(self.gn(self.c1(x)))
        x = F.relu(self.inorm(self.c2(x)))
        return self.fc(F.relu(self.bn(self.c3(x))).mean((2, 3)))


def test_a_missed_macs_target_is_never_silent():
    torch.manual_seed(0)
    model = _GroupNormNet().eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = prune_filters(model, get_criterion("l1")(model), target_macs=0.3, input_shape=(1, 32, 32))
    reached = 1 - result.macs_after / result.macs_before
    missed = [str(w.message) for w in caught if "was asked; the cut reaches" in str(w.message)]
    if abs(reached - 0.3) > 0.01:
        assert missed == [f"a macs reduction of 30% was asked; the cut reaches {reached:.1%}: the ratio search found "
                          "no closer cut with scope uniform (channel groups and round_to make coarse steps); try "
                          "scope global (--scope global) or another target"]
    else:
        assert missed == []


class _OneStream(nn.Module):
    """Every conv on one residual stream: ignoring one keeps the others whole too."""

    def __init__(self):
        super().__init__()
        self.stem, self.block = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = self.stem(x)
        x = x + F.relu(self.block(x))
        return self.fc(x.mean((2, 3)))


def test_layers_kept_whole_by_an_ignored_partner_are_named_so():
    model = _OneStream().eval()
    with pytest.raises(PruningError, match=r"none of the scored layers \(stem, block\) can be cut: stem shares its "
                                           r"channels with the ignored block \(a residual stream"):
        prune_filters(model, get_criterion("l1")(model), ratio=0.5, ignored_layers=["block"], input_shape=(1, 8, 8))
