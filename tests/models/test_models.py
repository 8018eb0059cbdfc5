import pytest
import torch
from torch import nn

from neurotomy.errors import ModelError
from neurotomy.models import build_model
from neurotomy.models.summary import flop_counter_macs, layer_table


@pytest.mark.parametrize("arch", ["lenet5", "vgg11_bn", "resnet20", "resnet56", "mobilenetv2",
                                  "torchvision:resnet18"])
@pytest.mark.parametrize("channels,size,classes", [(1, 28, 10), (3, 32, 7)])
def test_forward_shape(arch, channels, size, classes):
    model = build_model(arch, in_channels=channels, num_classes=classes, input_size=size).eval()
    with torch.no_grad():
        assert model(torch.randn(2, channels, size, size)).shape == (2, classes)


def test_lenet_on_digits_size():
    assert build_model("lenet5", 1, 10, 8)(torch.zeros(3, 1, 8, 8)).shape == (3, 10)


def test_unknown_architecture():
    with pytest.raises(ModelError, match="unknown model"):
        build_model("resnet21")
    with pytest.raises(ModelError, match="torchvision has no model"):
        build_model("torchvision:nonet")


def test_layer_table_counts_resnet20():
    table = layer_table(build_model("resnet20", 3, 10, 32), (3, 32, 32))
    # He et al.'s ResNet-20 with 1×1 projection shortcuts: ≈0.27 M params, ≈41 M MACs at 32×32
    assert 0.26e6 < table.total_params < 0.28e6
    assert 40e6 < table.total_macs < 42e6
    conv1 = next(r for r in table.rows if r["name"] == "conv1")
    assert conv1["macs"] == 16 * 32 * 32 * 3 * 9 and conv1["output_shape"] == [16, 32, 32]


class _Block(nn.Module):
    """Calls its layers one by one: the ModuleList holding them is never called itself."""

    def __init__(self, width):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(width, width), nn.GELU(), nn.Linear(width, width)])

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class _Stack(nn.Module):
    """Blocks in a ModuleList that is iterated, never called, and a matmul in the model's own forward."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([_Block(4), _Block(4)])
        self.mix = nn.Parameter(torch.randn(4, 6))

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x @ self.mix


def test_layer_table_counts_layers_under_uncalled_module_lists_once():
    # 3 tokens of width 4: each Linear 3·4·4 = 48 MACs, the model's own matmul 3·4·6 = 72, by hand
    table = layer_table(_Stack().eval(), (3, 4))
    macs = {r["name"]: r["macs"] for r in table.rows}
    linears = [f"blocks.{b}.layers.{i}" for b in (0, 1) for i in (0, 2)]
    assert {n: macs[n] for n in linears} == dict.fromkeys(linears, 48)
    assert macs[""] == 72 and macs["blocks.0.layers.1"] == 0
    assert "blocks.0" not in macs and "blocks" not in macs  # no MACs or parameters of their own
    assert table.total_macs == 4 * 48 + 72 == flop_counter_macs(_Stack(), (3, 4))


def _timm_swin():
    timm = pytest.importorskip("timm")
    return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=64, window_size=2,
                             num_classes=4, depths=(2, 2, 2, 2), embed_dim=32, num_heads=(2, 2, 4, 4))


@pytest.mark.usefixtures("one_thread")  # MaxViT's many small ops: 0.3 s on one thread, ~6 s on two busy ones
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name,make,shape", [
    ("resnet20", lambda: build_model("resnet20", 3, 10, 32), (3, 32, 32)),
    ("vit_tiny", lambda: build_model("vit_tiny", 1, 10, 8, patch=2, dim=16, depth=2, num_heads=2, mlp_hidden=24),
     (1, 8, 8)),
    ("timm swin", _timm_swin, (3, 64, 64)),
    # torchvision's MaxViT iterates ModuleLists (blocks, blocks.N.layers) it never calls; 224 px is its
    # smallest input (a 7×7 partition of the 1/32 map)
    ("maxvit_t", lambda: build_model("torchvision:maxvit_t", 3, 10, 224), (3, 224, 224)),
])
def test_layer_table_total_is_flop_counters(name, make, shape):
    torch.manual_seed(0)
    model = make().eval()
    assert layer_table(model, shape).total_macs == flop_counter_macs(model, shape) > 0
