"""The ViT's fused attention path (``Attention.fused``): the same outputs as the explicit one, and never
taken where something watches or differentiates the attention it skips."""

import torch
from torch import nn

from neurotomy.data import load_dataset
from neurotomy.loading import load_model
from neurotomy.models.vit import Attention, ViTTiny


def explicit_and_fused(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.enable_grad():
        explicit = model(x).detach()
    with torch.no_grad():
        fused = model(x)
    return explicit, fused


def test_fused_attention_gives_the_zoo_vits_outputs():
    model = load_model("zoo:vit-tiny-fmnist").eval()
    data = load_dataset("fashion-mnist", split="test")
    x = torch.stack([data[i][0] for i in range(0, len(data), len(data) // 64)][:64])
    explicit, fused = explicit_and_fused(model, x)
    torch.testing.assert_close(fused, explicit, atol=1e-4, rtol=1e-4)
    assert torch.equal(fused.argmax(1), explicit.argmax(1))


def test_fused_attention_after_heads_are_cut():
    """A block that lost one of its 3 heads of width 8: qkv 24 → 48, proj 16 → 24, num_heads 2."""
    torch.manual_seed(0)
    model = ViTTiny(1, 10, 8, patch=2, dim=24, depth=2, num_heads=3, mlp_hidden=16).eval()
    for block in model.blocks:
        block.attn.qkv, block.attn.proj, block.attn.num_heads = nn.Linear(24, 48), nn.Linear(16, 24), 2
    explicit, fused = explicit_and_fused(model, torch.randn(5, 1, 8, 8))
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)


def test_a_hook_or_a_replaced_probe_keeps_the_explicit_path():
    attention = Attention(8, 2).eval()
    x = torch.randn(2, 5, 8)
    seen = []
    handle = attention.attn_probe.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.no_grad():
        assert not attention.fused()
        attention(x)
    handle.remove()
    assert seen == [torch.Size([2, 2, 5, 5])]
    with torch.no_grad():
        assert attention.fused()
        handle = nn.modules.module.register_module_forward_hook(lambda m, i, o: None)
        try:
            assert not attention.fused()
        finally:
            handle.remove()
        attention.head_gate = nn.Dropout(0.0)
        assert not attention.fused()
