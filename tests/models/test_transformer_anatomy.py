"""Finding heads, MLP neurons and the token grid in ours, timm's and torchvision's transformers."""

import pytest
import torch
from torch import nn

from neurotomy.errors import ModelError
from neurotomy.models import build_model
from neurotomy.models.transformer import attention_sites, is_transformer, mlp_sites, token_layout

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")


def test_vit_tiny_units_match_its_configuration():
    vit = build_model("vit_tiny", 1, 10, 28, depth=3, num_heads=2, dim=32, mlp_hidden=48)
    sites = attention_sites(vit)
    assert [s.name for s in sites] == ["blocks.0.attn", "blocks.1.attn", "blocks.2.attn"]
    assert {(s.num_heads, s.head_dim) for s in sites} == {(2, 16)}
    assert sites[0].proj is vit.blocks[0].attn.proj
    assert [m.hidden for m in mlp_sites(vit)] == [48, 48, 48]
    assert token_layout(vit, (1, 28, 28)) == ((7, 7), 1)


def test_timm_and_torchvision_layouts_agree_with_their_token_counts():
    deit = timm.create_model("deit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=10)
    tv = torchvision.models.vit_b_16(image_size=32, num_classes=10)
    for model, heads in ((deit, 3), (tv, 12)):
        layout = token_layout(model, (3, 32, 32))
        assert layout == ((2, 2), 1)
        assert {s.num_heads for s in attention_sites(model)} == {heads}
        assert len(mlp_sites(model)) == len(attention_sites(model)) == 12
    assert attention_sites(tv)[0].kind == "mha"
    assert attention_sites(tv)[0].proj is tv.encoder.layers[0].self_attention.out_proj


def test_measured_layout_without_attributes():
    """A model that declares nothing: the grid comes from the patch conv, prefix tokens from a forward."""

    class Bare(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Conv2d(1, 8, 4, stride=4)
            self.tokens = nn.Parameter(torch.zeros(1, 2, 8))
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x):
            t = self.embed(x).flatten(2).transpose(1, 2)
            t = torch.cat([self.tokens.expand(len(t), -1, -1), t], 1)
            return self.attn(t, t, t)[0][:, 0]

    assert token_layout(Bare(), (1, 12, 8)) == ((3, 2), 2)


def test_cnns_have_no_transformer_units():
    cnn = build_model("resnet20")
    assert not is_transformer(cnn) and mlp_sites(cnn) == []
    with pytest.raises(ModelError, match="patch-embedding"):
        token_layout(cnn, (1, 28, 28))
