"""Layer pruning of transformer blocks (neurotomy's vit_tiny, timm's DeiT, torchvision's ViT).

Removing a pre-norm block is replacing it by the identity; each check compares the pruned model with
a forward pass written here by hand that skips the block, and the MACs saved with the block's own
MACs counted alone by torch's FlopCounterMode.
"""

import copy
import functools

import pytest
import torch
from torch import nn

from neurotomy.checkpoint import ModelMeta, save_checkpoint
from neurotomy.data import load_dataset
from neurotomy.dynamics.layer_rules import choose_blocks
from neurotomy.errors import PruningError
from neurotomy.loading import load_model
from neurotomy.models import build_model
from neurotomy.models.anatomy import layer_blocks, removable_blocks, residual_blocks
from neurotomy.models.summary import count_macs_params, flop_counter_macs
from neurotomy.models.transformer import block_forms, transformer_blocks
from neurotomy.models.vit import Attention, Mlp
from neurotomy.surgery.layers import remove_blocks

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

TINY = dict(patch=2, dim=16, depth=4, num_heads=2, mlp_hidden=24)


def tiny_vit(seed=0):
    torch.manual_seed(seed)
    return build_model("vit_tiny", 1, 4, 8, **TINY).eval()


@functools.cache
def _deit():
    torch.manual_seed(0)
    return load_model("timm:deit_tiny_patch16_224", in_channels=3, num_classes=4, input_size=32).eval()


def deit():
    """timm's DeiT-tiny (12 blocks) at 32 px, built once per session (a copy each time: tests may change it)."""
    return copy.deepcopy(_deit())


def tv_small():
    """torchvision's VisionTransformer class (what vit_b_16 builds) at a size the fast tests afford."""
    from torchvision.models.vision_transformer import VisionTransformer
    torch.manual_seed(0)
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=3, num_heads=4, hidden_dim=32, mlp_dim=64,
                              num_classes=4).eval()
    nn.init.normal_(model.heads.head.weight)  # torchvision zeroes the head: the outputs would all be 0
    return model


# hand-written forward passes that leave out the blocks numbered in ``skip``
def skip_ours(model, x, skip):
    t = model.patch_embed(x).flatten(2).transpose(1, 2)
    t = torch.cat([model.cls_token.expand(len(t), -1, -1), t], 1) + model.pos_embed
    for i, block in enumerate(model.blocks):
        t = t if i in skip else block(t)
    return model.head(model.norm(t)[:, 0])


def skip_timm(model, x, skip):
    assert model.global_pool == "token" and model.num_prefix_tokens == 1
    t = model.patch_embed(x)
    t = torch.cat([model.cls_token.expand(len(t), -1, -1), t], 1) + model.pos_embed
    for i, block in enumerate(model.blocks):
        t = t if i in skip else block(t)
    return model.head(model.norm(t)[:, 0])


def skip_torchvision(model, x, skip):
    t = model.conv_proj(x).flatten(2).transpose(1, 2)
    t = torch.cat([model.class_token.expand(len(t), -1, -1), t], 1) + model.encoder.pos_embedding
    for i, block in enumerate(model.encoder.layers):
        t = t if i in skip else block(t)
    return model.heads(model.encoder.ln(t)[:, 0])


MODELS = {"vit_tiny": (tiny_vit, (1, 8, 8), skip_ours, "blocks.{}"),
          "deit": (deit, (3, 32, 32), skip_timm, "blocks.{}"),
          "tv_small": (tv_small, (3, 32, 32), skip_torchvision, "encoder.layers.encoder_layer_{}")}


