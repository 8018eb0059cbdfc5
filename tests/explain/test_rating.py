"""Rating and comparing explanations: the default methods are those that can explain the model."""

import pytest
import torch
from torch import nn

from neurotomy.errors import NeurotomyWarning
from neurotomy.explain import applicable_methods
from neurotomy.explain.common import ExplainError
from neurotomy.explain.rating import compare_reasons, rate_explanations


class FunctionalRelu(nn.Module):
    """Activations called as functions: nothing for the pathway method to mask."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def module_relu() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3))


def test_applicable_methods_leave_out_pathway_only_for_a_model_without_activation_modules():
    functional = applicable_methods(FunctionalRelu())
    assert "pathway" not in functional and {"gradient", "gradcam"} <= set(functional)
    assert "pathway" in applicable_methods(module_relu())


def test_compare_reasons_defaults_skip_pathway_with_a_warning():
    model, x = FunctionalRelu().eval(), torch.randn(3, 1, 6, 6)
    with pytest.warns(NeurotomyWarning, match="pathway explanation is skipped: the model has no activation modules"):
        record = compare_reasons(model, model, x, quiet=True)
    assert list(record["methods"]) == ["gradient", "gradcam"]


def test_rate_explanations_defaults_skip_pathway():
    with pytest.warns(NeurotomyWarning, match="pathway explanation is skipped"):
        record = rate_explanations(FunctionalRelu().eval(), torch.randn(2, 1, 6, 6), metrics=["lerf"], quiet=True)
    assert "pathway" not in record["scores"] and "gradient" in record["scores"]


def test_an_explicit_inapplicable_method_fails_before_any_work_naming_the_fix():
    model, x = FunctionalRelu().eval(), torch.randn(2, 1, 6, 6)
    with pytest.raises(ExplainError, match=r"pathway method cannot explain this model: .*F\.relu.*leave it out, "
                                           r"e\.g\. methods=\['gradient'\]"):
        compare_reasons(model, model, x, methods=["gradient", "pathway"], quiet=True)
    with pytest.raises(ExplainError, match="rollout method cannot explain this model: the model has no attention"):
        rate_explanations(module_relu().eval(), x, methods=["rollout"], metrics=["lerf"], quiet=True)
