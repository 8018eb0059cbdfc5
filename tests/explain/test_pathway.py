"""Pathway gradient (Khakzar et al., CVPR 2021): masks, exact kept fraction, the p = 0 identity, hook hygiene."""

import pytest
import torch

from neurotomy.explain import ExplainError, attribute
from neurotomy.explain.pathway import neuron_relevance, pathway_channel_scores, pathway_masks, relu_layers


@pytest.mark.parametrize("fraction", [0.0, 0.5, 0.85, 0.99])
def test_mask_keeps_exactly_the_requested_fraction(resnet20, fmnist_batch, fraction):
    images, targets = fmnist_batch
    masks = pathway_masks(resnet20, images, targets, prune_fraction=fraction)
    units = sum(m[0].numel() for m in masks)
    for i in range(len(images)):
        kept = sum(int(m[i].sum()) for m in masks)
        assert kept == round((1 - fraction) * units)
    # ResNet-20: 1 stem ReLU + 2 per block × 9 blocks = 19 ReLU calls, each a layer of units
    assert len(masks) == 19 == len(relu_layers(resnet20))


def test_kept_units_are_the_most_relevant(resnet20, fmnist_batch):
    images, targets = fmnist_batch[0][:2], fmnist_batch[1][:2]
    relevance = torch.cat([r.flatten(1) for r in neuron_relevance(resnet20, images, targets)], 1)
    mask = torch.cat([m.flatten(1) for m in pathway_masks(resnet20, images, targets, 0.9)], 1).bool()
    for i in range(2):
        assert relevance[i][mask[i]].min() >= relevance[i][~mask[i]].max()


def test_relevance_is_activation_times_gradient(resnet20, fmnist_batch):
    images, targets = fmnist_batch[0][:2], fmnist_batch[1][:2]
    seen = []
    hook = resnet20.relu.register_forward_hook(lambda m, i, o: seen.append(o))
    logits = resnet20(images)
    hook.remove()
    grad, = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), seen[0])
    torch.testing.assert_close(neuron_relevance(resnet20, images, targets)[0], (seen[0] * grad).abs().detach())


def test_zero_fraction_equals_plain_gradient_and_hooks_are_removed(resnet20, fmnist_batch):
    images, targets = fmnist_batch
    with torch.no_grad():
        before = resnet20(images)
    plain = attribute(resnet20, images, targets, method="gradient")
    torch.testing.assert_close(attribute(resnet20, images, targets, method="pathway", prune_fraction=0.0), plain)
    pruned = attribute(resnet20, images, targets, method="pathway")  # default p = 0.85
    assert not torch.allclose(pruned, plain)
    assert all(not m._forward_hooks for m in resnet20.modules())
    with torch.no_grad():
        torch.testing.assert_close(resnet20(images), before)


def test_masked_gradient_equals_gradient_of_masked_network(resnet20, fmnist_batch):
    """Independent check: zero the same units by hand with plain hooks and differentiate."""
    images, targets = fmnist_batch[0][:2], fmnist_batch[1][:2]
    masks = pathway_masks(resnet20, images, targets, 0.85)
    calls = iter(masks)
    handles = [m.register_forward_hook(lambda mod, i, o: o * next(calls))
               for m in resnet20.modules() if isinstance(m, torch.nn.ReLU)]
    x = images.clone().requires_grad_(True)
    resnet20(x).gather(1, targets[:, None]).sum().backward()
    for h in handles:
        h.remove()
    torch.testing.assert_close(attribute(resnet20, images, targets, method="pathway", prune_fraction=0.85),
                               x.grad[:, 0])


def test_integrated_and_channel_variants(resnet20, fmnist_batch):
    images, targets = fmnist_batch[0][:2], fmnist_batch[1][:2]
    integrated = attribute(resnet20, images, targets, method="pathway", integrated=True)
    channel = attribute(resnet20, images, targets, method="pathway", granularity="channel")
    assert integrated.shape == channel.shape == (2, 28, 28)
    masks = pathway_masks(resnet20, images, targets, 0.5, granularity="channel")
    assert all(m.dim() == 2 for m in masks)  # N × channels
    channels = sum(m.shape[1] for m in masks)
    assert int(sum(m[0].sum() for m in masks)) == round(0.5 * channels)


def test_channel_scores_are_unit_scores_per_input(resnet20, fmnist_batch):
    images, targets = fmnist_batch
    scores = pathway_channel_scores(resnet20, images, targets)
    assert scores.axis == "input" and scores["conv1"].shape == (8, 16)
    assert set(scores) >= {"conv1", "layer3.2.conv2", "layer2.0.shortcut.0"}
    # per-input: image 0's scores do not depend on the other images in the batch
    alone = pathway_channel_scores(resnet20, images[:1], targets[:1])
    torch.testing.assert_close(alone["layer2.1.conv1"][0], scores["layer2.1.conv1"][0], atol=1e-5, rtol=1e-5)


def test_bad_fraction_is_a_clear_error(resnet20, fmnist_batch):
    images, targets = fmnist_batch
    with pytest.raises(ExplainError, match="prune_fraction"):
        attribute(resnet20, images, targets, method="pathway", prune_fraction=1.0)
