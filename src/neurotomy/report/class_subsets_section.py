"""Report section: class feature subsets of the final layer (Badola et al., arXiv 2112.07719),
for the original and the pruned model — how many penultimate features each class's decision
rests on, and whether pruning changed that.

Renders the record of :func:`neurotomy.jobs.dissect_stages.subset_records` (which runs
:mod:`neurotomy.scores.class_subsets`, the paper's frequency rule, and evaluates the decomposed
head of :mod:`neurotomy.surgery.heads` without fine-tuning).

Example:
    >>> one = {"sizes": [2, 4], "width": 8, "recall_subset": [0.9, 1.0], "acc_full": 0.95, "acc_subsets": 0.9,
    ...        "head_macs_full": 16, "head_macs_subsets": 6}
    >>> sec = class_subsets_section({"k": 5, "retention": 0.99, "classes": ["a", "b"], "original": one,
    ...                              "pruned": one})
    >>> [(n["key"], round(n["value"], 3)) for n in sec["numbers"]][:2]
    [('mean_subset_original', 3.0), ('mean_subset_pruned', 3.0)]
"""

from __future__ import annotations

from neurotomy.report import plots
from neurotomy.report.record import add_figure, add_number, add_table, section


def class_subsets_section(subsets: dict) -> dict:
    """Subset size per class (original vs pruned) and the test accuracy of the decomposed heads."""
    results = {key: subsets[key] for key in ("original", "pruned")}
    o, p = results["original"], results["pruned"]
    sec = section("class_subsets", "Class feature subsets",
                  f"Per class, the fewest penultimate features (ranked by Badola et al.'s frequency rule, "
                  f"k = {subsets['k']}) whose logit alone keeps ≥ {subsets['retention']:.0%} of the class's precision "
                  f"and recall on the training images; the decomposed head (each class reads only its subset, no "
                  f"fine-tune) is then scored on the test images.")
    for key, label in (("original", "original"), ("pruned", "pruned")):
        r = results[key]
        add_number(sec, f"mean_subset_{key}", f"mean subset size, {label} (of {r['width']} features)",
                   sum(r["sizes"]) / len(r["sizes"]), "float1")
    for key in results:
        add_number(sec, f"subset_head_accuracy_change_{key}", f"accuracy, subset head − full head, {key}",
                   results[key]["acc_subsets"] - results[key]["acc_full"], "pt")
    classes = subsets["classes"]
    add_table(sec, "subset size per class", [("class", "text"), ("original", "int"), ("pruned", "int"),
              ("recall, original subset", "pct"), ("recall, pruned subset", "pct")],
              [[c, o["sizes"][i], p["sizes"][i], o["recall_subset"][i], p["recall_subset"][i]]
               for i, c in enumerate(classes)],
              note=f"feature width: original {o['width']}, pruned {p['width']}")
    add_table(sec, "decomposed heads on the test images",
              [("model", "text"), ("width", "int"), ("head MACs, full", "int"), ("head MACs, subsets", "int"),
               ("accuracy, full head", "pct"), ("accuracy, subset head", "pct")],
              [[key, r["width"], r["head_macs_full"], r["head_macs_subsets"], r["acc_full"], r["acc_subsets"]]
               for key, r in results.items()])
    add_figure(sec, "subset size per class", plots.paired_bars(classes, o["sizes"], p["sizes"], "features",
               "features per class subset"), data={"classes": classes, "original": o["sizes"], "pruned": p["sizes"]})
    return sec
