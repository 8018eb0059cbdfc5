"""The verdict at the top of the report: "smaller by X, faster by Y, accuracy −Z, reasons kept:
agreement W" and, when the report has a deployment section, "deployed (pruned + int8) faster by V",
as values taken from the pruning record, the explanations section and the deployment section.

Example:
    >>> v = verdict({"comparison": {"params_ratio": 2.0, "macs_ratio": 2.1, "speedup_batch64": 1.4,
    ...              "original": {"accuracy": 0.95}, "pruned": {"accuracy": 0.94}}}, [])
    >>> verdict_sentence(v)
    'smaller by 2.00×, faster by 1.40×, accuracy −1.00 pt, reasons kept: agreement —'
"""

from __future__ import annotations

from neurotomy.report.deployment_section import DEPLOYED_KEY, SPEEDUP_KEY
from neurotomy.report.record import format_value

# The section number that measures whether the pruned model decides for the same reasons.
AGREEMENT_KEY = ("explanations", "agreement_spearman")


def _section_number(sections: list[dict], section_id: str, key: str) -> dict | None:
    for sec in sections:
        if sec["id"] == section_id:
            for number in sec["numbers"]:
                if number["key"] == key:
                    return number
    return None


def verdict(record: dict, sections: list[dict]) -> dict:
    """The headline items (each with key, label, value, format) and the details behind them."""
    cmp = record["comparison"]
    batches = sorted(int(k.removeprefix("speedup_batch")) for k in cmp if k.startswith("speedup_batch"))
    speed_batch = 64 if 64 in batches else (batches[-1] if batches else None)
    original, pruned = cmp["original"]["accuracy"], cmp["pruned"]["accuracy"]
    reasons = _section_number(sections, *AGREEMENT_KEY) or {"value": None, "label": "explanations not computed"}
    items = [
        {"key": "params_ratio", "label": "smaller by", "value": cmp["params_ratio"], "format": "ratio",
         "note": "parameters, original ÷ pruned"},
        {"key": "speedup", "label": "faster by", "value": cmp.get(f"speedup_batch{speed_batch}"), "format": "ratio",
         "note": f"CPU latency at batch {speed_batch}, median" if speed_batch else "latency not measured in this budget"},
        {"key": "accuracy_change", "label": "accuracy", "value": pruned - original, "format": "pt",
         "note": "pruned − original, test images"},
        {"key": "reasons_agreement", "label": "reasons kept: agreement",
         "value": reasons["value"], "format": "float3",
         "note": f"{reasons['label']}: rank correlation of the two models' maps, same images and targets"},
    ]
    deployed = _section_number(sections, "deployment", SPEEDUP_KEY)
    if deployed is not None:  # the section exists and measured: name the speed-up a user ships
        threads = (_section_number(sections, "deployment", "threads") or {}).get("value")
        what = (_section_number(sections, "deployment", DEPLOYED_KEY) or {}).get("value", "pruned + int8")
        items.append({"key": SPEEDUP_KEY, "label": f"deployed ({what}) faster by", "value": deployed["value"],
                      "format": "ratio", "note": f"{deployed['label']}: onnxruntime vs PyTorch, CPU, {threads} "
                                                 f"thread(s), median of interleaved rounds"})
    details = [
        {"key": "macs_ratio", "label": "fewer MACs by", "value": cmp["macs_ratio"], "format": "ratio"},
        {"key": "accuracy_original", "label": "accuracy, original", "value": original, "format": "pct"},
        {"key": "accuracy_pruned", "label": "accuracy, pruned", "value": pruned, "format": "pct"},
    ]
    return {"items": items, "details": details}


def verdict_sentence(v: dict) -> str:
    """The verdict as one line of text (the terminal prints it; the HTML shows the same values)."""
    return ", ".join(f"{item['label']} {format_value(item['value'], item['format'])}" for item in v["items"])
