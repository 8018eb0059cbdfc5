"""Directions and concepts of one layer: the jobs behind ``neurotomy concepts``, the subspace
benchmark and the report's "directions and concepts" section.

* :func:`reference_images` — per channel, the test images for which that channel is most *relevant*
  (CRP's reference samples, ranked by the channel's relevance R_c = Σ a·∂y/∂a for the image's class,
  not by its activation; :mod:`neurotomy.explain.crp`), and their class distribution.
* :func:`concepts_job` — those references with their channel-conditional heatmaps: a grid PNG and a
  JSON record (``neurotomy concepts``).
* :func:`accuracy_kept` — which directions does the model need? Accuracy with the layer's output
  projected onto kept directions (:func:`neurotomy.surgery.projection.project_layer`).
* :func:`compare_directions` — PRCA against PCA and random directions at equal k: relevance captured
  on held-out data, accuracy kept (:mod:`neurotomy.scores.subspace`).
* :func:`directions_and_concepts` — what a report section needs for one layer: both spectra, the
  comparison, DRSA's subspaces with their heatmaps, and reference images of chosen channels.

Example:
    >>> from neurotomy.loading import load_model
    >>> from neurotomy.data import load_dataset
    >>> refs = reference_images(load_model("zoo:lenet5-digits"), load_dataset("digits", split="test"),
    ...                         "features.3", [0, 5], n_reference=3, quiet=True)
    >>> sorted(refs["channels"]), len(refs["channels"][5]["indices"]), refs["images"]
    ([0, 5], 3, 360)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset

from neurotomy import validate
from neurotomy.data import batch_at
from neurotomy.data.batches import iterate_batches, num_batches
from neurotomy.data.labels import dataset_targets
from neurotomy.data.subsets import balanced_subset
from neurotomy.device import model_device
from neurotomy.errors import ModelError, OptionError, ScoresError
from neurotomy.explain.crp import channel_relevance, conditional_relevance
from neurotomy.models.anatomy import residual_blocks
from neurotomy.progress import add_task, progress_bar
from neurotomy.scores.base import conv_units
from neurotomy.scores.subspace import (LayerRelevance, check_target, find_subspaces, observe_layer, pca_basis,
                                       prca_basis, subspace_heatmaps)
from neurotomy.scores.unit_scores import UnitScores
from neurotomy.surgery.projection import project_layer, remove_subspace
from neurotomy.train import evaluate

KS = (1, 2, 4, 8, 16)


# --------------------------------------------------------------------------------------------------
# concepts: reference images of channels


def layer_width(model: nn.Module, data: Dataset, layer: str) -> int:
    """Channels of ``layer``'s output, seen on the first image of ``data`` (a bad layer fails here)."""
    if layer not in dict(model.named_modules()) or not layer:
        raise ModelError(f"model has no layer {layer!r}; see `neurotomy info MODEL` for layer names")
    image, _ = batch_at(data, torch.tensor([0]))
    return channel_relevance(model, image.float(), layer).shape[1]


def check_channels(channels: Sequence[int], width: int, layer: str) -> list[int]:
    """Distinct channel indices inside ``layer``'s ``width``, else an :class:`OptionError`."""
    channels = [validate.non_negative_int(c, "channels") for c in channels]
    if not channels or len(set(channels)) != len(channels):
        raise OptionError(f"channels {channels}: give one or more distinct channel indices")
    bad = [c for c in channels if c >= width]
    if bad:
        raise OptionError(f"channel {bad[0]} does not exist: layer {layer!r} has {width} channels (0…{width - 1})")
    return channels


