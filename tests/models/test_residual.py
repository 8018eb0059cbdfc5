"""Residual blocks found by what they compute (neurotomy.models.residual): torchvision's and timm's
blocks under every name they use, removed exactly and reloaded."""

import copy

import pytest
import timm
import torch
import torchvision
from torch import nn
from torchvision.models.convnext import CNBlockConfig

import torch.nn.functional as F
from neurotomy.checkpoint import save_checkpoint
from neurotomy.loading import load_checkpoint, load_model
from neurotomy.models import build_model
from neurotomy.models.anatomy import layer_blocks, removable_blocks, residual_blocks, residual_table
from neurotomy.models.residual import residual_forms
from neurotomy.surgery.layers import remove_blocks


def small_convnext() -> nn.Module:
    return torchvision.models.ConvNeXt([CNBlockConfig(8, 16, 2), CNBlockConfig(16, None, 2)], num_classes=4).eval()


class Written(nn.Module):
    """A net that names nothing: residual sums and activations written in its own forward."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.convs = nn.ModuleList([nn.Conv2d(4, 4, 3, padding=1) for _ in range(2)])
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = F.relu(self.stem(x))
        for conv in self.convs:  # ModuleList: the sum is the model's own, no block of its own
            x = x + F.relu(conv(x))
        return self.fc(x.mean((2, 3)))


class Unit(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        y += x  # in place, into the branch
        return torch.relu(y)


class Units(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.body = nn.Sequential(Unit(), Unit())
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.body(F.relu(self.stem(x))).mean((2, 3)))


def test_blocks_under_every_name():
    shape = (3, 32, 32)
    mobilenet = torchvision.models.mobilenet_v3_small(num_classes=4).eval()
    # use_res_connect: the blocks whose stride is 1 and whose channels stay
    expected = [f"features.{i}" for i, block in enumerate(mobilenet.features)
                if getattr(block, "use_res_connect", False)]
    assert residual_blocks(mobilenet, shape) == expected and len(expected) == 6
    assert list(residual_forms(small_convnext(), shape)) == ["features.1.0", "features.1.1", "features.3.0",
                                                             "features.3.1"]
    resnet = torchvision.models.resnet18(num_classes=4).eval()
    table = residual_table(resnet, shape)
    # the reused ReLU module runs on the sum, but the sum was not made inside it: no block
    assert list(table) == [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)]
    assert table["layer2.0"].shortcut == "layer2.0.downsample" and table["layer2.0"].downsampling
    assert table["layer2.1"].shortcut is None and not table["layer2.1"].downsampling
    regnet = torchvision.models.regnet_x_400mf(num_classes=4).eval()
    forms = residual_forms(regnet, shape)
    assert len(forms) == 22 and forms["trunk_output.block2.block2-0"].shortcut == "trunk_output.block2.block2-0.proj"
    # a timm ConvNeXt stage has a ``downsample`` yet adds nothing: its blocks are the units
    atto = timm.create_model("convnext_atto", pretrained=False, num_classes=4).eval()
    assert residual_blocks(atto, shape) == [f"stages.{i}.blocks.{j}" for i, n in enumerate((2, 2, 6, 2))
                                            for j in range(n)]
    assert residual_blocks(atto)[0] == "stages.0"  # no input shape: read by attribute names, which mistake it
    assert residual_blocks(Written(), (1, 8, 8)) == []
    assert residual_blocks(Units(), (1, 8, 8)) == ["body.0", "body.1"]
    # no sum with the block's own input: a plain VGG, a ViT's blocks (x + attn, then + mlp), a DenseNet
    assert residual_blocks(build_model("vgg11_bn", 1, 10, 28), (1, 28, 28)) == []
    assert residual_blocks(build_model("vit_tiny"), (1, 28, 28)) == []
    assert residual_blocks(torchvision.models.densenet121(num_classes=4), shape) == []


def test_ours_read_the_same_by_names_and_by_computation():
    for arch in ("resnet20", "resnet56", "mobilenetv2"):
        model = build_model(arch, 1, 10, 28).eval()
        by_names, measured = residual_table(model), residual_table(model, (1, 28, 28))
        assert list(by_names) == list(measured)
        assert [f.downsampling for f in by_names.values()] == [f.downsampling for f in measured.values()]


@pytest.mark.parametrize("spec", ["torchvision:mobilenet_v3_small", "torchvision:efficientnet_b0",
                                  "torchvision:regnet_x_400mf", "timm:convnext_atto"])
def test_loaded_models_expose_their_blocks_and_reload_without_them(spec, tmp_path):
    torch.manual_seed(0)
    model = load_model(spec, in_channels=3, num_classes=4, input_size=32)
    removable = removable_blocks(model)
    assert len(removable) >= 6 and set(removable) <= set(layer_blocks(model))
    slim = remove_blocks(model, removable[-2:])
    assert [type(slim.get_submodule(b)).__name__ for b in removable[-2:]] == ["Identity", "Identity"]
    x = torch.randn(2, 3, 32, 32)
    path = save_checkpoint(slim, slim.neurotomy_meta, tmp_path / "slim")
    with torch.no_grad():
        assert torch.equal(load_checkpoint(path)(x), slim(x))


def test_removal_is_the_block_whose_branch_adds_nothing():
    """ConvNeXt's block adds layer_scale × branch to its input: with that scale zero the block is
    the identity, which is what removal must give."""
    model = small_convnext()
    with torch.no_grad():  # initialised at 1e-6, which would hide any difference
        for name, parameter in model.named_parameters():
            if name.endswith("layer_scale"):
                parameter.fill_(1.0)
    silenced = copy.deepcopy(model)
    with torch.no_grad():
        silenced.features[3][1].layer_scale.zero_()
    slim = remove_blocks(model, ["features.3.1"], input_shape=(3, 32, 32))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(slim(x), silenced(x), atol=1e-6)
        assert not torch.allclose(model(x), silenced(x), atol=1e-3)
