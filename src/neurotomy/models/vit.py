"""A small Vision Transformer (Dosovitskiy et al., ICLR 2021) for small images, pre-norm, GELU MLP.

Built so that every unit a transformer has can be seen and cut:

* **heads**: :class:`Attention` keeps ``num_heads`` and derives the head width from ``qkv`` at each
  call, so a model whose ``qkv``/``proj`` lost whole heads (and whose ``num_heads`` was lowered) runs
  unchanged; the per-head context passes through ``head_gate`` (an identity module) with shape
  ``(batch, heads, tokens, head_dim)``, where a hook can mask or weigh heads (Michel et al. 2019);
* **attention maps**: the softmax probabilities pass through ``attn_probe`` (identity), shape
  ``(batch, heads, tokens, tokens)``, for attention rollout (Abnar & Zuidema 2020); when no gradient
  is recorded and no hook watches ``attn_probe`` or ``head_gate``, :meth:`Attention.fused` lets the
  call take PyTorch's fused attention instead, which never forms them;
* **MLP neurons**: ``mlp.fc1`` → ``mlp.act`` (GELU module, hookable) → ``mlp.fc2``;
* **embedding channels**: the residual stream, coupled through every block's LayerNorms.

Example:
    >>> ViTTiny(1, 10, 28)(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as _module

from neurotomy.models.registry import register_model


def _global_hooks() -> bool:
    """Whether a hook registered for every module (``register_module_forward_hook``) is live."""
    return bool(getattr(_module, "_global_forward_hooks", None) or getattr(_module, "_global_forward_pre_hooks", None))


class Attention(nn.Module):
    """Multi-head self-attention whose head width follows ``qkv.out_features // (3 · num_heads)``."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn_probe = nn.Identity()
        self.head_gate = nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        head_dim = self.qkv.out_features // (3 * self.num_heads)
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # unbind: torch-pruning maps a head's proj columns to its q, k and v rows
        if self.fused():
            context = F.scaled_dot_product_attention(q, k, v)  # the same scale, 1/√head_dim
        else:
            attn = self.attn_probe((q @ k.transpose(-2, -1) * head_dim ** -0.5).softmax(-1))
            context = self.head_gate(attn @ v)  # (batch, heads, tokens, head_dim)
        return self.proj(context.transpose(1, 2).reshape(batch, tokens, self.num_heads * head_dim))

    def fused(self) -> bool:
        """Whether this call may take PyTorch's fused attention (one kernel, where the explicit path
        copies, scales and soft-maxes the attention matrix apart: alone in a fresh process, a batch of
        64 through the zoo ViT took 72–73 ms on one CPU thread instead of 82–91 ms; benchmarks/results/
        vit.json and its timing_history). Only when nothing can miss what it skips: no gradient recorded
        (torch-pruning traces the autograd graph, attributions differentiate the probabilities), and
        ``attn_probe`` and ``head_gate`` plain identities that no hook (theirs or a global one) watches.

        Example:
            >>> attention = Attention(8, 2).eval()
            >>> with torch.no_grad():
            ...     fused = attention.fused()
            >>> fused, attention.fused()  # gradients recorded: the explicit path
            (True, False)
        """
        if torch.is_grad_enabled():
            return False
        if _global_hooks():
            return False
        return all(type(m) is nn.Identity and not (m._forward_hooks or m._forward_pre_hooks)
                   for m in (self.attn_probe, self.head_gate))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """A ViT on ``input_size``² images cut into ``patch``² patches, plus a class token.

    ``patch_grid`` (rows, columns) is what Grad-CAM-style methods need to fold tokens back into a map;
    ``prefix_tokens`` is how many non-patch tokens lead the sequence (the class token).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, input_size: int = 28, patch: int = 4,
                 dim: int = 128, depth: int = 6, num_heads: int = 4, mlp_hidden: int = 256) -> None:
        super().__init__()
        if input_size % patch:
            raise ValueError(f"input size {input_size} is not a multiple of the patch size {patch}")
        side = input_size // patch
        self.patch_grid = (side, side)
        self.prefix_tokens = 1
        self.patch_embed = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, side * side + self.prefix_tokens, dim) * 0.02)
        self.blocks = nn.Sequential(*(Block(dim, num_heads, mlp_hidden) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.apply(_init_weights)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The normalised token sequence after the last block, ``(batch, tokens, dim)``."""
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.norm(self.blocks(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.tokens(x)[:, 0])


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


@register_model("vit_tiny")
def ViTTiny(in_channels: int = 1, num_classes: int = 10, input_size: int = 28, **kwargs) -> VisionTransformer:
    """ViT-tiny for 28×28 images: patch 4 (49 tokens + class token), width 128, 6 blocks, 4 heads,
    MLP 256. Keyword arguments (``patch``, ``dim``, ``depth``, ``num_heads``, ``mlp_hidden``)
    override these.

    Example:
        >>> ViTTiny(1, 10, 28).patch_grid
        (7, 7)
    """
    return VisionTransformer(in_channels, num_classes, input_size, **kwargs)
