"""The measuring stages of :func:`neurotomy.jobs.dissect.dissect`, one function each. Every
function runs the library on the models and data and returns a plain record (dicts, lists,
numbers); the matching section of :mod:`neurotomy.report` only renders that record.

- :func:`layer_records` → :func:`neurotomy.report.sections.layers_section`
- :func:`score_records` (a transformer: :func:`transformer_score_records`) →
  :func:`neurotomy.report.sections.scores_section`
- :func:`dynamics_records` → :func:`neurotomy.report.sections.dynamics_section`
- :func:`subset_records` → :func:`neurotomy.report.class_subsets_section.class_subsets_section`
- :func:`reason_records` → :func:`neurotomy.report.explanations_section.explanations_section`
- :func:`deployment_records` → :func:`neurotomy.report.deployment_section.deployment_section`
- :func:`concept_records` → :func:`neurotomy.report.concepts_section.directions_section`
- :func:`transformer_records` → :func:`neurotomy.report.transformer_section.transformer_section`

Example:
    >>> from neurotomy.loading import load_model
    >>> lenet = load_model("zoo:lenet5-digits")
    >>> layers = layer_records(lenet, lenet, (1, 8, 8))  # 8 × 8 digits
    >>> layers["original"]["total_params"] == layers["pruned"]["total_params"] == sum(
    ...     p.numel() for p in lenet.parameters())
    True
"""

from __future__ import annotations

import importlib.util
import math
import tempfile
import warnings

import torch
from torch import nn
from torch.utils.data import Dataset

from neurotomy.data.batches import iterate_batches
from neurotomy.device import model_device, to_device
from neurotomy.dynamics.features import TOKEN_VIEWS, default_layers, split_view
from neurotomy.dynamics.modularity import modularity_curve
from neurotomy.dynamics.similarity import similarity_matrix
from neurotomy.errors import ModelError, NeurotomyError, NeurotomyWarning
from neurotomy.explain import METHODS as EXPLAIN_METHODS
from neurotomy.explain import attribute
from neurotomy.explain.figure import attribution_grid
from neurotomy.explain.rating import compare_reasons
from neurotomy.jobs.budget import DissectBudget
from neurotomy.jobs.concepts import directions_and_concepts
from neurotomy.jobs.deploy import deployment_figures
from neurotomy.models.anatomy import classifier_layer, model_input_shape
from neurotomy.models.summary import layer_table
from neurotomy.quantize import Int8Error
from neurotomy.models.transformer import (attention_sites, is_transformer, mlp_sites, token_layout,
                                          transformer_blocks)
from neurotomy.scores import get_criterion
from neurotomy.scores.class_subsets import class_feature_scores, penultimate_features, smallest_class_subsets
from neurotomy.scores.transformer import TRANSFORMER_CRITERIA, head_matrix, score_transformer
from neurotomy.scores.unit_scores import UnitScores
from neurotomy.surgery.heads import SubspaceHead, head_accuracy

FREQUENCY_K = 5  # Badola et al.'s k for ResNet-20
RETENTION = 0.99  # a subset must keep ≥ 99 % of its class's precision and recall (on the training images)
REASON_METHODS = ("gradcam", "gradient", "pathway")  # Selvaraju et al. 2017; Simonyan et al. 2014; Khakzar et al. 2021
ATTENTION_METHODS = ("rollout",)  # Abnar & Zuidema 2020: added where the model has attention layers
DEPLOY_ROUNDS = 5  # interleaved latency rounds of the deployment section (medians of 5)
DEPLOY_THREADS = 1  # a small CPU deployment runs one thread; the pruning section times torch's own threads
TRANSFORMER_CRITERION = "taylor"  # Michel et al. 2019's head-mask Taylor score, for heads and MLP neurons alike
TRANSFORMER_REPORT_CRITERIA = ("l1", "l2", "taylor", "mean_activation")  # those scoring both heads and neurons
TRANSFORMER_UNITS = ("head", "neuron")  # the unit kinds a transformer's prune cuts (PruneJob's default)
TOP = 0.10  # top-k % pixels for the IoU
SHOWN = 6  # images drawn side by side


def layer_records(original: nn.Module, pruned: nn.Module, input_shape: tuple[int, ...]) -> dict:
    """The layer table (every leaf layer: output shape, parameters, MACs) of both models."""
    return {"original": layer_table(original, input_shape).to_dict(),
            "pruned": layer_table(pruned, input_shape).to_dict()}


