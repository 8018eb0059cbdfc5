"""The gradient family and the pathway gradient on Vision Transformers (ours, timm's, torchvision's):
they run and give maps of the image size; saliency is the input gradient; pathway masks GELU
outputs (N × tokens × neurons, channels last) and keeps the units a hand computation keeps."""

import pytest
import torch

from neurotomy.explain import METHODS, attribute
from neurotomy.explain.pathway import activation_layers, pathway_masks
from tests.explain.vit_cases import images, tiny_timm_vit, tiny_torchvision_vit, tiny_vit

timm = pytest.importorskip("timm")

FAST = {"integrated_gradients": {"steps": 8}, "smoothgrad": {"samples": 4}, "smoothgrad_sq": {"samples": 4}}


@pytest.mark.parametrize("build,shape", [(tiny_vit, (1, 28, 28)), (tiny_timm_vit, (3, 32, 32)),
                                         (tiny_torchvision_vit, (3, 32, 32))])
def test_gradient_family_and_pathway_run_on_vits(build, shape):
    model, x = build(), images(2, shape)
    for method in METHODS.names(family="gradient") + ["pathway"]:
        maps = attribute(model, x, method=method, **FAST.get(method, {}))
        assert maps.shape == (2, *shape[1:]) and bool(torch.isfinite(maps).all()) and float(maps.abs().amax()) > 0


def test_deit_tiny_gradients_run():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        deit = timm.create_model("deit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=10).eval()
    for method in ("gradient", "integrated_gradients", "pathway"):
        assert attribute(deit, images(2, (3, 32, 32)), method=method, **FAST.get(method, {})).shape == (2, 32, 32)


def test_saliency_is_the_input_gradient():
    vit, x, t = tiny_vit(), images(3, (1, 28, 28)), torch.tensor([2, 5, 8])
    leaf = x.clone().requires_grad_(True)
    grad, = torch.autograd.grad(vit(leaf).gather(1, t[:, None]).sum(), leaf)
    torch.testing.assert_close(attribute(vit, x, t, method="gradient"), grad[:, 0])
    torch.testing.assert_close(attribute(vit, x, t, method="pathway", prune_fraction=0.0), grad[:, 0])


def gelu_relevance_by_hand(vit, x, t):
    """|a · ∂y_c/∂a| at every GELU output (N × tokens × neurons), by plain hooks."""
    outputs = []
    handles = [block.mlp.act.register_forward_hook(lambda mod, inp, out: outputs.append(out)) for block in vit.blocks]
    try:
        logits = vit(x)
    finally:
        for h in handles:
            h.remove()
    grads = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), outputs)
    return [(a * g).abs().detach() for a, g in zip(outputs, grads)]


def masked_input_gradient(vit, x, t, masks):
    handles = [block.mlp.act.register_forward_hook(lambda mod, inp, out, m=m: out * m)
               for block, m in zip(vit.blocks, masks)]
    try:
        leaf = x.clone().requires_grad_(True)
        grad, = torch.autograd.grad(vit(leaf).gather(1, t[:, None]).sum(), leaf)
    finally:
        for h in handles:
            h.remove()
    return grad[:, 0]


@pytest.mark.parametrize("granularity", ["neuron", "channel"])
def test_pathway_over_gelu_keeps_the_units_a_hand_computation_keeps(granularity):
    vit, x, t = tiny_vit(), images(3, (1, 28, 28)), torch.tensor([2, 5, 8])
    assert activation_layers(vit) == ["blocks.0.mlp.act", "blocks.1.mlp.act", "blocks.2.mlp.act"]
    relevance = gelu_relevance_by_hand(vit, x, t)  # 3 × (N, 50 tokens, 48 neurons)
    if granularity == "channel":  # one MLP neuron over all tokens
        relevance = [r.sum(1, keepdim=True) for r in relevance]
    flat = torch.cat([r.flatten(1) for r in relevance], 1)
    keep = round(0.2 * flat.shape[1])
    threshold = flat.sort(1, descending=True).values[:, keep - 1:keep]
    assert (flat.sort(1, descending=True).values[:, keep] < threshold[:, 0]).all()  # no tie at the cut
    kept = flat >= threshold
    sizes = [r[0].numel() for r in relevance]
    hand_masks = [m.view_as(r).float() for m, r in zip(kept.split(sizes, 1), relevance)]

    masks = pathway_masks(vit, x, t, prune_fraction=0.8, granularity=granularity)
    assert [tuple(m.shape) for m in masks] == [tuple(r.shape) for r in relevance]
    for ours, hand in zip(masks, hand_masks):
        torch.testing.assert_close(ours, hand)
    torch.testing.assert_close(attribute(vit, x, t, method="pathway", prune_fraction=0.8, granularity=granularity),
                               masked_input_gradient(vit, x, t, hand_masks), atol=1e-7, rtol=1e-4)
