"""Where a transformer keeps its units: attention heads, MLP neurons, the token grid.

Scores, cuts and explanations of a transformer all start by finding its attention layers, how many
heads each has, its MLPs and how tokens fold back into an image. This module finds them in the three
shapes users bring, without per-model code:

* a module with ``qkv`` and ``proj`` linears and ``num_heads`` (neurotomy's ``vit_tiny``, timm's
  ``Attention`` — ViT, DeiT, and the window attention of Swin, timm's and torchvision's);
* a module with ``to_qkv`` and ``merge`` linears, ``n_heads`` and ``head_dim`` (torchvision's MaxViT,
  ``RelativePositionalMultiHeadAttention``) — the same pair under other names;
* ``torch.nn.MultiheadAttention`` (torchvision's ViT), whose projections are ``in_proj_weight`` and
  ``out_proj``;
* MLPs as ``fc1`` → activation → ``fc2`` (ours, timm's ``Mlp``) or torchvision's ``MLPBlock``
  (a Sequential ``Linear, GELU, Dropout, Linear, Dropout``).

A *transformer block* is the smallest module holding one attention layer and one MLP
(:func:`transformer_blocks`); :func:`block_forms` measures whether it is residual — keeps the token
stream's shape and is not post-norm — which is what lets layer pruning replace it by the identity.

Example:
    >>> from neurotomy.models import build_model
    >>> vit = build_model("vit_tiny")
    >>> [(s.name, s.num_heads, s.head_dim) for s in attention_sites(vit)][:2]
    [('blocks.0.attn', 4, 32), ('blocks.1.attn', 4, 32)]
    >>> transformer_blocks(vit)[:2]
    ['blocks.0', 'blocks.1']
    >>> mlp_sites(vit)[0].hidden, token_layout(vit, (1, 28, 28))
    (256, TokenLayout(grid=(7, 7), prefix_tokens=1))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from neurotomy.device import model_device
from neurotomy.errors import ModelError
from neurotomy.probe import Probe


@dataclass(frozen=True)
class AttentionSite:
    """One attention layer: ``name`` (its module path), ``module``, ``num_heads``, ``head_dim``,
    ``kind`` (``"qkv"``: an input linear packing q, k, v — thirds, head by head within each — and an
    output linear; ``"mha"``: ``nn.MultiheadAttention``), the model paths of its input projection
    (``qkv_name``: ``qkv`` / MaxViT's ``to_qkv``; for ``mha`` the module itself, whose
    ``in_proj_weight`` it is) and output projection (``proj_name``: ``proj`` / ``merge`` /
    ``out_proj``), whose input columns are the heads' channels, head by head, and
    ``heads_attribute``, the module attribute its forward reads the head count from (``num_heads``;
    MaxViT's ``n_heads``). Consumers take the modules from :attr:`qkv` and :attr:`proj`, never by
    attribute name.

    Example:
        >>> site = attention_sites(nn.MultiheadAttention(8, 2))[0]
        >>> site.kind, site.qkv is site.module, site.proj is site.module.out_proj
        ('mha', True, True)
    """

    name: str
    module: nn.Module
    num_heads: int
    head_dim: int
    kind: str
    qkv_name: str
    proj_name: str
    heads_attribute: str = "num_heads"

    def _own(self, path: str) -> nn.Module:
        if path == self.name:
            return self.module
        return self.module.get_submodule(path[len(self.name) + 1:] if self.name else path)

    @property
    def qkv(self) -> nn.Module:
        """The input projection: a linear (``kind == "qkv"``), or the ``nn.MultiheadAttention`` itself."""
        return self._own(self.qkv_name)

    @property
    def proj(self) -> nn.Linear:
        """The output projection, a linear whose input columns are the heads' channels."""
        return self._own(self.proj_name)


@dataclass(frozen=True)
class MlpSite:
    """One transformer MLP: ``fc1`` (its outputs are the hidden neurons), the activation module
    between (hookable: neuron activations), ``fc2``; names are module paths."""

    name: str
    fc1_name: str
    act_name: str
    fc2_name: str
    hidden: int


class TokenLayout(NamedTuple):
    """How a token sequence folds back into an image: ``prefix_tokens`` (class/distillation tokens)
    lead, then ``grid[0] × grid[1]`` patch tokens in row-major order."""

    grid: tuple[int, int]
    prefix_tokens: int


# normalisation layers: a block whose output is one of theirs is post-norm; an MLP Sequential may
# lead with one (RMSNorm exists from torch 2.4)
_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())


# the (input projection, output projection, head count) attribute names of the qkv-pair forms
_QKV_FORMS = (("qkv", "proj", "num_heads"),  # ours, timm's Attention / WindowAttention, torchvision's Swin
              ("to_qkv", "merge", "n_heads"))  # torchvision's MaxViT (RelativePositionalMultiHeadAttention)


