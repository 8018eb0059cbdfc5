"""Transformer unit scores (heads, MLP neurons, embedding channels) against naive computations.

On neurotomy's ``vit_tiny`` the naive side is a hand-written forward pass from the parameters, with
explicit per-head and per-neuron gates; the head Taylor score is also checked against a central
finite difference of the per-image loss in the gate, which on every model (ours, timm's DeiT,
torchvision's ViT-B/16) is realised without hooks by scaling the head's columns of the output
projection by 1 ± ε. All checks run in float64.
"""

import json
import math
from functools import lru_cache

import pytest
import torch
import torch.nn.functional as F

from neurotomy.data.tensor_dataset import Normalization, TensorImageDataset
from neurotomy.errors import ModelError, NeurotomyError, OptionError
from neurotomy.models import build_model
from neurotomy.scores import UnitScores
from neurotomy.scores.transformer import (TRANSFORMER_CRITERIA, head_matrix, score_transformer, transformer_criteria,
                                          unit_weights)

N_IMAGES, BATCH = 6, 4  # two batches, the last one short


def dataset(channels: int, size: int, classes: int = 4, seed: int = 0, n: int = N_IMAGES) -> TensorImageDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorImageDataset(torch.randn(n, channels, size, size, generator=g), torch.arange(n) % classes,
                              [str(c) for c in range(classes)], Normalization((0.0,) * channels, (1.0,) * channels))


@lru_cache(maxsize=1)
def tiny_vit():
    """vit_tiny at 8 px (16 + 1 tokens, width 16, 2 heads, 2 blocks), float64, its weights scaled up
    so attention is far from uniform and every LayerNorm has an uneven scale and shift."""
    torch.manual_seed(0)
    vit = build_model("vit_tiny", 1, 4, 8, patch=2, dim=16, depth=2, num_heads=2, mlp_hidden=24).double().eval()
    with torch.no_grad():
        for name, p in vit.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5) if name.endswith("weight") else p.normal_(0, 0.2)
            else:
                p.mul_(15.0 if p.ndim > 1 else 1.0).add_(torch.randn_like(p) * 0.05)
    return vit


@lru_cache(maxsize=1)
def tiny_data() -> tuple[torch.Tensor, torch.Tensor, TensorImageDataset]:
    data = dataset(1, 8)
    return data.images.double(), data.targets, data


@lru_cache(maxsize=1)
def deit():
    import timm

    torch.manual_seed(1)
    return timm.create_model("deit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=4).double().eval()


@lru_cache(maxsize=1)
def torchvision_vit():
    import torchvision

    torch.manual_seed(2)
    model = torchvision.models.vit_b_16(image_size=32, num_classes=4)
    torch.nn.init.normal_(model.heads.head.weight, std=0.05)  # torchvision zeroes the head: no gradient would flow
    return model.double().eval()


def manual_forward(vit, x, head_gates=None, neuron_gates=None):
    """vit_tiny computed from its parameters, head by head: (logits, per block: attention
    probabilities (B, H, N, N), head contexts (B, H, N, d), GELU activations (B, N, hidden), block
    inputs (B, N, D))."""
    B, D = x.shape[0], vit.pos_embed.shape[-1]
    t = F.conv2d(x, vit.patch_embed.weight, vit.patch_embed.bias, stride=vit.patch_embed.stride).flatten(2).transpose(1, 2)
    t = torch.cat([vit.cls_token.expand(B, -1, -1), t], 1) + vit.pos_embed
    record = {"probs": [], "context": [], "act": [], "stream": []}
    for i, blk in enumerate(vit.blocks):
        record["stream"].append(t)
        h = F.layer_norm(t, (D,), blk.norm1.weight, blk.norm1.bias, blk.norm1.eps)
        H = blk.attn.num_heads
        d = D // H
        W, b = blk.attn.qkv.weight, blk.attn.qkv.bias
        out, probs, contexts = blk.attn.proj.bias, [], []
        for head in range(H):
            q, k, v = (h @ W[s * D + head * d: s * D + (head + 1) * d].T + b[s * D + head * d: s * D + (head + 1) * d]
                       for s in range(3))
            p = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(d), -1)
            ctx = p @ v
            probs.append(p)
            contexts.append(ctx)
            gate = 1.0 if head_gates is None else head_gates[i][:, head, None, None]
            out = out + (ctx * gate) @ blk.attn.proj.weight[:, head * d:(head + 1) * d].T
        record["probs"].append(torch.stack(probs, 1))
        record["context"].append(torch.stack(contexts, 1))
        t = t + out
        h = F.layer_norm(t, (D,), blk.norm2.weight, blk.norm2.bias, blk.norm2.eps)
        a = F.gelu(h @ blk.mlp.fc1.weight.T + blk.mlp.fc1.bias)
        record["act"].append(a)
        if neuron_gates is not None:
            a = a * neuron_gates[i][:, None, :]
        t = t + a @ blk.mlp.fc2.weight.T + blk.mlp.fc2.bias
    t = F.layer_norm(t, (D,), vit.norm.weight, vit.norm.bias, vit.norm.eps)
    return t[:, 0] @ vit.head.weight.T + vit.head.bias, record


