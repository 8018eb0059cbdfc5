import pytest
import torch

from neurotomy.errors import ModelError
from neurotomy.models import build_model
from neurotomy.models.summary import layer_table


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
