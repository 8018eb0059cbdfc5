"""Attention heads as units: remove whole heads from an attention layer, and unpack
``nn.MultiheadAttention`` so that its heads can go.

A head is ``head_dim`` rows of each of q, k and v in the input projection and the same columns of the
output projection (and, with a relative position bias, its column of the bias table); the module
keeps ``num_heads``. :func:`remove_heads` slices them and lowers
``num_heads`` (and timm's ``attn_dim``) itself rather than through torch-pruning: torch-pruning
follows heads only through ``unbind`` (where q, k, v are taken by indexing, as neurotomy's
``vit_tiny`` does, it couples a head's ``proj`` columns with one third of its ``qkv`` rows), and an
``nn.MultiheadAttention`` ties the heads' width to the model width (its packed projection must be
``embed_dim`` wide). So torchvision's ViT gets its ``nn.MultiheadAttention`` replaced by
:class:`MultiheadSelfAttention` — the same arithmetic, with a ``qkv``/``proj`` pair whose width can
shrink — before its heads or its embedding channels are cut (recipe step ``unpack_attention``).

Example:
    >>> from neurotomy.models import build_model
    >>> vit = build_model("vit_tiny", 1, 4, 8, patch=2, dim=16, depth=1, num_heads=4, mlp_hidden=24)
    >>> remove_heads(vit, "blocks.0.attn", [1])
    >>> vit.blocks[0].attn.num_heads, vit(torch.zeros(1, 1, 8, 8)).shape
    (3, torch.Size([1, 4]))
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from neurotomy.errors import CheckpointError, PruningError
from neurotomy.models.anatomy import set_submodule
from neurotomy.models.transformer import AttentionSite, attention_sites
from neurotomy.surgery.copies import sharing_copy
from neurotomy.surgery.recipe import RECIPE_OPS, Replay
from neurotomy.surgery.relative_attention import cut_refusal, explicit_head_width, per_head_parameters, slice_per_head


class MultiheadSelfAttention(nn.Module):
    """``nn.MultiheadAttention`` for self-attention, with a ``qkv`` linear (q, k, v stacked, head by
    head) and a ``proj`` linear, so heads can leave without changing the model width
    (``embed_dim``). Same call and result as ``nn.MultiheadAttention(query, key, value, ...)`` with
    ``key`` and ``value`` the query itself; attention masks may be boolean or additive, 2-D.

    Example:
        >>> mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
        >>> x = torch.randn(1, 3, 8)
        >>> bool(torch.allclose(MultiheadSelfAttention.from_mha(mha)(x, x, x)[0], mha(x, x, x)[0], atol=1e-6))
        True
    """

    def __init__(self, embed_dim: int, num_heads: int, head_dim: int, *, bias: bool = True, out_bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, head_dim
        self.batch_first, self.dropout = batch_first, dropout
        self.qkv = nn.Linear(embed_dim, 3 * num_heads * head_dim, bias=bias)
        self.proj = nn.Linear(num_heads * head_dim, embed_dim, bias=out_bias)

    @classmethod
    @torch.no_grad()
    def from_mha(cls, mha: nn.MultiheadAttention) -> "MultiheadSelfAttention":
        if not mha._qkv_same_embed_dim or mha.bias_k is not None or mha.add_zero_attn:
            raise PruningError("this nn.MultiheadAttention has separate key/value widths, key/value biases or zero "
                               "attention; its heads cannot be unpacked")
        with torch.device("meta"):  # no random initialisation: every weight is copied below
            new = cls(mha.embed_dim, mha.num_heads, mha.head_dim, bias=mha.in_proj_bias is not None,
                      out_bias=mha.out_proj.bias is not None, batch_first=mha.batch_first, dropout=mha.dropout)
        new = new.to_empty(device=mha.in_proj_weight.device).to(mha.in_proj_weight.dtype)
        new.qkv.weight.copy_(mha.in_proj_weight)
        new.proj.weight.copy_(mha.out_proj.weight)
        if mha.in_proj_bias is not None:
            new.qkv.bias.copy_(mha.in_proj_bias)
        if mha.out_proj.bias is not None:
            new.proj.bias.copy_(mha.out_proj.bias)
        return new.train(mha.training)

    def forward(self, query: torch.Tensor, key: torch.Tensor | None = None, value: torch.Tensor | None = None,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        if (key is not None and key is not query) or (value is not None and value is not query):
            raise PruningError("MultiheadSelfAttention computes self-attention only (key and value must be the query)")
        x = query if self.batch_first else query.transpose(0, 1)
        batch, tokens, _ = x.shape
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        logits = (q * self.head_dim ** -0.5) @ k.transpose(-2, -1)
        mask = _additive_mask(attn_mask, key_padding_mask, is_causal, tokens, logits.dtype, logits.device)
        if mask is not None:
            logits = logits + mask
        weights = logits.softmax(-1)
        attn = F.dropout(weights, self.dropout) if self.training and self.dropout > 0 else weights
        out = self.proj((attn @ v).transpose(1, 2).reshape(batch, tokens, self.num_heads * self.head_dim))
        out = out if self.batch_first else out.transpose(0, 1)
        if not need_weights:
            return out, None
        return out, (weights.mean(1) if average_attn_weights else weights)


def _additive_mask(attn_mask, key_padding_mask, is_causal, tokens, dtype, device) -> torch.Tensor | None:
    """One additive mask of shape broadcastable to (batch, heads, tokens, tokens): boolean masks
    (True = may not attend) become −∞, float masks are added as given."""
    def additive(mask: torch.Tensor) -> torch.Tensor:
        if mask.dtype == torch.bool:
            return torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill(mask, float("-inf"))
        return mask.to(dtype)

    total = None
    if attn_mask is None and is_causal:
        attn_mask = torch.ones(tokens, tokens, dtype=torch.bool, device=device).triu(1)
    if attn_mask is not None:
        if attn_mask.dim() != 2:
            raise PruningError("MultiheadSelfAttention takes a 2-D attention mask (tokens × tokens) only")
        total = additive(attn_mask)
    if key_padding_mask is not None:
        padding = additive(key_padding_mask)[:, None, None, :]
        total = padding if total is None else total + padding
    return total


def unpack_attention(model: nn.Module, layer: str) -> MultiheadSelfAttention:
    """Replace the ``nn.MultiheadAttention`` called ``layer`` by an equivalent
    :class:`MultiheadSelfAttention`, in place."""
    module = model.get_submodule(layer)
    if not isinstance(module, nn.MultiheadAttention):
        raise PruningError(f"layer {layer!r} is a {type(module).__name__}, not an nn.MultiheadAttention")
    try:
        new = MultiheadSelfAttention.from_mha(module)
    except PruningError as exc:
        raise PruningError(f"attention {layer}: {exc}") from None
    set_submodule(model, layer, new)
    return new


@RECIPE_OPS.register("unpack_attention")
def _replay_unpack_attention(replay: Replay, step: dict) -> None:
    unpack_attention(replay.model, step["layer"])
    replay.cache.clear()  # the module structure changed: a traced graph is stale


def head_refusal(site: AttentionSite) -> str | None:
    """Why the heads of ``site`` cannot be removed by slicing its input/output projections and the
    per-head tensors whose head axis is known (:mod:`neurotomy.surgery.relative_attention`: timm's
    Swin and MaxViT's relative position bias table), or None: the module's form derives the heads'
    width from the model width (torchvision's Swin), or it holds other per-head parameters (BEiT's
    q/v biases, Swin V2's logit scale, a normalisation over the heads' channels), which this cut
    would leave at the old size."""
    if site.kind == "mha":
        module = site.module
        if not module._qkv_same_embed_dim or module.bias_k is not None or module.add_zero_attn:
            return "nn.MultiheadAttention with separate key/value widths, key/value biases or zero attention"
        return None
    refusal = cut_refusal(site.module)
    if refusal is not None:
        return refusal
    width = site.num_heads * site.head_dim
    sliced = per_head_parameters(site.module, site.num_heads)
    for name, param in site.module.named_parameters(recurse=False):
        if name not in sliced and (site.num_heads in param.shape or width in param.shape):
            return f"its parameter {name} holds per-head values"
    for child_name, child in site.module.named_children():
        if child is site.qkv or child is site.proj:
            continue
        for param in child.parameters():  # a normalisation over one head's channels (q_norm) is shared: fine
            if width in param.shape or (site.num_heads in param.shape and tuple(param.shape) != (site.head_dim,)):
                return f"its {child_name} holds per-head values"
    return None


@torch.no_grad()
def remove_heads(model: nn.Module, layer: str, heads: Sequence[int]) -> None:
    """Remove ``heads`` of the attention module called ``layer`` (a ``qkv``/``proj`` module: ours,
    timm's, :class:`MultiheadSelfAttention`, timm's Swin, torchvision's MaxViT), in place: its q, k, v
    rows and output-projection columns go, and so do the heads' entries of its relative position
    bias (:mod:`neurotomy.surgery.relative_attention`); the head count (``num_heads``, MaxViT's
    ``n_heads``; timm's ``attn_dim``) follows, and a torchvision MaxViT attention gets a forward
    that reads the heads' width from ``head_dim`` rather than from its input's width.

    Example:
        >>> from neurotomy.models import build_model
        >>> vit = build_model("vit_tiny", 1, 4, 8, patch=2, dim=16, depth=1, num_heads=4, mlp_hidden=24)
        >>> remove_heads(vit, "blocks.0.attn", [0, 2])
        >>> vit.blocks[0].attn.num_heads, vit.blocks[0].attn.qkv.out_features, vit.blocks[0].attn.proj.in_features
        (2, 24, 8)
    """
    site = _site(model, layer)
    if site.kind != "qkv":
        raise PruningError(f"attention {layer} is an nn.MultiheadAttention; unpack it first (unpack_attention)")
    refusal = head_refusal(site)
    if refusal is not None:
        raise PruningError(f"cannot remove heads of {layer}: {refusal}; keep its heads "
                           f"(ignored_layers / --ignore {layer})")
    gone = set(int(h) for h in heads)
    keep = [h for h in range(site.num_heads) if h not in gone]
    if not keep or any(not 0 <= h < site.num_heads for h in gone):
        raise PruningError(f"attention {layer} has heads 0…{site.num_heads - 1}; cannot remove {sorted(gone)}")
    hd, width = site.head_dim, site.num_heads * site.head_dim
    channels = [h * hd + j for h in keep for j in range(hd)]
    module = site.module
    _keep_outputs(site.qkv, [part * width + c for part in range(3) for c in channels])
    _keep_inputs(site.proj, channels)
    slice_per_head(module, keep, site.num_heads)
    explicit_head_width(module)
    setattr(module, site.heads_attribute, len(keep))
    for attribute in ("attn_dim", "all_head_dim"):  # timm's width of the heads, where a forward reads it
        if getattr(module, attribute, None) == width:
            setattr(module, attribute, len(keep) * hd)


def _keep_outputs(linear: nn.Linear, rows: list[int]) -> None:
    index = torch.tensor(rows, device=linear.weight.device)
    linear.weight = nn.Parameter(linear.weight.index_select(0, index), requires_grad=linear.weight.requires_grad)
    if linear.bias is not None:
        linear.bias = nn.Parameter(linear.bias.index_select(0, index), requires_grad=linear.bias.requires_grad)
    linear.out_features = len(rows)


def _keep_inputs(linear: nn.Linear, columns: list[int]) -> None:
    index = torch.tensor(columns, device=linear.weight.device)
    linear.weight = nn.Parameter(linear.weight.index_select(1, index), requires_grad=linear.weight.requires_grad)
    linear.in_features = len(columns)


def _site(model: nn.Module, layer: str) -> AttentionSite:
    for site in attention_sites(model):
        if site.name == layer:
            return site
    raise PruningError(f"layer {layer!r} is not an attention layer of this model")


@RECIPE_OPS.register("prune_heads")
def _replay_prune_heads(replay: Replay, step: dict) -> None:
    heads = step.get("heads")
    if not isinstance(heads, list) or not all(isinstance(h, int) and not isinstance(h, bool) for h in heads) \
            or len(set(heads)) != len(heads):
        raise CheckpointError(f"surgery recipe: the heads removed from {step['layer']!r} are not distinct integers; "
                              "the checkpoint is corrupt")
    try:
        remove_heads(replay.model, step["layer"], heads)
    except PruningError as exc:
        raise CheckpointError(f"surgery recipe: {exc}; the checkpoint is corrupt") from None
    replay.cache.clear()


def unpacked(model: nn.Module, share_weights: bool = False) -> tuple[nn.Module, list[dict]]:
    """A deep copy of ``model`` with every ``nn.MultiheadAttention`` replaced by a
    :class:`MultiheadSelfAttention` (same outputs), and the recipe steps that did it.

    ``share_weights=True``: the copy holds ``model``'s own parameter and buffer tensors (only the
    unpacked attentions get new ones), one model's memory less (341 MB for ViT-B): plan on it or cut
    it (a cut makes new tensors), never train it or change its tensors in place
    (:func:`~neurotomy.surgery.copies.sharing_copy`).

    >>> work, steps = unpacked(nn.Sequential(nn.MultiheadAttention(8, 2)), share_weights=True)
    >>> steps
    [{'op': 'unpack_attention', 'layer': '0'}]
    """
    work = sharing_copy(model) if share_weights else copy.deepcopy(model)
    steps = []
    for site in attention_sites(work):
        if site.kind == "mha" and head_refusal(site) is None:
            unpack_attention(work, site.name)
            steps.append({"op": "unpack_attention", "layer": site.name})
    return work, steps
