"""Structural pruning of a transformer's units: attention heads, MLP neurons, embedding channels.

A transformer's units are not filters: a **head** is ``head_dim`` rows of each of q, k and v in the
input projection plus the same columns of the output projection, and the module keeps ``num_heads``;
an MLP **neuron** is a row of ``fc1`` and a column of ``fc2``; an **embedding channel** is one channel
of the residual stream, shared by the patch embedding, the class and position embeddings, every
LayerNorm, every block's input columns and output rows, and the classifier's inputs.

Who does what: heads are cut by :mod:`neurotomy.surgery.attention` (slicing ``qkv``/``proj`` and
a relative position bias table, lowering ``num_heads``; torchvision's ``nn.MultiheadAttention``
unpacked first, recipe step ``unpack_attention``); neurons and embedding channels through torch-pruning's dependency graph,
which owns the coupling (the whole residual stream, class and position embeddings included), and
the width attributes a forward pass reads (torchvision's ``hidden_dim``, timm's ``embed_dim``)
follow an embedding cut.

How many: one ``ratio`` per unit family — of each layer's units (``uniform``), or of the family's
units ranked together across blocks (``global``: heads against heads, neurons against neurons, the
isomorphic grouping of Fang et al., ECCV 2024) — or a MACs/params reduction met by bisection on the
ratio (:func:`neurotomy.surgery.planner.search_ratio`) over predicted costs, then re-aimed on the
measured model. A target over several families is split between them by
:mod:`neurotomy.surgery.allocation` (the residual stream cut last without data; the split measured
on calibration batches with them), not by one ratio for all: the residual stream is far more
fragile than its share of MACs. Predicted costs count what a cut changes: each linear's MACs and
weights by the share that stays, each attention's matmuls (q·kᵀ and attention·v) by the share of
heads that stays.

Scores: ``UnitScores`` keyed as :mod:`neurotomy.scores.transformer` makes them (heads by attention
module name, neurons by ``fc1`` name, embedding channels by ``"embedding"``), or torch-pruning's
own group importance (:func:`torch_pruning_scores`: its L1/L2 and Taylor importance over the same
groups, head importance averaged per head as its pruner does) for the ``tp-l2``/``tp-taylor``
baseline. Recovery: LayerNorm has no running statistics, so a pruned transformer needs no
recalibration — only fine-tuning.

Example:
    >>> import torch
    >>> from neurotomy.models import build_model
    >>> from neurotomy.scores.unit_scores import UnitScores
    >>> vit = build_model("vit_tiny", 1, 4, 8, patch=2, dim=16, depth=2, num_heads=2, mlp_hidden=24).eval()
    >>> heads = UnitScores({"blocks.0.attn": torch.tensor([1.0, 2.0]), "blocks.1.attn": torch.tensor([3.0, 0.5])})
    >>> result = prune_transformer(vit, heads, units="heads", ratio=0.5)
    >>> [block.attn.num_heads for block in result.model.blocks], result.details["heads_removed"]
    ([1, 1], 2)
    >>> result.model(torch.zeros(1, 1, 8, 8)).shape
    torch.Size([1, 4])
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from neurotomy import validate
from neurotomy.device import model_device, to_device
from neurotomy.errors import NeurotomyWarning, PruningError
from neurotomy.models.anatomy import eval_mode, require_input_shape
from neurotomy.models.summary import count_macs_params, layer_table
from neurotomy.models.transformer import AttentionSite, attention_sites, mlp_sites
from neurotomy.scores.unit_scores import UnitScores
from neurotomy.surgery.allocation import calibration_batches, calibration_loss, search, stream_last
from neurotomy.surgery.copies import owning, sharing_copy
from neurotomy.surgery.attention import head_refusal, remove_heads, unpack_attention, unpacked
from neurotomy.surgery.filters import (PruningResult, check_outputs_kept, describe_failure, meet_measured,
                                      model_meta)
from neurotomy.surgery.graph import (CoupledGroup, coupled_group, dependency_graph, out_channel_handler,
                                     prune_out_channels, pruning_group)
from neurotomy.surgery.planner import Cut, check_request, ignored_names, refusal_line, search_ratio
from neurotomy.surgery.recipe import RECIPE_OPS, Replay
from neurotomy.surgery.relative_attention import per_head_numel

UNITS = ("heads", "neurons", "embedding", "all")
FAMILIES = ("heads", "neurons", "embedding")
EMBEDDING = "embedding"  # the key of embedding-channel scores
WIDTH_ATTRIBUTES = ("embed_dim", "hidden_dim", "num_features", "head_hidden_size")
UNIT_NOUNS = {"heads": "heads", "neurons": "MLP neurons", EMBEDDING: "embedding channels"}  # for refusal lines


# --------------------------------------------------------------------------- the cuts

@dataclass
class HeadCut(Cut):
    """Remove heads ``idxs`` of attention layer ``layer``."""

    def to_step(self) -> dict:
        return {"op": "prune_heads", "layer": self.layer, "heads": list(self.idxs)}


@dataclass
class EmbeddingCut(Cut):
    """Remove channels ``idxs`` of the residual stream, rooted at ``layer`` (an output projection
    writing the stream); every coupled layer loses them and width attributes follow."""

    def to_step(self) -> dict:
        return {"op": "prune_embedding", "layer": self.layer, "idxs": list(self.idxs)}


def family_of(cut: Cut) -> str:
    """``heads``, ``neurons`` or ``embedding``: which units ``cut`` removes."""
    return "heads" if isinstance(cut, HeadCut) else EMBEDDING if isinstance(cut, EmbeddingCut) else "neurons"


# --------------------------------------------------------------------------- embedding channels

def prune_embedding(graph: tp.DependencyGraph, model: nn.Module, root: str, idxs: Sequence[int]) -> None:
    """Remove residual-stream channels ``idxs`` everywhere they are coupled (torch-pruning's group
    of ``root``'s outputs), then lower every width attribute that named the old width
    (:data:`WIDTH_ATTRIBUTES`: torchvision's ``hidden_dim``, timm's ``embed_dim`` …)."""
    module = model.get_submodule(root)
    before = int(graph.get_out_channels(module))
    prune_out_channels(graph, module, list(idxs), root)
    after = int(graph.get_out_channels(module))
    for owner in model.modules():
        for attribute in WIDTH_ATTRIBUTES:
            settable = not isinstance(getattr(type(owner), attribute, None), property)
            if settable and getattr(owner, attribute, None) == before:
                setattr(owner, attribute, after)


@RECIPE_OPS.register("prune_embedding")
def _replay_prune_embedding(replay: Replay, step: dict) -> None:
    if replay.cache.get("graph") is None:
        replay.cache["graph"] = dependency_graph(replay.model, torch.zeros(1, *replay.input_shape,
                                                                           device=model_device(replay.model)))
    prune_embedding(replay.cache["graph"], replay.model, step["layer"], step["idxs"])


# --------------------------------------------------------------------------- the units of a model

@dataclass
class Layer:
    """One layer of units of one family: its key (the score key), how many units, how many must stay."""

    key: str
    family: str
    units: int
    floor: int


class TransformerUnits:
    """The prunable units of a transformer (``nn.MultiheadAttention`` already unpacked when heads
    or embedding channels are pruned), the residual stream's torch-pruning group, the layers that
    refuse (with why), and what a set of cuts costs (:meth:`predict`)."""

    def __init__(self, model: nn.Module, families: tuple[str, ...], input_shape: tuple[int, ...],
                 ignored: list[str], min_heads: int, min_channels: int) -> None:
        self.model, self.families, self.input_shape = model, families, tuple(input_shape)
        self.refused: dict[str, str] = {}
        ignored_set = set(ignored)
        self.sites = {s.name: s for s in attention_sites(model)}
        self.mlps = {m.fc1_name: m for m in mlp_sites(model)}
        needs_graph = "neurons" in families or EMBEDDING in families  # heads are cut without torch-pruning
        example = torch.zeros(1, *input_shape, device=model_device(model))
        self.graph = dependency_graph(model, example) if needs_graph else None
        self.layers: list[Layer] = []
        if "heads" in families:
            for site in self.sites.values():
                if ignored_set & {site.name, site.qkv_name, site.proj_name}:
                    continue
                reason = head_refusal(site)
                if reason is not None:
                    self.refused[site.name] = reason
                elif site.num_heads > min_heads:
                    self.layers.append(Layer(site.name, "heads", site.num_heads, min_heads))
        if "neurons" in families:
            for mlp in self.mlps.values():
                if ignored_set & {mlp.fc1_name, mlp.fc2_name}:
                    continue
                # fed by buffers only (timm Swin V2's position-bias cpb_mlp): not in the traced graph
                if model.get_submodule(mlp.fc1_name) not in self.graph.module2node:
                    self.refused[mlp.fc1_name] = "torch-pruning's trace of the model does not reach its neurons"
                    continue
                group = coupled_group(self.graph, model, model.get_submodule(mlp.fc1_name))
                outputs = {m.name for m in group.out_layers}
                inputs = {m.name for m in group.members
                          if m.kind == "in" and isinstance(m.module, (nn.Linear, nn.Conv2d))}
                if outputs != {mlp.fc1_name} or inputs != {mlp.fc2_name}:
                    self.refused[mlp.fc1_name] = "its neurons are coupled beyond fc2 (torch-pruning's group is larger)"
                    continue
                self.layers.append(Layer(mlp.fc1_name, "neurons", mlp.hidden, min_channels))
        self.embedding: CoupledGroup | None = None
        if EMBEDDING in families:
            self.embedding = self._embedding_group(ignored_set)
            if self.embedding is not None:
                self.layers.append(Layer(EMBEDDING, EMBEDDING, self.embedding.channels, min_channels))
        table = layer_table(model, input_shape)
        self.rows = {r["name"]: r for r in table.rows}
        self.total_macs = table.total_macs
        self.total_params = sum(p.numel() for p in model.parameters())

    def refusal_line(self) -> str:
        """One line naming the refused layers, family by family, each with its reason (which says
        its cause: torch-pruning's coupling, a form whose heads cannot be cut, …)."""
        by_family: dict[str, dict[str, str]] = {}
        for key, reason in self.refused.items():
            family = EMBEDDING if key == EMBEDDING else "heads" if key in self.sites else "neurons"
            by_family.setdefault(family, {})[key] = reason
        return ". ".join(refusal_line(refused, UNIT_NOUNS[family]) for family, refused in by_family.items())

    def _embedding_group(self, ignored: set[str]) -> CoupledGroup | None:
        """torch-pruning's group of the first attention's output projection: the residual stream.
        Refused (None) when the model has several streams (Swin's stages) or an ignored layer would
        lose outputs."""
        if not self.sites:
            raise PruningError("this model has no attention layer, so no residual stream to narrow; prune "
                               "filters instead (prune_filters)")
        first = next(iter(self.sites.values()))
        group = coupled_group(self.graph, self.model, self.model.get_submodule(first.proj_name))
        outputs = {m.name for m in group.out_layers}
        strays = [s.proj_name for s in self.sites.values() if s.proj_name not in outputs]
        if strays:
            self.refused[EMBEDDING] = (f"the model has residual streams of several widths ({first.proj_name} and "
                                       f"{strays[0]} write different ones)")
            return None
        losing = sorted(outputs & ignored)
        if losing:
            self.refused[EMBEDDING] = f"ignored layer {losing[0]} writes the residual stream"
            return None
        return group

    # ---------------------------------------------------------------- costs
    def predict(self, cuts: list[Cut]) -> tuple[int, int]:
        """(MACs, params) after ``cuts``: each linear/conv row of the measured layer table scaled by
        the share of its weights that stays, each attention module's own matmuls by the share of
        heads that stays and its per-head tensors (a relative position bias table) losing the heads'
        entries, each LayerNorm of the stream losing its channels' parameters. Unwrapped parameters
        (class and position embeddings) are not counted: the measured re-aim covers them."""
        out_rm: dict[str, int] = {}
        in_rm: dict[str, int] = {}
        heads_left: dict[str, float] = {}
        norm_rm: dict[str, int] = {}
        per_head_rm = 0  # parameters of per-head tensors beyond qkv/proj: the heads' bias-table entries
        for cut in cuts:
            n = len(cut.idxs)
            family = family_of(cut)
            if family == "heads":
                site = self.sites[cut.layer]
                out_rm[site.qkv_name] = out_rm.get(site.qkv_name, 0) + 3 * n * site.head_dim
                in_rm[site.proj_name] = in_rm.get(site.proj_name, 0) + n * site.head_dim
                heads_left[site.name] = (site.num_heads - n) / site.num_heads
                per_head_rm += n * per_head_numel(site.module, site.num_heads)
            elif family == "neurons":
                mlp = self.mlps[cut.layer]
                out_rm[mlp.fc1_name] = out_rm.get(mlp.fc1_name, 0) + n
                in_rm[mlp.fc2_name] = in_rm.get(mlp.fc2_name, 0) + n
            else:
                for m in self.embedding.members:
                    if isinstance(m.module, (nn.Linear, nn.Conv2d)):
                        target = out_rm if m.kind == "out" else in_rm
                        target[m.name] = target.get(m.name, 0) + n
                    elif isinstance(m.module, nn.LayerNorm):
                        norm_rm[m.name] = n
        macs, params = float(self.total_macs), self.total_params - per_head_rm
        modules = dict(self.model.named_modules())
        for name in set(out_rm) | set(in_rm):
            module = modules[name]
            out_c, in_c = _width(module)
            new_out, new_in = out_c - out_rm.get(name, 0), in_c - in_rm.get(name, 0)
            kernel = module.weight[0, 0].numel() if isinstance(module, nn.Conv2d) else 1
            groups = module.groups if isinstance(module, nn.Conv2d) else 1
            bias = module.bias is not None
            params -= (out_c * (in_c // groups) * kernel + bias * out_c) - (new_out * (new_in // groups) * kernel
                                                                             + bias * new_out)
            row = self.rows.get(name, {}).get("macs", 0)
            macs -= row - row * (new_out * new_in) / (out_c * in_c)
        for name, share in heads_left.items():
            row = self.rows.get(name, {}).get("macs", 0)
            macs -= row * (1 - share)
        for name, n in norm_rm.items():
            params -= n * sum(1 for p in modules[name].parameters(recurse=False))
        return int(round(macs)), int(params)


def _width(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, nn.Conv2d):
        return module.out_channels, module.in_channels
    return module.out_features, module.in_features


# --------------------------------------------------------------------------- the planner

class TransformerPlanner:
    """Scores + a ratio → head, neuron and embedding cuts, and their predicted MACs/params."""

    def __init__(self, units: TransformerUnits, scores: UnitScores, round_to: int | None) -> None:
        self.units, self.round_to = units, round_to
        self.fixed: dict[str, float] = {}  # family → the share of its units it loses, whatever the ratio
        normalized = scores.normalized("mean")
        self.layers: list[Layer] = []
        self.scores: list[torch.Tensor] = []
        missing = {f for f in units.families}
        for layer in units.layers:
            if layer.key not in scores:
                continue
            s = scores[layer.key]
            if s.ndim != 1 or s.shape[0] != layer.units:
                raise PruningError(f"scores for {layer.key} have shape {tuple(s.shape)} but it has {layer.units} "
                                   f"{layer.family}; score the model you prune (one score per unit)")
            if not bool(torch.isfinite(s).all()):
                raise PruningError(f"scores for {layer.key} contain NaN or infinity; score the model again")
            self.layers.append(layer)
            self.scores.append(normalized[layer.key])
            missing.discard(layer.family)
        unscored = [f for f in missing if any(layer.family == f for layer in units.layers)]
        if unscored or not self.layers:
            what = unscored[0] if unscored else "/".join(units.families)
            refused = f" ({units.refusal_line()})" if units.refused else ""
            raise PruningError(f"no scores for the {what} of this model{refused}; score them (score_transformer / "
                               f"torch_pruning_scores, keyed by attention module, fc1 or 'embedding') or choose "
                               "other units")
        self.macs_before, self.params_before = units.total_macs, units.total_params
        self.min_channels = min(layer.floor for layer in self.layers)
        # global scope ranks each family's units together (isomorphic: heads with heads, neurons with neurons)
        self.ranked = {family: [i for _, i in sorted((float(self.scores[i][u]), i)
                                                      for i, layer in enumerate(self.layers)
                                                      if layer.family == family for u in range(layer.units))]
                       for family in FAMILIES}

    def _rounded(self, i: int, n: int) -> int:
        layer = self.layers[i]
        n = max(0, min(n, layer.units - layer.floor))
        if self.round_to and self.round_to > 1 and layer.family != "heads":
            while n > 0 and (layer.units - n) % self.round_to:
                n -= 1
        return n

    def counts(self, ratio: float, scope: str) -> list[int]:
        """How many units each layer loses at ``ratio``: that share of each layer (uniform), or of
        each family's units, the lowest-scoring first, each layer keeping its floor (global). A
        family in ``fixed`` (:mod:`neurotomy.surgery.allocation`) loses its fixed share instead."""
        share = {family: self.fixed.get(family, ratio) for family in FAMILIES}
        if scope == "uniform":
            return [self._rounded(i, int(math.floor(share[layer.family] * layer.units + 1e-9)))
                    for i, layer in enumerate(self.layers)]
        counts = [0] * len(self.layers)
        for family, ranked in self.ranked.items():
            budget = int(math.floor(share[family] * len(ranked) + 1e-9))
            for i in ranked:
                if budget <= 0:
                    break
                if counts[i] < self.layers[i].units - self.layers[i].floor:
                    counts[i] += 1
                    budget -= 1
        return [self._rounded(i, n) for i, n in enumerate(counts)]

    def plan(self, ratio: float, scope: str) -> list[Cut]:
        """The cuts removing, per layer, its ``counts`` lowest-scoring units (ties: lowest index)."""
        cuts: list[Cut] = []
        for i, n in enumerate(self.counts(ratio, scope)):
            if n <= 0:
                continue
            layer = self.layers[i]
            order = torch.argsort(self.scores[i], stable=True)[:n].tolist()
            idxs = sorted(int(u) for u in order)
            if layer.family == "heads":
                cuts.append(HeadCut(layer.key, idxs))
            elif layer.family == "neurons":
                cuts.append(Cut(layer.key, idxs))
            else:
                cuts.append(EmbeddingCut(self.units.embedding.root_name, idxs))
        return cuts

    def predict(self, cuts: list[Cut]) -> tuple[int, int]:
        return self.units.predict(cuts)

    def ratio_for(self, target: float, which: str, scope: str) -> float:
        index, before = (0, self.macs_before) if which == "macs" else (1, self.params_before)
        return search_ratio(lambda r: 1 - self.predict(self.plan(r, scope))[index] / before, target, which,
                            f"min_heads/min_channels={self.min_channels}"
                            + (f", round_to={self.round_to}" if self.round_to else ""))


# --------------------------------------------------------------------------- applying cuts

def apply_transformer_cuts(model: nn.Module, cuts: list[Cut], input_shape: tuple[int, ...],
                           unpack_steps: list[dict] | None = None, *, scratch: bool = False) -> nn.Module:
    """A pruned copy of ``model`` (never modified): ``nn.MultiheadAttention`` unpacked first
    (``unpack_steps``, or all of them when heads or embedding channels are cut), then heads,
    neurons and embedding channels removed. The copy's recipe gains every step; a cut that fails,
    or after which the model no longer runs, is a :class:`PruningError` naming its layer.

    The copy is made sharing ``model``'s tensors (every cut makes new ones for the layers it
    narrows), so it costs the cut layers' memory, not a whole model's; the layers the cuts left
    alone are then cloned — unless ``scratch=True``: a candidate to run and throw away (a search's),
    which must never be trained or changed in place, as it still holds ``model``'s tensors."""
    order = sorted(cuts, key=lambda c: FAMILIES.index(family_of(c)))  # heads first: the graph is traced after them
    work, unpack_steps = _unpacked_copy(model, order, unpack_steps)
    try:
        _cut(work, order, input_shape, check_each=False)
        output = _run(work, input_shape)
    except PruningError:
        raise
    except Exception:  # which cut broke it: cut a fresh copy again, running it after each cut
        _cut(_unpacked_copy(model, order, unpack_steps)[0], order, input_shape, check_each=True)
        raise
    check_outputs_kept(model, work, input_shape, pruned_output=output)
    meta = model_meta(model)
    if meta is not None:
        work.neurotomy_meta = copy.deepcopy(meta)
        work.neurotomy_meta.recipe = list(meta.recipe) + list(unpack_steps) + [c.to_step() for c in order]
    return _in_modes_of(model, work if scratch else owning(work, model))


def _in_modes_of(model: nn.Module, work: nn.Module) -> nn.Module:
    """``work`` (a pruned copy of ``model``) with each module in the training mode of ``model``'s module of
    the same name — a BatchNorm or dropout the caller froze in eval stays so; a module the unpacking made
    (per-head projections) takes ``model``'s own mode."""
    modes = {name: m.training for name, m in model.named_modules()}
    for name, m in work.named_modules():
        m.training = modes.get(name, model.training)
    return work


def _unpacked_copy(model: nn.Module, cuts: list[Cut], unpack_steps: list[dict] | None) -> tuple[nn.Module, list[dict]]:
    """A copy of ``model`` sharing its tensors, with its ``nn.MultiheadAttention`` unpacked (``unpack_steps``,
    or all of them when ``cuts`` need it)."""
    if unpack_steps is None and any(family_of(c) != "neurons" for c in cuts):
        return unpacked(model, share_weights=True)
    work = sharing_copy(model)
    for step in unpack_steps or []:
        unpack_attention(work, step["layer"])
    return work, list(unpack_steps or [])


def _cut(work: nn.Module, order: list[Cut], input_shape: tuple[int, ...], check_each: bool) -> None:
    graph = None
    for cut in order:
        family = family_of(cut)
        if family == "heads":
            remove_heads(work, cut.layer, cut.idxs)
        else:
            graph = graph or dependency_graph(work, torch.zeros(1, *input_shape, device=model_device(work)))
            if family == "neurons":
                prune_out_channels(graph, work.get_submodule(cut.layer), cut.idxs, cut.layer)
            else:
                prune_embedding(graph, work, cut.layer, cut.idxs)
        if check_each:
            try:
                _run(work, input_shape)
            except Exception as exc:
                raise PruningError(f"the pruned model does not run after removing {len(cut.idxs)} {family} of "
                                   f"{cut.layer}: {describe_failure(work, exc)}; keep {cut.layer} whole "
                                   f"(ignored_layers / --ignore {cut.layer})") from None


def _run(model: nn.Module, input_shape: tuple[int, ...]):
    with torch.no_grad(), eval_mode(model):
        return model(torch.zeros(1, *input_shape, device=model_device(model)))


# --------------------------------------------------------------------------- the entry point

def _families(units: str | Sequence[str]) -> tuple[str, ...]:
    """``units`` (one of :data:`UNITS`, or several families) as a tuple of families."""
    named = [units] if isinstance(units, str) else list(units)
    unknown = [u for u in named if u not in UNITS]
    if unknown or not named:
        raise PruningError(f"unknown units {unknown[0] if unknown else units!r}; use one of {', '.join(UNITS)} "
                           "(or several of heads, neurons, embedding)")
    return FAMILIES if "all" in named else tuple(f for f in FAMILIES if f in named)


def _merged(scores: UnitScores | Sequence[UnitScores]) -> UnitScores:
    if isinstance(scores, UnitScores):
        return scores
    parts = list(scores)
    if not parts or not all(isinstance(s, UnitScores) for s in parts):
        raise PruningError("give the scores as one UnitScores or a list of them (heads, neurons, embedding)")
    merged: dict[str, torch.Tensor] = {}
    for part in parts:
        for key, value in part.items():
            if key in merged:
                raise PruningError(f"two of the given scores name {key!r}; give each unit's scores once")
            merged[key] = value
    return UnitScores(merged, "+".join(dict.fromkeys(p.criterion for p in parts)))


def prune_transformer(model: nn.Module, scores: UnitScores | Sequence[UnitScores], *,
                      units: str | Sequence[str] = "all", ratio: float | None = None,
                      target_macs: float | None = None, target_params: float | None = None,
                      scope: str = "uniform", min_heads: int = 1, min_channels: int = 1,
                      ignored_layers: list[str] | None = None, round_to: int | None = None,
                      input_shape: tuple[int, ...] | None = None,
                      calibration: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None) -> PruningResult:
    """Remove the lowest-scoring heads, MLP neurons and/or embedding channels (``units``: heads,
    neurons, embedding, all, or a list of families such as ``["heads", "neurons"]``) of a transformer.

    Amount: ``ratio`` of each family's units (per layer with ``scope="uniform"``, ranked across
    blocks with ``"global"``), or a ``target_macs`` / ``target_params`` reduction met within ±1 pt
    on predicted costs and re-aimed on the measured model. With a target and several families, how
    the target is split between them is chosen (:mod:`neurotomy.surgery.allocation`): without
    ``calibration``, heads and neurons share the ratio and the residual stream is cut last (only as
    far as the target needs); with ``calibration`` — a few (images, labels) batches, e.g. 512
    training images — the heads' and the stream's shares are searched and the split whose cut has the
    lowest cross-entropy on those batches is kept (deterministic for the same batches; each candidate
    is cut and run once, ~20 candidates at most). ``details["allocation"]`` says what was chosen and
    how. ``min_heads`` heads per attention and
    ``min_channels`` neurons per MLP / embedding channels survive; ``round_to`` keeps neuron and
    embedding counts multiples of it; ``ignored_layers`` (default: the classifier) are kept whole —
    name an attention module (or its ``qkv``/``proj``) to keep its heads, an ``fc1``/``fc2`` to keep
    its neurons. ``details`` of the result: ``units``, ``heads_removed``, ``neurons_removed``,
    ``embedding_removed``, ``allocation`` (with a target) and ``refused_layers`` with why. The
    result's model carries the recipe.
    """
    families = _families(units)
    check_request(ratio, target_macs, target_params, scope, min_channels, round_to)
    validate.positive_int(min_heads, "min_heads")
    if calibration is not None and ratio is not None:
        raise PruningError("calibration chooses how a target_macs / target_params reduction is split between unit "
                           "families; a ratio already fixes each family's share: give a target, or leave out "
                           "calibration")
    batches = calibration_batches(calibration) if calibration is not None else None
    scores = _merged(scores)
    input_shape = tuple(input_shape or require_input_shape(model))
    ignored = ignored_names(model, ignored_layers)  # unknown names are an error
    # planning reads the structure only: the unpacked copy shares the model's tensors (one ViT-B less in memory)
    work, steps = unpacked(model, share_weights=True) if any(f != "neurons" for f in families) else (model, [])
    planner = TransformerPlanner(TransformerUnits(work, families, input_shape, ignored, min_heads, min_channels),
                                 scores, round_to)
    if planner.units.refused:
        warnings.warn(planner.units.refusal_line(), NeurotomyWarning, stacklevel=2)
    which, target = ("macs", target_macs) if target_macs is not None else ("params", target_params)

    def apply(cuts_: list[Cut], scratch: bool = False) -> nn.Module:
        return apply_transformer_cuts(model, cuts_, input_shape, steps, scratch=scratch)

    allocation = None
    if ratio is None:
        allocation = (stream_last(planner, target, which, scope) if batches is None else
                      search(planner, target, which, scope,
                             lambda cuts_: calibration_loss(apply(cuts_, scratch=True), batches)))
        ratio = planner.ratio_for(target, which, scope)
    cuts = planner.plan(ratio, scope)

    pruned = apply(cuts)
    before, after = count_macs_params(model, input_shape), count_macs_params(pruned, input_shape)
    if target is not None:
        ratio, cuts, pruned, after = meet_measured(planner, scope, which, target, (ratio, cuts, pruned, after),
                                                   before, apply, lambda m: count_macs_params(m, input_shape))
    result = _result(pruned, cuts, ratio, scope, before, after, planner, units)
    if allocation is not None:
        result.details["allocation"] = allocation.describe()
    return result


def _result(pruned, cuts, ratio, scope, before, after, planner: TransformerPlanner, units) -> PruningResult:
    sizes = {layer.key: layer.units for layer in planner.units.layers}
    channels = {}
    removed = {f: 0 for f in FAMILIES}
    for cut in cuts:
        family = family_of(cut)
        key = EMBEDDING if family == EMBEDDING else cut.layer
        channels[key] = (sizes[key], sizes[key] - len(cut.idxs))
        removed[family] += len(cut.idxs)
    details = {"units": units if isinstance(units, str) else "+".join(units), "heads_removed": removed["heads"],
               "neurons_removed": removed["neurons"], "embedding_removed": removed[EMBEDDING]}
    if planner.units.refused:
        details["refused_layers"] = dict(planner.units.refused)
    return PruningResult(pruned, cuts, ratio, scope, before[0], after[0], before[1], after[1], channels, details)


# --------------------------------------------------------------------------- torch-pruning's importance

TP_IMPORTANCE = {"l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
                 "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
                 "taylor": lambda: tp.importance.GroupTaylorImportance()}


def torch_pruning_scores(model: nn.Module, importance: str = "l2", *,
                         units: Iterable[str] = ("head", "neuron", "embedding"),
                         batches: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
                         input_shape: tuple[int, ...] | None = None) -> list[UnitScores]:
    """torch-pruning's own group importance (``importance``: ``l1``, ``l2`` — its
    ``GroupMagnitudeImportance`` — or ``taylor`` — its ``GroupTaylorImportance``, on the gradients
    of the cross-entropy summed over ``batches`` of (images, labels)) for each of ``units``
    (``head``, ``neuron``, ``embedding``), as UnitScores keyed like :mod:`neurotomy.scores.transformer`'s
    (``info["unit"]``): the baseline "torch-pruning's ViT recipe" is these scores, pruned by the same
    planner. A head's importance is the mean over its channels of the importance of the group
    {``proj`` input column, its q, k, v rows} — the group torch-pruning builds for an attention layer
    rooted at ``proj`` (built here directly, so indexing q, k, v works as unbind does), averaged per
    head as its pruner averages.

    Example:
        >>> from neurotomy.models import build_model
        >>> vit = build_model("vit_tiny", 1, 4, 8, patch=2, dim=16, depth=2, num_heads=2, mlp_hidden=24)
        >>> [(s.info["unit"], len(s)) for s in torch_pruning_scores(vit, "l2")]
        [('head', 2), ('neuron', 2), ('embedding', 1)]
    """
    if importance not in TP_IMPORTANCE:
        raise PruningError(f"unknown torch-pruning importance {importance!r}; use one of {', '.join(TP_IMPORTANCE)}")
    units = tuple(units)
    for unit in units:
        if unit not in ("head", "neuron", "embedding"):
            raise PruningError(f"unknown unit {unit!r}; use head, neuron or embedding")
    if importance == "taylor" and batches is None:
        raise PruningError("torch-pruning's Taylor importance needs gradients: pass batches of (images, labels)")
    input_shape = tuple(input_shape or require_input_shape(model))
    work, _ = unpacked(model)
    work.eval()
    if importance == "taylor":
        _accumulate_gradients(work, batches)
    estimate = TP_IMPORTANCE[importance]()
    graph = dependency_graph(work, torch.zeros(1, *input_shape, device=model_device(work)))
    sites, mlps = attention_sites(work), mlp_sites(work)
    results = []
    label = f"tp-{importance}"
    for unit in units:
        scores: dict[str, torch.Tensor] = {}
        if unit == "head":
            for site in sites:  # heads that cannot be cut (or that the trace never saw called) get no scores
                traced = site.kind == "qkv" and {site.qkv, site.proj} <= set(graph.module2node)
                if not traced or head_refusal(site) is not None:
                    continue
                imp = estimate(_head_group(graph, site))
                scores[site.name] = imp.view(site.num_heads, -1).mean(1)
        elif unit == "neuron":
            for mlp in mlps:
                scores[mlp.fc1_name] = _group_importance(estimate, graph, work.get_submodule(mlp.fc1_name))
        elif sites:
            scores[EMBEDDING] = _group_importance(estimate, graph, work.get_submodule(sites[0].proj_name))
        info = {"unit": unit, "source": "torch-pruning", "importance": importance}
        results.append(UnitScores(scores, label, info=info))
    return results


def _accumulate_gradients(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """The gradients of the summed cross-entropy over ``batches`` in the weights (no update)."""
    device = model_device(model)
    model.zero_grad(set_to_none=True)
    seen = 0
    with torch.enable_grad():
        for images, labels in batches:
            images, labels = to_device(device, images, labels)
            F.cross_entropy(model(images), labels, reduction="sum").backward()
            seen += len(labels)
    if not seen:
        raise PruningError("torch-pruning's Taylor importance got no images; pass at least one batch")


def _group_importance(estimate: Callable, graph: tp.DependencyGraph, module: nn.Module) -> torch.Tensor:
    group = pruning_group(graph, module, out_channel_handler(graph, module),
                          list(range(int(graph.get_out_channels(module)))))
    imp = estimate(group)
    if imp is None:
        raise PruningError("torch-pruning found no weights to score in a group; this importance cannot score it")
    return imp.detach().double().cpu()


def _head_group(graph: tp.DependencyGraph, site: AttentionSite):
    """torch-pruning's attention group rooted at ``proj``'s inputs: ``proj`` input column c and the
    q, k and v rows of channel c of ``qkv``, each c its own root index."""
    proj, qkv = site.proj, site.qkv
    width = site.num_heads * site.head_dim
    root = graph.module2node[proj]
    proj_in = graph.get_pruner_of_module(proj).prune_in_channels
    qkv_out = graph.get_pruner_of_module(qkv).prune_out_channels
    group = tp.dependency.Group()
    members = [(proj_in, root, list(range(width)), list(range(width))),
               (qkv_out, graph.module2node[qkv], [p * width + c for p in range(3) for c in range(width)],
                [c for _ in range(3) for c in range(width)])]
    for handler, node, idxs, roots in members:
        group.add_dep(tp.dependency.Dependency(handler, handler, source=root, target=node), idxs)
        group[len(group) - 1].root_idxs = roots
    return group
