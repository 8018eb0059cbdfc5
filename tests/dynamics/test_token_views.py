"""A transformer's block outputs seen as one vector per image: the class token or the patch mean."""

import torch

from neurotomy.data import load_dataset
from neurotomy.dynamics.features import default_layers, split_view, stream_features
from neurotomy.dynamics.modularity import ModularityCurve
from neurotomy.models import build_model


def _tokens_after(vit, x, blocks):
    """The residual stream after ``blocks`` blocks, computed by hand from the model's parts."""
    t = vit.patch_embed(x).flatten(2).transpose(1, 2)
    t = torch.cat([vit.cls_token.expand(len(t), -1, -1), t], 1) + vit.pos_embed
    for block in vit.blocks[:blocks]:
        t = block(t)
    return t


def test_views_equal_a_hand_computation():
    torch.manual_seed(0)
    vit = build_model("vit_tiny", 1, 10, 8, patch=2, depth=3, dim=16, num_heads=2, mlp_hidden=24).eval()
    data = load_dataset("digits", split="test")
    feats, labels = next(stream_features(vit, data, ["blocks.1:cls", "blocks.1:patches", "head:input"],
                                         batch_size=16))
    x = torch.stack([data[i][0] for i in range(16)])
    with torch.no_grad():
        stream = _tokens_after(vit, x, 2)
        torch.testing.assert_close(feats["blocks.1:cls"], stream[:, 0])
        torch.testing.assert_close(feats["blocks.1:patches"], stream[:, 1:].mean(1))
        torch.testing.assert_close(feats["head:input"], vit.norm(vit.blocks[2](stream))[:, 0])
    assert len(labels) == 16


def test_default_layers_and_redundant_blocks_of_a_transformer():
    vit = build_model("vit_tiny", 1, 10, 8, patch=2, depth=3)
    assert default_layers(vit) == ["blocks.0:cls", "blocks.1:cls", "blocks.2:cls", "head:input"]
    assert default_layers(vit, ":patches")[0] == "blocks.0:patches"
    assert split_view("blocks.0:patches") == ("blocks.0", ":patches")
    curve = ModularityCurve(["blocks.0:cls", "blocks.1:cls", "blocks.2:cls", "head:input"],
                            [0.2, 0.5, 0.51, 0.6], 3, 100, None, 0.0)
    # ΔQ: blocks.1 +0.3, blocks.2 +0.01 (< 0.25 × mean rise 0.133): only blocks.2 is redundant
    assert curve.redundant(["blocks.0", "blocks.1", "blocks.2"]) == ["blocks.2"]
    assert curve.redundant(["blocks.1", "blocks.2"], count=2) == ["blocks.2", "blocks.1"]


class DictBlocksViT(torch.nn.Module):
    """Blocks kept in nn.ModuleDicts and run by the parent's forward: no block is ever called."""

    def __init__(self, dim=8, classes=10):
        super().__init__()
        nn = torch.nn
        self.patch = nn.Conv2d(1, dim, 2, stride=2)
        self.blocks = nn.ModuleList(nn.ModuleDict(dict(
            n1=nn.LayerNorm(dim), attn=nn.MultiheadAttention(dim, 2, batch_first=True), n2=nn.LayerNorm(dim),
            mlp=nn.Sequential(nn.Linear(dim, 16), nn.GELU(), nn.Linear(16, dim)))) for _ in range(2))
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        for b in self.blocks:
            h = b["n1"](x)
            x = x + b["attn"](h, h, h, need_weights=False)[0]
            x = x + b["mlp"](b["n2"](x))
        return self.head(x.mean(1))


def test_blocks_never_called_are_not_probed_and_asking_for_one_is_one_line():
    import pytest
    from neurotomy.errors import ModelError

    model, data = DictBlocksViT().eval(), load_dataset("digits", split="test")
    layers = default_layers(model)
    assert not any(layer.startswith("blocks.") for layer in layers) and layers[-1] == "head:input"
    feats, _ = next(stream_features(model, data, layers, batch_size=4))
    assert feats["head:input"].shape == (4, 8)
    with pytest.raises(ModelError, match="blocks.0:cls never runs as a module"):
        next(stream_features(model, data, ["blocks.0:cls"], batch_size=4))