def score_records(scores: dict[str, UnitScores], pruning_criterion: str) -> dict:
    """Each criterion's paper, what it needs and its cost; the Spearman rank agreement of every
    pair (mean over layers); and each other criterion's per-layer agreement with the pruning one."""
    names = list(scores)
    agreement = [[1.0 if a == b else scores[a].rank_correlation(scores[b])["mean"] for b in names] for a in names]
    criteria = []
    for name in names:
        crit = get_criterion(name)
        criteria.append({"name": name, "paper": crit.paper, "needs": "data" if crit.needs_data else "weights",
                         "seconds": scores[name].info.get("seconds")})
    layers = list(scores[pruning_criterion])
    others = [n for n in names if n != pruning_criterion]
    series = {o: [scores[pruning_criterion].rank_correlation(scores[o]).get(layer) for layer in layers]
              for o in others}
    return {"pruning_criterion": pruning_criterion, "criteria": criteria, "agreement": agreement,
            "per_layer": {"layers": layers, "spearman": series}}


def dynamics_records(model: nn.Module, pruned: nn.Module, test: Dataset, budget: DissectBudget, seed: int,
                     quiet: bool) -> dict:
    """Modularity curves of both models on the same class-balanced probe set (Lu et al., ECCV 2022),
    and linear CKA between their layers (Kornblith et al., ICML 2019)."""
    graph = min(500, budget.modularity_per_class * len(test.classes))  # the authors' graphs of 500
    curves = [modularity_curve(m, test, per_class=budget.modularity_per_class, graph_size=graph, seed=seed,
                               quiet=quiet) for m in (model, pruned)]
    cka = similarity_matrix(model, test, pruned, samples=budget.cka_samples, seed=seed)
    return {"original": curves[0].to_dict(), "pruned": curves[1].to_dict(), "cka": cka}


def _class_subsets(model: nn.Module, train: Dataset, test: Dataset, images: int | None, quiet: bool) -> dict:
    name, head = classifier_layer(model)
    fit = penultimate_features(model, train, max_images=images, quiet=quiet)
    scores = class_feature_scores(fit.features, fit.targets, head, "frequency", k=FREQUENCY_K, layer=name)
    subsets = smallest_class_subsets(fit.features, fit.targets, head, scores, retention=RETENTION)
    held_out = penultimate_features(model, test, quiet=quiet)
    sparse = SubspaceHead.from_linear(head, subsets.mask())
    return {"sizes": subsets.sizes, "width": subsets.width, "recall_subset": subsets.recall_subset,
            "acc_full": head_accuracy(head, held_out.features, held_out.targets),
            "acc_subsets": head_accuracy(sparse, held_out.features, held_out.targets),
            "head_macs_full": head.in_features * head.out_features, "head_macs_subsets": sparse.macs}


def subset_records(model: nn.Module, pruned: nn.Module, train: Dataset, test: Dataset,
                   images: int | None = None, quiet: bool = False) -> dict:
    """Class feature subsets of the final layer (Badola et al., arXiv 2112.07719) of both models:
    per class, the fewest penultimate features (frequency rule, k = :data:`FREQUENCY_K`, §3) whose
    logit alone keeps :data:`RETENTION` of the class's precision and recall on ``train``; and the
    ``test`` accuracy of the decomposed head (:mod:`neurotomy.surgery.heads`, no fine-tune)."""
    models = {"original": _class_subsets(model, train, test, images, quiet),
              "pruned": _class_subsets(pruned, train, test, images, quiet)}
    classes = [str(c) for c in getattr(test, "classes", range(len(models["original"]["sizes"])))]
    return {"k": FREQUENCY_K, "retention": RETENTION, "classes": classes, **models}


def reason_records(model: nn.Module, pruned: nn.Module, data: Dataset, methods: tuple[str, ...] = REASON_METHODS,
                   seed: int = 0, quiet: bool = False) -> tuple[dict, object]:
    """Explain ``data`` (a small class-balanced set) with both models and compare the maps: the
    record of :func:`neurotomy.explain.rating.compare_reasons` (Spearman of the maps by magnitude,
    IoU of their top :data:`TOP` pixels, overall and per class) with each method's paper, and the
    figure (:func:`neurotomy.explain.figure.attribution_grid`) of the first :data:`SHOWN` images:
    input, then each method's map from both models. Returns ``(record, figure)``."""
    images, labels = next(iterate_batches(data, len(data)))
    agreement = compare_reasons(model, pruned, images, methods=methods, top=TOP, seed=seed, quiet=quiet)
    classes = [str(c) for c in getattr(data, "classes", [])]
    shown = images[:SHOWN]
    with torch.no_grad():
        targets = model(to_device(model_device(model), shown)).argmax(1).cpu()
    maps = {f"{m}, {who}": attribute(net, shown, targets, method=m).detach().abs()
            for m in methods for who, net in (("original", model), ("pruned", pruned))}
    skipped = {m: why for m, why in skipped_reason_methods(model).items() if m not in methods}
    for method, why in skipped.items():
        warnings.warn(f"the {method} explanation is skipped: {why}", NeurotomyWarning, stacklevel=2)
    record = {"agreement": agreement, "top": TOP, "primary": methods[0], "classes": classes, "skipped": skipped,
              "papers": {m: EXPLAIN_METHODS[m].paper for m in agreement["methods"]},
              "targets": targets.tolist(), "labels": labels[:SHOWN].tolist()}
    names = [classes[int(t)] if int(t) < len(classes) else str(t) for t in targets]
    figure = attribution_grid(shown, maps, signed={k: False for k in maps}, row_titles=names)
    return record, figure


