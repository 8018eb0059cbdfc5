"""Small Vision Transformers for the explanation tests: neurotomy's ``vit_tiny`` with weights drawn
so that attention is far from uniform (a freshly initialised ViT attends almost evenly, which would
make every rollout map flat and every cross-check weak), and tiny timm / torchvision ViTs."""

from __future__ import annotations

import torch
from torch import nn

from neurotomy.models import build_model


def _sharpen(model: nn.Module, seed: int) -> nn.Module:
    """Linear weights with unit-variance outputs and non-zero biases; larger q/k weights for peaky
    attention; position embeddings that tell tokens apart. Eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear):
                gain = 2.0 if name.endswith("qkv") else 1.0
                nn.init.normal_(module.weight, std=gain * module.in_features ** -0.5)
                if module.bias is not None:
                    nn.init.normal_(module.bias, std=0.1)
            elif isinstance(module, nn.MultiheadAttention):
                nn.init.normal_(module.in_proj_weight, std=2.0 * module.embed_dim ** -0.5)
                nn.init.normal_(module.in_proj_bias, std=0.1)
        for name, param in model.named_parameters():
            if "pos_embed" in name or "pos_embedding" in name:
                nn.init.normal_(param, std=1.0)
    return model.eval()


def tiny_vit(depth: int = 3, seed: int = 0) -> nn.Module:
    """vit_tiny on 28×28, 7×7 patches + class token, width 32, 4 heads of 8, MLP 48."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vit = build_model("vit_tiny", 1, 10, 28, depth=depth, dim=32, num_heads=4, mlp_hidden=48)
    return _sharpen(vit, seed)


def tiny_timm_vit(seed: int = 0) -> nn.Module:
    """timm's VisionTransformer (fused attention, as shipped) on 32×32: patch 8 → 4×4 grid, width 24, 3 heads,
    LayerNorm on each head's q and k (``qk_norm``)."""
    import timm.models.vision_transformer as timm_vit

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = timm_vit.VisionTransformer(img_size=32, patch_size=8, embed_dim=24, depth=2, num_heads=3,
                                           mlp_ratio=2.0, num_classes=10, qkv_bias=True,
                                           qk_norm=True)
    return _sharpen(model, seed)


def tiny_torchvision_vit(seed: int = 0) -> nn.Module:
    """torchvision's VisionTransformer (nn.MultiheadAttention) on 32×32: patch 8 → 4×4 grid, width 16,
    2 heads; its zero-initialised head is redrawn so that gradients are not all zero."""
    from torchvision.models.vision_transformer import VisionTransformer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16,
                                  mlp_dim=32, num_classes=10)
    return _sharpen(model, seed)


def images(n: int, shape: tuple[int, ...], seed: int = 1) -> torch.Tensor:
    """``n`` standard-normal images of ``shape``, drawn from ``seed``."""
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))
