"""Attention with a relative position bias, headwise: the per-head table beyond ``qkv``/``proj`` that a
head cut must slice, a forward that reads the heads' width from the module, and the forms whose heads
cannot be cut at all.

timm's Swin (``WindowAttention``) and torchvision's MaxViT add a learned bias to each head's logits,
looked up in ``relative_position_bias_table`` (shape (positions, heads): the head axis last) through
the ``relative_position_index`` buffer (positions only, no head axis). :data:`PER_HEAD` names that
table and its head axis; :func:`slice_per_head` keeps the given heads' entries. timm's forward
reshapes the heads' context with ``-1`` and runs the sliced weights as it is.

MaxViT's attention writes its context back at the width of its *input*, so it only runs while the
heads fill the model width: :func:`explicit_head_width` swaps its class for
:class:`HeadwiseRelativePositionalMultiHeadAttention`, whose forward (``forward`` only: parameters,
buffers and state-dict keys stay) writes ``n_heads · head_dim`` channels. A user's subclass that
keeps torchvision's forward gets the same forward (a subclass of both, made once per class, so its
other methods stay); one that overrides ``forward`` is refused, as nothing says its forward reads
the heads' width from ``head_dim``.

torchvision's Swin (``ShiftedWindowAttention``, V1 and V2) computes each head's width from the model
width inside a module-level function; :func:`cut_refusal` says so, and its heads stay.

Example:
    >>> from torchvision.models.maxvit import RelativePositionalMultiHeadAttention
    >>> attn = RelativePositionalMultiHeadAttention(16, 8, 4)
    >>> slice_per_head(attn, [1], 2)
    >>> explicit_head_width(attn)
    >>> tuple(attn.relative_position_bias_table.shape), type(attn).__name__
    ((9, 1), 'HeadwiseRelativePositionalMultiHeadAttention')
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.maxvit import RelativePositionalMultiHeadAttention
from torchvision.models.swin_transformer import ShiftedWindowAttention, ShiftedWindowAttentionV2

# parameter name → the axis of its heads: what a head cut slices besides the q/k/v rows and proj columns
PER_HEAD = {"relative_position_bias_table": -1}

_TORCHVISION_SWIN = ("torchvision's Swin attention derives each head's width from the model width, so its heads "
                     "cannot be cut; cut its MLP neurons or filters, or use timm's swin_* models, whose heads can "
                     "be cut")


def cut_refusal(module: nn.Module) -> str | None:
    """Why no slicing can remove heads of ``module``'s form (torchvision's Swin, V1 and V2; a subclass
    of MaxViT's attention with a forward of its own), or None.

    Example:
        >>> cut_refusal(ShiftedWindowAttention(8, [2, 2], [0, 0], 2)).startswith("torchvision's Swin")
        True
        >>> cut_refusal(RelativePositionalMultiHeadAttention(16, 8, 4)) is None
        True
    """
    if isinstance(module, (ShiftedWindowAttention, ShiftedWindowAttentionV2)):
        return _TORCHVISION_SWIN
    if isinstance(module, RelativePositionalMultiHeadAttention) and type(module).forward not in _HEADWISE_SAFE:
        return (f"its class {type(module).__name__} overrides the forward of torchvision's MaxViT attention, which "
                "may take the heads' width from the model width, so its heads cannot be cut; cut its MLP neurons, "
                "or leave forward to torchvision's class")
    return None


def per_head_parameters(module: nn.Module, heads: int) -> set[str]:
    """Names of ``module``'s own parameters that :func:`slice_per_head` slices (their head axis holds
    ``heads`` entries): the relative position bias table.

    Example:
        >>> per_head_parameters(RelativePositionalMultiHeadAttention(16, 8, 4), 2)
        {'relative_position_bias_table'}
    """
    return {name for name, p in module.named_parameters(recurse=False)
            if name in PER_HEAD and p.ndim >= 1 and p.shape[PER_HEAD[name]] == heads}


def per_head_numel(module: nn.Module, heads: int) -> int:
    """How many parameters one head holds in :func:`per_head_parameters` (what a head cut removes
    beyond the ``qkv`` rows and ``proj`` columns).

    Example:
        >>> per_head_numel(RelativePositionalMultiHeadAttention(16, 8, 4), 2)  # a 9-entry table column
        9
    """
    return sum(getattr(module, name).numel() // heads for name in per_head_parameters(module, heads))


@torch.no_grad()
def slice_per_head(module: nn.Module, keep: list[int], heads: int) -> None:
    """Keep only heads ``keep`` (of ``heads``) in each of :func:`per_head_parameters`, in place."""
    for name in per_head_parameters(module, heads):
        param = getattr(module, name)
        index = torch.tensor(keep, device=param.device)
        setattr(module, name, nn.Parameter(param.index_select(PER_HEAD[name] % param.ndim, index),
                                           requires_grad=param.requires_grad))


class HeadwiseRelativePositionalMultiHeadAttention(RelativePositionalMultiHeadAttention):
    """torchvision's MaxViT attention whose context is ``n_heads · head_dim`` wide, not the input's width."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (batch, windows, positions, channels); to_qkv packs q | k | v, head by head within each
        q, k, v = self.to_qkv(x).unflatten(-1, (3, self.n_heads, self.head_dim)).permute(3, 0, 1, 4, 2, 5)
        # MaxViT scales by the model width fixed at construction (scale_factor), not by head_dim
        logits = (q * self.scale_factor) @ k.transpose(-2, -1) + self.get_relative_positional_bias()
        context = logits.softmax(-1) @ v  # (batch, windows, heads, positions, head_dim)
        return self.merge(context.transpose(-3, -2).flatten(-2))


# the forwards a head cut can run: torchvision's own (explicit_head_width swaps it for ours) and ours
_TORCHVISION_FORWARD = RelativePositionalMultiHeadAttention.forward
_HEADWISE_SAFE = (_TORCHVISION_FORWARD, HeadwiseRelativePositionalMultiHeadAttention.forward)
# class → its headwise subclass; a user's subclass gets one made once, so every cut module of it shares one class
HEADWISE: dict[type, type] = {RelativePositionalMultiHeadAttention: HeadwiseRelativePositionalMultiHeadAttention}


def explicit_head_width(module: nn.Module) -> None:
    """Give a torchvision MaxViT attention ``module`` (or a subclass keeping its forward) the forward
    that writes ``n_heads · head_dim`` channels, in place; other modules, and ones already headwise,
    are left as they are."""
    cls = type(module)
    if not isinstance(module, RelativePositionalMultiHeadAttention) or cls.forward is not _TORCHVISION_FORWARD:
        return
    if cls not in HEADWISE:  # a user's subclass: its methods first, then the headwise forward
        HEADWISE[cls] = type(f"Headwise{cls.__name__}", (cls, HeadwiseRelativePositionalMultiHeadAttention),
                             {"__module__": cls.__module__, "__doc__": cls.__doc__})
    module.__class__ = HEADWISE[cls]