def attention_sites(model: nn.Module) -> list[AttentionSite]:
    """Every attention layer of ``model`` in module order (empty for a CNN)."""
    sites = []
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, nn.MultiheadAttention):
            sites.append(AttentionSite(name, module, module.num_heads, module.head_dim, "mha", name,
                                       prefix + "out_proj"))
            continue
        for qkv, proj, heads_attribute in _QKV_FORMS:
            heads = getattr(module, heads_attribute, None)
            linear = getattr(module, qkv, None)
            if (isinstance(linear, nn.Linear) and isinstance(getattr(module, proj, None), nn.Linear)
                    and isinstance(heads, int) and not isinstance(heads, bool) and heads > 0
                    and linear.out_features % (3 * heads) == 0):
                sites.append(AttentionSite(name, module, heads, linear.out_features // (3 * heads), "qkv",
                                           prefix + qkv, prefix + proj, heads_attribute))
                break
    return sites


def mlp_sites(model: nn.Module) -> list[MlpSite]:
    """Every transformer MLP of ``model`` in module order: modules with ``fc1``/``act``/``fc2`` linears,
    or Sequentials shaped ``[norm], Linear, activation, [Dropout], Linear`` mapping the width back to
    itself (the leading norm, one of ``_NORMS``, is how torchvision's MaxViT writes its pre-norm MLP).

    Example:
        >>> mlp = nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 32), nn.GELU(), nn.Linear(32, 8), nn.Dropout())
        >>> [(s.fc1_name, s.act_name, s.fc2_name, s.hidden) for s in mlp_sites(nn.Sequential(mlp))]
        [('0.1', '0.2', '0.3', 32)]
    """
    sites = []
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        fc1, fc2 = getattr(module, "fc1", None), getattr(module, "fc2", None)
        if isinstance(fc1, nn.Linear) and isinstance(fc2, nn.Linear) and hasattr(module, "act"):
            sites.append(MlpSite(name, prefix + "fc1", prefix + "act", prefix + "fc2", fc1.out_features))
        elif isinstance(module, nn.Sequential) and len(module) >= 3:
            children = list(module.named_children())
            if isinstance(children[0][1], _NORMS):  # a pre-norm MLP carrying its norm (MaxViT)
                children = children[1:]
            if len(children) < 3:
                continue
            (n1, first), (na, act) = children[0], children[1]
            rest = [(n, c) for n, c in children[2:] if isinstance(c, nn.Linear)]
            # dim → hidden → dim (a pruned MLP may be narrower than the stream, so no width order)
            if (isinstance(first, nn.Linear) and len(rest) == 1
                    and rest[0][1].in_features == first.out_features and rest[0][1].out_features == first.in_features
                    and isinstance(act, (nn.GELU, nn.ReLU, nn.SiLU, nn.Tanh))):
                sites.append(MlpSite(name, prefix + n1, prefix + na, prefix + rest[0][0], first.out_features))
    return sites


def transformer_blocks(model: nn.Module) -> list[str]:
    """Names of the transformer blocks, in module order: the smallest modules holding exactly one
    attention layer and one MLP (a block's output is its input plus what both add — the residual
    stream, so removing a block leaves the stream unchanged)."""
    attention = [s.name for s in attention_sites(model)]
    mlps = [s.name for s in mlp_sites(model)]
    blocks = []
    for name, _ in model.named_modules():
        prefix = f"{name}." if name else ""
        inside = [a for a in attention if a.startswith(prefix)], [m for m in mlps if m.startswith(prefix)]
        if len(inside[0]) == 1 and len(inside[1]) == 1 and not any(b.startswith(prefix) for b in blocks):
            # named_modules lists parents first: drop an enclosing module once a smaller one qualifies
            blocks = [b for b in blocks if not prefix.startswith(f"{b}.")]
            blocks.append(name)
    return [b for b in blocks if b]


@dataclass(frozen=True)
class BlockForm:
    """How a transformer block treats the residual stream, measured in one forward pass: the shapes
    of its input and output, and whether its output is a normalisation layer's output (post-norm:
    ``norm(x + f(x))``, as in the original Transformer and BERT). A pre-norm block (ViT, DeiT,
    torchvision's ViT, Swin) adds to the stream and keeps its shape: it is ``residual``, and removing
    it is replacing it by the identity."""

    name: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    post_norm: bool

    @property
    def keeps_shape(self) -> bool:
        return self.input_shape == self.output_shape

    @property
    def residual(self) -> bool:
        return self.keeps_shape and not self.post_norm

    def problem(self) -> str | None:
        """Why the block cannot become the identity, in words, or None when it can."""
        if not self.keeps_shape:
            return (f"transformer block {self.name!r} changes the token stream's shape "
                    f"{list(self.input_shape)} → {list(self.output_shape)}")
        if self.post_norm:
            return (f"transformer block {self.name!r} is post-norm (its output is a normalisation layer's): "
                    "without it the next block would read an unnormalised stream")
        return None