def reference_images(model: nn.Module, data: Dataset, layer: str, channels: Sequence[int], *, n_reference: int = 8,
                     target: str = "label", batch_size: int = 128, max_images: int | None = None,
                     quiet: bool = False) -> dict:
    """For each of ``channels`` of ``layer``, the ``n_reference`` images of ``data`` (in order, at most
    ``max_images``) with the highest relevance of that channel for the image's ``target`` logit
    (``label`` or ``predicted``): their dataset ``indices``, ``relevance``, ``labels`` and
    ``class_counts`` (class name → how many of the references)."""
    check_target(target)
    n_reference = validate.positive_int(n_reference, "n_reference")
    batch_size = validate.positive_int(batch_size, "batch_size")
    channels = check_channels(channels, layer_width(model, data, layer), layer)
    picked = torch.tensor(channels)
    best = torch.full((len(channels), 0), float("-inf"), dtype=torch.float64)
    where = torch.zeros(len(channels), 0, dtype=torch.long)
    seen = 0
    with progress_bar(quiet) as bar:
        task = add_task(bar, f"reference images of {layer}", num_batches(data, batch_size, max_images))
        for images, labels in iterate_batches(data, batch_size, max_images=max_images):
            relevance = channel_relevance(model, images.float(), layer, labels if target == "label" else None)
            values = torch.cat([best, relevance[:, picked].T.double().cpu()], 1)
            rows = torch.cat([where, torch.arange(seen, seen + len(images)).expand(len(channels), -1)], 1)
            top = values.topk(min(n_reference, values.shape[1]), dim=1)
            best, where = top.values, rows.gather(1, top.indices)
            seen += len(images)
            bar.advance(task)
    targets = dataset_targets(data)
    classes = list(getattr(data, "classes", []))
    result = {}
    for i, channel in enumerate(channels):
        labels = targets[where[i]].tolist()
        counts: dict[str, int] = {}
        for label in labels:
            name = classes[label] if label < len(classes) else str(label)
            counts[name] = counts.get(name, 0) + 1
        result[channel] = {"indices": where[i].tolist(), "relevance": best[i].tolist(), "labels": labels,
                           "class_counts": dict(sorted(counts.items(), key=lambda kv: -kv[1]))}
    return {"layer": layer, "target": target, "images": seen, "n_reference": n_reference, "channels": result}


def concept_maps(model: nn.Module, data: Dataset, layer: str, references: Mapping[int, dict],
                 target: str = "label") -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """For each channel, its reference images and their CRP maps conditioned on it (summed over the
    input's colour channels): ``{channel: (images N × C × H × W, maps N × H × W)}``."""
    shown = {}
    for channel, record in references.items():
        images, labels = batch_at(data, torch.tensor(record["indices"]))
        images = images.float()
        if target != "label":
            with torch.no_grad():
                labels = model(images.to(model_device(model))).argmax(1).cpu()
        maps = conditional_relevance(model, images, labels, layer, [channel])[:, 0].sum(1)
        shown[channel] = (images, maps)
    return shown


def concepts_job(model: nn.Module, data: Dataset, layer: str | None, channels: Sequence[int] | None,
                 out_dir: str | Path, *,
                 n_reference: int = 8, target: str = "label", batch_size: int = 128, max_images: int | None = None,
                 seed: int = 0, quiet: bool = False, model_name: str | None = None) -> dict:
    """:func:`reference_images` of ``channels`` of ``layer`` on ``data``, their CRP maps, written to
    ``out_dir`` as ``concepts.png`` (the grid) and ``concepts.json`` (the record, returned).
    ``layer=None``: :func:`default_layer`; ``channels=None``: its 4 channels of highest mean relevance
    on the first 512 images of ``data``."""
    from neurotomy.files import write_json
    from neurotomy.report.concepts_section import concept_grid  # drawing belongs to the report floor
    from neurotomy.report.figures import save_figure

    out_dir = validate.output_dir(out_dir, "out")
    start = time.perf_counter()
    layer = layer or default_layer(model)
    if channels is None:
        channels = chosen_channels(model, data, None, layer, 4, 512)[1]["kept"]
    references = reference_images(model, data, layer, channels, n_reference=n_reference, target=target,
                                  batch_size=batch_size, max_images=max_images, quiet=quiet)
    classes = list(getattr(data, "classes", []))
    shown = concept_maps(model, data, layer, references["channels"], target)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = save_figure(concept_grid(shown, references["channels"], classes, layer), out_dir / "concepts.png")
    record = {"model": model_name, "data": getattr(data, "name", None), "seed": seed,
              "method": "crp (gradient × input conditioned on one channel; Achtibat et al. 2023)",
              "ranking": "channel relevance Σ a·∂y/∂a for the image's " + ("label" if target == "label" else
                                                                            "predicted class"),
              **references, "channels": {str(c): v for c, v in references["channels"].items()},
              "seconds": round(time.perf_counter() - start, 3), "figure": png.name}
    write_json(out_dir / "concepts.json", record)
    return record


# --------------------------------------------------------------------------------------------------
# directions: which ones does the model need?


def accuracy_kept(model: nn.Module, data: Dataset, layer: str, basis: torch.Tensor | None,
                  mean: torch.Tensor | None = None, *, remove: bool = False, batch_size: int = 256,
                  max_images: int | None = None, quiet: bool = True) -> float:
    """Accuracy on ``data`` with ``layer``'s output projected onto ``basis`` (``remove``: onto its
    orthogonal complement), removed directions held at ``mean``; ``basis=None``: the model as it is."""
    if basis is None:
        changed = model
    else:
        changed = (remove_subspace if remove else project_layer)(model, layer, basis, mean)
    return float(evaluate(changed, data, batch_size=batch_size, max_images=max_images, quiet=quiet)["accuracy"])


