"""Report section for a transformer: its own units and its layer dynamics over blocks.

* **Heads**: each attention head's importance, blocks × heads — Taylor (first order, with a
  head-mask gate: Michel, Levy & Neubig, NeurIPS 2019), E_x |∂L/∂ξ_h|, shown relative to the largest.
* **MLP neurons**: the distribution of the hidden neurons' scores in each block (same criterion).
* **Units kept**: heads and MLP neurons per block before and after pruning.
* **Dynamics over blocks**: the modularity curve (Lu et al., ECCV 2022) with an image seen as its
  class token (what the classifier reads) and as the mean of its patch tokens, and linear CKA
  (Kornblith et al., ICML 2019) between every pair of blocks in both views.

Renders the record of :func:`neurotomy.jobs.dissect_stages.transformer_records`.

Example:
    >>> curve = {"layers": ["blocks.0:cls", "blocks.1:cls", "head:input"], "q": [0.1, 0.3, 0.4]}
    >>> record = {"criterion": "taylor", "paper": "Michel et al. 2019", "score_images": 64,
    ...     "heads": {"layers": ["blocks.0.attn", "blocks.1.attn"], "values": [[1.0, 2.0], [4.0, None]]},
    ...     "neurons": {"layers": ["blocks.0.mlp.fc1", "blocks.1.mlp.fc1"], "scores": [[1.0, 2.0], [3.0, 1.0]]},
    ...     "units": {"blocks": ["blocks.0", "blocks.1"], "heads": {"original": [2, 2], "pruned": [2, 1]},
    ...               "neurons": {"original": [2, 2], "pruned": [1, 2]}},
    ...     "modularity": {"k": 3, "n_samples": 50, "views": {"cls": curve}},
    ...     "cka": {"layers_a": ["blocks.0:cls", "blocks.1:cls"], "layers_b": ["blocks.0:cls", "blocks.1:cls"],
    ...             "values": [[1.0, 0.5], [0.5, 1.0]], "samples": 50, "measure": "linear_cka"}}
    >>> {n["key"]: n["value"] for n in transformer_section(record)["numbers"]}["heads_pruned"]
    3
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from neurotomy.report import plots  # noqa: E402
from neurotomy.report.record import add_figure, add_number, add_table, section  # noqa: E402

VIEWS = {"cls": "class token", "patches": "mean of patch tokens"}


def score_distributions(labels: list[str], values: list[list[float]], ylabel: str, title: str):
    """One box per label (5–95 % whiskers, median line) over its values, on a log scale when every
    value is positive (importance scores span decades)."""
    fig, ax = plt.subplots(figsize=(max(4.8, 0.45 * len(labels) + 1.5), 3.0))
    ax.boxplot([np.asarray(v, dtype=float) for v in values], whis=(5, 95), showfliers=False,
               medianprops={"color": plots.PRUNED})
    ax.set_xticks(range(1, len(labels) + 1), labels, rotation=45 if len(labels) > 6 else 0,
                  ha="right" if len(labels) > 6 else "center")
    if all(min(v) > 0 for v in values if len(v)):
        ax.set_yscale("log")
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=9, loc="left")
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(alpha=0.25, linewidth=0.6)
    ax.tick_params(which="both", labelsize=7)
    fig.tight_layout()
    return fig


def _heads(sec: dict, record: dict) -> None:
    heads = record["heads"]
    values = [[math.nan if v is None else v for v in row] for row in heads["values"]]
    top = max((v for row in values for v in row if not math.isnan(v)), default=0.0)
    relative = [[v / top if top else v for v in row] for row in values]
    width = max((len(row) for row in values), default=0)
    add_figure(sec, "head importance (blocks × heads)", plots.matrix_heatmap(
        relative, heads["layers"], [f"head {h}" for h in range(width)],
        f"{record['criterion']} head score ÷ the largest", cmap="viridis", annotate=True),
        data={"layers": heads["layers"], "values": heads["values"]})


def _neurons(sec: dict, record: dict) -> None:
    neurons = record["neurons"]
    blocks = [name.split(".mlp")[0] if ".mlp" in name else name for name in neurons["layers"]]
    add_figure(sec, "MLP-neuron scores per block", score_distributions(
        blocks, neurons["scores"], f"{record['criterion']} score", "MLP hidden neurons: score distribution per block"),
        data={"layers": neurons["layers"],
              "quantiles": [np.quantile(np.asarray(s, dtype=float), [0, 0.25, 0.5, 0.75, 1]).tolist()
                            for s in neurons["scores"]]})


def _dynamics(sec: dict, record: dict) -> None:
    views = record["modularity"]["views"]
    first = next(iter(views.values()))
    # one x position per block (and the classifier's input), whichever view names it
    positions = [layer.split(":")[0] if not layer.endswith(":input") else layer for layer in first["layers"]]
    series = {VIEWS.get(v, v): curve["q"] for v, curve in views.items()}
    add_table(sec, "modularity per block", [("block", "text")] + [(f"Q, {VIEWS.get(v, v)}", "float3") for v in views],
              [[p] + [curve["q"][i] for curve in views.values()] for i, p in enumerate(positions)],
              note=f"k = {record['modularity']['k']}, {record['modularity']['n_samples']} class-balanced test images")
    add_figure(sec, "modularity over blocks: class token vs patch tokens", plots.per_layer_lines(
        positions, series, "modularity Q", "modularity per block"),
        data={"layers": positions, **{v: curve["q"] for v, curve in views.items()}})
    cka = record["cka"]
    add_figure(sec, "linear CKA between blocks", plots.matrix_heatmap(
        cka["values"], cka["layers_a"], cka["layers_b"], f"linear CKA ({cka['samples']} images)",
        annotate=len(cka["layers_a"]) <= 12), data=cka, wide=len(cka["layers_a"]) > 8)


def _adjacent_cka(cka: dict, view: str) -> float | None:
    names = [n for n in cka["layers_a"] if n.endswith(f":{view}")]
    pairs = [cka["values"][cka["layers_a"].index(a)][cka["layers_b"].index(b)] for a, b in zip(names, names[1:])
             if b in cka["layers_b"]]
    return sum(pairs) / len(pairs) if pairs else None


def transformer_section(record: dict) -> dict:
    """Heads, MLP neurons and the dynamics over blocks of a transformer (and the units pruning kept)."""
    units, views = record["units"], record["modularity"]["views"]
    sec = section("transformer", "Transformer: heads, MLP neurons, tokens",
                  f"Attention heads and MLP hidden neurons scored by {record['criterion']} ({record['paper']}) on "
                  f"{record['score_images'] or 'the criterion’s default number of'} training images; the modularity curve over blocks with an image seen as "
                  f"its {' and as the '.join(VIEWS.get(v, v) for v in views)}; linear CKA between blocks.")
    add_number(sec, "heads_original", "attention heads, original", sum(units["heads"]["original"]), "int")
    add_number(sec, "heads_pruned", "attention heads, pruned", sum(units["heads"]["pruned"]), "int")
    add_number(sec, "neurons_original", "MLP neurons, original", sum(units["neurons"]["original"]), "int")
    add_number(sec, "neurons_pruned", "MLP neurons, pruned", sum(units["neurons"]["pruned"]), "int")
    for view, curve in views.items():
        blocks = [q for layer, q in zip(curve["layers"], curve["q"]) if layer.endswith(f":{view}")]
        add_number(sec, f"q_last_{view}", f"last block's Q, {VIEWS.get(view, view)}", blocks[-1] if blocks else None,
                   "float3")
    adjacent = _adjacent_cka(record["cka"], next(iter(views)))
    if adjacent is not None:
        add_number(sec, "cka_adjacent_blocks", f"CKA of adjacent blocks, mean ({VIEWS.get(next(iter(views)))})",
                   adjacent, "float3")
    add_table(sec, "units per block", [("block", "text"), ("heads, original", "int"), ("heads, pruned", "int"),
              ("MLP neurons, original", "int"), ("MLP neurons, pruned", "int")],
              [[b, ho, hp, no, np_] for b, ho, hp, no, np_ in zip(
                  units["blocks"], units["heads"]["original"], units["heads"]["pruned"], units["neurons"]["original"],
                  units["neurons"]["pruned"])])
    _heads(sec, record)
    _neurons(sec, record)
    _dynamics(sec, record)
    return sec


__all__ = ["score_distributions", "transformer_section"]
