"""CRP on channels-last maps (N × H × W × C: timm's Swin, ConvNeXt blocks): channel c is the LAST axis, in the
channel relevance and in the masked backward pass alike. Cross-checked against the model split by hand (no
hooks) and against a channels-first twin (the same map handed on as N × C × H × W); the reading from before
issue #21 (axis 1 as the channels) is shown to fail the same checks."""

import pytest
import torch

import neurotomy.explain.crp as crp_module
import neurotomy.scores.subspace as subspace_module
from neurotomy.explain import ExplainError, attribute
from neurotomy.explain.common import pixel_map
from neurotomy.explain.crp import channel_relevance, conditional_relevance
from tests.channels_last_cases import TinyChannelsLast, channels_first_twin, images, tiny_timm_swin

REAL_LAYOUT_OF = subspace_module.layout_of


def axis_one_layout(output, last_axis=None):
    """The reading before issue #21: every 4-D output channels-first, whatever module produced it."""
    return REAL_LAYOUT_OF(output)


@pytest.fixture
def old_reading(monkeypatch):
    monkeypatch.setattr(crp_module, "layout_of", axis_one_layout)
    monkeypatch.setattr(subspace_module, "layout_of", axis_one_layout)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return TinyChannelsLast().double().eval(), images(3, (3, 12, 20)), torch.tensor([0, 4, 9])


@pytest.fixture(scope="module")
def swin():
    return tiny_timm_swin().double(), images(2, (3, 64, 64)), torch.tensor([1, 3])


def split_by_hand(model, x, t):
    """The map a at ``act`` (N × 6 × 10 × 8), its gradient, x as a leaf, and the graph kept for a second pass."""
    x = x.clone().requires_grad_(True)
    a = model.features(x)
    (grad,) = torch.autograd.grad(model.rest(a).gather(1, t[:, None]).sum(), a, retain_graph=True)
    return x, a, grad


def test_channel_relevance_of_a_channels_last_map_is_over_its_last_axis(tiny):
    model, x, t = tiny
    _, a, grad = split_by_hand(model, x, t)
    ours = channel_relevance(model, x, "act", t)
    assert ours.shape == (3, 8)  # the Linear's 8 features, not the map's height 6
    torch.testing.assert_close(ours, (a * grad).sum((1, 2)).detach(), rtol=0, atol=1e-12)
    # completeness: the channels share the layer's gradient × input exactly
    torch.testing.assert_close(ours.sum(1), (a * grad).sum((1, 2, 3)).detach(), rtol=0, atol=1e-12)
    twin, layer = channels_first_twin(model, "act")
    torch.testing.assert_close(channel_relevance(twin, x, layer, t), ours, rtol=0, atol=1e-12)
    assert not (ours[:, 0] == ours[:, 1]).all()


def test_conditional_maps_mask_the_last_axis_and_sum_to_the_plain_map(tiny):
    model, x, t = tiny
    maps = conditional_relevance(model, x, t, "act", list(range(8)))
    assert maps.shape == (3, 8, 3, 12, 20)
    leaf, a, grad = split_by_hand(model, x, t)
    (plain,) = torch.autograd.grad(a, leaf, grad_outputs=grad, retain_graph=True)
    torch.testing.assert_close(maps.sum(1), (leaf * plain).detach(), rtol=0, atol=1e-12)
    for c in (2, 5):  # by hand: the gradient at the map kept on channel c of the last axis only
        mask = torch.zeros(8, dtype=grad.dtype)
        mask[c] = 1
        (masked,) = torch.autograd.grad(a, leaf, grad_outputs=grad * mask, retain_graph=True)
        torch.testing.assert_close(maps[:, c], (leaf * masked).detach(), rtol=0, atol=1e-12)
    twin, layer = channels_first_twin(model, "act")
    torch.testing.assert_close(conditional_relevance(twin, x, t, layer, list(range(8))), maps, rtol=0, atol=1e-12)
    with pytest.raises(ExplainError, match="channel 8 does not exist: layer 'act' has 8 channels"):
        conditional_relevance(model, x, t, "act", [8])


def test_the_axis_one_reading_fails_these_checks(tiny, old_reading):
    model, x, t = tiny
    _, a, grad = split_by_hand(model, x, t)
    assert channel_relevance(model, x, "act", t).shape == (3, 6)  # the map's height taken for channels
    twin, layer = channels_first_twin(model, "act")
    assert channel_relevance(twin, x, layer, t).shape == (3, 8)  # a channels-first map is unaffected
    with pytest.raises(ExplainError, match="layer 'act' has 6 channels"):
        conditional_relevance(model, x, t, "act", [7])
    assert not torch.allclose(conditional_relevance(model, x, t, "act", [2])[:, 0],
                              conditional_relevance(twin, x, t, layer, [2])[:, 0])


def test_swin_channel_relevance_and_crp_equal_the_channels_first_twin(swin):
    model, x, t = swin
    twin, layer = channels_first_twin(model, "layers.2")  # N × 4 × 4 × 128
    ours = channel_relevance(model, x, "layers.2", t)
    assert ours.shape == (2, 128)
    torch.testing.assert_close(ours, channel_relevance(twin, x, layer, t), rtol=1e-9, atol=1e-12)
    maps = attribute(model, x, t, method="crp", layer="layers.2", channel=5)
    assert maps.shape == (2, 64, 64) and float(maps.abs().max()) > 0
    torch.testing.assert_close(maps, attribute(twin, x, t, method="crp", layer=layer, channel=5),
                               rtol=1e-9, atol=1e-12)
    # the default: timm Swin's final (channels-last) norm, each image's most relevant of its 256 channels
    twin_norm, norm_layer = channels_first_twin(model, "norm")
    best = channel_relevance(twin_norm, x, norm_layer, t).argmax(1)
    expected = torch.stack([conditional_relevance(twin_norm, x[i:i + 1], t[i:i + 1], norm_layer, [int(best[i])])[0, 0]
                            for i in range(2)])
    torch.testing.assert_close(attribute(model, x, t, method="crp"), pixel_map(expected), rtol=1e-9, atol=1e-12)


def test_swin_conditional_maps_of_all_channels_sum_to_the_plain_map(swin):
    model, x, t = swin
    maps = conditional_relevance(model, x, t, "layers.0", list(range(32)))  # N × 16 × 16 × 32
    leaf = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(leaf).gather(1, t[:, None]).sum(), leaf)
    torch.testing.assert_close(maps.sum(1), leaf.detach() * grad, rtol=0, atol=1e-10)


def test_swin_axis_one_reading_sees_four_channels(swin, old_reading):
    model, x, t = swin
    assert channel_relevance(model, x, "layers.2", t).shape == (2, 4)  # the map's height: the bug of issue #21