def method_directions(stats: LayerRelevance, method: str, k: int, seed: int = 0) -> torch.Tensor:
    """The first ``k`` directions (``d × k``) of ``prca``, ``pca`` or ``random`` on ``stats``."""
    if method == "prca":
        return prca_basis(stats.cross, k)[0]
    if method == "pca":
        return pca_basis(stats.covariance, k)[0]
    return torch.cat(find_subspaces(stats, method, k, 1, seed=seed), 1)


def spectra(stats: LayerRelevance) -> dict:
    """PRCA's relevance spectrum (eigenvalues of the symmetrised cross-moment, as shares of the total
    relevance) and PCA's variance spectrum (as shares of the total variance), largest first."""
    relevance = prca_basis(stats.relevance_matrix, stats.channels)[1]  # per image, like the total
    variance = pca_basis(stats.covariance, stats.channels)[1]
    total_r, total_v = stats.total_relevance, float(variance.sum())
    return {"prca_relevance": (relevance / (total_r if total_r else 1.0)).tolist(),
            "pca_variance": (variance / (total_v if total_v else 1.0)).tolist(),
            "total_relevance": total_r, "total_variance": total_v}


def compare_directions(model: nn.Module, fit: LayerRelevance, held_out: LayerRelevance, test: Dataset, *,
                       ks: Sequence[int] = KS, methods: Sequence[str] = ("prca", "pca", "random"),
                       eval_images: int | None = 2000, seed: int = 0, quiet: bool = True) -> dict:
    """For each method and k: the directions fitted on ``fit``; the share of the relevance and of the
    variance they capture on ``held_out`` (``relevance_captured``, ``variance_captured``); and
    ``accuracy_kept`` on a class-balanced subset of ``test`` with the layer projected onto them."""
    ks = sorted(set(validate.each(ks, validate.positive_int, "ks")))
    if ks[-1] > fit.channels:
        raise OptionError(f"k = {ks[-1]} exceeds the {fit.channels} channels of {fit.layer!r}; use smaller ks")
    test = balanced_subset(test, eval_images, seed)
    total_v = float(torch.trace(held_out.covariance))
    result: dict = {"ks": ks, "accuracy_full": accuracy_kept(model, test, fit.layer, None, quiet=quiet),
                    "eval_images": len(test)}
    for method in methods:
        directions = method_directions(fit, method, ks[-1], seed)
        rows = {"relevance_captured": [], "variance_captured": [], "accuracy_kept": []}
        for k in ks:
            basis = directions[:, :k]
            rows["relevance_captured"].append(held_out.relevance(basis) / held_out.total_relevance)
            rows["variance_captured"].append(held_out.variance(basis) / total_v if total_v else 0.0)
            rows["accuracy_kept"].append(accuracy_kept(model, test, fit.layer, basis, fit.mean, quiet=quiet))
        result[method] = rows
    return result


