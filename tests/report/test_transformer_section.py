"""The transformer section, rendered from a hand-made record."""

import math

import pytest

from neurotomy.report.transformer_section import transformer_section

CLS = ["blocks.0:cls", "blocks.1:cls", "blocks.2:cls"]
PATCHES = ["blocks.0:patches", "blocks.1:patches", "blocks.2:patches"]
CKA = [[1.0, 0.8, 0.5, 0.3, 0.2, 0.1],
       [0.8, 1.0, 0.7, 0.2, 0.3, 0.2],
       [0.5, 0.7, 1.0, 0.1, 0.2, 0.4],
       [0.3, 0.2, 0.1, 1.0, 0.9, 0.6],
       [0.2, 0.3, 0.2, 0.9, 1.0, 0.95],
       [0.1, 0.2, 0.4, 0.6, 0.95, 1.0]]


def _record():
    return {"criterion": "taylor", "paper": "Michel et al. 2019", "score_images": 64,
            "heads": {"layers": ["blocks.0.attn", "blocks.1.attn", "blocks.2.attn"],
                      "values": [[0.2, 0.4], [0.8, None], [0.1, 0.3]]},  # blocks.1 lost a head
            "neurons": {"layers": ["blocks.0.mlp.fc1", "blocks.1.mlp.fc1", "blocks.2.mlp.fc1"],
                        "scores": [[1.0, 2.0, 3.0], [0.5, 0.1], [2.0, 4.0, 8.0, 1.0]]},
            "units": {"blocks": ["blocks.0", "blocks.1", "blocks.2"], "heads": {"original": [2, 2, 2],
                      "pruned": [2, 1, 2]}, "neurons": {"original": [4, 4, 4], "pruned": [3, 2, 4]}},
            "modularity": {"k": 3, "n_samples": 90, "views": {
                "cls": {"layers": CLS + ["head:input"], "q": [0.1, 0.4, 0.6, 0.65]},
                "patches": {"layers": PATCHES + ["head:input"], "q": [0.05, 0.2, 0.3, 0.65]}}},
            "cka": {"measure": "linear_cka", "layers_a": CLS + PATCHES, "layers_b": CLS + PATCHES, "values": CKA,
                    "samples": 90}}


def test_numbers_come_from_the_record():
    sec = transformer_section(_record())
    numbers = {n["key"]: n["value"] for n in sec["numbers"]}
    assert (numbers["heads_original"], numbers["heads_pruned"]) == (6, 5)
    assert (numbers["neurons_original"], numbers["neurons_pruned"]) == (12, 9)
    # the last block's Q, not the classifier input's that ends each curve
    assert numbers["q_last_cls"] == 0.6 and numbers["q_last_patches"] == 0.3
    assert numbers["cka_adjacent_blocks"] == pytest.approx((0.8 + 0.7) / 2)  # class-token view: (0,1), (1,2)
    units, modularity = sec["tables"]
    assert units["rows"][1] == ["blocks.1", 2, 1, 4, 2]
    assert modularity["rows"] == [["blocks.0", 0.1, 0.05], ["blocks.1", 0.4, 0.2], ["blocks.2", 0.6, 0.3],
                                  ["head:input", 0.65, 0.65]]


def test_figures_keep_raw_values_and_draw_a_missing_head_blank():
    sec = transformer_section(_record())
    titles = [f["title"] for f in sec["figures"]]
    assert titles == ["head importance (blocks × heads)", "MLP-neuron scores per block",
                      "modularity over blocks: class token vs patch tokens", "linear CKA between blocks"]
    heads = sec["figures"][0]["data"]
    assert heads["values"][1][1] is None and heads["values"][0] == [0.2, 0.4]
    quantiles = sec["figures"][1]["data"]["quantiles"]
    assert quantiles[2] == [1.0, 1.75, 3.0, 5.0, 8.0]  # min, quartiles (linear interpolation), max of [2, 4, 8, 1]
    assert all(not math.isnan(q) for row in quantiles for q in row)
