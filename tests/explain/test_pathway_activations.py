"""pathway masks any element-wise activation module, and says what it found when there is none (issue 20)."""

import pytest
import torch
from torch import nn

from neurotomy.explain import attribute
from neurotomy.explain.common import ExplainError
from neurotomy.explain.pathway import activation_layers, is_activation, pathway_masks


def net(activation: nn.Module) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), activation, nn.Conv2d(4, 4, 3, padding=1), activation,
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


@pytest.mark.parametrize("activation", [nn.GELU(), nn.SiLU(), nn.Hardswish(), nn.LeakyReLU(0.1), nn.Mish(),
                                        nn.ELU(), nn.ReLU6()])
def test_pathway_masks_any_elementwise_activation(activation):
    model = net(activation).eval()
    x = torch.randn(2, 1, 6, 6)
    masks = pathway_masks(model, x, torch.tensor([0, 1]), prune_fraction=0.5)
    assert len(masks) == 2  # one module called twice: two layers of units
    maps = attribute(model, x, method="pathway")
    assert maps.shape == (2, 6, 6) and torch.isfinite(maps).all()


def test_gates_are_not_units():
    assert not is_activation(nn.Sigmoid()) and not is_activation(nn.Hardsigmoid()) and not is_activation(nn.Softmax(1))
    assert is_activation(nn.GELU()) and is_activation(nn.PReLU())


def test_timm_activation_modules_count():
    layers = pytest.importorskip("timm.layers")
    assert is_activation(layers.activations.GELUTanh()) and not is_activation(layers.activations.Sigmoid())


class FunctionalRelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def test_no_activation_module_names_what_the_model_has():
    with pytest.raises(ExplainError, match=r"has none — its layers: Conv2d ×1, Linear ×1; activations called as "
                                           r"functions"):
        activation_layers(FunctionalRelu())
