"""Report section: explanations of the original and the pruned model side by side, and their
same-reasons agreement (METHODS.md §D): for the same test images and the same target (the
original's prediction), the Spearman correlation of the two models' maps and the overlap (IoU) of
their top 10 % pixels, overall and per class.

Maps come from :func:`neurotomy.explain.attribute`; the agreement from
:func:`neurotomy.explain.metrics.agreement`. Signed maps are compared by magnitude (which pixels
matter, whatever the sign). The first method listed gives the verdict's "reasons kept" number.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from neurotomy.report import plots
from neurotomy.report.record import add_figure, add_number, add_table, section

METHODS = ("gradcam", "integrated_gradients")  # Selvaraju et al. 2017; Sundararajan et al. 2017
TOP = 0.10  # top-k % pixels for the IoU
SHOWN = 6  # images drawn side by side


def _maps(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, method: str) -> torch.Tensor:
    from neurotomy.explain import METHODS as REGISTRY
    from neurotomy.explain import attribute

    maps = attribute(model, images, targets, method=method).detach()
    return maps.abs() if REGISTRY[method].signed else maps


def explanations_section(model: nn.Module, pruned: nn.Module, data: Dataset,
                         methods: tuple[str, ...] = METHODS) -> dict:
    """Explain ``data`` (a small class-balanced set) with both models; compare the maps."""
    from neurotomy.explain import METHODS as REGISTRY
    from neurotomy.explain import normalize
    from neurotomy.explain.metrics import agreement

    from neurotomy.data.batches import iterate_batches

    images, labels = next(iterate_batches(data, len(data)))
    with torch.no_grad():
        targets = model(images).argmax(1)
        same_prediction = float((pruned(images).argmax(1) == targets).double().mean())
    records, shown = {}, {}
    for method in methods:
        maps_o, maps_p = _maps(model, images, targets, method), _maps(pruned, images, targets, method)
        records[method] = agreement(maps_o, maps_p, targets, top=TOP)
        shown[method] = (normalize(maps_o[:SHOWN]), normalize(maps_p[:SHOWN]))
    primary = methods[0]
    sec = section("explanations", "Explanations: original vs pruned",
                  f"{len(images)} test images, each explained for the original model's predicted class by both "
                  f"models. Same reasons = the maps agree: Spearman rank correlation of the pixel maps "
                  f"(by magnitude) and IoU of their top {TOP:.0%} pixels. {primary} gives the verdict.")
    add_number(sec, "agreement_spearman", f"Spearman, {primary}", records[primary]["spearman"], "float3")
    add_number(sec, "agreement_iou", f"top-{TOP:.0%} IoU, {primary}", records[primary]["iou"], "float3")
    add_number(sec, "prediction_agreement", "same predicted class", same_prediction, "pct")
    add_table(sec, "agreement by method", [("method", "text"), ("paper", "text"), ("Spearman", "float3"),
              (f"top-{TOP:.0%} IoU", "float3")],
              [[m, REGISTRY[m].paper, records[m]["spearman"], records[m]["iou"]] for m in methods])
    classes = [str(c) for c in getattr(data, "classes", [])]
    per_class = records[primary]["per_class"]
    add_table(sec, f"agreement per predicted class ({primary})", [("class", "text"), ("images", "int"),
              ("Spearman", "float3"), (f"top-{TOP:.0%} IoU", "float3")],
              [[classes[c] if c < len(classes) else str(c), r["n"], r["spearman"], r["iou"]]
               for c, r in per_class.items()])
    pictures = images[:SHOWN, 0].numpy()
    titles = [f"{classes[int(t)] if int(t) < len(classes) else int(t)}" for t in targets[:SHOWN]]
    for method in methods:
        o, p = shown[method]
        add_figure(sec, f"{method}: input, original, pruned", plots.image_map_grid(pictures, o.numpy(), p.numpy(),
                   titles), data={"method": method, "targets": targets[:SHOWN].tolist(),
                                  "labels": labels[:SHOWN].tolist(), "agreement": records[method]})
    return sec