def test_manual_forward_is_the_model():
    vit = tiny_vit()
    x, _, _ = tiny_data()
    with torch.no_grad():
        assert torch.allclose(manual_forward(vit, x)[0], vit(x), atol=1e-10)


# ------------------------------------------------------------------------------------------------
# weight criteria

def test_head_and_neuron_norms_are_slice_sums():
    vit = tiny_vit()
    D, H, d = 16, 2, 8
    heads_l1, heads_l2 = score_transformer(vit, "l1", "head"), score_transformer(vit, "l2", "head")
    neurons_l1, neurons_l2 = score_transformer(vit, "l1", "neuron"), score_transformer(vit, "l2", "neuron")
    assert list(heads_l1) == ["blocks.0.attn", "blocks.1.attn"] and heads_l1.info["unit"] == "head"
    assert list(neurons_l1) == ["blocks.0.mlp.fc1", "blocks.1.mlp.fc1"] and neurons_l1.info["unit"] == "neuron"
    for i, blk in enumerate(vit.blocks):
        for h in range(H):
            rows = torch.cat([blk.attn.qkv.weight[s * D + h * d: s * D + (h + 1) * d].flatten() for s in range(3)])
            own = torch.cat([rows, blk.attn.proj.weight[:, h * d:(h + 1) * d].flatten()]).detach()
            assert heads_l1[f"blocks.{i}.attn"][h].item() == pytest.approx(own.abs().sum().item(), rel=1e-12)
            assert heads_l2[f"blocks.{i}.attn"][h].item() == pytest.approx(own.norm().item(), rel=1e-12)
        for j in range(24):
            own = torch.cat([blk.mlp.fc1.weight[j], blk.mlp.fc2.weight[:, j]]).detach()
            assert neurons_l1[f"blocks.{i}.mlp.fc1"][j].item() == pytest.approx(own.abs().sum().item(), rel=1e-12)
            assert neurons_l2[f"blocks.{i}.mlp.fc1"][j].item() == pytest.approx(own.norm().item(), rel=1e-12)


def embedding_weights_by_hand(vit, c):
    """Every weight of vit_tiny that reads or writes residual channel ``c``, listed by hand."""
    parts = [vit.patch_embed.weight[c], vit.cls_token[..., c], vit.pos_embed[..., c], vit.norm.weight[c],
             vit.head.weight[:, c]]
    for blk in vit.blocks:
        parts += [blk.norm1.weight[c], blk.attn.qkv.weight[:, c], blk.attn.proj.weight[c], blk.norm2.weight[c],
                  blk.mlp.fc1.weight[:, c], blk.mlp.fc2.weight[c]]
    return torch.cat([p.detach().flatten() for p in parts])


def test_embedding_norms_cover_every_weight_of_the_stream():
    vit = tiny_vit()
    l1, l2 = score_transformer(vit, "l1", "embedding"), score_transformer(vit, "l2", "embedding")
    assert list(l1) == ["embedding"] and l1["embedding"].shape == (16,) and l1.info["unit"] == "embedding"
    for c in range(16):
        own = embedding_weights_by_hand(vit, c)
        assert l1["embedding"][c].item() == pytest.approx(own.abs().sum().item(), rel=1e-12)
        assert l2["embedding"][c].item() == pytest.approx(own.norm().item(), rel=1e-12)


