"""The report's building blocks as plain JSON-ready dicts: a *section* holds headline numbers,
tables and figures; the HTML renders any list of sections, and every number it shows is read from
these records (so ``report.json`` is the single source of what ``report.html`` says).

A value's ``format`` names how it is displayed (see :data:`FORMATS`); the stored value is always
the raw number (a fraction stays a fraction, the display multiplies by 100).

Example:
    >>> s = section("demo", "A demo", "Two numbers and a table.")
    >>> add_number(s, "acc", "accuracy", 0.9465, "pct")
    >>> add_table(s, "t", [("layer", "text"), ("params", "int")], [["conv1", 432]])
    >>> s["numbers"][0]["value"], s["tables"][0]["rows"][0][1]
    (0.9465, 432)
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

# format name -> (scale applied for display, decimals, suffix); "int" and "text" are special.
FORMATS: dict[str, tuple[float, int, str]] = {
    "pct": (100.0, 2, " %"),      # a fraction shown as a percentage
    "pt": (100.0, 2, " pt"),      # a difference of fractions shown in percentage points, signed
    "ratio": (1.0, 2, "×"),       # "2.01×"
    "float3": (1.0, 3, ""),       # correlations, CKA, modularity
    "float1": (1.0, 1, ""),       # means of counts
    "ms": (1.0, 2, " ms"),
    "seconds": (1.0, 2, " s"),
    "mb": (1e-6, 3, " MB"),       # bytes shown in megabytes
    "int": (1.0, 0, ""),
    "text": (1.0, 0, ""),
}


def section(section_id: str, title: str, text: str = "") -> dict:
    """An empty section record."""
    return {"id": section_id, "title": title, "text": text, "numbers": [], "tables": [], "figures": []}


def _plain(value: Any) -> Any:
    """Python scalars only (numpy/torch scalars would not survive JSON unchanged)."""
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def add_number(sec: dict, key: str, label: str, value: Any, fmt: str) -> None:
    """A headline number of the section (shown as a card)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown number format {fmt!r}")
    sec["numbers"].append({"key": key, "label": label, "value": _plain(value), "format": fmt})


def add_table(sec: dict, title: str, columns: list[tuple[str, str]], rows: list[list[Any]], note: str = "") -> None:
    """A table: ``columns`` are (label, format) pairs; each row holds raw values in that order."""
    for label, fmt in columns:
        if fmt not in FORMATS:
            raise ValueError(f"column {label!r}: unknown format {fmt!r}")
    if any(len(r) != len(columns) for r in rows):
        raise ValueError(f"table {title!r}: every row needs {len(columns)} values")
    sec["tables"].append({"title": title, "columns": [{"label": c, "format": f} for c, f in columns],
                          "rows": [[_plain(v) for v in r] for r in rows], "note": note})


def add_figure(sec: dict, title: str, fig, data: dict | None = None, caption: str = "", wide: bool = False) -> None:
    """A matplotlib figure, stored as base64 PNG with the numbers it plots (``data``); closes it.
    ``wide`` figures take a whole row of the report's figure grid."""
    sec["figures"].append({"title": title, "caption": caption, "png_base64": figure_base64(fig),
                           "data": data or {}, "wide": wide})


def figure_base64(fig, dpi: int = 110) -> str:
    """PNG bytes of ``fig``, base64-encoded; the figure is closed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})  # no version stamp: reproducible bytes
    finally:
        plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def format_value(value: Any, fmt: str) -> str:
    """How a value is displayed in the report.

    Example:
        >>> format_value(0.94651, "pct"), format_value(-0.0042, "pt"), format_value(2.0061, "ratio")
        ('94.65 %', '−0.42 pt', '2.01×')
        >>> format_value(1234567, "int"), format_value(None, "pct")
        ('1,234,567', '—')
    """
    if value is None:
        return "—"
    if fmt == "text":
        return str(value)
    if fmt == "int":
        return f"{int(value):,}"
    scale, decimals, suffix = FORMATS[fmt]
    shown = f"{value * scale:.{decimals}f}"
    if float(shown) == 0:
        shown = f"{0:.{decimals}f}"  # never "−0.00"
    if fmt == "pt" and not shown.startswith("-"):
        shown = "+" + shown
    return shown.replace("-", "−") + suffix
