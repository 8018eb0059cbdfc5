import pytest
import torch
from torch import nn

from neurotomy.models import build_model
from neurotomy.models.anatomy import (block_input_module, layer_blocks, plain_block_table, plain_blocks,
                                      removable_blocks, residual_blocks)


def _conv_blocks_by_hand(model):
    """Each conv of a VGG's ``features`` but the stem, with the BatchNorm and ReLU right after it
    (an independent reading of VGG's layout: every conv is followed by its BN and its ReLU)."""
    children = list(model.features)
    convs = [i for i, m in enumerate(children) if isinstance(m, nn.Conv2d)]
    return [(f"features.{i + 2}", f"features.{i}", children[i].in_channels, children[i].out_channels)
            for i in convs[1:]]


@pytest.mark.parametrize("arch,convs", [("vgg11_bn", 8), ("vgg16_bn", 13)])
def test_plain_blocks_of_vgg(arch, convs):
    model = build_model(arch, 1, 10, 28)
    table = plain_block_table(model)
    expected = _conv_blocks_by_hand(model)
    assert len(expected) == convs - 1  # the stem reads the image: not a block
    assert [(b.name, b.conv, b.in_channels, b.out_channels) for b in table.values()] == expected
    assert layer_blocks(model) == plain_blocks(model) == [e[0] for e in expected]
    assert removable_blocks(model) == [e[0] for e in expected if e[2] == e[3]]
    assert removable_blocks(model, keep_downsampling=False) == [e[0] for e in expected]
    # each block's successor is the next conv in features, and the classifier after the last
    names = [b.conv for b in table.values()] + ["classifier"]
    assert [b.successor for b in table.values()] == names[1:]
    assert all(block_input_module(model, b) == table[b].conv for b in table)


def test_vgg16_counts():
    model = build_model("vgg16_bn", 1, 10, 28)
    assert len(plain_blocks(model)) == 12 and len(removable_blocks(model)) == 9
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_residual_models_have_no_plain_blocks():
    for arch in ("resnet20", "mobilenetv2"):
        model = build_model(arch, 1, 10, 28)
        assert plain_block_table(model) == {}
        assert layer_blocks(model) == residual_blocks(model)
        assert block_input_module(model, residual_blocks(model)[0]) == residual_blocks(model)[0]


def test_plain_block_layouts_that_do_not_count():
    # a strided conv changes the map's size; a conv followed by something other than pooling or a
    # conv (here a depthwise conv) has no well-defined successor; a classifier reading C·H·W features
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(4, 4, 3, padding=1, stride=2), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1, groups=4),
                        nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 2))
    assert plain_blocks(net) == []
    ok = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    table = plain_block_table(ok)
    assert list(table) == ["3"] and table["3"].norm is None and table["3"].successor == "6"
