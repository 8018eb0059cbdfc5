"""Attention rollout (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020) and
its gradient-weighted form (Chefer, Gur & Wolf, "Generic Attention-model Explainability for
Interpreting Bi-Modal and Encoder-Decoder Transformers", ICCV 2021) — explanations of a Vision
Transformer read from its attention maps.

Both multiply per-layer token-to-token matrices through the blocks, in execution order, and read the
**class token's row** over the **patch tokens**, folded to the patch grid
(:func:`neurotomy.models.transformer.token_layout`) and upsampled bilinearly to the image:

- ``rollout`` (Abnar & Zuidema §3, "attention rollout"): per layer Â = row-normalise(mean_heads A + I)
  (the same as 0.5·A + 0.5·I, the paper's residual term, since A's rows sum to 1); R = Â_L ⋯ Â_1.
  It ignores the target class: every class gets the same map.
- ``grad_rollout`` (Chefer et al. 2021, eqs. 5–6, the gradient × attention rule without LRP):
  per layer Ā = mean_heads (∂y_c/∂A ⊙ A)⁺ — heads weighted by the positive part of gradient times
  attention, clamped *before* the head mean — and R ← R + Ā·R from R = I, with no normalisation.
  (pytorch-grad-cam / vit-explain's "grad rollout" averages first and clamps after, then adds I and
  normalises as rollout does; we follow the paper.)

A distillation token or registers (``prefix_tokens`` > 1) are neither read nor shown: the map is
the first token's row over the patch tokens.

**Where the attention probabilities come from.** neurotomy's ``vit_tiny`` passes them through an
``attn_probe`` module, which we read (and differentiate) directly. timm's ``Attention`` with
``fused_attn`` and torchvision's ``nn.MultiheadAttention`` (called with ``need_weights=False``)
never materialise them, so we recompute softmax(q·kᵀ·scale) from the attention module's input and
its q/k projection weights (:func:`attention_probabilities`), and ∂y_c/∂A by the chain rule from the
gradient at the module's output: the output is proj(concat_heads(A·V)), so ∂y_c/∂A_h =
(∂y_c/∂out · W_proj)_h · V_hᵀ. An attention module that normalises or gates its context before the
projection (timm's ``scale_norm``, ``gated``) breaks that rule, and ``grad_rollout`` refuses it.

Example:
    >>> from neurotomy.models import build_model
    >>> vit = build_model("vit_tiny", 1, 10, 28, depth=2, dim=32, num_heads=2, mlp_hidden=48).eval()
    >>> attention_rollout(vit, torch.randn(3, 1, 28, 28), torch.tensor([0, 1, 2])).shape
    torch.Size([3, 28, 28])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from neurotomy.explain.common import ExplainError, class_scores, forward, upsample
from neurotomy.explain.methods import register_method
from neurotomy.models.transformer import AttentionSite, TokenLayout, attention_sites, token_layout
from neurotomy.probe import Probe


@dataclass(frozen=True)
class AttentionMap:
    """One attention layer's call: its ``site``, the probabilities ``probs`` (batch, heads, tokens,
    tokens; rows are queries) and, when asked, ``grads`` = ∂y_c/∂probs for each image's target."""

    site: AttentionSite
    probs: torch.Tensor
    grads: torch.Tensor | None


def _probe_of(site: AttentionSite) -> str | None:
    """The module through which the site passes its probabilities (neurotomy's ``attn_probe``), if any."""
    if isinstance(getattr(site.module, "attn_probe", None), nn.Module):
        return f"{site.name}.attn_probe" if site.name else "attn_probe"
    return None


def _batch_first(site: AttentionSite, tensor: torch.Tensor) -> torch.Tensor:
    """(batch, tokens, channels), whatever the module's layout (``nn.MultiheadAttention`` defaults to
    sequence-first)."""
    if tensor.dim() != 3:
        raise ExplainError(f"attention layer {site.name!r} sees a {tensor.dim()}-D input; rollout needs "
                           "batched token sequences (batch, tokens, channels)")
    sequence_first = site.kind == "mha" and not getattr(site.module, "batch_first", False)
    return tensor.transpose(0, 1) if sequence_first else tensor


def _split_heads(site: AttentionSite, tensor: torch.Tensor) -> torch.Tensor:
    """(batch, tokens, heads·head_dim) → (batch, heads, tokens, head_dim); both timm's reshape and
    torch's multi-head attention lay the heads out as consecutive channel blocks."""
    batch, tokens, _ = tensor.shape
    return tensor.reshape(batch, tokens, site.num_heads, -1).transpose(1, 2)


