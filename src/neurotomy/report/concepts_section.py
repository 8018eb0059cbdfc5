"""Report section: directions and concepts of one layer (the last block) — which *directions* of its
activation space carry the decision, and what its most kept and most pruned-away *channels* respond to.

* PRCA (Chormai et al., 2022): the relevance spectrum (share of the relevance each principal
  relevant direction carries) against PCA's variance spectrum, and, at equal k, how much relevance
  and accuracy the top-k PRCA, PCA and random directions keep (the layer's output projected onto them).
* DRSA (same paper): disjoint subspaces, their relevance shares, the accuracy with each removed, and
  the heatmaps of the relevance flowing through each of them back to the input.
* CRP (Achtibat et al., Nature Machine Intelligence 2023): for the channels the pruning criterion
  keeps first and removes first, their most relevant test images (ranked by the channel's relevance,
  not its activation) with the channel-conditional relevance over them.

Renders the record of :func:`neurotomy.jobs.concepts.directions_and_concepts` as the dissect job
hands it (:func:`neurotomy.jobs.dissect_stages.concept_records`); :func:`concept_grid` also draws
``neurotomy concepts``'s figure. Arrays may be tensors, numpy arrays or nested lists.

Example:
    >>> import numpy as np
    >>> refs = {3: {"labels": [0, 1], "relevance": [2.0, 1.0]}}
    >>> fig = concept_grid({3: (np.zeros((2, 1, 4, 4)), np.ones((2, 4, 4)))}, refs, ["a", "b"], "layer4")
    >>> [ax.get_title() for ax in fig.axes]
    ['a\\nR=2', 'b\\nR=1']
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from neurotomy.report import plots  # noqa: E402
from neurotomy.report.record import add_figure, add_number, add_table, section  # noqa: E402

SPECTRUM_SHOWN = 32  # components drawn of each spectrum (the rest are near zero in a trained layer)
SIDES = {"kept": "kept first", "pruned": "pruned away first"}  # channels ranked by the pruning criterion
RELEVANCE_SIDES = {"kept": "most relevant", "pruned": "least relevant"}  # ranked by relevance (no criterion)


def _array(values: Any) -> np.ndarray:
    """A float numpy array from a tensor (any device), a numpy array or nested lists."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().float().numpy()
    return np.asarray(values, dtype=float)


def _overlay(ax, image: np.ndarray, heat: np.ndarray, scale: float) -> None:
    """A grey input (C × H × W, channels averaged, min–max scaled) under a signed heatmap (red: for
    the class, blue: against) divided by ``scale``."""
    grey = image.mean(0)
    span = grey.max() - grey.min()
    ax.imshow((grey - grey.min()) / (span if span > 1e-12 else 1.0), cmap="gray")
    ax.imshow(heat / max(scale, 1e-12), cmap="bwr", vmin=-1, vmax=1, alpha=0.55)
    ax.set_xticks([]), ax.set_yticks([])


def _class_name(classes: Sequence[str], label: int) -> str:
    return str(classes[label]) if 0 <= label < len(classes) else str(label)


def concept_grid(shown: Mapping[int, tuple[Any, Any]], references: Mapping[int, dict], classes: Sequence[str],
                 layer: str, title: str | None = None):
    """A matplotlib figure: one row per channel of ``shown`` (channel → (reference images
    ``N × C × H × W``, their CRP maps ``N × H × W``)), its reference images with the
    channel-conditional relevance over them (red: for the class, blue: against; each map divided by
    its max |·|), titled with each image's class and relevance from ``references`` (channel →
    ``labels``, ``relevance``)."""
    rows, columns = len(shown), max(len(images) for images, _ in shown.values())
    height = 1.65 * rows + 0.3  # room for each image's two-line title above it
    fig, axes = plt.subplots(rows, columns, figsize=(1.3 * columns + 0.6, height), squeeze=False)
    for r, (channel, (images, maps)) in enumerate(shown.items()):
        images, maps = _array(images), _array(maps)
        for c in range(columns):
            ax = axes[r, c]
            ax.set_xticks([]), ax.set_yticks([])
            if c >= len(images):
                ax.axis("off")
                continue
            _overlay(ax, images[c], maps[c], float(np.abs(maps[c]).max()))
            ax.set_title(f"{_class_name(classes, int(references[channel]['labels'][c]))}\n"
                         f"R={references[channel]['relevance'][c]:.3g}", fontsize=6)
        axes[r, 0].set_ylabel(f"channel {channel}", fontsize=7)
    fig.suptitle(title or f"{layer}: most relevant test images per channel (CRP)", fontsize=8)
    fig.tight_layout(pad=0.3, rect=(0, 0, 1, 1 - 0.25 / height))
    return fig