def test_weight_norms_on_timm_and_torchvision():
    model = deit()
    heads = score_transformer(model, "l1", "head")
    assert len(heads) == 12 and heads["blocks.3.attn"].shape == (3,)
    attn = model.blocks[3].attn
    D, d = 192, 64
    own = torch.cat([attn.qkv.weight[s * D + d: s * D + 2 * d].flatten() for s in range(3)]
                    + [attn.proj.weight[:, d:2 * d].flatten()]).detach()
    assert heads["blocks.3.attn"][1].item() == pytest.approx(own.abs().sum().item(), rel=1e-9)
    neurons = score_transformer(model, "l2", "neuron")
    fc1, fc2 = model.blocks[5].mlp.fc1, model.blocks[5].mlp.fc2
    assert neurons["blocks.5.mlp.fc1"][7].item() == pytest.approx(
        torch.cat([fc1.weight[7], fc2.weight[:, 7]]).norm().item(), rel=1e-9)
    stream = score_transformer(model, "l1", "embedding")["embedding"]
    c = 11
    parts = [model.patch_embed.proj.weight[c], model.cls_token[..., c], model.pos_embed[..., c], model.norm.weight[c],
             model.head.weight[:, c]]
    for blk in model.blocks:
        parts += [blk.norm1.weight[c], blk.attn.qkv.weight[:, c], blk.attn.proj.weight[c], blk.norm2.weight[c],
                  blk.mlp.fc1.weight[:, c], blk.mlp.fc2.weight[c]]
    assert stream[c].item() == pytest.approx(sum(p.detach().abs().sum().item() for p in parts), rel=1e-9)

    tv = torchvision_vit()
    heads = score_transformer(tv, "l2", "head")
    name = "encoder.layers.encoder_layer_2.self_attention"
    mha = tv.get_submodule(name)
    D, d, h = 768, 64, 5
    own = torch.cat([mha.in_proj_weight[s * D + h * d: s * D + (h + 1) * d].flatten() for s in range(3)]
                    + [mha.out_proj.weight[:, h * d:(h + 1) * d].flatten()]).detach()
    assert heads[name].shape == (12,) and heads[name][h].item() == pytest.approx(own.norm().item(), rel=1e-9)
    neurons = score_transformer(tv, "l1", "neuron")
    assert "encoder.layers.encoder_layer_0.mlp.0" in neurons and neurons["encoder.layers.encoder_layer_0.mlp.0"].shape == (3072,)
    stream = score_transformer(tv, "l1", "embedding")["embedding"]
    enc = tv.encoder
    parts = [tv.conv_proj.weight[c], tv.class_token[..., c], enc.pos_embedding[..., c], enc.ln.weight[c],
             tv.heads.head.weight[:, c]]
    for layer in enc.layers:
        parts += [layer.ln_1.weight[c], layer.self_attention.in_proj_weight[:, c], layer.self_attention.out_proj.weight[c],
                  layer.ln_2.weight[c], layer.mlp[0].weight[:, c], layer.mlp[3].weight[c]]
    assert stream.shape == (768,) and stream[c].item() == pytest.approx(sum(p.detach().abs().sum().item() for p in parts), rel=1e-9)


def test_unit_weights_put_units_last():
    views = unit_weights(tiny_vit(), "neuron")["blocks.0.mlp.fc1"]
    assert [tuple(v.shape) for v in views] == [(16, 24), (16, 24)]


# ------------------------------------------------------------------------------------------------
# Taylor (Michel et al. 2019): E_x |dL(x)/dξ_h|

def per_image_loss(model, x, y):
    with torch.no_grad():
        return F.cross_entropy(model(x), y, reduction="none")


def finite_difference_head_taylor(model, x, y, proj, heads, head, eps=1e-5):
    """|(L(ξ=1+ε) − L(ξ=1−ε)) / 2ε| per image, averaged: the gate ξ realised by scaling the head's
    columns of the output projection ``proj`` (a weight of shape (out, heads·d))."""
    d = proj.shape[1] // heads
    cols = slice(head * d, (head + 1) * d)
    original = proj[:, cols].clone()
    losses = []
    try:
        for factor in (1 + eps, 1 - eps):
            with torch.no_grad():
                proj[:, cols] = original * factor
            losses.append(per_image_loss(model, x, y))
    finally:
        with torch.no_grad():
            proj[:, cols] = original
    return ((losses[0] - losses[1]) / (2 * eps)).abs().mean().item()


