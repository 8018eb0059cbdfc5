"""Report section: explanations of the original and the pruned model side by side, and their
same-reasons agreement: for the same test images and the same target (the original's prediction),
the Spearman correlation of the two models' maps (by magnitude) and the overlap (IoU) of their top
pixels, overall and per class.

Renders the record and the figure of :func:`neurotomy.jobs.dissect_stages.reason_records` (the
numbers come from :func:`neurotomy.explain.rating.compare_reasons`, the composition behind
``neurotomy compare-reasons``; the picture from :func:`neurotomy.explain.figure.attribution_grid`).
The first method gives the verdict's "reasons kept" number: Grad-CAM, class-discriminative and the
least noisy of the three on small inputs.
"""

from __future__ import annotations

from neurotomy.report.record import add_figure, add_number, add_table, section


def explanations_section(reasons: dict, figure) -> dict:
    """The agreement numbers and tables of ``reasons`` and its explanation ``figure`` (a matplotlib
    figure; stored as PNG and closed)."""
    agreement, top, primary = reasons["agreement"], reasons["top"], reasons["primary"]
    first = agreement["methods"][primary]
    sec = section("explanations", "Explanations: original vs pruned",
                  f"{agreement['n']} test images, each explained for the original model's predicted class by both "
                  f"models. Same reasons = the maps agree: Spearman rank correlation of the pixel maps "
                  f"(by magnitude) and IoU of their top {top:.0%} pixels. {primary} gives the verdict.")
    add_number(sec, "agreement_spearman", f"Spearman, {primary}", first["spearman"], "float3")
    add_number(sec, "agreement_iou", f"top-{top:.0%} IoU, {primary}", first["iou"], "float3")
    add_number(sec, "prediction_agreement", "same predicted class", agreement["prediction_agreement"], "pct")
    add_table(sec, "agreement by method", [("method", "text"), ("paper", "text"), ("Spearman", "float3"),
              (f"top-{top:.0%} IoU", "float3")],
              [[m, reasons["papers"][m], r["spearman"], r["iou"]] for m, r in agreement["methods"].items()],
              note="; ".join(f"{m} skipped: {why}" for m, why in reasons.get("skipped", {}).items()))
    classes = reasons["classes"]
    name = lambda c: classes[int(c)] if int(c) < len(classes) else str(c)  # noqa: E731
    add_table(sec, f"agreement per predicted class ({primary})", [("class", "text"), ("images", "int"),
              ("Spearman", "float3"), (f"top-{top:.0%} IoU", "float3")],
              [[name(c), r["n"], r["spearman"], r["iou"]] for c, r in first["per_class"].items()])
    add_figure(sec, "input, then each method's map from the original and the pruned model", figure,
               data={"targets": reasons["targets"], "labels": reasons["labels"], "agreement": agreement}, wide=True)
    return sec
