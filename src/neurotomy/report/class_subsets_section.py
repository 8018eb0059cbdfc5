"""Report section: class feature subsets of the final layer (Badola et al., arXiv 2112.07719),
for the original and the pruned model — how many penultimate features each class's decision
rests on, and whether pruning changed that.

Uses :mod:`neurotomy.scores.class_subsets` (the paper's frequency rule, k = 5, §3) and
:mod:`neurotomy.surgery.heads` (the decomposed head, evaluated without fine-tuning).
"""

from __future__ import annotations

from torch import nn
from torch.utils.data import Dataset

from neurotomy.report import plots
from neurotomy.report.record import add_figure, add_number, add_table, section

FREQUENCY_K = 5  # Badola et al.'s k for ResNet-20
RETENTION = 0.99  # a subset must keep ≥ 99 % of its class's precision and recall (on the training images)


def _subsets_of(model: nn.Module, train: Dataset, test: Dataset, images: int | None, quiet: bool) -> dict:
    from neurotomy.models.anatomy import classifier_layer
    from neurotomy.scores.class_subsets import (class_feature_scores, penultimate_features,
                                                smallest_class_subsets)
    from neurotomy.surgery.heads import SubspaceHead, head_accuracy

    name, head = classifier_layer(model)
    fit = penultimate_features(model, train, max_images=images, quiet=quiet)
    scores = class_feature_scores(fit.features, fit.targets, head, "frequency", k=FREQUENCY_K, layer=name)
    subsets = smallest_class_subsets(fit.features, fit.targets, head, scores, retention=RETENTION)
    held_out = penultimate_features(model, test, quiet=quiet)
    sparse = SubspaceHead.from_linear(head, subsets.mask())
    return {"subsets": subsets, "acc_full": head_accuracy(head, held_out.features, held_out.targets),
            "acc_subsets": head_accuracy(sparse, held_out.features, held_out.targets),
            "head_macs_full": head.in_features * head.out_features, "head_macs_subsets": sparse.macs}


def class_subsets_section(model: nn.Module, pruned: nn.Module, train: Dataset, test: Dataset,
                          images: int | None = None, quiet: bool = False) -> dict:
    """Subset size per class (original vs pruned) and the test accuracy of the decomposed heads."""
    results = {"original": _subsets_of(model, train, test, images, quiet),
               "pruned": _subsets_of(pruned, train, test, images, quiet)}
    o, p = results["original"]["subsets"], results["pruned"]["subsets"]
    sec = section("class_subsets", "Class feature subsets",
                  f"Per class, the fewest penultimate features (ranked by Badola et al.'s frequency rule, "
                  f"k = {FREQUENCY_K}) whose logit alone keeps ≥ {RETENTION:.0%} of the class's precision and "
                  f"recall on the training images; the decomposed head (each class reads only its subset, no "
                  f"fine-tune) is then scored on the test images.")
    for key, label in (("original", "original"), ("pruned", "pruned")):
        r = results[key]
        sizes = r["subsets"].sizes
        add_number(sec, f"mean_subset_{key}", f"mean subset size, {label} (of {r['subsets'].width} features)",
                   sum(sizes) / len(sizes), "float1")
    for key in results:
        add_number(sec, f"subset_head_accuracy_change_{key}", f"accuracy, subset head − full head, {key}",
                   results[key]["acc_subsets"] - results[key]["acc_full"], "pt")
    classes = [str(c) for c in getattr(test, "classes", range(len(o.sizes)))]
    add_table(sec, "subset size per class", [("class", "text"), ("original", "int"), ("pruned", "int"),
              ("recall, original subset", "pct"), ("recall, pruned subset", "pct")],
              [[c, o.sizes[i], p.sizes[i], o.recall_subset[i], p.recall_subset[i]] for i, c in enumerate(classes)],
              note=f"feature width: original {o.width}, pruned {p.width}")
    add_table(sec, "decomposed heads on the test images",
              [("model", "text"), ("width", "int"), ("head MACs, full", "int"), ("head MACs, subsets", "int"),
               ("accuracy, full head", "pct"), ("accuracy, subset head", "pct")],
              [[key, results[key]["subsets"].width, results[key]["head_macs_full"], results[key]["head_macs_subsets"],
                results[key]["acc_full"], results[key]["acc_subsets"]] for key in results])
    add_figure(sec, "subset size per class", plots.paired_bars(classes, o.sizes, p.sizes, "features",
               "features per class subset"), data={"classes": classes, "original": o.sizes, "pruned": p.sizes})
    return sec