def _own_randomness():
    """The global random state restored afterwards: the optional stages seed their own generators,
    so whether they run (onnxruntime installed or not, a transformer or not) changes nothing the
    later stages — or a caller going on after the report — draw."""
    return torch.random.fork_rng(devices=[])


def reason_methods(model: nn.Module) -> tuple[str, ...]:
    """:data:`REASON_METHODS`, plus attention rollout (:data:`ATTENTION_METHODS`) for a transformer,
    less those that cannot explain ``model`` (:meth:`neurotomy.explain.methods.Method.cannot_explain`)."""
    return tuple(m for m in (*REASON_METHODS, *ATTENTION_METHODS) if EXPLAIN_METHODS[m].cannot_explain(model) is None)


def skipped_reason_methods(model: nn.Module) -> dict[str, str]:
    """The :data:`REASON_METHODS` that cannot explain ``model``, each with why: pathway, when the model
    has no activation to mask (no module, and no function such as ``F.relu`` called). Rollout
    on a CNN is no skip: it is not a reason method there."""
    return {m: why for m in REASON_METHODS if (why := EXPLAIN_METHODS[m].cannot_explain(model)) is not None}


def deployment_available() -> bool:
    """Whether onnxruntime can be imported: the deployment stage runs by default only then."""
    return importlib.util.find_spec("onnxruntime") is not None


def deployment_records(model: nn.Module, pruned: nn.Module, train: Dataset, test: Dataset, budget: DissectBudget,
                       seed: int = 0, quiet: bool = False) -> dict:
    """Both models as deployed on a CPU (:func:`neurotomy.jobs.deploy.deployment_figures`): PyTorch,
    ONNX fp32 and ONNX int8, each with test accuracy, size, latency at batch 1 and
    ``budget.deploy_latency_batch`` (:data:`DEPLOY_THREADS` thread(s), :data:`DEPLOY_ROUNDS` interleaved
    rounds) and its occlusion/RISE maps against the original PyTorch model's. The ONNX files are
    written to a temporary folder and removed (the report keeps their sizes, not their paths). A
    model onnxruntime cannot quantize is deployed in fp32 only, ``int8_refused`` saying why (the op)
    and what the section shows instead; one that cannot be deployed at all (an op ONNX cannot export)
    gives ``{"skipped": why}`` — the rest of the report stands."""
    refused = None
    for int8 in (True, False):
        try:
            with tempfile.TemporaryDirectory(prefix="neurotomy-deploy-") as directory, _own_randomness():
                record = deployment_figures({"original": model, "pruned": pruned}, train, test, directory, int8=int8,
                                            calibration_images=budget.deploy_calibration_images,
                                            threads=DEPLOY_THREADS, latency_batch=budget.deploy_latency_batch,
                                            reason_images=budget.deploy_reason_images, rounds=DEPLOY_ROUNDS,
                                            options={"rise": {"masks": budget.deploy_rise_masks}}, seed=seed,
                                            quiet=quiet)
            break
        except Int8Error as exc:  # the op is named; dissect goes on in fp32 (its user asked for no int8 flag)
            refused = (f"{exc.problem}, so this section shows the fp32 ONNX files only, the pruned one as the "
                       f"deployed model; for an int8 file, {exc.fix}")
        except NeurotomyError as exc:  # e.g. an op ONNX cannot export: nothing to deploy
            return {"skipped": str(exc), "int8_refused": refused}
    record["int8_refused"] = refused
    for row in record["rows"]:
        row.pop("path", None)
    for files in record["files"].values():
        for entry in files.values():
            entry.pop("path", None)
    return record


