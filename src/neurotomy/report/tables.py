"""Plain-text tables for the terminal."""

from __future__ import annotations

from neurotomy.models.summary import LayerTable


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def format_layer_table(table: LayerTable) -> str:
    """Example:
        >>> from neurotomy.models.summary import LayerTable
        >>> print(format_layer_table(LayerTable([{"name": "c", "type": "Conv2d", "output_shape": [2, 3, 3],
        ...     "params": 20, "macs": 180}])).splitlines()[-1])
        total                                                                      20        180
    """
    header = f"{'layer':<32} {'type':<18} {'output':<14} {'params':>10} {'MACs':>10}"
    lines = [header, "-" * len(header)]
    for r in table.rows:
        shape = "×".join(str(d) for d in r["output_shape"])
        lines.append(f"{r['name']:<32} {r['type']:<18} {shape:<14} {_human(r['params']):>10} {_human(r['macs']):>10}")
    lines.append("-" * len(header))
    lines.append(f"{'total':<66} {_human(table.total_params):>10} {_human(table.total_macs):>10}")
    return "\n".join(lines)


def format_metrics(metrics: dict) -> str:
    """Accuracy, then one line per class with precision and recall."""
    lines = [f"accuracy {metrics['accuracy']:.4f} on {metrics['n']} images", "",
             f"{'class':<16} {'precision':>9} {'recall':>9}"]
    for name, p, r in zip(metrics["classes"], metrics["per_class_precision"], metrics["per_class_recall"]):
        lines.append(f"{str(name):<16} {p:>9.4f} {r:>9.4f}")
    lines += ["", "confusion (rows = true class):"]
    lines += [" ".join(f"{v:>5}" for v in row) for row in metrics["confusion"]]
    return "\n".join(lines)
