"""pathway masks any element-wise activation, module or function call, and says what it found when there is none
(issue 20)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from neurotomy.checkpoint import ModelMeta
from neurotomy.explain import attribute
from neurotomy.explain.common import ExplainError
from neurotomy.explain.pathway import (activation_calls, activation_layers, is_activation, missing_activations,
                                       pathway_masks)


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
    with pytest.raises(ExplainError, match=r"no activation module .* its layers: Conv2d ×1, Linear ×1"):
        activation_layers(FunctionalRelu())


class CalledActivations(nn.Module):
    """The same network as :func:`net`, its activations called as functions in three spellings."""

    def __init__(self, activation: str):
        super().__init__()
        self.c1, self.c2, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Linear(4, 3)
        self.activation = activation
        self.act = nn.ReLU() if activation == "mixed" else None

    def forward(self, x):
        if self.activation == "relu":
            x = self.c2(F.relu(self.c1(x), inplace=True)).relu()  # F.relu in place, then a tensor method
        elif self.activation == "mixed":  # a module, then a call (DenseNet's last ReLU)
            x = F.relu(self.c2(self.act(self.c1(x))))
        else:
            x = F.gelu(self.c2(F.gelu(self.c1(x))))
        return self.fc(x.mean((2, 3)))


@pytest.mark.parametrize("activation, module", [("relu", nn.ReLU()), ("gelu", nn.GELU()), ("mixed", nn.ReLU())])
def test_activations_called_as_functions_are_the_same_units_as_modules(activation, module):
    torch.manual_seed(0)
    called = CalledActivations(activation).eval()
    modules = net(module).eval()
    modules[0].load_state_dict(called.c1.state_dict())
    modules[2].load_state_dict(called.c2.state_dict())
    modules[6].load_state_dict(called.fc.state_dict())
    x, y = torch.randn(3, 1, 6, 6), torch.tensor([0, 1, 2])
    assert activation_calls(called, x) == activation_calls(modules, x) == 2
    for a, b in zip(pathway_masks(called, x, y, prune_fraction=0.7), pathway_masks(modules, x, y, prune_fraction=0.7)):
        assert torch.equal(a, b)
    pathway = attribute(called, x, y, method="pathway")
    assert torch.allclose(pathway, attribute(modules, x, y, method="pathway"), atol=1e-6)
    assert not torch.allclose(pathway, attribute(called, x, y, method="gradient"), atol=1e-6)  # the masks act


class NoActivation(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3), nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


def test_a_model_without_any_activation_is_named_before_and_during_the_explanation():
    model = NoActivation().eval()
    with pytest.raises(ExplainError, match=r"no activation module \(its layers: Conv2d ×1, Linear ×1\) and no "
                                           r"activation function"):
        attribute(model, torch.randn(2, 1, 6, 6), method="pathway")
    assert missing_activations(model) is None  # no recorded input shape: nothing to try the model on
    model.neurotomy_meta = ModelMeta("user", {"in_channels": 1, "input_size": 6, "num_classes": 3})
    assert "calls no activation function" in missing_activations(model)
    functional = FunctionalRelu()
    functional.neurotomy_meta = ModelMeta("user", {"in_channels": 1, "input_size": 6, "num_classes": 3})
    assert missing_activations(functional) is None and functional.training  # the trial pass left it training