def transformer_readout(model: nn.Module) -> str:
    """The last block's output as the classifier reads it: the last LayerNorm (``norm``, timm's
    ``fc_norm``, torchvision's ``encoder.ln``), else the last block. Not the block itself: in a
    pre-norm transformer the residual stream reaches the logits only through that LayerNorm, which
    is scale-invariant (f(αa) = f(a)), so Σ a·∂y/∂a over the stream is ~0 (Euler) and relevance shares
    of its directions divide by nearly nothing (measured on a digits ViT: a total of 0.001, top-1
    PRCA share 107 ×; after the norm: 5.9 and 0.20).

    Example:
        >>> from neurotomy.models import build_model
        >>> transformer_readout(build_model("vit_tiny"))
        'norm'
    """
    norms = [name for name, module in model.named_modules() if isinstance(module, nn.LayerNorm)]
    return norms[-1] if norms else transformer_blocks(model)[-1]


def concept_records(model: nn.Module, train: Dataset, test: Dataset, budget: DissectBudget,
                    channel_scores: UnitScores | None, seed: int = 0, quiet: bool = False) -> dict:
    """Directions and concepts of the last block (:func:`neurotomy.jobs.concepts.directions_and_concepts`):
    PRCA and PCA spectra, top-k PRCA / PCA / random directions, DRSA subspaces and their heatmaps,
    and the CRP reference images of the channels ``channel_scores`` (the pruning criterion's) ranks
    highest (kept) and lowest (pruned away first) in its last scored conv layer. A transformer is
    looked at where its last block enters the classifier (:func:`transformer_readout`), its channels
    ranked by relevance (no conv criterion scores them). Observes and evaluates
    ``budget.concept_images`` images. A layer that cannot be analysed gives ``{"skipped": why}``."""
    if is_transformer(model):
        last = transformer_readout(model)
        where, ranking = {"layer": last, "concept_layer": last}, "relevance (activation × gradient)"
    else:
        where, ranking = {"channel_scores": channel_scores}, (channel_scores.criterion if channel_scores is not None
                                                                  else "relevance (activation × gradient)")
    try:
        with _own_randomness():
            record = directions_and_concepts(model, train, test, max_images=budget.concept_images,
                                             eval_images=budget.concept_images, seed=seed, quiet=quiet, **where)
    except NeurotomyError as exc:  # e.g. a model with no conv layer or block to look into
        return {"skipped": str(exc)}
    return {**record, "ranking": ranking, "classes": [str(c) for c in getattr(test, "classes", [])]}


def _units_per_block(model: nn.Module, blocks: list[str]) -> tuple[list[int], list[int]]:
    """Heads and MLP neurons in each block (0 where a block lost its attention or MLP)."""
    heads = {s.name: s.num_heads for s in attention_sites(model)}
    neurons = {s.fc1_name: s.hidden for s in mlp_sites(model)}

    def inside(units: dict[str, int], block: str) -> int:
        return sum(n for name, n in units.items() if name.startswith(f"{block}."))
    return [inside(heads, b) for b in blocks], [inside(neurons, b) for b in blocks]


def _token_views(model: nn.Module, data: Dataset) -> list[str]:
    """``[":cls", ":patches"]``, or only ``":patches"`` for a model without a class token (Swin)."""
    try:
        prefix = token_layout(model, model_input_shape(model, data)).prefix_tokens
    except ModelError:  # a layout that cannot be read: no class token to take
        prefix = 0
    return [view for view in TOKEN_VIEWS if prefix or view != ":cls"]


def transformer_scores(model: nn.Module, train: Dataset, criteria: list[str], score_images: int | None,
                       seed: int = 0, quiet: bool = False) -> dict[str, dict[str, UnitScores]]:
    """Every criterion's scores of every :data:`TRANSFORMER_UNITS` kind (heads, MLP neurons):
    ``{criterion: {"head": UnitScores, "neuron": UnitScores}}``, data criteria on ``score_images``
    training images (:func:`neurotomy.scores.transformer.score_transformer`)."""
    return {name: {unit: score_transformer(model, name, unit, train, max_images=score_images, seed=seed, quiet=quiet)
                   for unit in TRANSFORMER_UNITS} for name in criteria}


def _pooled(scores: dict[str, UnitScores]) -> UnitScores:
    """Head scores pooled over blocks (a block has a handful of heads: a per-block rank correlation of
    2–4 values says little) next to each MLP layer's neuron scores."""
    heads = head_matrix(scores["head"]).values.flatten()
    return UnitScores({"heads (all blocks)": heads[~heads.isnan()], **dict(scores["neuron"])})