def drsa_record(model: nn.Module, fit: LayerRelevance, held_out: LayerRelevance, test: Dataset, *,
                subspaces: int = 4, size: int | None = None, eval_images: int | None = 2000, seed: int = 0,
                quiet: bool = True, **options) -> tuple[dict, list[torch.Tensor]]:
    """DRSA's ``subspaces`` subspaces of ``size`` dimensions (default: the layer's d split evenly), their
    relevance shares on ``held_out``, and the accuracy with each one removed; returns (record, bases)."""
    size = size or max(1, fit.channels // subspaces)
    start = time.perf_counter()
    bases = find_subspaces(fit, "drsa", subspaces, size, seed=seed, **options)
    seconds = time.perf_counter() - start
    test = balanced_subset(test, eval_images, seed)
    total = held_out.total_relevance
    return {"subspaces": subspaces, "size": size, "seconds": round(seconds, 3),
            "relevance_share": [held_out.relevance(b) / total if total else 0.0 for b in bases],
            "relevance_share_fit": [fit.relevance(b) / fit.total_relevance if fit.total_relevance else 0.0
                                    for b in bases],
            "accuracy_removed": [accuracy_kept(model, test, fit.layer, b, fit.mean, remove=True, quiet=quiet)
                                 for b in bases]}, bases


def default_layer(model: nn.Module) -> str:
    """The last residual block, else the last conv's response: the "last block" of a report."""
    blocks = residual_blocks(model)
    if blocks:
        return blocks[-1]
    units = conv_units(model)
    if not units:
        raise ModelError("the model has no residual block or conv layer; pass layer=NAME")
    return units[-1].site


def chosen_channels(model: nn.Module, test: Dataset, channel_scores: UnitScores | None, concept_layer: str | None,
                    per_side: int, max_images: int) -> tuple[str, dict[str, list[int]]]:
    """The layer whose channels to show and its most kept / most pruned-away channels: by
    ``channel_scores`` (the scored conv ``concept_layer``, default the last, seen at its BatchNorm),
    else by the mean relevance of ``concept_layer``'s channels (default: the last block) on ``test``."""
    if channel_scores is not None:
        sites = {u.conv_name: u.site for u in conv_units(model)}
        names = [n for n in channel_scores if n in sites]
        if not names or (concept_layer is not None and concept_layer not in names):
            raise ScoresError(f"the channel scores have no conv layer {concept_layer or ''!r} of this model; score "
                              "this model, or pass no channel_scores")
        scored = concept_layer or names[-1]
        layer, scores = sites[scored], channel_scores[scored]
        scores = scores.mean(0) if scores.dim() > 1 else scores  # a per-class table: its mean over classes
    else:
        layer = concept_layer or default_layer(model)
        images, labels = batch_at(test, torch.arange(min(len(test), max_images)))
        scores = channel_relevance(model, images.float(), layer, labels).mean(0).cpu()
    order = scores.argsort(descending=True).tolist()
    return layer, {"kept": order[:per_side], "pruned": order[::-1][:per_side]}


def directions_and_concepts(model: nn.Module, train: Dataset, test: Dataset, *, layer: str | None = None,
                            channel_scores: UnitScores | None = None, concept_layer: str | None = None,
                            ks: Sequence[int] = (1, 2, 4, 8), drsa_subspaces: int = 4, drsa_size: int | None = None,
                            n_images: int = 4, n_reference: int = 6, per_side: int = 2, max_images: int = 640,
                            eval_images: int | None = 1000, seed: int = 0, quiet: bool = True) -> dict:
    """The figures and data of a report's "directions and concepts" section for ``layer`` (default:
    the last block): ``spectra`` (PRCA relevance vs PCA variance), ``comparison``
    (:func:`compare_directions`), ``drsa`` (:func:`drsa_record`), ``heatmaps`` (``n_images`` test
    images and their maps through each DRSA subspace and the rest, ``N × (K+1) × H × W``) and
    ``concepts``: reference images and CRP maps of the ``per_side`` most kept and most pruned-away
    channels (by ``channel_scores``, else by relevance). JSON-ready except the tensors under
    ``heatmaps`` and ``concepts[...]["shown"]``."""
    layer = layer or default_layer(model)
    fit = observe_layer(model, train, layer, max_images=max_images, seed=seed, quiet=quiet)
    held_out = observe_layer(model, test, layer, max_images=max_images, seed=seed, quiet=quiet)
    comparison = compare_directions(model, fit, held_out, test, ks=[k for k in ks if k <= fit.channels],
                                    eval_images=eval_images, seed=seed, quiet=quiet)
    drsa, bases = drsa_record(model, fit, held_out, test, subspaces=drsa_subspaces, size=drsa_size,
                              eval_images=eval_images, seed=seed, quiet=quiet)
    shown = balanced_subset(test, n_images, seed)
    images, labels = batch_at(shown, torch.arange(min(n_images, len(shown))))
    maps = subspace_heatmaps(model, images.float(), labels, layer, bases).sum(2)
    concept_layer, picks = chosen_channels(model, test, channel_scores, concept_layer, per_side, max_images)
    concepts = {}
    for side, channels in picks.items():
        refs = reference_images(model, test, concept_layer, channels, n_reference=n_reference,
                                max_images=None, quiet=quiet)
        concepts[side] = {**refs, "shown": concept_maps(model, test, concept_layer, refs["channels"])}
    return {"layer": layer, "spectra": spectra(fit), "comparison": comparison, "drsa": drsa,
            "heatmaps": {"images": images, "labels": labels.tolist(), "maps": maps,
                         "columns": [f"subspace {k}" for k in range(len(bases))] + ["rest"]},
            "concept_layer": concept_layer, "concepts": concepts}


__all__ = ["KS", "accuracy_kept", "chosen_channels", "compare_directions", "concept_maps",
           "concepts_job", "default_layer", "directions_and_concepts", "drsa_record", "layer_width",
           "method_directions", "reference_images", "spectra"]
