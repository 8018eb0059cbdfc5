"""One call shape for every method: targets, batches, options and errors."""

import pytest
import torch
from torch import nn

from neurotomy.errors import ModelError, NeurotomyError
from neurotomy.explain import METHODS, ExplainError, attribute, method_names, normalize


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_gives_one_map_per_image(method, resnet20, fmnist_batch):
    if METHODS[method].family == "attention":  # CNNs have no attention; tests/explain/test_rollout.py
        with pytest.raises(NeurotomyError, match="attention"):
            attribute(resnet20, fmnist_batch[0][:1], method=method)
        return
    images, targets = fmnist_batch[0][:3], fmnist_batch[1][:3]
    maps = attribute(resnet20, images, targets, method=method)
    assert maps.shape == (3, 28, 28) and torch.isfinite(maps).all()
    # batched = image by image: a batch never explains only its first image
    first = attribute(resnet20, images[1:2], targets[1:2], method=method)
    # noise draws depend on the batch (SmoothGrad's batch is checked in expectation in test_gradients.py)
    if method not in ("random", "smoothgrad", "smoothgrad_sq"):
        torch.testing.assert_close(maps[1:2], first, atol=1e-4, rtol=1e-3)


class Float64Logits(nn.Module):
    """A model that returns its logits in float64 (``.double()`` at the end of forward)."""

    def __init__(self, double: bool = True):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.act, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Linear(4, 3)
        self.double_logits = double

    def forward(self, x):
        logits = self.fc(self.act(self.conv(x)).mean((2, 3)))
        return logits.double() if self.double_logits else logits


@pytest.mark.parametrize("method", [m for m in sorted(METHODS) if METHODS[m].family != "attention"])
def test_float64_logits_give_the_float32_maps(method):
    images = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    opts = {"seed": 0} if "seed" in METHODS[method].options() else {}
    maps = attribute(Float64Logits().eval(), images, [0, 1], method=method, **opts)
    torch.testing.assert_close(maps, attribute(Float64Logits(double=False).eval(), images, [0, 1], method=method,
                                               **opts), atol=1e-4, rtol=1e-3)


def test_none_target_means_each_predicted_class(resnet20, fmnist_batch):
    images, _ = fmnist_batch
    predicted = resnet20(images).argmax(1)
    assert len(set(predicted.tolist())) > 1
    torch.testing.assert_close(attribute(resnet20, images, method="gradcam"),
                               attribute(resnet20, images, predicted, method="gradcam"))
    # an int explains that class for every image
    torch.testing.assert_close(attribute(resnet20, images, 2, method="gradient"),
                               attribute(resnet20, images, [2] * 8, method="gradient"))


def test_model_state_is_restored(resnet20, fmnist_batch):
    resnet20.train()
    try:
        attribute(resnet20, fmnist_batch[0], method="pathway")
        assert resnet20.training
    finally:
        resnet20.eval()
    assert all(p.grad is None for p in resnet20.parameters())


def test_clear_errors(resnet20, fmnist_batch):
    images, targets = fmnist_batch
    with pytest.raises(ExplainError, match="3 targets for a batch of 8"):
        attribute(resnet20, images, [0, 1, 2], method="gradient")
    with pytest.raises(ExplainError, match="N×C×H×W"):
        attribute(resnet20, images[0], method="gradient")
    with pytest.raises(ExplainError, match="do not fit the model"):
        attribute(resnet20, torch.randn(2, 3, 28, 28), method="gradient")
    with pytest.raises(ModelError, match="no layer 'layer9'"):
        attribute(resnet20, images, method="gradcam", layer="layer9")
    with pytest.raises(ExplainError, match="unknown method 'gradcamm'"):
        attribute(resnet20, images, method="gradcamm")
    with pytest.raises(ExplainError, match="has no option 'layer'"):
        attribute(resnet20, images, method="gradient", layer="layer3")
    with pytest.raises(ExplainError, match="class 12 does not exist"):
        attribute(resnet20, images, 12, method="gradient")
    assert issubclass(ExplainError, NeurotomyError)


def test_a_target_that_is_not_an_integer_class_index_says_so(resnet20, fmnist_batch):
    images = fmnist_batch[0][:2]
    for target in (1.5, [0.5, 1], "3"):
        with pytest.raises(ExplainError, match="target must be an integer class index"):
            attribute(resnet20, images, target, method="gradient")
    # whole-valued float labels and numpy / 0-d integers are class indices
    torch.testing.assert_close(attribute(resnet20, images, torch.tensor([2.0, 2.0]), method="gradient"),
                               attribute(resnet20, images, torch.tensor(2), method="gradient"))


@pytest.mark.parametrize("method, option", [("smoothgrad", {"samples": 0}), ("smoothgrad_sq", {"samples": 2.5}),
                                            ("smoothgrad", {"noise": -0.1}), ("integrated_gradients", {"steps": 0}),
                                            ("ablationcam", {"batch_size": 0})])
def test_method_options_are_checked_in_one_line(method, option, resnet20, fmnist_batch):
    name = next(iter(option))
    with pytest.raises(NeurotomyError, match=f"^{name}: expected a"):
        attribute(resnet20, fmnist_batch[0][:1], method=method, **option)


def test_families_and_normalize():
    assert method_names("cam") == ["gradcam", "gradcam_pp", "hirescam", "layercam", "scorecam", "ablationcam",
                                   "eigencam"]
    assert {"gradient", "input_x_gradient", "integrated_gradients", "smoothgrad", "smoothgrad_sq"} == \
        set(method_names("gradient"))
    signed = torch.tensor([[[-2.0, 1.0]]])
    assert normalize(signed, "maxabs").tolist() == [[[-1.0, 0.5]]]
