"""Attention rollout and gradient-weighted rollout against a naive numpy implementation (one image,
one layer at a time) fed with attention probabilities captured independently: the ``attn_probe`` of
neurotomy's ``vit_tiny``, timm's unfused attention (the ``attn_drop`` input), torchvision's
``nn.MultiheadAttention`` asked for its weights — and their gradients by autograd, where ours come
from the chain rule at the attention output."""

import copy
import functools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from neurotomy.explain import ExplainError, attribute
from neurotomy.explain.rollout import attention_probabilities, observe_attention
from neurotomy.models import build_model
from neurotomy.models.transformer import attention_sites
from tests.explain.vit_cases import images, tiny_timm_vit, tiny_torchvision_vit, tiny_vit

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")


def captured_attention(model, modules, x, targets):
    """Outputs of ``modules`` (the attention probabilities) in call order, and ∂y_c/∂ each, by plain hooks."""
    seen = []
    handles = [m.register_forward_hook(lambda mod, inp, out: seen.append(out)) for m in modules]
    try:
        logits = model(x)
    finally:
        for h in handles:
            h.remove()
    grads = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), seen)
    return [p.detach().numpy().astype(np.float64) for p in seen], [g.numpy().astype(np.float64) for g in grads]


def naive_rollout(probs, prefix, grid):
    """Abnar & Zuidema: per image, R = Â_L ⋯ Â_1, Â = row-normalised (mean over heads + I)."""
    rows = []
    for i in range(probs[0].shape[0]):
        tokens = probs[0].shape[-1]
        r = np.eye(tokens)
        for layer in probs:
            a = layer[i].mean(0) + np.eye(tokens)
            r = (a / a.sum(1, keepdims=True)) @ r
        rows.append(r[0, prefix:].reshape(grid))
    return np.stack(rows)


def naive_grad_rollout(probs, grads, prefix, grid):
    """Chefer et al. 2021 eqs. 5–6: per image, R ← R + mean_heads((∇A ⊙ A)⁺) · R from R = I."""
    rows = []
    for i in range(probs[0].shape[0]):
        tokens = probs[0].shape[-1]
        r = np.eye(tokens)
        for a, g in zip(probs, grads):
            r = r + np.maximum(g[i] * a[i], 0).mean(0) @ r
        rows.append(r[0, prefix:].reshape(grid))
    return np.stack(rows)


def upsampled(maps, size):
    return F.interpolate(torch.from_numpy(maps).float()[:, None], size=size, mode="bilinear",
                         align_corners=False)[:, 0]


def check_maps(model, x, targets, probs, grads, prefix, grid, methods=("rollout", "grad_rollout")):
    size = tuple(x.shape[-2:])
    expected = {"rollout": lambda: upsampled(naive_rollout(probs, prefix, grid), size),
                "grad_rollout": lambda: upsampled(naive_grad_rollout(probs, grads, prefix, grid), size)}
    for method in methods:
        want = expected[method]()
        ours = attribute(model, x, targets, method=method)
        assert ours.shape == (len(x), *size)
        assert float(want.std()) > 0.05 * float(want.abs().max())  # not a flat map
        torch.testing.assert_close(ours, want, atol=1e-5 * float(want.abs().max()), rtol=1e-4)


@functools.lru_cache(maxsize=1)
def vit_tiny_case():
    """The tiny vit_tiny, three images, their targets, and its attention and gradients by plain hooks."""
    vit, x, t = tiny_vit(), images(3, (1, 28, 28)), torch.tensor([0, 3, 7])
    return (vit, x, t, *captured_attention(vit, [b.attn.attn_probe for b in vit.blocks], x, t))


def check_rollout_method(method):
    """``method`` ("rollout" or "grad_rollout") on the tiny vit_tiny equals the naive numpy version —
    the cross-check a mutation check can run against broken versions of the method."""
    vit, x, t, probs, grads = vit_tiny_case()
    check_maps(vit, x, t, probs, grads, 1, (7, 7), methods=(method,))


@pytest.mark.parametrize("method", ["rollout", "grad_rollout"])
def test_rollout_equals_naive_numpy_on_vit_tiny(method):
    check_rollout_method(method)