def test_the_finder_sees_every_block_and_leaves_cnns_alone():
    vit = build_model("vit_tiny")
    assert transformer_blocks(vit) == layer_blocks(vit) == removable_blocks(vit) == [f"blocks.{i}" for i in range(6)]
    assert residual_blocks(vit) == []
    timm_deit = timm.create_model("deit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=4)
    assert layer_blocks(timm_deit) == removable_blocks(timm_deit) == [f"blocks.{i}" for i in range(12)]
    tv = torchvision.models.vit_b_16(image_size=32, num_classes=4)
    assert layer_blocks(tv) == removable_blocks(tv) == [f"encoder.layers.encoder_layer_{i}" for i in range(12)]
    form = block_forms(tv, (3, 32, 32))["encoder.layers.encoder_layer_11"]
    assert form.input_shape == form.output_shape == (1, 5, 768) and form.residual
    resnet = build_model("resnet20")
    assert layer_blocks(resnet) == residual_blocks(resnet) and transformer_blocks(resnet) == []


def test_a_swin_stage_gives_way_to_its_blocks():
    """A timm Swin stage has a ``downsample`` (a residual block by name); its transformer blocks are the units."""
    swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=64, window_size=2,
                             num_classes=4, depths=(2, 2, 2, 2), embed_dim=16, num_heads=(1, 1, 2, 2)).eval()
    assert residual_blocks(swin) == [f"layers.{i}" for i in range(4)]
    assert layer_blocks(swin) == [f"layers.{i}.blocks.{j}" for i in range(4) for j in range(2)]
    slim = remove_blocks(swin, ["layers.2.blocks.1"], input_shape=(3, 64, 64))
    stage = swin.layers[2]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        t = swin.patch_embed(x)
        for i, layer in enumerate(swin.layers):
            t = layer.downsample(t)
            for j, block in enumerate(layer.blocks):
                t = t if (layer is stage and j == 1) else block(t)
        expected = swin.forward_head(swin.norm(t))
        assert torch.allclose(slim(x), expected, atol=1e-5)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("skip", [(0,), (2,), (1, 2)])
def test_removal_is_the_forward_that_skips_the_block(name, skip):
    build, shape, skipping, pattern = MODELS[name]
    model = build()
    names = [pattern.format(i) for i in skip]
    slim = remove_blocks(model, names, input_shape=shape)
    assert all(isinstance(slim.get_submodule(n), nn.Identity) for n in names)
    x = torch.randn(3, *shape)
    with torch.no_grad():
        pruned, by_hand, full = slim(x), skipping(model, x, set(skip)), model(x)
        assert torch.allclose(skipping(model, x, set()), full, atol=1e-5)  # the hand-written forward is the model's
    assert torch.allclose(pruned, by_hand, atol=1e-5)
    assert not torch.allclose(pruned, full, atol=1e-3)  # the block did something
    if name != "tv_small":  # a bare torchvision model carries no recipe
        assert slim.neurotomy_meta.recipe[-len(skip):] == [{"op": "remove_block", "layer": n} for n in names]


@pytest.mark.parametrize("name", list(MODELS))
def test_macs_drop_by_the_blocks_own(name):
    build, shape, _, pattern = MODELS[name]
    model = build()
    block = pattern.format(1)
    tokens = block_forms(model, shape, [block])[block].input_shape[1:]
    own = flop_counter_macs(model.get_submodule(block), tokens)  # the block alone, on its token input
    macs0, params0 = count_macs_params(model, shape)
    macs1, params1 = count_macs_params(remove_blocks(model, [block], input_shape=shape), shape)
    assert own > 0 and macs0 - macs1 == own
    assert params0 - params1 == sum(p.numel() for p in model.get_submodule(block).parameters())


@pytest.mark.parametrize("name", ["vit_tiny", "deit"])
def test_checkpoint_reload_rebuilds_the_pruned_model(name, tmp_path):
    build, shape, _, pattern = MODELS[name]
    model = build()
    slim = remove_blocks(model, [pattern.format(3), pattern.format(1)])  # the shape comes from the model
    loaded = load_model(save_checkpoint(slim, tmp_path / "slim.safetensors"))
    assert isinstance(loaded.get_submodule(pattern.format(3)), nn.Identity)
    assert layer_blocks(loaded) == [b for b in layer_blocks(model) if b not in (pattern.format(1), pattern.format(3))]
    x = torch.randn(2, *shape)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), slim(x))


