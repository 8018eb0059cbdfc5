"""Plain conv blocks found by following a forward pass (neurotomy.models.plain): the same table as
the layout reading where both apply, and the blocks that layout cannot see."""

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.ops import Conv2dNormActivation

from neurotomy.checkpoint import ModelMeta
from neurotomy.data import load_dataset
from neurotomy.errors import PruningError
from neurotomy.models import build_model
from neurotomy.models.anatomy import plain_block_table, removable_blocks
from neurotomy.models.plain import traced_plain_blocks
from neurotomy.surgery.layers import remove_blocks
from neurotomy.dynamics.layer_rules import choose_blocks


class ConvBNReLU(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class Written(nn.Module):
    """Hand-written blocks that call ``F.relu``, a functional max-pool, global pooling by a function."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(ConvBNReLU(1, 8), ConvBNReLU(8, 8), ConvBNReLU(8, 16), ConvBNReLU(16, 16))
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = F.max_pool2d(self.body[1](self.body[0](x)), 2)
        return self.fc(F.adaptive_avg_pool2d(self.body[3](self.body[2](x)), 1).flatten(1))


class Branching(Written):
    """The second block's output is read twice (kept for a concatenation) and the last one's reaches the
    classifier through that concatenation: neither is a plain block."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        early = self.body[1](self.body[0](x))
        x = self.body[3](self.body[2](F.max_pool2d(early, 2)))
        return self.fc(torch.cat([F.adaptive_avg_pool2d(x, 1), F.adaptive_avg_pool2d(early, 1)], 1).flatten(1))


class InItsOwnForward(nn.Module):
    """Activations the model calls over an ``nn.ModuleList``: no module returns them."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(1, 8, 3, padding=1)] + [nn.Conv2d(8, 8, 3, padding=1) for _ in range(2)])
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        for conv in self.convs:
            x = F.relu(conv(x))
        return self.fc(x.mean((2, 3)))


@pytest.mark.parametrize("make,shape", [(lambda: build_model("vgg11_bn", 1, 10, 28), (1, 28, 28)),
                                        (lambda: build_model("vgg16_bn", 1, 10, 28), (1, 28, 28)),
                                        (lambda: torchvision.models.vgg11(num_classes=4), (3, 64, 64)),
                                        (lambda: torchvision.models.vgg11_bn(num_classes=4), (3, 64, 64))])
def test_the_trace_finds_what_the_layout_finds(make, shape):
    """Two independent readings of a Sequential VGG (in-place ReLUs in torchvision's) agree block for block."""
    model = make().eval()
    by_layout, traced = plain_block_table(model), plain_block_table(model, shape)
    assert traced == by_layout and len(traced) >= 6


def test_blocks_the_layout_cannot_see():
    wrapped = nn.Sequential(Conv2dNormActivation(1, 8), Conv2dNormActivation(8, 8), nn.MaxPool2d(2),
                            Conv2dNormActivation(8, 8), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    assert plain_block_table(wrapped) == {}
    assert list(plain_block_table(wrapped, (1, 8, 8))) == ["1.2", "3.2"]
    table = plain_block_table(Written(), (1, 8, 8))
    assert {name: (b.conv, b.norm, b.successor, b.in_channels, b.out_channels) for name, b in table.items()} == {
        "body.1": ("body.1.conv", "body.1.bn", "body.2.conv", 8, 8),
        "body.2": ("body.2.conv", "body.2.bn", "body.3.conv", 8, 16),
        "body.3": ("body.3.conv", "body.3.bn", "fc", 16, 16)}
    assert list(plain_block_table(Branching(), (1, 8, 8))) == ["body.2"]
    table = traced_plain_blocks(InItsOwnForward(), (1, 8, 8), "fc")  # no module returns the activation
    assert {name: (b.conv, b.norm, b.successor) for name, b in table.items()} == {
        "convs.1:activated": ("convs.1", None, "convs.2"), "convs.2:activated": ("convs.2", None, "fc")}


class Smooth(InItsOwnForward):
    """GELU in the model's own forward: removing a block would leave a second GELU on its input."""

    def forward(self, x):
        for conv in self.convs:
            x = F.gelu(conv(x))
        return self.fc(x.mean((2, 3)))


# a hand-written net in the style of a tutorial: every activation and pool called in its own forward
TUTORIAL = '''import torch.nn.functional as F
from torch import nn


class Tutorial(nn.Module):
    def __init__(self, in_channels=1, num_classes=10):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv3, self.bn3 = nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.conv4 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 4 * 4, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x)), inplace=True), 2)
        x = self.bn3(self.conv3(x)).relu()
        x = F.max_pool2d(F.relu(self.conv4(x)), 2)
        return self.fc(x.flatten(1))
'''


@pytest.fixture(name="tutorial")
def tutorial_fixture(tmp_path):
    from neurotomy.loading import load_model

    (tmp_path / "tutorial.py").write_text(TUTORIAL)
    torch.manual_seed(0)
    model = load_model(f"{tmp_path / 'tutorial.py'}:Tutorial", in_channels=1, num_classes=10, input_size=16)
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        for bn in (model.bn1, model.bn2, model.bn3):
            bn.running_mean.uniform_(-0.5, 0.5), bn.running_var.uniform_(0.5, 2)
    return model


def test_a_tutorial_nets_blocks_are_its_activated_layers(tutorial):
    table = plain_block_table(tutorial)  # the shape the checkpoint records
    assert {name: (b.conv, b.norm, b.successor, b.in_channels, b.out_channels) for name, b in table.items()} == {
        "bn2:activated": ("conv2", "bn2", "conv3", 8, 8),
        "bn3:activated": ("conv3", "bn3", "conv4", 8, 16)}  # conv4's output reaches fc flattened whole: no block
    assert removable_blocks(tutorial) == ["bn2:activated"]


def test_removing_a_tutorial_block_is_the_forward_without_it_and_reloads(tutorial, tmp_path):
    from neurotomy.checkpoint import save_checkpoint
    from neurotomy.loading import load_checkpoint

    slim = remove_blocks(tutorial, ["bn2:activated"])  # 8 → 8 channels: nothing to refit
    assert isinstance(slim.conv2, nn.Identity) and isinstance(slim.bn2, nn.Identity)
    x = torch.randn(4, 1, 16, 16)
    m = tutorial
    with torch.no_grad():
        y = F.max_pool2d(F.relu(m.bn1(m.conv1(x))), 2)  # straight from the first block to the pool
        y = F.max_pool2d(F.relu(m.conv4(m.bn3(m.conv3(y)).relu())), 2)
        torch.testing.assert_close(slim(x), m.fc(y.flatten(1)), atol=1e-6, rtol=1e-5)
        path = save_checkpoint(slim, slim.neurotomy_meta, tmp_path / "slim")
        assert torch.equal(load_checkpoint(path)(x), slim(x))
    data = load_dataset("fashion-mnist", input_size=16)
    refit = remove_blocks(tutorial, ["bn3:activated"], data, max_images=128)  # conv4 refit to read 8 channels
    assert refit.conv4.in_channels == 8 and refit.neurotomy_meta.recipe[-1]["adapted"] == "least_squares"
    with torch.no_grad():
        path = save_checkpoint(refit, refit.neurotomy_meta, tmp_path / "refit")
        assert torch.equal(load_checkpoint(path)(x), refit(x))


def test_no_removable_block_is_named_with_the_way_out():
    model = Smooth()
    assert traced_plain_blocks(model, (1, 8, 8), "fc") == {}
    model.neurotomy_meta = ModelMeta("smooth", {"in_channels": 1, "input_size": 8})
    with pytest.raises(PruningError, match="no removable block.*prune filters instead"):
        choose_blocks(model, "last", count=1)


def test_removing_a_written_block_is_the_forward_without_it():
    torch.manual_seed(0)
    model = Written().eval()
    model.neurotomy_meta = ModelMeta("written", {"in_channels": 1, "input_size": 16})
    assert removable_blocks(model) == ["body.1", "body.3"]
    slim = remove_blocks(model, ["body.1"])  # keeps its channels: no refit needed
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        y = F.max_pool2d(model.body[0](x), 2)
        expected = model.fc(F.adaptive_avg_pool2d(model.body[3](model.body[2](y)), 1).flatten(1))
        assert torch.allclose(slim(x), expected, atol=1e-6)
    data = load_dataset("fashion-mnist", input_size=16)
    refit = remove_blocks(model, ["body.2"], data, max_images=128)  # 8 → 16 channels: body.3 refit to read 8
    assert refit.body[3].conv.in_channels == 8 and refit.neurotomy_meta.recipe[-1]["adapted"] == "least_squares"


def test_removing_a_block_and_its_successors_block_refits_the_one_after(tmp_path):
    """body.1's successor (body.2.conv) goes with body.2's wrapper: only body.3.conv is refit, to read body.0's 8."""
    torch.manual_seed(0)
    model = Written().eval()
    model.neurotomy_meta = ModelMeta("written", {"in_channels": 1, "input_size": 16})
    slim = remove_blocks(model, ["body.1", "body.2"], load_dataset("fashion-mnist", input_size=16), max_images=128)
    assert type(slim.body[1]).__name__ == type(slim.body[2]).__name__ == "Identity"
    assert slim.body[3].conv.in_channels == 8 and slim(torch.zeros(2, 1, 16, 16)).shape == (2, 10)