@torch.no_grad()
def block_forms(model: nn.Module, input_shape: tuple[int, ...], blocks: list[str] | None = None,
                seed: int = 0) -> dict[str, BlockForm]:
    """The :class:`BlockForm` of each of ``blocks`` (default :func:`transformer_blocks`) that a forward
    pass on one seeded random input of ``input_shape`` runs (a block run twice: its first call).

    Example:
        >>> from neurotomy.models import build_model
        >>> form = block_forms(build_model("vit_tiny"), (1, 28, 28))["blocks.5"]
        >>> form.input_shape, form.residual
        ((1, 50, 128), True)
    """
    blocks = transformer_blocks(model) if blocks is None else blocks
    inside = {n: b for b in blocks for n, m in model.get_submodule(b).named_modules(prefix=b) if isinstance(m, _NORMS)}
    last_norm: dict[str, torch.Tensor] = {}
    forms: dict[str, BlockForm] = {}

    def record(name: str, module: nn.Module, inputs: tuple, output) -> None:
        if name in inside:
            last_norm[inside[name]] = output
            return
        if name in forms or not inputs or not isinstance(inputs[0], torch.Tensor):
            return
        out_shape = tuple(output.shape) if isinstance(output, torch.Tensor) else ()
        norm = last_norm.get(name)
        # equal values, not only the same tensor: a dropout (identity in eval) may follow the norm
        post = (norm is not None and isinstance(output, torch.Tensor) and norm.shape == output.shape
                and bool(torch.equal(norm, output)))
        forms[name] = BlockForm(name, tuple(inputs[0].shape), out_shape, post)

    device = model_device(model)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    x = torch.randn(1, *input_shape, generator=torch.Generator().manual_seed(seed)).to(device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        with Probe(model, [*inside, *blocks], on_module=record):
            model(x)
    finally:
        model.train(was_training)
    return {b: forms[b] for b in blocks if b in forms}


def is_transformer(model: nn.Module) -> bool:
    """Whether ``model`` has attention layers (see :func:`attention_sites`)."""
    return bool(attention_sites(model))


def token_layout(model: nn.Module, input_shape: tuple[int, ...]) -> TokenLayout:
    """The patch grid and the number of leading non-patch tokens for inputs of ``input_shape``
    (channels, height, width): read from the model where it says (neurotomy's ``patch_grid``, timm's
    ``patch_embed.grid_size`` / ``num_prefix_tokens``, torchvision's ``patch_size``), else from the
    first convolution whose stride equals its kernel (a patch embedding) and the first attention
    layer's token count, measured in one forward pass."""
    if hasattr(model, "patch_grid") and hasattr(model, "prefix_tokens"):
        return TokenLayout(tuple(model.patch_grid), int(model.prefix_tokens))
    embed = getattr(model, "patch_embed", None)
    if embed is not None and hasattr(embed, "grid_size") and hasattr(model, "num_prefix_tokens"):
        return TokenLayout(tuple(int(g) for g in embed.grid_size), int(model.num_prefix_tokens))
    if isinstance(getattr(model, "patch_size", None), int) and hasattr(model, "class_token"):
        side_h, side_w = input_shape[-2] // model.patch_size, input_shape[-1] // model.patch_size
        return TokenLayout((side_h, side_w), 1)
    return _measured_layout(model, input_shape)


def _measured_layout(model: nn.Module, input_shape: tuple[int, ...]) -> TokenLayout:
    names = {id(m): n for n, m in model.named_modules()}
    patch = next((m for m in model.modules() if isinstance(m, nn.Conv2d) and m.stride == m.kernel_size
                  and m.kernel_size != (1, 1)), None)
    sites = attention_sites(model)
    if patch is None or not sites:
        raise ModelError("cannot tell how this model's tokens fold into an image: it has no patch-embedding "
                         "convolution (stride = kernel) or no attention layer")
    seen: dict[str, tuple[int, ...]] = {}

    def record(name: str, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if module is patch:
            seen.setdefault("grid", tuple(output.shape[-2:]))
        else:
            seen.setdefault("tokens", tuple(inputs[0].shape))

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), Probe(model, [names[id(patch)], sites[0].name], on_module=record):
            model(torch.zeros(1, *input_shape, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
    grid = seen["grid"]
    # batch-first (batch, tokens, dim) unless the batch of 1 sits in the middle (sequence-first MHA)
    tokens = seen["tokens"][1] if seen["tokens"][0] == 1 else seen["tokens"][0]
    return TokenLayout((int(grid[0]), int(grid[1])), int(tokens - grid[0] * grid[1]))
