"""Pathway gradient (Khakzar et al., CVPR 2021) against a network masked by hand.

The expected values are computed with plain forward hooks and autograd, independently of
:mod:`neurotomy.explain.pathway`: each ReLU call's relevance |a · ∂y_c/∂a| (or its integrated or
per-channel form), the top ``1 − p`` units of the whole network kept, the rest zeroed, and the input
gradient of y_c through that masked network. ``check_pathway*`` are plain functions: the tests run
them on the shipped ResNet-20 and on the small LeNet-5 case, the mutation check (:mod:`tests.mutants`)
on the LeNet-5 case against broken versions of the method.
"""

import numpy as np
import pytest
import torch
from torch import nn

from neurotomy.explain import ExplainError, attribute
from neurotomy.explain.pathway import (
    neuron_relevance,
    pathway_channel_scores,
    pathway_masks,
    relu_layers,
)
from tests.crosscheck import expected_value
from tests.explain.cases import lenet_case, resnet20_case


def _relus(model):
    return [m for m in model.modules() if isinstance(m, nn.ReLU)]


def _hooked(model, transform):
    """Forward hooks on every ReLU; ``transform(call, output)`` sees the outputs in call order."""
    calls = []

    def hook(module, inputs, output):
        calls.append(None)
        return transform(len(calls) - 1, output)
    return [m.register_forward_hook(hook) for m in _relus(model)]


def _logit_sum(case, logits):
    return logits.gather(1, case.targets[:, None]).sum()


def relu_outputs_and_gradients(case, scale=None):
    """Per ReLU call: its output (times α on call ``scale[0]`` when ``scale = (call, α)``) and ∂y_c/∂ it."""
    seen = []

    def keep(call, output):
        if scale is not None and call == scale[0]:
            output = output * scale[1]
        seen.append(output)
        return output
    handles = _hooked(case.model, keep)
    try:
        logits = case.model(case.images)
    finally:
        for h in handles:
            h.remove()
    grads = torch.autograd.grad(_logit_sum(case, logits), seen, allow_unused=True)
    return [o.detach() for o in seen], [torch.zeros_like(o) if g is None else g for o, g in zip(seen, grads)]


@expected_value
def relevance_by_hand(case):
    outputs, grads = relu_outputs_and_gradients(case)
    return [(a * g).abs() for a, g in zip(outputs, grads)]


@expected_value
def integrated_relevance_by_hand(case, alphas=11):
    """|a · mean over α ∈ {0, 0.1, …, 1} of ∂y_c/∂(α a)|, one layer and one α at a time: the
    method's Riemann sum over the 11-point grid."""
    outputs, _ = relu_outputs_and_gradients(case)
    relevance = []
    for call, a in enumerate(outputs):
        total = torch.zeros_like(a)
        for alpha in torch.linspace(0, 1, alphas).tolist():
            total += relu_outputs_and_gradients(case, scale=(call, alpha))[1][call]
        relevance.append((a * total / alphas).abs())
    return relevance


def masked_gradient_by_hand(case, relevance, prune_fraction, per_channel=False):
    """Keep each image's top ``1 − p`` units network-wide (whole channels with ``per_channel``), zero
    the rest with hooks, and differentiate y_c w.r.t. the input."""
    n = len(case.images)
    units = [r.flatten(2).sum(2) if per_channel and r.dim() > 2 else r for r in relevance]
    flat = torch.cat([u.reshape(n, -1) for u in units], 1)
    keep = round((1 - prune_fraction) * flat.shape[1])
    kept = torch.zeros_like(flat, dtype=torch.bool)
    for i in range(n):  # by relevance, ties (dead units: relevance 0) by index, as documented
        order = np.lexsort((np.arange(flat.shape[1]), -flat[i].double().numpy()))
        kept[i, torch.from_numpy(order[:keep])] = True
    masks, start = [], 0
    for u in units:
        masks.append(kept[:, start:start + u[0].numel()].view_as(u).to(u.dtype))
        start += u[0].numel()

    def apply(call, output):
        mask = masks[call]
        return output * mask.view(*mask.shape, *([1] * (output.dim() - mask.dim())))
    x = case.images.clone().requires_grad_(True)
    handles = _hooked(case.model, apply)
    try:
        grad, = torch.autograd.grad(_logit_sum(case, case.model(x)), x)
    finally:
        for h in handles:
            h.remove()
    return grad[:, 0]


@expected_value
def plain_gradient(case):
    x = case.images.clone().requires_grad_(True)
    return torch.autograd.grad(_logit_sum(case, case.model(x)), x)[0][:, 0]


@expected_value
def neuron_pathway_by_hand(case, prune_fraction):
    return masked_gradient_by_hand(case, relevance_by_hand(case), prune_fraction)