def subspace_heatmap_grid(images: Any, maps: Any, columns: Sequence[str], row_titles: Sequence[str] = ()):
    """One row per image: the input, then the relevance flowing through each subspace (``maps``
    ``N × K × H × W``, one column per name in ``columns``); a row shares one scale, so the columns
    compare."""
    images, maps = _array(images), _array(maps)
    n, k = maps.shape[0], maps.shape[1]
    fig, axes = plt.subplots(n, k + 1, figsize=(1.3 * (k + 1) + 0.3, 1.35 * n + 0.3), squeeze=False)
    for i in range(n):
        grey = images[i].mean(0)
        span = grey.max() - grey.min()
        axes[i, 0].imshow((grey - grey.min()) / (span if span > 1e-12 else 1.0), cmap="gray")
        axes[i, 0].set_xticks([]), axes[i, 0].set_yticks([])
        axes[i, 0].set_ylabel(row_titles[i] if i < len(row_titles) else "", fontsize=7)
        scale = float(np.abs(maps[i]).max())
        for j in range(k):
            _overlay(axes[i, j + 1], images[i], maps[i, j], scale)
    for j, name in enumerate(["input", *columns]):
        axes[0, j].set_title(name, fontsize=7)
    fig.tight_layout(pad=0.3)
    return fig


def _spectra(sec: dict, spectra: dict) -> None:
    prca, pca = spectra["prca_relevance"], spectra["pca_variance"]
    shown = min(len(prca), SPECTRUM_SHOWN)
    labels = [str(i + 1) for i in range(shown)]
    add_figure(sec, "PRCA relevance spectrum vs PCA variance spectrum", plots.per_layer_lines(
        labels, {"PRCA: share of relevance": prca[:shown], "PCA: share of variance": pca[:shown]},
        "share of the total", f"first {shown} components, largest first"),
        data={"prca_relevance": prca, "pca_variance": pca})


def _comparison(sec: dict, comparison: dict) -> None:
    ks, methods = comparison["ks"], [m for m in ("prca", "pca", "random") if m in comparison]
    names = {"prca": "PRCA", "pca": "PCA", "random": "random"}
    add_table(sec, "top-k directions: relevance captured (held-out images) and accuracy kept",
              [("k", "int")] + [(f"relevance, {names[m]}", "pct") for m in methods]
              + [(f"accuracy, {names[m]}", "pct") for m in methods],
              [[k] + [comparison[m]["relevance_captured"][i] for m in methods]
               + [comparison[m]["accuracy_kept"][i] for m in methods] for i, k in enumerate(ks)],
              note=f"accuracy of the whole model: {comparison['accuracy_full']:.2%} on {comparison['eval_images']} "
                   f"test images; the layer's output projected onto the k directions, the rest held at its mean")
    labels = [str(k) for k in ks]
    for key, label in (("relevance_captured", "relevance captured"), ("accuracy_kept", "accuracy kept")):
        add_figure(sec, f"{label} by the top-k directions", plots.per_layer_lines(
            labels, {names[m]: comparison[m][key] for m in methods}, label, f"{label} (x: k directions)"),
            data={"ks": ks, **{m: comparison[m][key] for m in methods}})


def _drsa(sec: dict, drsa: dict, heatmaps: dict, classes: Sequence[str]) -> None:
    add_table(sec, "DRSA subspaces", [("subspace", "text"), ("dimensions", "int"),
              ("relevance share, held-out", "pct"), ("relevance share, fit", "pct"),
              ("accuracy with it removed", "pct")],
              [[f"subspace {i}", drsa["size"], share, fit, acc] for i, (share, fit, acc) in
               enumerate(zip(drsa["relevance_share"], drsa["relevance_share_fit"], drsa["accuracy_removed"]))])
    rows = [_class_name(classes, int(label)) for label in heatmaps["labels"]]
    add_figure(sec, "relevance through each DRSA subspace (and the rest)", subspace_heatmap_grid(
        heatmaps["images"], heatmaps["maps"], heatmaps["columns"], rows),
        data={"labels": list(heatmaps["labels"]), "columns": list(heatmaps["columns"])})