class PostNormBlock(nn.Module):
    """The original Transformer's layout: norm(x + attn(x)), then norm(x + mlp(x))."""

    def __init__(self, dim, drop_token=False):
        super().__init__()
        self.attn, self.norm1, self.mlp, self.norm2 = Attention(dim, 2), nn.LayerNorm(dim), Mlp(dim, 2 * dim), \
            nn.LayerNorm(dim)
        self.drop_token = drop_token

    def forward(self, x):
        if self.drop_token:  # pre-norm, but one token fewer out than in
            x = x + self.attn(self.norm1(x))
            return (x + self.mlp(self.norm2(x)))[:, 1:]
        x = self.norm1(x + self.attn(x))
        return self.norm2(x + self.mlp(x))


class TokenNet(nn.Module):
    def __init__(self, drop_token=False):
        super().__init__()
        self.embed = nn.Conv2d(1, 8, 4, stride=4)
        self.blocks = nn.Sequential(PostNormBlock(8, drop_token), PostNormBlock(8, drop_token))
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.blocks(self.embed(x).flatten(2).transpose(1, 2)).mean(1))


def test_post_norm_and_shape_changing_blocks_are_refused_by_name():
    assert transformer_blocks(TokenNet()) == ["blocks.0", "blocks.1"]
    with pytest.raises(PruningError, match=r"'blocks.1' is post-norm"):
        remove_blocks(TokenNet(), ["blocks.1"], input_shape=(1, 12, 12))
    with pytest.raises(PruningError, match=r"'blocks.0' changes the token stream's shape \[1, 9, 8\] → \[1, 8, 8\]"):
        remove_blocks(TokenNet(drop_token=True), ["blocks.0"], input_shape=(1, 12, 12))
    with pytest.raises(PruningError, match="without an input shape"):
        remove_blocks(tv_small(), ["encoder.layers.encoder_layer_0"])
    assert not any(f.residual for f in block_forms(TokenNet(), (1, 12, 12)).values())
    net = TokenNet()
    net.neurotomy_meta = ModelMeta("token_net", {"in_channels": 1, "input_size": 12})  # an input shape to measure at
    assert layer_blocks(net) == ["blocks.0", "blocks.1"] and removable_blocks(net) == []  # no rule picks them
    assert all(f.residual for f in block_forms(tiny_vit(), (1, 8, 8)).values())


def test_rules_choose_transformer_blocks_from_token_features():
    """The modularity rule reads the class token of each block (the curve dissect draws) and the cka
    rule each block's token map; both hand back removable blocks, and the removal runs."""
    torch.manual_seed(0)
    model = build_model("vit_tiny", 1, 10, 28, patch=7, dim=16, depth=4, num_heads=2, mlp_hidden=24).eval()
    data = load_dataset("fashion-mnist", split="test")
    chosen, basis = choose_blocks(model, "modularity", data, count=2, per_class=10)
    assert len(chosen) == 2 and set(chosen) <= set(removable_blocks(model))
    assert basis["curve"]["layers"][:4] == [f"blocks.{i}:cls" for i in range(4)]
    deltas = dict(zip(basis["curve"]["layers"], [basis["curve"]["q"][0]] + [
        b - a for a, b in zip(basis["curve"]["q"], basis["curve"]["q"][1:])]))
    ranked = sorted(reversed(range(4)), key=lambda i: deltas[f"blocks.{i}:cls"])[:2]  # smallest ΔQ, tail first
    assert sorted(chosen) == sorted(f"blocks.{i}" for i in ranked)
    chosen, basis = choose_blocks(model, "cka", data, count=1, per_class=5)
    assert 0 < max(basis["cka"].values()) <= 1 + 1e-9
    slim = remove_blocks(model, chosen, data)
    assert isinstance(slim.get_submodule(chosen[0]), nn.Identity)
