"""Report section: explanations of the original and the pruned model side by side, and their
same-reasons agreement (METHODS.md §D): for the same test images and the same target (the
original's prediction), the Spearman correlation of the two models' maps (by magnitude) and the
overlap (IoU) of their top 10 % pixels, overall and per class.

The numbers come from :func:`neurotomy.explain.rating.compare_reasons` (the composition behind
``neurotomy compare-reasons``), the pictures from :func:`neurotomy.explain.attribute` and
:func:`neurotomy.explain.figure.attribution_grid`. The first method gives the verdict's "reasons
kept" number: Grad-CAM, class-discriminative and the least noisy of the three on small inputs.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from neurotomy.report.record import add_figure, add_number, add_table, section

METHODS = ("gradcam", "gradient", "pathway")  # Selvaraju et al. 2017; Simonyan et al. 2014; Khakzar et al. 2021
TOP = 0.10  # top-k % pixels for the IoU
SHOWN = 6  # images drawn side by side


def explanations_section(model: nn.Module, pruned: nn.Module, data: Dataset,
                         methods: tuple[str, ...] = METHODS, seed: int = 0, quiet: bool = False) -> dict:
    """Explain ``data`` (a small class-balanced set) with both models; compare the maps."""
    from neurotomy.data.batches import iterate_batches
    from neurotomy.explain import METHODS as REGISTRY
    from neurotomy.explain import attribute
    from neurotomy.explain.figure import attribution_grid
    from neurotomy.explain.rating import compare_reasons

    images, labels = next(iterate_batches(data, len(data)))
    record = compare_reasons(model, pruned, images, methods=methods, top=TOP, seed=seed, quiet=quiet)
    primary = methods[0]
    first = record["methods"][primary]
    sec = section("explanations", "Explanations: original vs pruned",
                  f"{record['n']} test images, each explained for the original model's predicted class by both "
                  f"models. Same reasons = the maps agree: Spearman rank correlation of the pixel maps "
                  f"(by magnitude) and IoU of their top {TOP:.0%} pixels. {primary} gives the verdict.")
    add_number(sec, "agreement_spearman", f"Spearman, {primary}", first["spearman"], "float3")
    add_number(sec, "agreement_iou", f"top-{TOP:.0%} IoU, {primary}", first["iou"], "float3")
    add_number(sec, "prediction_agreement", "same predicted class", record["prediction_agreement"], "pct")
    add_table(sec, "agreement by method", [("method", "text"), ("paper", "text"), ("Spearman", "float3"),
              (f"top-{TOP:.0%} IoU", "float3")],
              [[m, REGISTRY[m].paper, r["spearman"], r["iou"]] for m, r in record["methods"].items()])
    classes = [str(c) for c in getattr(data, "classes", [])]
    name = lambda c: classes[int(c)] if int(c) < len(classes) else str(c)  # noqa: E731
    add_table(sec, f"agreement per predicted class ({primary})", [("class", "text"), ("images", "int"),
              ("Spearman", "float3"), (f"top-{TOP:.0%} IoU", "float3")],
              [[name(c), r["n"], r["spearman"], r["iou"]] for c, r in first["per_class"].items()])
    shown = images[:SHOWN]
    with torch.no_grad():
        targets = model(shown).argmax(1)
    maps = {f"{m}, {who}": attribute(net, shown, targets, method=m).detach().abs()
            for m in methods for who, net in (("original", model), ("pruned", pruned))}
    add_figure(sec, "input, then each method's map from the original and the pruned model",
               attribution_grid(shown, maps, signed={k: False for k in maps},
                                row_titles=[f"{name(t)}" for t in targets]),
               data={"targets": targets.tolist(), "labels": labels[:SHOWN].tolist(), "agreement": record},
               wide=True)
    return sec
