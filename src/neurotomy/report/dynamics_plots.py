"""Figures of the layer dynamics that ``neurotomy inspect`` writes as files: the modularity curve
and a layer-similarity heatmap. They draw from the records the analyses return (a
:class:`~neurotomy.dynamics.modularity.ModularityCurve`'s fields, a similarity matrix dict).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from neurotomy.report.figures import save_figure


def plot_modularity_curve(curve, path: str | Path, title: str = "") -> Path:
    """Q per layer with its spread over graphs, written as PNG to ``path``."""
    fig, ax = plt.subplots(figsize=(max(6, len(curve.layers) * 0.45), 3.6))
    ax.errorbar(range(len(curve.q)), curve.q, yerr=curve.q_std or None, marker="o", capsize=3)
    ax.set_xticks(range(len(curve.layers)), curve.layers, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("modularity Q")
    ax.set_title(title or f"modularity curve (k={curve.k}, {curve.n_samples} samples)", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_similarity(result: dict, path: str | Path, title: str = "") -> Path:
    """A similarity matrix (``values``, ``layers_a``, ``layers_b``, ``measure``) as a heatmap PNG."""
    values = np.asarray(result["values"], dtype=float)
    fig, ax = plt.subplots(figsize=(1.5 + 0.45 * values.shape[1], 1.2 + 0.45 * values.shape[0]))
    im = ax.imshow(values, vmin=0, vmax=1, cmap="magma")
    ax.set_xticks(range(values.shape[1]), result["layers_b"], rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(values.shape[0]), result["layers_a"], fontsize=7)
    ax.set_title(title or result["measure"], fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return save_figure(fig, path)