def _concepts(sec: dict, concepts: dict, classes: Sequence[str], layer: str, ranking: str,
              sides: Mapping[str, str]) -> None:
    rows = []
    for side, record in concepts.items():
        for channel, refs in record["channels"].items():
            counts = ", ".join(f"{name} {count}" for name, count in refs["class_counts"].items())
            rows.append([sides.get(side, side), int(channel), counts, sum(refs["relevance"]) / len(refs["relevance"])])
    add_table(sec, "reference images per channel", [("channel ranked", "text"), ("channel", "int"),
              ("classes of its references", "text"), ("mean relevance", "float3")], rows,
              note=f"channels of {layer} ranked by {ranking}; references: the test images of highest relevance "
                   f"of the channel for their own class")
    for side, record in concepts.items():
        channels = {int(c): r for c, r in record["channels"].items()}
        shown = {int(c): tuple(pair) for c, pair in record["shown"].items()}
        add_figure(sec, f"channels {sides.get(side, side)}: reference images (CRP)", concept_grid(
            shown, channels, classes, layer, title=f"{layer}, channels {sides.get(side, side)} by {ranking}"),
            data={"channels": {str(c): {k: r[k] for k in ("indices", "labels", "relevance")}
                               for c, r in channels.items()}}, wide=True)


def directions_section(record: dict) -> dict:
    """The "directions and concepts" section from ``record`` (``layer``, ``spectra``,
    ``comparison``, ``drsa``, ``heatmaps``, ``concept_layer``, ``concepts``, ``ranking`` — the pruning
    criterion's name, or ``relevance…`` when no criterion ranked the channels —, ``classes``; or
    ``skipped``: why it was not computed)."""
    if "skipped" in record:
        return section("directions", "Directions and concepts", f"Not computed: {record['skipped']}")
    comparison, classes, ranking = record["comparison"], record.get("classes", []), record["ranking"]
    sides = RELEVANCE_SIDES if ranking.startswith("relevance") else SIDES
    sec = section("directions", "Directions and concepts",
                  f"Layer {record['layer']}. Which directions of its activations carry the decision: PRCA's "
                  f"directions maximise relevance (activation × gradient of the class logit), PCA's variance "
                  f"(Chormai et al. 2022); DRSA splits the relevance into {record['drsa']['subspaces']} disjoint "
                  f"subspaces. Then the channels of {record['concept_layer']} {sides['kept']} and "
                  f"{sides['pruned']} by {ranking}, each with its most relevant test images (CRP, Achtibat et al. "
                  f"2023).")
    ks = comparison["ks"]
    add_number(sec, "relevance_top1_prca", f"relevance in the top {ks[0]} PRCA direction(s)",
               comparison["prca"]["relevance_captured"][0], "pct")
    add_number(sec, "relevance_top1_pca", f"relevance in the top {ks[0]} PCA direction(s)",
               comparison["pca"]["relevance_captured"][0], "pct")
    add_number(sec, "accuracy_kept_prca", f"accuracy, top {ks[-1]} PRCA directions",
               comparison["prca"]["accuracy_kept"][-1], "pct")
    add_number(sec, "accuracy_kept_pca", f"accuracy, top {ks[-1]} PCA directions",
               comparison["pca"]["accuracy_kept"][-1], "pct")
    add_number(sec, "drsa_subspaces", "DRSA subspaces", record["drsa"]["subspaces"], "int")
    _comparison(sec, comparison)
    _drsa(sec, record["drsa"], record["heatmaps"], classes)
    _spectra(sec, record["spectra"])
    _concepts(sec, record["concepts"], classes, record["concept_layer"], ranking, sides)
    return sec


__all__ = ["concept_grid", "directions_section", "subspace_heatmap_grid"]