def _query_key_value(site: AttentionSite, inputs: tuple) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Per-head q, k, v (batch, heads, tokens, head_dim) and the logit scale, from the module's inputs."""
    module = site.module
    if site.kind == "qkv":
        x = _batch_first(site, inputs[0])
        q, k, v = (_split_heads(site, part) for part in F.linear(x, site.qkv.weight, site.qkv.bias).chunk(3, -1))
        # timm's qk_norm normalises each head's q and k before the product (identity when off)
        q_norm, k_norm = getattr(module, "q_norm", None), getattr(module, "k_norm", None)
        q = q_norm(q) if isinstance(q_norm, nn.Module) else q
        k = k_norm(k) if isinstance(k_norm, nn.Module) else k
        scale = getattr(module, "scale", None)
        return q, k, v, float(scale) if isinstance(scale, float) else q.shape[-1] ** -0.5
    if getattr(module, "bias_k", None) is not None or getattr(module, "add_zero_attn", False):
        raise ExplainError(f"attention layer {site.name!r} adds key/value biases or a zero token: its attention "
                           "has more columns than tokens, which rollout cannot fold into an image")
    query = _batch_first(site, inputs[0])
    key = _batch_first(site, inputs[1]) if len(inputs) > 1 else query  # self-attention when called with one input
    value = _batch_first(site, inputs[2]) if len(inputs) > 2 else key
    if module.in_proj_weight is not None:
        weights = module.in_proj_weight.chunk(3)
    else:
        weights = (module.q_proj_weight, module.k_proj_weight, module.v_proj_weight)
    biases = module.in_proj_bias.chunk(3) if module.in_proj_bias is not None else (None,) * 3
    q, k, v = (_split_heads(site, F.linear(t, w, b)) for t, w, b in zip((query, key, value), weights, biases))
    return q, k, v, q.shape[-1] ** -0.5


def attention_probabilities(site: AttentionSite, inputs: tuple) -> torch.Tensor:
    """softmax(q·kᵀ·scale) per head, (batch, heads, tokens, tokens), recomputed from the attention
    module's positional ``inputs`` (as a forward hook sees them) and its projection weights — for
    attention layers that never materialise it (timm's fused attention, ``nn.MultiheadAttention``
    with ``need_weights=False``).

    Example:
        >>> from neurotomy.models.transformer import attention_sites
        >>> mha = nn.MultiheadAttention(8, 2, batch_first=True)
        >>> x = torch.randn(1, 5, 8)
        >>> probs = attention_probabilities(attention_sites(mha)[0], (x, x, x))
        >>> torch.allclose(probs, mha(x, x, x, average_attn_weights=False)[1], atol=1e-6)
        True
    """
    q, k, _, scale = _query_key_value(site, inputs)
    return ((q * scale) @ k.transpose(-2, -1)).softmax(-1)


def _probability_gradient(site: AttentionSite, inputs: tuple, output_grad: torch.Tensor) -> torch.Tensor:
    """∂y_c/∂A per head from ∂y_c/∂(module output): the output is proj(concat_h A_h·V_h), so
    ∂y_c/∂A_h = (∂y_c/∂out · W_proj)_h · V_hᵀ."""
    module = site.module
    norm = getattr(module, "norm", None)
    if getattr(module, "gate", None) is not None or (isinstance(norm, nn.Module) and not isinstance(norm, nn.Identity)):
        raise ExplainError(f"attention layer {site.name!r} normalises or gates its heads' output before the "
                           "projection, so the gradient on its attention cannot be recovered; use rollout or gradcam")
    _, _, v, _ = _query_key_value(site, inputs)
    context_grad = _split_heads(site, _batch_first(site, output_grad) @ site.proj.weight)
    return context_grad @ v.transpose(-2, -1)


def _attention_sites(model: nn.Module, method: str = "rollout") -> list[AttentionSite]:
    sites = attention_sites(model)
    if not sites:
        raise ExplainError(f"{method} needs attention layers and this model has none (it is not a transformer); "
                           "for a CNN use gradcam or another CAM method, or a gradient method")
    for site in sites:
        if _probe_of(site) is None and _relative_bias(site):
            raise ExplainError(f"{method} cannot recompute the attention of {site.name!r} "
                               f"({type(site.module).__name__}): it adds a relative position bias to its logits "
                               "within windows (Swin, MaxViT); use gradcam or a gradient method")
    return sites


def _relative_bias(site: AttentionSite) -> bool:
    """Whether the site adds a learned relative position bias (Swin, MaxViT), which the recomputed
    softmax(q·kᵀ·scale) would leave out."""
    module = site.module
    return any(hasattr(module, name) for name in ("relative_position_bias_table", "cpb_mlp", "rel_pos"))


def _token_layout(model: nn.Module, inputs: torch.Tensor, method: str) -> TokenLayout:
    _attention_sites(model, method)  # a CNN, a windowed attention: the error that names the methods, before any other
    return token_layout(model, tuple(inputs.shape[1:]))


