"""The explanation grid: one row per image, the input then one map per method.

Signed maps are shown on a diverging scale centred on zero (red = pushes towards the class, blue =
against, each map divided by its max |·|, as Khakzar et al. display them); non-negative maps on a
sequential scale after min–max normalisation (pytorch-grad-cam's display).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from neurotomy.explain.common import normalize  # noqa: E402


def attribution_grid(images: torch.Tensor, maps: Mapping[str, torch.Tensor], signed: Mapping[str, bool],
                     row_titles: Sequence[str] = ()):
    """A matplotlib figure; ``images`` is ``N × C × H × W`` (normalised is fine), ``maps`` method → ``N × H × W``."""
    n, methods = images.shape[0], list(maps)
    fig, axes = plt.subplots(n, len(methods) + 1, figsize=(1.35 * (len(methods) + 1), 1.35 * n + 0.3),
                             squeeze=False)
    shown = images.detach().float()
    shown = shown[:, 0] if shown.shape[1] == 1 else shown.permute(0, 2, 3, 1)
    shown = (shown - shown.amin()) / (shown.amax() - shown.amin()).clamp(min=1e-12)
    for i in range(n):
        axes[i, 0].imshow(shown[i].numpy(), cmap="gray" if shown.dim() == 3 else None)
        axes[i, 0].set_ylabel(row_titles[i] if i < len(row_titles) else "", fontsize=7)
        for j, method in enumerate(methods, start=1):
            m = maps[method][i:i + 1].detach().float()
            if signed.get(method, False):
                axes[i, j].imshow(normalize(m, "maxabs")[0].numpy(), cmap="bwr", vmin=-1, vmax=1)
            else:
                axes[i, j].imshow(normalize(m, "minmax")[0].numpy(), cmap="inferno", vmin=0, vmax=1)
    for j, title in enumerate(["input", *methods]):
        axes[0, j].set_title(title, fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout(pad=0.3)
    return fig