def transformer_score_records(scores: dict[str, dict[str, UnitScores]], pruning_criterion: str) -> dict:
    """:func:`score_records` for a transformer's heads and MLP neurons (``scores`` as
    :func:`transformer_scores` returns them): each criterion's paper, needs and cost, and the
    Spearman agreement of every pair — over all heads at once and per MLP layer, then averaged."""
    names = list(scores)
    pooled = {name: _pooled(scores[name]) for name in names}
    agreement = [[1.0 if a == b else pooled[a].rank_correlation(pooled[b])["mean"] for b in names] for a in names]
    criteria = []
    for name in names:
        crit = TRANSFORMER_CRITERIA.get(name)
        criteria.append({"name": name, "paper": crit.paper, "needs": "data" if crit.needs_data else "weights",
                         "seconds": sum(s.info.get("seconds") or 0.0 for s in scores[name].values())})
    layers = list(pooled[pruning_criterion])
    series = {o: [pooled[pruning_criterion].rank_correlation(pooled[o]).get(layer) for layer in layers]
              for o in names if o != pruning_criterion}
    return {"pruning_criterion": pruning_criterion, "criteria": criteria, "agreement": agreement,
            "per_layer": {"layers": layers, "spearman": series},
            "units": "every attention head and MLP neuron (heads ranked across blocks, neurons within each block)"}


def transformer_records(model: nn.Module, pruned: nn.Module, test: Dataset, budget: DissectBudget,
                        scores: dict[str, UnitScores], seed: int = 0, quiet: bool = False) -> dict:
    """A transformer's units and dynamics: ``scores`` (``{"head": …, "neuron": …}``, e.g. the
    :data:`TRANSFORMER_CRITERION` ones of :func:`transformer_scores`) of every head (blocks × heads,
    :func:`neurotomy.scores.transformer.head_matrix`) and every MLP neuron; heads and neurons per
    block of both models; the modularity curve of the original over its blocks seen as the class
    token and as the mean of the patch tokens; linear CKA between its blocks in both views."""
    with _own_randomness():
        return _transformer_records(model, pruned, test, budget, scores, seed, quiet)


def _transformer_records(model: nn.Module, pruned: nn.Module, test: Dataset, budget: DissectBudget,
                         scores: dict[str, UnitScores], seed: int, quiet: bool) -> dict:
    heads, neurons = scores["head"], scores["neuron"]
    matrix = head_matrix(heads)
    blocks = transformer_blocks(model)
    views = _token_views(model, test)
    layers = [layer for view in views for layer in default_layers(model, view) if split_view(layer)[1] == view]
    classifier_input = [layer for layer in default_layers(model, views[0]) if split_view(layer)[1] not in TOKEN_VIEWS]
    graph = min(500, budget.modularity_per_class * len(test.classes))  # the authors' graphs of 500
    curve = modularity_curve(model, test, layers=layers + classifier_input, per_class=budget.modularity_per_class,
                             graph_size=graph, seed=seed, quiet=quiet)
    q = dict(zip(curve.layers, curve.q))
    curves = {view.lstrip(":"): {"layers": [x for x in layers if x.endswith(view)] + classifier_input,
                                 "q": [q[x] for x in layers if x.endswith(view)] + [q[x] for x in classifier_input]}
              for view in views}
    cka = similarity_matrix(model, test, layers_a=layers, layers_b=layers, samples=budget.cka_samples, seed=seed)
    heads_o, neurons_o = _units_per_block(model, blocks)
    heads_p, neurons_p = _units_per_block(pruned, blocks)
    return {"criterion": heads.criterion, "paper": heads.info["paper"],
            "score_images": budget.score_images,  # None: the criterion's own calibration size
            "heads": {"layers": matrix.layers,
                      "values": [[None if math.isnan(v) else v for v in row] for row in matrix.values.tolist()]},
            "neurons": {"layers": list(neurons), "scores": [neurons[name].tolist() for name in neurons]},
            "units": {"blocks": blocks, "heads": {"original": heads_o, "pruned": heads_p},
                      "neurons": {"original": neurons_o, "pruned": neurons_p}},
            "modularity": {"k": curve.k, "n_samples": curve.n_samples, "views": curves}, "cka": cka}


__all__ = ["ATTENTION_METHODS", "DEPLOY_ROUNDS", "DEPLOY_THREADS", "FREQUENCY_K", "REASON_METHODS", "RETENTION",
           "SHOWN", "TOP", "TRANSFORMER_CRITERION", "TRANSFORMER_REPORT_CRITERIA", "TRANSFORMER_UNITS", "concept_records",
           "deployment_available", "deployment_records", "dynamics_records", "layer_records", "reason_methods",
           "skipped_reason_methods",
           "reason_records", "score_records", "subset_records", "transformer_readout", "transformer_records",
           "transformer_score_records", "transformer_scores"]
