"""The report's figures: small matplotlib functions, each returning a figure (the caller stores it
with :func:`neurotomy.report.record.add_figure`). Original model in blue, pruned in orange, always.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ORIGINAL, PRUNED = "#2b6cb0", "#dd6b20"


def _style(ax) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(alpha=0.25, linewidth=0.6)
    ax.tick_params(labelsize=7)


def paired_bars(labels: list[str], original: list[float], pruned: list[float], ylabel: str, title: str):
    """Original vs pruned value per label (channels per layer, recall per class); a value that is
    None (a class with no test image has no recall) leaves its bar out."""
    fig, ax = plt.subplots(figsize=(max(4.8, 0.28 * len(labels) + 1.5), 3.0))
    x = np.arange(len(labels))
    original, pruned = np.array(original, dtype=float), np.array(pruned, dtype=float)  # None → NaN: no bar
    ax.bar(x - 0.2, original, 0.4, color=ORIGINAL, label="original")
    ax.bar(x + 0.2, pruned, 0.4, color=PRUNED, label="pruned")
    crowded = len(labels) > 10 or sum(len(label) for label in labels) > 45  # labels would overlap flat
    ax.set_xticks(x, labels, rotation=45 if crowded else 0, ha="right" if crowded else "center",
                  rotation_mode="anchor")
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=9, loc="left")
    ax.legend(fontsize=7, frameon=False, ncol=2, loc="lower right", bbox_to_anchor=(1.0, 1.0))
    _style(ax)
    fig.tight_layout()
    return fig


def matrix_heatmap(values: list[list[float]], rows: list[str], cols: list[str], title: str,
                   vmin: float = 0.0, vmax: float = 1.0, cmap: str = "viridis", annotate: bool = True):
    """A labelled heatmap (criteria agreement, CKA between models, head importance); NaN cells stay blank."""
    data = np.array(values, dtype=float)
    fig, ax = plt.subplots(figsize=(1.6 + 0.42 * len(cols), 1.2 + 0.36 * len(rows)))
    im = ax.imshow(data, vmin=vmin, vmax=vmax, cmap=cmap)
    ax.set_xticks(range(len(cols)), cols, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    if annotate and data.size <= 144:
        colormap = plt.get_cmap(cmap)
        for (i, j), v in np.ndenumerate(data):
            if np.isnan(v):  # no such cell (a block with fewer heads): left blank
                continue
            r, g, b, _ = colormap((v - vmin) / (vmax - vmin))
            dark_cell = 0.299 * r + 0.587 * g + 0.114 * b < 0.5  # text must contrast with the cell's colour
            label = f"{v:.2f}".replace("-0.00", "0.00")
            ax.text(j, i, label, ha="center", va="center", fontsize=6, color="white" if dark_cell else "black")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def per_layer_lines(layers: list[str], series: dict[str, list[float]], ylabel: str, title: str,
                    colors: dict[str, str] | None = None):
    """One line per series over the layers (modularity curves, per-layer score agreement)."""
    fig, ax = plt.subplots(figsize=(max(4.8, 0.3 * len(layers) + 1.5), 3.0))
    for name, values in series.items():
        ax.plot(range(len(values)), values, marker="o", markersize=3, linewidth=1.4, label=name,
                color=(colors or {}).get(name))
    ax.set_xticks(range(len(layers)), layers, rotation=60, ha="right")
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=9, loc="left")
    ax.legend(fontsize=7, frameon=False, ncol=min(3, len(series)), loc="lower right", bbox_to_anchor=(1.0, 1.0))
    _style(ax)
    fig.tight_layout()
    return fig
