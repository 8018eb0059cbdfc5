"""Saving matplotlib figures: headless backend, PNG, atomic write, figure closed afterwards."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from neurotomy.files import atomic_write  # noqa: E402


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically and close it."""
    path = Path(path)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            fig.savefig(fh, format="png", dpi=dpi)
    try:
        atomic_write(path, write)
    finally:
        plt.close(fig)
    return path