def test_recomputed_attention_equals_attn_probe():
    """The path for timm / torchvision (probabilities from the module's input, gradient by the chain
    rule), forced on vit_tiny by hiding its attn_probe modules, equals what attn_probe shows."""
    vit, x, t = tiny_vit(), images(3, (1, 28, 28)), torch.tensor([0, 3, 7])
    hidden = copy.deepcopy(vit)
    for block in hidden.blocks:
        del block.attn.attn_probe
        block.attn.attn_probe = lambda a: a  # not a module: nothing to hook, recomputed instead
    probed, recomputed = observe_attention(vit, x, t), observe_attention(hidden, x, t)
    assert [m.site.name for m in recomputed] == [f"blocks.{i}.attn" for i in range(3)]
    for a, b in zip(probed, recomputed):
        torch.testing.assert_close(b.probs, a.probs, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(b.grads, a.grads, atol=1e-6 * float(a.grads.abs().max()), rtol=1e-4)
    for method in ("rollout", "grad_rollout"):
        torch.testing.assert_close(attribute(hidden, x, t, method=method), attribute(vit, x, t, method=method))


def test_timm_fused_attention_is_recomputed_like_the_unfused_path():
    model, x, t = tiny_timm_vit(), images(3, (3, 32, 32)), torch.tensor([1, 2, 3])
    assert all(block.attn.fused_attn for block in model.blocks)  # the path without probabilities
    unfused = copy.deepcopy(model)
    for block in unfused.blocks:
        block.attn.fused_attn = False  # timm then computes softmax(q kᵀ) and passes it through attn_drop
    probs, grads = captured_attention(unfused, [b.attn.attn_drop for b in unfused.blocks], x, t)
    ours = observe_attention(model, x, t)
    for m, p, g in zip(ours, probs, grads):
        np.testing.assert_allclose(m.probs.numpy(), p, atol=1e-5, rtol=1e-4)
        np.testing.assert_allclose(m.grads.numpy(), g, atol=1e-6 * np.abs(g).max(), rtol=1e-4)
    check_maps(model, x, t, probs, grads, 1, (4, 4))


class ExplicitSelfAttention(nn.Module):
    """torchvision's self-attention written out, its probabilities through an identity (the reference)."""

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        self.mha, self.probe = mha, nn.Identity()

    def forward(self, query, key, value, need_weights=False):
        m, (b, t, d) = self.mha, query.shape
        q, k, v = F.linear(query, m.in_proj_weight, m.in_proj_bias).chunk(3, -1)

        def heads(z):
            return z.view(b, t, m.num_heads, d // m.num_heads).transpose(1, 2)

        probs = self.probe((heads(q) @ heads(k).transpose(-2, -1) / math.sqrt(d // m.num_heads)).softmax(-1))
        return m.out_proj((probs @ heads(v)).transpose(1, 2).reshape(b, t, d)), None


def test_torchvision_multihead_attention_is_recomputed():
    model, x, t = tiny_torchvision_vit(), images(3, (3, 32, 32)), torch.tensor([1, 2, 3])
    layers = list(model.encoder.layers)
    # torch's own probabilities: the attention modules asked for their (per-head) weights
    inputs = []
    handles = [layer.self_attention.register_forward_hook(lambda mod, inp, out: inputs.append(inp[0]))
               for layer in layers]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    sites = attention_sites(model)
    for site, layer, z in zip(sites, layers, inputs):
        with torch.no_grad():
            torch_probs = layer.self_attention(z, z, z, need_weights=True, average_attn_weights=False)[1]
        torch.testing.assert_close(attention_probabilities(site, (z, z, z)), torch_probs, atol=1e-6, rtol=1e-5)
    # gradients: autograd through the written-out attention, which must compute the same outputs
    explicit = copy.deepcopy(model)
    for layer in explicit.encoder.layers:
        layer.self_attention = ExplicitSelfAttention(layer.self_attention)
    with torch.no_grad():
        torch.testing.assert_close(explicit(x), model(x), atol=1e-5, rtol=1e-4)
    probs, grads = captured_attention(explicit, [layer.self_attention.probe for layer in explicit.encoder.layers], x, t)
    for m, p, g in zip(observe_attention(model, x, t), probs, grads):
        np.testing.assert_allclose(m.probs.numpy(), p, atol=1e-5, rtol=1e-4)
        np.testing.assert_allclose(m.grads.numpy(), g, atol=1e-6 * np.abs(g).max(), rtol=1e-4)
    check_maps(model, x, t, probs, grads, 1, (4, 4))


@pytest.mark.parametrize("name", ["deit_tiny_patch16_224", "deit_tiny_distilled_patch16_224", "vit_b_16"])
def test_full_size_architectures_give_maps_of_the_image_size(name):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if name == "vit_b_16":
            model = torchvision.models.vit_b_16(image_size=32, num_classes=10)
            nn.init.normal_(model.heads.head.weight, std=0.02)  # zero-initialised: every gradient would be 0
        else:
            model = timm.create_model(name, pretrained=False, img_size=32, num_classes=10)
    model.eval()
    x = images(2, (3, 32, 32))
    for method in ("rollout", "grad_rollout"):
        maps = attribute(model, x, method=method)
        assert maps.shape == (2, 32, 32)
        assert bool(torch.isfinite(maps).all()) and bool((maps >= 0).all()) and float(maps.amax()) > 0


def test_rollout_ignores_the_target_and_grad_rollout_follows_it():
    vit, x = tiny_vit(), images(2, (1, 28, 28))
    torch.testing.assert_close(attribute(vit, x, 0, method="rollout"), attribute(vit, x, 5, method="rollout"))
    assert not torch.allclose(attribute(vit, x, 0, method="grad_rollout"), attribute(vit, x, 5, method="grad_rollout"))


def test_a_cnn_is_refused_with_the_methods_it_can_use():
    cnn = build_model("lenet5", 1, 10, 28).eval()
    for method in ("rollout", "grad_rollout"):
        with pytest.raises(ExplainError, match="needs attention layers and this model has none.*use gradcam"):
            attribute(cnn, images(2, (1, 28, 28)), method=method)


def test_attention_over_other_tokens_than_the_grid_is_refused():
    vit = tiny_vit(depth=1)
    vit.patch_grid = (6, 6)  # the model now claims 36 patches while its attention sees 49
    with pytest.raises(ExplainError, match="attends over 50 tokens.*1 prefix \\+ 6×6"):
        attribute(vit, images(2, (1, 28, 28)), method="rollout")
