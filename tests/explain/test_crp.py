"""CRP, channel-conditional relevance (neurotomy.explain.crp): completeness across channels, the
unmasked pass equals plain gradient × input, and channel relevance against a hook-free computation."""

import pytest
import torch
from captum.attr import InputXGradient

from neurotomy.explain import METHODS, ExplainError, attribute
from neurotomy.explain.crp import channel_relevance, conditional_relevance
from neurotomy.loading import load_model
from neurotomy.models import build_model
from tests.explain.cases import lenet_case


@pytest.fixture(scope="module")
def lenet64():
    return load_model("zoo:lenet5-digits").double().eval()


@pytest.fixture(scope="module")
def digits_batch(digits_test):
    return digits_test.images[:6].double(), digits_test.targets[:6]


def plain(model, x, y):
    return InputXGradient(model).attribute(x.clone().requires_grad_(True), target=y)


def test_conditional_maps_of_all_channels_sum_to_the_plain_map(lenet64, digits_batch):
    x, y = digits_batch
    for layer, width in (("features.3", 16), ("features.1", 6), ("classifier.3", 84)):
        maps = conditional_relevance(lenet64, x, y, layer, list(range(width)))
        assert maps.shape == (6, width, 1, 8, 8)
        torch.testing.assert_close(maps.sum(1), plain(lenet64, x, y), rtol=0, atol=1e-12)
    # a model with a residual stream: the block output's 64 channels
    resnet = build_model("resnet20", 1, 10, 8).double().eval()
    xr = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    maps = conditional_relevance(resnet, xr, torch.tensor([3, 4]), "layer3.2", list(range(64)))
    torch.testing.assert_close(maps.sum(1), plain(resnet, xr, torch.tensor([3, 4])), rtol=0, atol=1e-12)


def test_one_channel_differs_from_another_and_from_the_whole(lenet64, digits_batch):
    x, y = digits_batch
    maps = conditional_relevance(lenet64, x, y, "features.3", [0, 5])
    assert not torch.allclose(maps[:, 0], maps[:, 1])
    assert not torch.allclose(maps[:, 0], plain(lenet64, x, y))


def test_channel_relevance_matches_a_hook_free_computation(lenet64, digits_batch):
    x, y = digits_batch
    a = lenet64.features[:4](x).detach().requires_grad_(True)  # the model split at features.3's output
    logits = lenet64.classifier(lenet64.features[4:](a))
    (grad,) = torch.autograd.grad(logits.gather(1, y[:, None]).sum(), a)
    torch.testing.assert_close(channel_relevance(lenet64, x, "features.3", y), (a * grad).sum((2, 3)).detach())
    predicted = logits.argmax(1)
    torch.testing.assert_close(channel_relevance(lenet64, x, "features.3"),
                               channel_relevance(lenet64, x, "features.3", predicted))
    assert all(p.grad is None for p in lenet64.parameters())


def test_attribute_crp(digits_batch):
    model = load_model("zoo:lenet5-digits").eval()
    x, y = digits_batch[0].float(), digits_batch[1]
    assert METHODS["crp"].family == "concept" and set(METHODS["crp"].options()) == {"layer", "channel"}
    maps = attribute(model, x, y, method="crp", layer="features.3", channel=2)
    torch.testing.assert_close(maps, conditional_relevance(model, x, y, "features.3", [2])[:, 0, 0])
    # the default channel is each image's most relevant one
    best = channel_relevance(model, x, "features.3", y).argmax(1)
    default = attribute(model, x, y, method="crp", layer="features.3")
    for i in range(len(x)):
        torch.testing.assert_close(default[i], conditional_relevance(model, x[i:i + 1], y[i:i + 1], "features.3",
                                                                     [int(best[i])])[0, 0, 0])
    with pytest.raises(ExplainError, match="channel 16 does not exist: layer 'features.3' has 16 channels"):
        attribute(model, x, y, method="crp", layer="features.3", channel=16)
    with pytest.raises(ExplainError, match="has no option 'prune_fraction'"):
        attribute(model, x, y, method="crp", prune_fraction=0.5)


def check_crp(case, layer="features.3", split=4):
    """``attribute(method="crp")`` against the model split by hand at ``layer`` (``features[:split]``):
    the gradient at the split masked to one channel, then carried down to the input by autograd —
    for a given channel and for the default, each image's most relevant channel."""
    model, x, y = case.model, case.images, case.targets
    leaf = x.clone().requires_grad_(True)
    a = model.features[:split](leaf)
    logits = model.classifier(model.features[split:](a))
    (g,) = torch.autograd.grad(logits.gather(1, y[:, None]).sum(), a, retain_graph=True)
    best = (a * g).sum((2, 3)).argmax(1)
    for channel in (2, None):
        chosen = best if channel is None else torch.full_like(best, channel)
        mask = torch.nn.functional.one_hot(chosen, a.shape[1]).to(g.dtype)[:, :, None, None]
        (down,) = torch.autograd.grad(a, leaf, grad_outputs=g * mask, retain_graph=True)
        options = {"layer": layer} if channel is None else {"layer": layer, "channel": channel}
        torch.testing.assert_close(attribute(model, x, y, method="crp", **options), (x * down)[:, 0],
                                   rtol=1e-4, atol=1e-6)


def test_crp_against_a_hand_split_model():
    check_crp(lenet_case())
