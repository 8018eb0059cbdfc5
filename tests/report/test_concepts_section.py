"""The "directions and concepts" section and the CRP grid, drawn from hand-made records."""

import numpy as np
import pytest
import torch

from neurotomy.report.concepts_section import concept_grid, directions_section, subspace_heatmap_grid
from neurotomy.report.record import figure_base64

RNG = np.random.default_rng(0)


def _refs(channels, n=3):
    return {c: {"indices": list(range(n)), "relevance": [3.0, 2.0, 1.0][:n], "labels": [0, 1, 0][:n],
                "class_counts": {"a": 2, "b": 1}} for c in channels}


def _record(ranking="l1"):
    shown = lambda channels: {c: (RNG.random((3, 1, 6, 6)), RNG.standard_normal((3, 6, 6))) for c in channels}  # noqa: E731
    return {"layer": "features.3", "concept_layer": "features.3", "ranking": ranking, "classes": ["a", "b"],
            "spectra": {"prca_relevance": [0.6, 0.3, 0.1], "pca_variance": [0.5, 0.3, 0.2],
                        "total_relevance": 2.0, "total_variance": 3.0},
            "comparison": {"ks": [1, 2], "accuracy_full": 0.9, "eval_images": 50,
                           **{m: {"relevance_captured": [a, b], "variance_captured": [0.1, 0.2],
                                  "accuracy_kept": [c, d]}
                              for m, a, b, c, d in (("prca", 0.6, 0.9, 0.7, 0.85), ("pca", 0.2, 0.5, 0.4, 0.6),
                                                    ("random", 0.1, 0.2, 0.1, 0.2))}},
            "drsa": {"subspaces": 2, "size": 2, "seconds": 0.1, "relevance_share": [0.7, 0.3],
                     "relevance_share_fit": [0.75, 0.25], "accuracy_removed": [0.3, 0.8]},
            "heatmaps": {"images": torch.rand(2, 1, 6, 6), "labels": [1, 0], "maps": torch.randn(2, 3, 6, 6),
                         "columns": ["subspace 0", "subspace 1", "rest"]},
            "concepts": {"kept": {"channels": _refs([4, 5]), "shown": shown([4, 5])},
                         "pruned": {"channels": _refs([0, 1]), "shown": shown([0, 1])}}}


def test_numbers_and_tables_are_the_record():
    sec = directions_section(_record())
    numbers = {n["key"]: n["value"] for n in sec["numbers"]}
    assert numbers == {"relevance_top1_prca": 0.6, "relevance_top1_pca": 0.2, "accuracy_kept_prca": 0.85,
                       "accuracy_kept_pca": 0.6, "drsa_subspaces": 2}
    directions, drsa, channels = sec["tables"]
    assert directions["rows"] == [[1, 0.6, 0.2, 0.1, 0.7, 0.4, 0.1], [2, 0.9, 0.5, 0.2, 0.85, 0.6, 0.2]]
    assert [r[2:] for r in drsa["rows"]] == [[0.7, 0.75, 0.3], [0.3, 0.25, 0.8]]
    assert [r[:2] for r in channels["rows"]] == [["kept first", 4], ["kept first", 5], ["pruned away first", 0],
                                                 ["pruned away first", 1]]
    assert channels["rows"][0][2] == "a 2, b 1" and channels["rows"][0][3] == pytest.approx(2.0)
    assert len(sec["figures"]) == 6 and "by l1" in sec["text"]


def test_channels_ranked_by_relevance_are_not_called_pruned():
    sec = directions_section(_record(ranking="relevance (activation × gradient)"))
    sides = {row[0] for row in sec["tables"][2]["rows"]}
    assert sides == {"most relevant", "least relevant"} and "pruned away" not in sec["text"]


def test_a_skipped_analysis_says_why():
    sec = directions_section({"skipped": "the model has no residual block or conv layer"})
    assert sec["numbers"] == sec["tables"] == sec["figures"] == [] and "no residual block" in sec["text"]


def test_grids_draw_tensors_arrays_and_lists_alike():
    images, maps = torch.rand(3, 1, 6, 6), torch.randn(3, 6, 6)
    refs = _refs([7])
    pngs = {figure_base64(concept_grid({7: (x, m)}, refs, ["a", "b"], "layer"))
            for x, m in ((images, maps), (images.numpy(), maps.numpy()), (images.tolist(), maps.tolist()))}
    assert len(pngs) == 1  # a resumed run's record (lists) draws the same picture
    fig = concept_grid({7: (images, maps)}, refs, ["a", "b"], "layer")
    assert [ax.get_title() for ax in fig.axes] == ["a\nR=3", "b\nR=2", "a\nR=1"]
    fig = subspace_heatmap_grid(torch.rand(2, 3, 6, 6), torch.randn(2, 4, 6, 6), ["s0", "s1", "s2", "rest"], ["x"])
    assert len(fig.axes) == 2 * 5 and fig.axes[0].get_ylabel() == "x" and fig.axes[4].get_title() == "rest"