def test_head_taylor_is_the_gate_gradient():
    vit = tiny_vit()
    x, y, data = tiny_data()
    scores = score_transformer(vit, "taylor", "head", data, max_images=N_IMAGES, batch_size=BATCH)
    # naive 1: autograd through the hand-written forward, one gate per image and head
    gates = [torch.ones(N_IMAGES, 2, dtype=torch.float64, requires_grad=True) for _ in vit.blocks]
    logits, _ = manual_forward(vit, x, head_gates=gates)
    grads = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), gates)
    for i, blk in enumerate(vit.blocks):
        assert torch.allclose(scores[f"blocks.{i}.attn"], grads[i].abs().mean(0), rtol=1e-8, atol=1e-12)
        # naive 2: the finite difference of the per-image loss in the gate
        for head in range(2):
            expected = finite_difference_head_taylor(vit, x, y, blk.attn.proj.weight, 2, head)
            assert scores[f"blocks.{i}.attn"][head].item() == pytest.approx(expected, rel=1e-6)
    assert float(torch.cat(list(scores.values())).min()) > 0


def test_neuron_taylor_is_activation_times_gradient_summed_over_tokens():
    vit = tiny_vit()
    x, y, data = tiny_data()
    scores = score_transformer(vit, "taylor", "neuron", data, max_images=N_IMAGES, batch_size=BATCH)
    logits, record = manual_forward(vit, x)
    acts = record["act"]
    grads = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), acts)
    for i, (a, g) in enumerate(zip(acts, grads)):
        expected = (a * g).sum(1).abs().mean(0)  # |Σ_tokens a·∂L/∂a| per image, mean over images
        assert torch.allclose(scores[f"blocks.{i}.mlp.fc1"], expected.detach(), rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("which", ["deit", "torchvision"])
def test_head_taylor_on_timm_and_torchvision(which):
    model = deit() if which == "deit" else torchvision_vit()
    data = dataset(3, 32, seed=3, n=4)
    x, y = data.images.double(), data.targets
    scores = score_transformer(model, "taylor", "head", data, max_images=4, batch_size=4)
    assert len(scores) == 12 and scores.info["unit"] == "head"
    for block, head in ((0, 1), (11, 2)):
        if which == "deit":
            name, proj, heads = f"blocks.{block}.attn", model.blocks[block].attn.proj.weight, 3
        else:
            name = f"encoder.layers.encoder_layer_{block}.self_attention"
            proj, heads = model.get_submodule(name).out_proj.weight, 12
        expected = finite_difference_head_taylor(model, x, y, proj, heads, head)
        assert scores[name][head].item() == pytest.approx(expected, rel=1e-5)


# ------------------------------------------------------------------------------------------------
# attention entropy, mean activation

def test_attention_entropy_is_log_n_minus_the_mean_entropy():
    vit = tiny_vit()
    x, _, data = tiny_data()
    scores = score_transformer(vit, "attention_entropy", "head", data, max_images=N_IMAGES, batch_size=BATCH)
    _, record = manual_forward(vit, x)
    for i, probs in enumerate(record["probs"]):
        entropy = -(probs * probs.log()).sum(-1)  # (B, H, queries)
        expected = math.log(probs.shape[-1]) - entropy.mean((0, 2))
        assert torch.allclose(scores[f"blocks.{i}.attn"], expected.detach(), rtol=1e-9)
    assert float(torch.cat(list(scores.values())).min()) > 0.05  # these heads are far from uniform


def test_attention_entropy_on_timm_and_torchvision():
    data = dataset(3, 32, seed=4)
    x = data.images.double()
    model = deit()
    scores = score_transformer(model, "attention_entropy", "head", data, max_images=N_IMAGES, batch_size=BATCH)
    assert model.blocks[0].attn.fused_attn == type(model.blocks[0].attn)(8).fused_attn  # switched back on
    with torch.no_grad():
        t = model.norm_pre(model._pos_embed(model.patch_embed(x)))
        for i, blk in enumerate(model.blocks[:3]):
            qkv = blk.attn.qkv(blk.norm1(t)).unflatten(-1, (3, 3, 64)).permute(2, 0, 3, 1, 4)
            probs = torch.softmax(qkv[0] @ qkv[1].transpose(-2, -1) / 8.0, -1)
            expected = math.log(probs.shape[-1]) + torch.special.xlogy(probs, probs).sum(-1).mean((0, 2))
            assert torch.allclose(scores[f"blocks.{i}.attn"], expected, rtol=1e-9)
            t = blk(t)
    tv = torchvision_vit()
    scores = score_transformer(tv, "attention_entropy", "head", data, max_images=N_IMAGES, batch_size=BATCH)
    with torch.no_grad():
        t = tv._process_input(x)
        t = torch.cat([tv.class_token.expand(len(x), -1, -1), t], 1) + tv.encoder.pos_embedding
        for i, layer in enumerate(tv.encoder.layers[:2]):
            h = layer.ln_1(t)
            mha = layer.self_attention
            _, probs = F.multi_head_attention_forward(
                h.transpose(0, 1), h.transpose(0, 1), h.transpose(0, 1), 768, 12, mha.in_proj_weight, mha.in_proj_bias,
                None, None, False, 0.0, mha.out_proj.weight, mha.out_proj.bias, need_weights=True,
                average_attn_weights=False)  # torch's own implementation as the reference
            expected = math.log(probs.shape[-1]) + torch.special.xlogy(probs, probs).sum(-1).mean((0, 2))
            assert torch.allclose(scores[f"encoder.layers.encoder_layer_{i}.self_attention"], expected, rtol=1e-9)
            t = layer(t)


def test_mean_activation_of_heads_neurons_and_stream():
    vit = tiny_vit()
    x, _, data = tiny_data()
    _, record = manual_forward(vit, x)
    heads = score_transformer(vit, "mean_activation", "head", data, max_images=N_IMAGES, batch_size=BATCH)
    neurons = score_transformer(vit, "mean_activation", "neuron", data, max_images=N_IMAGES, batch_size=BATCH)
    stream = score_transformer(vit, "mean_activation", "embedding", data, max_images=N_IMAGES, batch_size=BATCH)
    for i in range(2):
        assert torch.allclose(heads[f"blocks.{i}.attn"], record["context"][i].abs().mean((0, 2, 3)).detach(), rtol=1e-9)
        assert torch.allclose(neurons[f"blocks.{i}.mlp.fc1"], record["act"][i].abs().mean((0, 1)).detach(), rtol=1e-9)
    expected = torch.stack([s.abs().mean((0, 1)) for s in record["stream"]]).mean(0)
    assert torch.allclose(stream["embedding"], expected.detach(), rtol=1e-9)


def test_data_criteria_run_on_torchvision_mlp_and_stream():
    tv, data = torchvision_vit(), dataset(3, 32, seed=5)
    neurons = score_transformer(tv, "taylor", "neuron", data, max_images=2, batch_size=2)
    assert neurons["encoder.layers.encoder_layer_11.mlp.0"].shape == (3072,)
    assert float(neurons["encoder.layers.encoder_layer_11.mlp.0"].max()) > 0
    heads = score_transformer(tv, "mean_activation", "head", data, max_images=2, batch_size=2)
    assert heads["encoder.layers.encoder_layer_0.self_attention"].shape == (12,)


# ------------------------------------------------------------------------------------------------
# the registry, the heatmap, refusals

def test_registry_tags_units_and_papers():
    assert transformer_criteria("head") == ["l1", "l2", "taylor", "attention_entropy", "mean_activation"]
    assert transformer_criteria("embedding") == ["l1", "l2", "mean_activation"]
    for name in TRANSFORMER_CRITERIA:
        tags = TRANSFORMER_CRITERIA.tags(name)
        assert tags["paper"] and set(tags["units"]) <= {"head", "neuron", "embedding"}
    assert "Michel" in TRANSFORMER_CRITERIA.tags("taylor")["paper"]


def test_head_matrix_is_blocks_by_heads():
    scores = score_transformer(tiny_vit(), "l1", "head")
    matrix = head_matrix(scores)
    assert matrix.layers == ["blocks.0.attn", "blocks.1.attn"]
    assert torch.equal(matrix.values, torch.stack([scores["blocks.0.attn"], scores["blocks.1.attn"]]))
    ragged = head_matrix(UnitScores({"a": torch.ones(3), "b": torch.ones(1)}, info={"unit": "head"}))
    assert ragged.values.shape == (2, 3) and torch.isnan(ragged.values[1, 1:]).all()
    with pytest.raises(NeurotomyError, match="not per-head scores"):
        head_matrix(score_transformer(tiny_vit(), "l1", "neuron"))


def test_refusals_name_the_problem():
    vit, data = tiny_vit(), tiny_data()[2]
    with pytest.raises(NeurotomyError, match="unknown transformer criterion 'nope'; use one of l1, l2"):
        score_transformer(vit, "nope", "head")
    with pytest.raises(NeurotomyError, match="unknown transformer unit 'token'"):
        score_transformer(vit, "l1", "token")
    with pytest.raises(NeurotomyError, match="does not score neurons.*use one of l1, l2, taylor, mean_activation"):
        score_transformer(vit, "attention_entropy", "neuron", data)
    with pytest.raises(NeurotomyError, match="'taylor' needs data"):
        score_transformer(vit, "taylor", "head")
    with pytest.raises(OptionError, match="batch_size"):
        score_transformer(vit, "taylor", "head", data, batch_size=0)
    with pytest.raises(ModelError, match="no attention layer"):
        score_transformer(build_model("lenet5", 1, 10, 28), "l1", "head")


def test_criteria_command_lists_the_transformer_criteria(capsys):
    from neurotomy.cli import main

    assert main(["criteria", "--json", "--quiet"]) == 0
    rows = json.loads(capsys.readouterr().out)
    entropy = [r for r in rows if r["name"] == "attention_entropy"]
    assert len(entropy) == 1 and entropy[0]["axis"] == "head" and entropy[0]["data"]
    assert {r["axis"] for r in rows if r["name"] == "l1"} == {"unit", "head/neuron/embedding"}


class FunctionalAttention(torch.nn.Module):
    """qkv / proj / num_heads like timm's, but the projection applied functionally (as torchvision's
    Swin does) and no module the probabilities pass through."""

    def __init__(self, dim=8, heads=2):
        super().__init__()
        self.num_heads, self.qkv, self.proj = heads, torch.nn.Linear(dim, 3 * dim), torch.nn.Linear(dim, dim)

    def forward(self, x):
        q, k, v = self.qkv(x).unflatten(-1, (3, self.num_heads, -1)).permute(2, 0, 3, 1, 4)
        context = ((q @ k.transpose(-2, -1)).softmax(-1) @ v).transpose(1, 2).flatten(2)
        return F.linear(context, self.proj.weight, self.proj.bias)


class MaskedMha(torch.nn.Module):
    """nn.MultiheadAttention called with a causal mask by keyword, which a forward hook cannot see."""

    def __init__(self, dim=8, heads=2):
        super().__init__()
        self.attn = torch.nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x):
        mask = torch.triu(torch.ones(x.shape[1], x.shape[1], dtype=torch.bool), 1)
        return self.attn(x, x, x, attn_mask=mask, need_weights=False)[0]


