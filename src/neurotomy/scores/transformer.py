"""Scores for the units of a transformer: attention heads, MLP neurons, embedding channels.

A transformer's units are not conv filters, so they have their own criteria and one entry point,
:func:`score_transformer`. The scores it returns are ordinary :class:`UnitScores` (higher = more
important, kept first), keyed so that every consumer finds the layer the units live in:

* ``unit="head"`` — one key per attention layer, its module name (``"blocks.0.attn"``), 1-D over its
  heads. A head's weights are its rows of the q, k and v projections and its columns of the output
  projection.
* ``unit="neuron"`` — one key per MLP, its first linear (``"blocks.0.mlp.fc1"``), 1-D over the
  hidden neurons. A neuron's weights are its row of ``fc1`` and its column of ``fc2``.
* ``unit="embedding"`` — one key, ``"embedding"``, 1-D over the model width: a channel of the
  residual stream is shared by every block, so its weights are every weight that reads or writes it
  (see :func:`unit_weights`).

Criteria (``TRANSFORMER_CRITERIA``, listed by ``neurotomy criteria``):

* ``l1`` / ``l2`` — the norm of the unit's weights (biases left out), after Li et al. 2017;
* ``taylor`` — Michel, Levy & Neubig, NeurIPS 2019, "Are Sixteen Heads Really Better than One?":
  a gate ξ_u = 1 multiplies unit u's output (a head's context where the output projection reads it,
  a neuron's activation), and the score is E_x |∂L(x)/∂ξ_u|, the first-order loss change of
  removing the unit, averaged over images (not normalised per layer; the planner normalises). For a
  neuron that is |Σ_tokens a·∂L/∂a| per image (Molchanov et al. 2017 on tokens).
* ``attention_entropy`` (heads) — how focused each head's attention is: log(keys) − H, where H is
  the entropy of a query's attention distribution, averaged over queries and images. A head that
  attends uniformly scores 0; a head that attends to few tokens scores high and is kept first
  (focused heads are the specialised ones, Voita et al. 2019 — a heuristic, not a loss estimate).
* ``mean_activation`` — mean |output| of the unit (a head's context channels, a neuron's GELU
  output, for embedding channels the residual stream entering each block), after Hu et al. 2016
  with tokens as positions.

Example:
    >>> from neurotomy.models import build_model
    >>> vit = build_model("vit_tiny", 1, 4, 8, patch=2, dim=16, depth=2, num_heads=2, mlp_hidden=24)
    >>> heads = score_transformer(vit, "l1", "head")
    >>> list(heads), tuple(heads["blocks.0.attn"].shape), heads.info["unit"]
    (['blocks.0.attn', 'blocks.1.attn'], (2,), 'head')
    >>> tuple(score_transformer(vit, "l2", "embedding")["embedding"].shape)
    (16,)
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Iterator, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from neurotomy import validate
from neurotomy.data.batches import iterate_batches, num_batches
from neurotomy.device import model_device, to_device
from neurotomy.distributed import probe_shard, reduce_state
from neurotomy.errors import ModelError, NeurotomyError
from neurotomy.models.anatomy import eval_mode
from neurotomy.models.transformer import AttentionSite, attention_sites, mlp_sites, transformer_blocks
from neurotomy.probe import Probe
from neurotomy.progress import add_task, progress_bar
from neurotomy.registry import Registry
from neurotomy.scores.unit_scores import UnitScores

UNITS = ("head", "neuron", "embedding")
EMBEDDING = "embedding"  # the one key of embedding-channel scores

TRANSFORMER_CRITERIA: Registry[type["TransformerCriterion"]] = Registry(
    "transformer criterion", hint="(see `neurotomy criteria`)")
"""Every transformer criterion class by name, tagged with ``units`` (the units it scores) and ``paper``."""


class TransformerCriterion:
    """Base of the transformer criteria: ``name``, ``paper``, the ``units`` it scores, and
    :meth:`score`, which returns the score tensors by key."""

    name: str = ""
    paper: str = ""
    units: tuple[str, ...] = ()
    needs_data: bool = False

    def score(self, model: nn.Module, unit: str, data: Dataset | None, *, batch_size: int, max_images: int | None,
              seed: int, quiet: bool) -> dict[str, torch.Tensor]:
        raise NotImplementedError


def _register(cls: type[TransformerCriterion]) -> type[TransformerCriterion]:
    return TRANSFORMER_CRITERIA.register(cls.name, units=cls.units, paper=cls.paper, needs_data=cls.needs_data)(cls)


def score_transformer(model: nn.Module, criterion: str, unit: str, data: Dataset | None = None, *,
                      max_images: int | None = None, batch_size: int = 64, seed: int = 0,
                      quiet: bool = True) -> UnitScores:
    """Score every ``unit`` (``"head"``, ``"neuron"`` or ``"embedding"``) of a transformer with
    ``criterion`` (``TRANSFORMER_CRITERIA``); data criteria stream ``max_images`` images of ``data``
    (default: the criterion's calibration size) in shuffled batches seeded by ``seed``.

    Example:
        >>> from neurotomy.models import build_model
        >>> vit = build_model("vit_tiny", 1, 4, 8, patch=2, dim=16, depth=2, num_heads=2, mlp_hidden=24)
        >>> s = score_transformer(vit, "l1", "neuron")
        >>> list(s), tuple(s["blocks.1.mlp.fc1"].shape), s.info["unit"]
        (['blocks.0.mlp.fc1', 'blocks.1.mlp.fc1'], (24,), 'neuron')
    """
    cls = TRANSFORMER_CRITERIA.get(criterion)
    if unit not in UNITS:
        raise NeurotomyError(f"unknown transformer unit {unit!r}; use one of {', '.join(UNITS)}")
    if unit not in cls.units:
        raise NeurotomyError(f"criterion {criterion!r} does not score {unit}s; it scores {', '.join(cls.units)}; "
                             f"for {unit}s use one of {', '.join(transformer_criteria(unit))}")
    batch_size = validate.positive_int(batch_size, "batch_size")
    if max_images is not None:
        max_images = validate.positive_int(max_images, "max_images")
    _sites_of(model, unit)  # refuses a model without such units before any work
    if unit == "embedding":
        _width(model)
    if cls.needs_data and data is None:
        raise NeurotomyError(f"criterion {criterion!r} needs data; pass data= (CLI: --data NAME)")
    start = time.perf_counter()
    with eval_mode(model):
        scores = cls().score(model, unit, data, batch_size=batch_size, max_images=max_images, seed=seed, quiet=quiet)
    info = {"unit": unit, "paper": cls.paper, "seconds": time.perf_counter() - start}
    return UnitScores(scores, criterion=criterion, info=info)


def transformer_criteria(unit: str | None = None) -> list[str]:
    """Names of the transformer criteria, those scoring ``unit`` only when given.

    Example:
        >>> transformer_criteria("head")
        ['l1', 'l2', 'taylor', 'attention_entropy', 'mean_activation']
    """
    return [n for n, cls in TRANSFORMER_CRITERIA.items() if unit is None or unit in cls.units]


def transformer_criteria_table() -> list[dict]:
    """One row per transformer criterion: ``name``, ``axis`` (the units it scores, joined by "/"),
    ``paper``, ``needs_data`` — the rows ``neurotomy criteria`` adds to the conv criteria's.

    Example:
        >>> transformer_criteria_table()[0]["axis"]
        'head/neuron/embedding'
    """
    return [{"name": n, "axis": "/".join(cls.units), "paper": cls.paper, "needs_data": cls.needs_data}
            for n, cls in TRANSFORMER_CRITERIA.items()]


class HeadMatrix(NamedTuple):
    """Head scores as a blocks × heads matrix (``values``; NaN where a layer has fewer heads than the
    widest) and the attention layer of each row (``layers``)."""

    values: torch.Tensor
    layers: list[str]


def head_matrix(scores: UnitScores) -> HeadMatrix:
    """Head scores (``unit="head"``) as a blocks × heads matrix, rows in the scores' layer order —
    what a head-importance heatmap draws.

    Example:
        >>> m = head_matrix(UnitScores({"a": torch.tensor([1., 2.]), "b": torch.tensor([3.])}, info={"unit": "head"}))
        >>> m.values.tolist()[1][0], math.isnan(m.values[1, 1]), m.layers
        (3.0, True, ['a', 'b'])
    """
    if scores.info.get("unit") != "head" or scores.axis is not None:
        raise NeurotomyError(f"scores of {scores.criterion!r} are not per-head scores; score heads with "
                             "score_transformer(model, criterion, 'head')")
    layers = list(scores)
    width = max((scores[n].shape[-1] for n in layers), default=0)
    values = torch.full((len(layers), width), math.nan, dtype=torch.float64)
    for row, name in enumerate(layers):
        values[row, :scores[name].shape[-1]] = scores[name]
    return HeadMatrix(values, layers)


# ------------------------------------------------------------------------------------------------
# which weights a unit owns

def _sites_of(model: nn.Module, unit: str) -> list:
    sites = attention_sites(model)
    # MLP neurons need no recognised attention layer (MaxViT's relative-position attention is not one)
    mlps = mlp_sites(model) if unit == "neuron" else []
    if not sites and not mlps:
        raise ModelError(f"{type(model).__name__} has no attention layer; transformer units are scored on "
                         "transformers (for a CNN use `neurotomy score`)")
    if unit == "neuron":
        if not mlps:
            raise ModelError(f"{type(model).__name__} has no transformer MLP (fc1 → activation → fc2) to score")
        return mlps
    return sites


def _width(model: nn.Module) -> int:
    """The residual-stream width, refused where stages change it (Swin): there is no one stream."""
    widths = {(s.module.embed_dim if s.kind == "mha" else s.qkv.in_features) for s in attention_sites(model)}
    widths |= {model.get_submodule(m.fc1_name).in_features for m in mlp_sites(model)}
    if len(widths) != 1:
        raise ModelError(f"the model's blocks have widths {sorted(widths)}; embedding channels are scored on "
                         "transformers with one width throughout (ViT, DeiT)")
    return widths.pop()


def _in_projections(site: AttentionSite) -> list[torch.Tensor]:
    """The q, k, v projection weights of ``site``, as (3, heads·d, in) or three (heads·d, in)."""
    m = site.module
    if site.kind == "qkv":
        return [site.qkv.weight.view(3, -1, site.qkv.in_features)]
    if m.in_proj_weight is not None:
        return [m.in_proj_weight.view(3, -1, m.in_proj_weight.shape[-1])]
    return [m.q_proj_weight, m.k_proj_weight, m.v_proj_weight]


def unit_weights(model: nn.Module, unit: str) -> dict[str, list[torch.Tensor]]:
    """Per key, views of every weight tensor the units own, each with the unit axis **last** (so a
    unit's weights are ``[w[..., i] for w in views]``). Biases are left out.

    Heads: the q, k, v rows and output-projection columns of each head. Neurons: the ``fc1`` row
    and ``fc2`` column. Embedding channels: every weight that reads or writes the stream — each
    block's q/k/v input columns, output-projection rows, ``fc1`` columns and ``fc2`` rows; the
    LayerNorm scales of the stream; the patch embedding's output filters; the class, distillation
    and position embeddings; any other linear taking or giving the stream (the classifier).

    Example:
        >>> from neurotomy.models import build_model
        >>> vit = build_model("vit_tiny", 1, 4, 8, patch=2, dim=16, depth=2, num_heads=2, mlp_hidden=24)
        >>> [tuple(w.shape) for w in unit_weights(vit, "head")["blocks.0.attn"]]
        [(3, 8, 16, 2), (16, 8, 2)]
    """
    if unit == "head":
        return {s.name: [*(w.unflatten(-2, (s.num_heads, -1)).movedim(-3, -1) for w in _in_projections(s)),
                         s.proj.weight.unflatten(1, (s.num_heads, -1)).movedim(1, -1)]
                for s in _sites_of(model, unit)}
    if unit == "neuron":
        return {m.fc1_name: [model.get_submodule(m.fc1_name).weight.T, model.get_submodule(m.fc2_name).weight]
                for m in _sites_of(model, unit)}
    return {EMBEDDING: _stream_weights(model)}


def _stream_weights(model: nn.Module) -> list[torch.Tensor]:
    width = _width(model)
    views: list[torch.Tensor] = []
    inside: set[str] = set()  # modules of attention layers and MLPs, whose own stream weights are listed here
    for s in attention_sites(model):
        views += [w for w in _in_projections(s) if w.shape[-1] == width]  # q, k, v read the stream's channels
        views.append(s.proj.weight.T)
        inside |= {s.name, s.proj_name}
    for m in mlp_sites(model):
        views += [model.get_submodule(m.fc1_name).weight, model.get_submodule(m.fc2_name).weight.T]
        inside |= {m.name, m.fc1_name, m.fc2_name}
    for name, module in model.named_modules():
        if any(name == n or name.startswith(n + ".") for n in inside if n):
            continue
        if isinstance(module, nn.Linear):
            views += ([module.weight] if module.in_features == width else []) + \
                     ([module.weight.T] if module.out_features == width else [])
        elif isinstance(module, nn.Conv2d):
            views += ([module.weight.movedim(0, -1)] if module.out_channels == width else []) + \
                     ([module.weight.movedim(1, -1)] if module.in_channels == width else [])
        elif isinstance(module, nn.LayerNorm):
            if module.weight is not None and module.weight.shape[-1] == width:
                views.append(module.weight)
        elif not isinstance(module, nn.MultiheadAttention):
            # class / distillation / position embeddings, layer scales: parameters held by the model itself
            views += [p for p in module.parameters(recurse=False) if p.ndim and p.shape[-1] == width]
    return views


class _WeightNorm(TransformerCriterion):
    units = UNITS
    order = 1

    def score(self, model, unit, data, **kw):
        with torch.no_grad():
            return {key: self._norm(views) for key, views in unit_weights(model, unit).items()}

    def _norm(self, views: list[torch.Tensor]) -> torch.Tensor:
        total = 0
        for w in views:
            w = w.detach().abs() if self.order == 1 else w.detach().square()
            # summed in float64 over every axis but the last (the units); a 1-D view is one weight per unit
            total = total + (w.sum(dim=tuple(range(w.ndim - 1)), dtype=torch.float64) if w.ndim > 1 else w.double())
        return total if self.order == 1 else total.sqrt()


@_register
class L1(_WeightNorm):
    """Σ|w| over the unit's weights."""

    name = "l1"
    paper = "Li et al., ICLR 2017 (L1 of the unit's weights: a head's q/k/v rows + proj columns, a neuron's fc1 row + fc2 column)"
    order = 1


@_register
class L2(_WeightNorm):
    """‖w‖₂ of the unit's weights, all of them as one vector."""

    name = "l2"
    paper = "Li et al., ICLR 2017, L2 variant (of the unit's weights: heads, neurons, embedding channels)"
    order = 2


# ------------------------------------------------------------------------------------------------
# data criteria: what the model does on images

class _Watch(NamedTuple):
    key: str  # the score key
    site: object  # the AttentionSite / MlpSite / block name the watched module belongs to
    what: str  # "proj" (input of a qkv layer's proj), "mha" (a MultiheadAttention), "probs", "act", "block"


class DataTransformerCriterion(TransformerCriterion):
    """Streams images through the model with :class:`~neurotomy.probe.Probe` on the modules
    :meth:`watch` names; :meth:`see` reduces what one of them computes (and may return a
    replacement output — a gated one); with ``uses_gates``, the summed cross-entropy of each batch
    is differentiated w.r.t. the gates ``see`` created (``self.gates``) and :meth:`gate_grad` takes
    the gradients. Sums go into ``self.state`` so several processes add up (``reduce_state``)."""

    needs_data = True
    uses_gates = False
    default_images = 640

    def watch(self, model: nn.Module, unit: str) -> dict[str, _Watch]:
        raise NotImplementedError

    def see(self, watch: _Watch, module: nn.Module, inputs: tuple, output) -> object:
        raise NotImplementedError

    def gate_grad(self, key: str, grad: torch.Tensor) -> None:
        """The per-image gradient (images × units) of the loss w.r.t. the gates of ``key``."""

    def score(self, model, unit, data, *, batch_size, max_images, seed, quiet):
        watches = self.watch(model, unit)
        self.state: dict[str, dict] = {w.key: {} for w in watches.values()}
        self.gates: dict[str, torch.Tensor] = {}
        inputs_of: dict[str, tuple] = {}
        ran: set[str] = set()

        def on_module(name, module, inputs, output):
            inputs_of[name] = (module, inputs)

        def on_output(name, output):
            ran.add(name)
            module, inputs = inputs_of.pop(name)
            return self.see(watches[name], module, inputs, output)

        max_images = max_images or self.default_images
        where = model_device(model)
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
        shard = probe_shard()  # under `accelerate launch` each process takes every N-th batch
        batches = range(num_batches(data, batch_size, max_images))
        with progress_bar(quiet) as bar, _unfused(model, watches), \
                Probe(model, watches, on_output=on_output, on_module=on_module):
            task = add_task(bar, f"score {self.name} ({unit}s)", len(batches if shard is None else batches[shard[0]::shard[1]]))
            for images, targets in iterate_batches(data, batch_size, shuffle=True, max_images=max_images, shard=shard,
                                                   generator=torch.Generator().manual_seed(seed)):
                images, targets = to_device(where, images.to(dtype), targets)
                self.images = images.shape[0]
                with torch.set_grad_enabled(self.uses_gates):
                    logits = model(images)
                    _check_ran(watches, ran, self.name, unit)
                    if self.uses_gates:
                        keys = list(self.gates)
                        loss = F.cross_entropy(logits, targets, reduction="sum")  # per-image losses, added
                        for key, grad in zip(keys, torch.autograd.grad(loss, [self.gates[k] for k in keys])):
                            self.gate_grad(key, _per_image(grad, self.images))
                self.gates.clear()
                bar.advance(task)
        reduce_state(self.state)
        return {key: (s["sum"] / s["count"]).detach().cpu().double() for key, s in self.state.items()}

    def accumulate(self, key: str, total: torch.Tensor, count: int) -> None:
        """Add ``total`` (per unit) and ``count`` (how many values it sums) to ``key``'s running mean."""
        state = self.state[key]
        state["sum"] = state["sum"] + total.detach().double() if "sum" in state else total.detach().double().clone()
        state["count"] = state.get("count", total.new_zeros((), dtype=torch.float64)) + count


def _check_ran(watches: dict[str, _Watch], ran: set[str], criterion: str, unit: str) -> None:
    silent = [name for name in watches if name not in ran]
    if silent:
        raise ModelError(f"module {silent[0]!r} of {watches[silent[0]].key!r} never runs as a module (its layer "
                         f"applies the weights functionally, as torchvision's Swin does); criterion {criterion!r} "
                         f"cannot score its {unit}s — use a weight criterion (l1, l2)")


def _per_image(values: torch.Tensor, images: int) -> torch.Tensor:
    """Rows of ``values`` summed per image: one row per image, or (window attention) several
    consecutive rows per image."""
    rows = values.shape[0]
    if rows == images:
        return values
    if rows % images:
        raise ModelError(f"an attention layer ran on {rows} rows for {images} images; cannot tell which rows "
                         "belong to which image")
    return values.unflatten(0, (images, rows // images)).sum(1)


def _prefix(name: str) -> str:
    return f"{name}." if name else ""


def _head_watches(model: nn.Module) -> dict[str, _Watch]:
    """Where each attention layer's per-head context can be seen and gated: the input of a qkv
    layer's output projection (its columns are the heads' channels, head by head); for
    ``nn.MultiheadAttention`` (whose ``out_proj`` is never called as a module) the layer itself,
    recomputed."""
    return {(s.proj_name if s.kind == "qkv" else s.name): _Watch(s.name, s, "proj" if s.kind == "qkv" else "mha")
            for s in _sites_of(model, "head")}


def _probs_watches(model: nn.Module) -> dict[str, _Watch]:
    """Where each attention layer's softmax probabilities pass a module: neurotomy's ``attn_probe``;
    timm's ``attn_drop`` once its fused kernel is switched off (see :func:`_unfused`); for
    ``nn.MultiheadAttention`` the layer itself, recomputed."""
    watches = {}
    for s in _sites_of(model, "head"):
        if s.kind == "mha":
            watches[s.name] = _Watch(s.name, s, "mha")
        elif isinstance(getattr(s.module, "attn_probe", None), nn.Module):
            watches[_prefix(s.name) + "attn_probe"] = _Watch(s.name, s, "probs")
        elif isinstance(getattr(s.module, "attn_drop", None), nn.Module) and hasattr(s.module, "fused_attn"):
            watches[_prefix(s.name) + "attn_drop"] = _Watch(s.name, s, "probs")
        else:
            raise ModelError(f"attention layer {s.name!r} ({type(s.module).__name__}) passes its attention "
                             "probabilities through no module, so criterion 'attention_entropy' cannot score its "
                             "heads; use l1, l2, taylor or mean_activation (or give it an identity `attn_probe` "
                             "after the softmax)")
    return watches


@contextlib.contextmanager
def _unfused(model: nn.Module, watches: dict[str, _Watch]) -> Iterator[None]:
    """timm's attention computes softmax(qkᵀ) explicitly (through ``attn_drop``) only with its fused
    kernel off: switched off while probing, restored after."""
    modules = [w.site.module for name, w in watches.items() if name.endswith("attn_drop") and w.what == "probs"]
    before = [m.fused_attn for m in modules]
    try:
        for m in modules:
            m.fused_attn = False
        yield
    finally:
        for m, fused in zip(modules, before):
            m.fused_attn = fused


def _mha_heads(site: AttentionSite, inputs: tuple, output) -> tuple[torch.Tensor, torch.Tensor]:
    """An ``nn.MultiheadAttention``'s probabilities (batch, heads, queries, keys) and per-head context
    (batch, heads, queries, d), recomputed from its inputs; refused unless the recomputed output
    equals the layer's own (masks or options it was called with by keyword would be lost)."""
    m = site.module
    if len(inputs) < 3 or m.bias_k is not None or m.add_zero_attn:
        raise ModelError(f"attention layer {site.name!r} is called with keyword inputs or uses bias_k / "
                         "add_zero_attn; its heads cannot be recomputed")
    query, key, value = (x if m.batch_first else x.transpose(0, 1) for x in inputs[:3])
    if m.in_proj_weight is not None:
        w_q, w_k, w_v = m.in_proj_weight.chunk(3)
    else:
        w_q, w_k, w_v = m.q_proj_weight, m.k_proj_weight, m.v_proj_weight
    b_q, b_k, b_v = m.in_proj_bias.chunk(3) if m.in_proj_bias is not None else (None, None, None)
    q, k, v = (F.linear(x, w, b).unflatten(-1, (site.num_heads, -1)).transpose(1, 2)
               for x, w, b in ((query, w_q, b_q), (key, w_k, b_k), (value, w_v, b_v)))
    probs = (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(-1)
    context = probs @ v
    expected = output[0] if isinstance(output, tuple) else output
    with torch.no_grad():
        got = _mha_output(m, context)
        if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-3,
                                                              atol=1e-4 * float(expected.abs().max().clamp(min=1))):
            raise ModelError(f"attention layer {site.name!r} was called with masks or options the head hooks "
                             "cannot see; its heads cannot be recomputed")
    return probs, context


def _mha_output(m: nn.MultiheadAttention, context: torch.Tensor) -> torch.Tensor:
    out = F.linear(context.transpose(1, 2).flatten(2), m.out_proj.weight, m.out_proj.bias)
    return out if m.batch_first else out.transpose(0, 1)


def _gate(rows: int, units: int, like: torch.Tensor) -> torch.Tensor:
    return torch.ones(rows, units, dtype=like.dtype, device=like.device, requires_grad=True)


def _stream_watches(model: nn.Module) -> dict[str, _Watch]:
    """Each transformer block (one attention layer and one MLP): its input is the residual stream."""
    _width(model)
    blocks = transformer_blocks(model)
    if len(blocks) != len(attention_sites(model)):
        raise ModelError(f"{len(attention_sites(model))} attention layers but {len(blocks)} blocks holding one "
                         "attention layer and one MLP each; cannot find the residual stream")
    return {block: _Watch(EMBEDDING, block, "block") for block in blocks}


@_register
class Taylor(DataTransformerCriterion):
    """E_x |∂L(x)/∂ξ_u| with a gate ξ_u = 1 on each head's context / each neuron's activation."""

    name = "taylor"
    paper = "Michel et al., NeurIPS 2019, Are Sixteen Heads Really Better than One? (E|dL/dξ| of a unit gate)"
    units = ("head", "neuron")
    uses_gates = True

    def watch(self, model, unit):
        if unit == "head":
            return _head_watches(model)
        return {m.act_name: _Watch(m.fc1_name, m, "act") for m in _sites_of(model, unit)}

    def see(self, watch, module, inputs, output):
        if watch.what == "act":
            gate = self.gates[watch.key] = _gate(output.shape[0], output.shape[-1], output)
            return output * gate.view(output.shape[0], *[1] * (output.ndim - 2), -1)
        heads = watch.site.num_heads
        if watch.what == "proj":
            x = inputs[0]
            gate = self.gates[watch.key] = _gate(x.shape[0], heads, x)
            gated = x.unflatten(-1, (heads, -1)) * gate.view(x.shape[0], *[1] * (x.ndim - 2), heads, 1)
            return F.linear(gated.flatten(-2), module.weight, module.bias)
        _, context = _mha_heads(watch.site, inputs, output)
        gate = self.gates[watch.key] = _gate(context.shape[0], heads, context)
        out = _mha_output(module, context * gate[:, :, None, None])
        return (out, *output[1:]) if isinstance(output, tuple) else out

    def gate_grad(self, key, grad):
        self.accumulate(key, grad.abs().sum(0), grad.shape[0])


@_register
class AttentionEntropy(DataTransformerCriterion):
    """log(keys) − entropy of each head's attention distribution, mean over queries and images
    (higher = more focused = kept first)."""

    name = "attention_entropy"
    paper = "attention entropy (focus = log N − H of each head's attention; Voita et al., ACL 2019, on focused heads)"
    units = ("head",)
    default_images = 256

    def watch(self, model, unit):
        return _probs_watches(model)

    def see(self, watch, module, inputs, output):
        probs = _mha_heads(watch.site, inputs, output)[0] if watch.what == "mha" else output
        probs = probs.detach().double()
        focus = math.log(probs.shape[-1]) + torch.special.xlogy(probs, probs).sum(-1)  # rows × heads × queries
        self.accumulate(watch.key, focus.sum((0, 2)), focus.shape[0] * focus.shape[2])
        return None


@_register
class MeanActivation(DataTransformerCriterion):
    """Mean |output| of each unit over images and tokens."""

    name = "mean_activation"
    paper = "Hu et al. 2016, Network Trimming, on tokens (mean |output|: head context, GELU output, stream channel)"
    units = UNITS

    def watch(self, model, unit):
        if unit == "head":
            return _head_watches(model)
        if unit == "neuron":
            return {m.act_name: _Watch(m.fc1_name, m, "act") for m in _sites_of(model, unit)}
        return _stream_watches(model)

    def see(self, watch, module, inputs, output):
        if watch.what == "mha":
            values = _mha_heads(watch.site, inputs, output)[1].detach().abs().transpose(1, -1)  # heads last
        elif watch.what == "proj":
            values = inputs[0].detach().unflatten(-1, (watch.site.num_heads, -1)).abs().transpose(-1, -2)
        else:
            values = (inputs[0] if watch.what == "block" else output).detach().abs()
        flat = values.double().flatten(0, -2)
        self.accumulate(watch.key, flat.sum(0), flat.shape[0])
        return None


__all__ = ["EMBEDDING", "TRANSFORMER_CRITERIA", "UNITS", "DataTransformerCriterion", "HeadMatrix", "TransformerCriterion",
           "head_matrix", "score_transformer", "transformer_criteria", "transformer_criteria_table", "unit_weights"]