def check_pathway(case):
    """NeuronMCT: relevance |a·∂y/∂a|; p = 0 is the plain gradient; p = 0.85 (the default) and 0.95
    are the input gradient of the network with all but each image's top 15 % / 5 % units zeroed.
    (On LeNet-5 fewer than 15 % of the units have any relevance, so at 0.85 the pathway keeps them
    all and equals the plain gradient; at 0.95 the masks matter.)"""
    m, x, t = case.model, case.images, case.targets
    for ours, hand in zip(neuron_relevance(m, x, t), relevance_by_hand(case)):
        torch.testing.assert_close(ours, hand)
    torch.testing.assert_close(attribute(m, x, t, method="pathway", prune_fraction=0.0), plain_gradient(case))
    torch.testing.assert_close(attribute(m, x, t, method="pathway"), neuron_pathway_by_hand(case, 0.85))
    expected = neuron_pathway_by_hand(case, 0.95)
    assert not torch.allclose(expected, plain_gradient(case), atol=1e-4)  # the masks matter
    torch.testing.assert_close(attribute(m, x, t, method="pathway", prune_fraction=0.95), expected)


@expected_value
def channel_pathway_by_hand(case):
    return masked_gradient_by_hand(case, relevance_by_hand(case), 0.5, per_channel=True)


def check_pathway_channels(case):
    """Channel granularity: relevance summed over positions, whole channels kept or zeroed."""
    ours = attribute(case.model, case.images, case.targets, method="pathway", granularity="channel", prune_fraction=0.5)
    torch.testing.assert_close(ours, channel_pathway_by_hand(case))


@expected_value
def integrated_pathway_by_hand(case):
    return masked_gradient_by_hand(case, integrated_relevance_by_hand(case), 0.95)


def check_pathway_integrated(case):
    ours = attribute(case.model, case.images, case.targets, method="pathway", integrated=True, prune_fraction=0.95)
    expected = integrated_pathway_by_hand(case)
    assert not torch.allclose(expected, neuron_pathway_by_hand(case, 0.95), atol=1e-4)  # a different pathway
    torch.testing.assert_close(ours, expected)


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


def test_ties_are_broken_by_index():
    """LeNet-5's max-pooling leaves most units with relevance 0; at p = 0.85 some of them must be kept,
    and which ones is the documented rule (lowest index first), not an accident of topk."""
    case = lenet_case()
    flat = torch.cat([r.flatten(1) for r in relevance_by_hand(case)], 1)
    keep = round(0.15 * flat.shape[1])
    assert ((flat > 0).sum(1) < keep).all()  # ties at the cut
    kept = torch.cat([m.flatten(1) for m in pathway_masks(case.model, case.images, case.targets, 0.85)], 1).bool()
    for i in range(len(flat)):
        zero_kept = torch.nonzero(kept[i] & (flat[i] == 0))[:, 0]
        zero_all = torch.nonzero(flat[i] == 0)[:, 0]
        assert torch.equal(zero_kept, zero_all[:len(zero_kept)]) and len(zero_kept) == keep - int((flat[i] > 0).sum())


def test_pathway_equals_the_network_masked_by_hand(resnet20, fmnist_batch):
    check_pathway(resnet20_case(resnet20, fmnist_batch, n=2))
    check_pathway(lenet_case())


def test_channel_variant_equals_whole_channels_masked_by_hand(resnet20, fmnist_batch):
    check_pathway_channels(resnet20_case(resnet20, fmnist_batch, n=2))
    check_pathway_channels(lenet_case())


def test_integrated_variant_equals_riemann_sum_by_hand():
    check_pathway_integrated(lenet_case())


def test_hooks_are_removed_and_the_model_unchanged(resnet20, fmnist_batch):
    images, targets = fmnist_batch[0][:2], fmnist_batch[1][:2]
    with torch.no_grad():
        before = resnet20(images)
    attribute(resnet20, images, targets, method="pathway", integrated=True, granularity="channel")
    assert all(not m._forward_hooks for m in resnet20.modules())
    with torch.no_grad():
        torch.testing.assert_close(resnet20(images), before)


def test_channel_scores_are_unit_scores_per_input(resnet20, fmnist_batch):
    images, targets = fmnist_batch
    scores = pathway_channel_scores(resnet20, images, targets)
    assert scores.axis == "input" and scores["conv1"].shape == (8, 16)
    assert set(scores) >= {"conv1", "layer3.2.conv2", "layer2.0.shortcut.0"}
    # per-input: image 0's scores do not depend on the other images in the batch
    alone = pathway_channel_scores(resnet20, images[:1], targets[:1])
    torch.testing.assert_close(alone["layer2.1.conv1"][0], scores["layer2.1.conv1"][0], atol=1e-5, rtol=1e-5)
    # and they are Σ_positions |a·∂y/∂a| at the filter's response (after its BatchNorm), by a plain hook
    seen = []
    handle = resnet20.layer2[1].bn1.register_forward_hook(lambda m, i, o: seen.append(o))
    logits = resnet20(images)
    handle.remove()
    grad, = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), seen[0])
    torch.testing.assert_close(scores["layer2.1.conv1"], (seen[0] * grad).abs().sum((2, 3)).double().detach(),
                               atol=1e-6, rtol=1e-4)


def test_bad_fraction_is_a_clear_error(resnet20, fmnist_batch):
    images, targets = fmnist_batch
    with pytest.raises(ExplainError, match="prune_fraction"):
        attribute(resnet20, images, targets, method="pathway", prune_fraction=1.0)