class TokenModel(torch.nn.Module):
    def __init__(self, attn):
        super().__init__()
        self.embed, self.attn, self.head = torch.nn.Linear(8, 8), attn, torch.nn.Linear(8, 4)

    def forward(self, x):  # (B, 1, 4, 8): 4 tokens of 8 channels
        t = self.embed(x[:, 0])
        return self.head((t + self.attn(t)).mean(1))


def test_layers_whose_heads_cannot_be_seen_are_refused():
    data = TensorImageDataset(torch.randn(4, 1, 4, 8), torch.arange(4), list("abcd"), Normalization((0.0,), (1.0,)))
    functional = TokenModel(FunctionalAttention())
    assert score_transformer(functional, "l1", "head")["attn"].shape == (2,)  # weights are fine
    with pytest.raises(ModelError, match="'attn.proj' of 'attn' never runs as a module"):
        score_transformer(functional, "taylor", "head", data)
    with pytest.raises(ModelError, match="attention probabilities through no module"):
        score_transformer(functional, "attention_entropy", "head", data)
    with pytest.raises(ModelError, match="'attn.attn' was called with masks or options"):
        score_transformer(TokenModel(MaskedMha()), "attention_entropy", "head", data)


def test_saved_transformer_scores_reload_checked_against_the_model(tmp_path):
    """Head, neuron and embedding scores survive save → load(model=…); another model's are refused."""
    vit = tiny_vit()
    for unit in ("head", "neuron", "embedding"):
        scores = score_transformer(vit, "l1", unit)
        loaded = UnitScores.load(scores.save(tmp_path / f"{unit}.npz"), model=vit)
        assert loaded.info["unit"] == unit
        for layer in scores:
            torch.testing.assert_close(loaded[layer], scores[layer])
    wider = build_model("vit_tiny", 1, 4, 8, patch=2, dim=24, depth=2, num_heads=3, mlp_hidden=24)
    from neurotomy.errors import ScoresError
    for unit in ("head", "embedding"):
        with pytest.raises(ScoresError, match="units"):
            UnitScores.load(tmp_path / f"{unit}.npz", model=wider)
    with pytest.raises(ScoresError, match="units|lacks"):
        UnitScores.load(tmp_path / "neuron.npz", model=build_model("vit_tiny", 1, 4, 8, patch=2, depth=1))