def observe_attention(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor | None = None
                      ) -> list[AttentionMap]:
    """The attention probabilities of every attention layer, in execution order (a layer called twice:
    its first call), with ∂y_c/∂A for each image's target when ``targets`` is given (else ``grads``
    is None). A model without attention layers is an error that names the methods for CNNs."""
    sites = _attention_sites(model)
    by_layer = {_probe_of(s) or s.name: s for s in sites}
    seen: dict[str, tuple[tuple, torch.Tensor]] = {}

    def record(name: str, module: nn.Module, args: tuple, output) -> None:
        # nn.MultiheadAttention returns (output, weights-or-None); the first is what flows on
        seen.setdefault(name, (args, output[0] if isinstance(output, tuple) else output))

    gradients = targets is not None
    with torch.set_grad_enabled(gradients), Probe(model, list(by_layer), on_module=record):
        logits = forward(model, inputs.detach().clone().requires_grad_(gradients))
    order = list(seen)  # hooks fire in execution order
    grads: list[torch.Tensor | None] = [None] * len(order)
    if gradients:
        # each image's score depends only on its own tokens (eval mode): one backward for the batch
        found = torch.autograd.grad(class_scores(logits, targets).sum(), [seen[n][1] for n in order],
                                    allow_unused=True)
        grads = [torch.zeros_like(seen[n][1]) if g is None else g for n, g in zip(order, found)]
    maps = []
    with torch.no_grad():
        for name, grad in zip(order, grads):
            site, (args, output) = by_layer[name], seen[name]
            if _probe_of(site) == name:
                maps.append(AttentionMap(site, output.detach().float(), None if grad is None else grad.float()))
                continue
            probs = attention_probabilities(site, args).float()
            grad = None if grad is None else _probability_gradient(site, args, grad).float()
            maps.append(AttentionMap(site, probs, grad))
    return maps


def _class_row_map(relevance: torch.Tensor, layout: TokenLayout, size: tuple[int, int]) -> torch.Tensor:
    """The class token's row of the token × token relevance over the patch tokens, as images."""
    rows, cols = layout.grid
    batch = relevance.shape[0]
    return upsample(relevance[:, 0, layout.prefix_tokens:].reshape(batch, rows, cols), size)


def _check_tokens(maps: list[AttentionMap], layout: TokenLayout, batch: int) -> int:
    """All layers attend over the same ``prefix + rows·cols`` tokens of each image (not windows, as in
    Swin, nor a pooled sequence); returns the token count."""
    tokens = layout.prefix_tokens + layout.grid[0] * layout.grid[1]
    for m in maps:
        if tuple(m.probs.shape[-2:]) != (tokens, tokens) or m.probs.shape[0] != batch:
            raise ExplainError(f"attention layer {m.site.name!r} attends over {m.probs.shape[-1]} tokens in "
                               f"{m.probs.shape[0]} sequences, not over the {tokens} tokens of each image "
                               f"({layout.prefix_tokens} prefix + {layout.grid[0]}×{layout.grid[1]} patches); "
                               "rollout needs global attention over the whole image (a ViT/DeiT), use gradcam")
    return tokens


@register_method("rollout", family="attention", signed=False,
                 paper="Abnar & Zuidema, ACL 2020 (attention rollout)")
def attention_rollout(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Attention rollout: R = Â_L ⋯ Â_1 with Â = row-normalise(mean_heads A + I); the class token's row
    over the patches, upsampled to the image (``N × H × W``, ≥ 0, the same for every target)."""
    layout = _token_layout(model, inputs, "rollout")
    maps = observe_attention(model, inputs)
    tokens = _check_tokens(maps, layout, inputs.shape[0])
    eye = torch.eye(tokens, device=maps[0].probs.device)
    relevance = eye.expand(inputs.shape[0], tokens, tokens)
    for m in maps:
        mixed = m.probs.mean(1) + eye  # the residual connection carries each token to itself
        relevance = (mixed / mixed.sum(-1, keepdim=True)) @ relevance
    return _class_row_map(relevance, layout, tuple(inputs.shape[-2:]))


@register_method("grad_rollout", family="attention", signed=False,
                 paper="Chefer et al., ICCV 2021 (gradient-weighted attention rollout)")
def gradient_rollout(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Gradient-weighted rollout: R ← R + Ā·R from R = I, Ā = mean_heads (∂y_c/∂A ⊙ A)⁺; the class
    token's row over the patches, upsampled to the image (``N × H × W``, ≥ 0, per target)."""
    layout = _token_layout(model, inputs, "grad_rollout")
    maps = observe_attention(model, inputs, targets)
    tokens = _check_tokens(maps, layout, inputs.shape[0])
    relevance = torch.eye(tokens, device=maps[0].probs.device).expand(inputs.shape[0], tokens, tokens)
    for m in maps:
        weighted = (m.grads * m.probs).clamp(min=0).mean(1)
        relevance = relevance + weighted @ relevance
    return _class_row_map(relevance, layout, tuple(inputs.shape[-2:]))
