"""Plain-text tables for the terminal."""

from __future__ import annotations


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def format_layer_table(table) -> str:
    """A layer table (:class:`neurotomy.models.summary.LayerTable`, or anything with ``rows``,
    ``total_params`` and ``total_macs``) as text.

    Example:
        >>> from types import SimpleNamespace
        >>> rows = [{"name": "c", "type": "Conv2d", "output_shape": [2, 3, 3], "params": 20, "macs": 180}]
        >>> print(format_layer_table(SimpleNamespace(rows=rows, total_params=20, total_macs=180)).splitlines()[-1])
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
    """Accuracy, then one line per class with precision (``n/a`` for a class never predicted) and recall
    (``n/a`` for a class with no test image)."""
    lines = [f"accuracy {metrics['accuracy']:.4f} on {metrics['n']} images", "",
             f"{'class':<16} {'precision':>9} {'recall':>9}"]
    for name, p, r in zip(metrics["classes"], metrics["per_class_precision"], metrics["per_class_recall"]):
        lines.append(f"{str(name):<16} {'n/a' if p is None else f'{p:.4f}':>9} {'n/a' if r is None else f'{r:.4f}':>9}")
    lines += ["", "confusion (rows = true class):"]
    lines += [" ".join(f"{v:>5}" for v in row) for row in metrics["confusion"]]
    return "\n".join(lines)


def speed_phrase(speedup: float) -> str:
    """A speed-up in words that stay true below 1: ``1.52× faster`` or ``1.25× slower`` (never
    "0.80× faster").

    >>> speed_phrase(1.52), speed_phrase(0.8)
    ('1.52× faster', '1.25× slower')
    """
    return f"{speedup:.2f}× faster" if speedup >= 1 else f"{1 / speedup:.2f}× slower"


def format_prune_record(record: dict) -> str:
    """Before/after table of a prune (see :class:`neurotomy.jobs.prune.PruneJob`)."""
    cmp = record["comparison"]
    o, p = cmp["original"], cmp["pruned"]
    rows = [("params", _human(o["params"]), _human(p["params"]), f"{cmp['params_ratio']:.2f}× smaller"),
            ("MACs", _human(o["macs"]), _human(p["macs"]), f"{cmp['macs_ratio']:.2f}× fewer"),
            ("file", f"{o['file_bytes'] / 1e6:.2f} MB", f"{p['file_bytes'] / 1e6:.2f} MB", "")]
    if "accuracy" in o:
        rows.append(("accuracy", f"{o['accuracy']:.4f}", f"{p['accuracy']:.4f}",
                     f"{(p['accuracy'] - o['accuracy']) * 100:+.2f} pt"))
    for key in sorted(k for k in o if k.startswith("latency_b")):
        batch = key[len("latency_b"):]
        rows.append((f"latency b{batch} (median)", f"{o[key]['median_ms']:.2f} ms", f"{p[key]['median_ms']:.2f} ms",
                     speed_phrase(cmp[f"speedup_batch{batch}"])))
    lines = [f"{'':<22} {'original':>12} {'pruned':>12}  change", "-" * 64]
    lines += [f"{a:<22} {b:>12} {c:>12}  {d}" for a, b, c, d in rows]
    stages = [("right after the cut", "acc_pruned"), ("after BN recalibration", "acc_recalibrated"),
              (f"after {record.get('finetune_epochs', 0)} fine-tune epochs", "acc_finetuned")]
    lines += ["", f"criterion {record['criterion']}, scope {record['scope']}, "
              f"MACs −{record['macs_reduction']:.1%}, params −{record['params_reduction']:.1%}, "
              f"{cmp['threads']} threads"]
    lines += [f"  accuracy {label}: {record[key]:.4f}" for label, key in stages if key in record]
    return "\n".join(lines)
