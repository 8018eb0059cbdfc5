"""Rating and comparing explanations: the default methods are those that can explain the model."""

import pytest
import torch
from torch import nn

from neurotomy.checkpoint import ModelMeta
from neurotomy.errors import NeurotomyWarning
from neurotomy.explain import applicable_methods
from neurotomy.explain.common import ExplainError
from neurotomy.explain.rating import compare_reasons, rate_explanations


class Linear(nn.Module):
    """No activation at all, as module or as function call: nothing for the pathway method to mask.
    It records its input shape, so a trial pass can tell before any work."""

    def __init__(self, functional_relu: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)
        self.functional_relu = functional_relu
        self.neurotomy_meta = ModelMeta("user", {"in_channels": 1, "input_size": 6, "num_classes": 3})

    def forward(self, x):
        x = self.conv(x)
        return self.fc((torch.relu(x) if self.functional_relu else x).mean((2, 3)))


def module_relu() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3))


def test_applicable_methods_leave_out_pathway_only_for_a_model_without_activations():
    linear = applicable_methods(Linear())
    assert "pathway" not in linear and {"gradient", "gradcam"} <= set(linear)
    assert "pathway" in applicable_methods(module_relu()) and "pathway" in applicable_methods(Linear(True))


def test_compare_reasons_defaults_skip_pathway_with_a_warning():
    model, x = Linear().eval(), torch.randn(3, 1, 6, 6)
    with pytest.warns(NeurotomyWarning, match="pathway explanation is skipped: the model has no activation module and "
                                              "calls no activation function"):
        record = compare_reasons(model, model, x, quiet=True)
    assert list(record["methods"]) == ["gradient", "gradcam"]


def test_rate_explanations_defaults_skip_pathway():
    with pytest.warns(NeurotomyWarning, match="pathway explanation is skipped"):
        record = rate_explanations(Linear().eval(), torch.randn(2, 1, 6, 6), metrics=["lerf"], quiet=True)
    assert "pathway" not in record["scores"] and "gradient" in record["scores"]


def test_an_explicit_inapplicable_method_fails_before_any_work_naming_the_fix():
    model, x = Linear().eval(), torch.randn(2, 1, 6, 6)
    with pytest.raises(ExplainError, match=r"pathway method cannot explain this model: .*no activation function.*leave it out, "
                                           r"e\.g\. methods=\['gradient'\]"):
        compare_reasons(model, model, x, methods=["gradient", "pathway"], quiet=True)
    with pytest.raises(ExplainError, match="rollout method cannot explain this model: the model has no attention"):
        rate_explanations(module_relu().eval(), x, methods=["rollout"], metrics=["lerf"], quiet=True)
