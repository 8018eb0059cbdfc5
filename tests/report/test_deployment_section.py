"""The deployment section and the verdict's deployed speed-up, rendered from hand-made records."""

import pytest

from neurotomy.report.deployment_section import DEPLOYED_KEY, SPEEDUP_KEY, deployment_section
from neurotomy.report.verdict import verdict, verdict_sentence

# latency (ms) at batch 8 and size (bytes) of each model in each format
LATENCY = {("original", "torch"): 8.0, ("original", "onnx-fp32"): 5.0, ("original", "onnx-int8"): 2.5,
           ("pruned", "torch"): 5.0, ("pruned", "onnx-fp32"): 3.0, ("pruned", "onnx-int8"): 1.6}
SIZE = {("original", "torch"): 90_000, ("original", "onnx-fp32"): 88_000, ("original", "onnx-int8"): 30_000,
        ("pruned", "torch"): 50_000, ("pruned", "onnx-fp32"): 48_000, ("pruned", "onnx-int8"): 16_000}
ACCURACY = {"original": 0.95, "pruned": 0.93}


def _record(formats=("torch", "onnx-fp32", "onnx-int8"), refused=None):
    rows = []
    for model in ("original", "pruned"):
        for fmt in formats:
            ms = LATENCY[model, fmt]
            reference = (model, fmt) == ("original", "torch")
            rows.append({"model": model, "format": fmt, "accuracy": ACCURACY[model] - 0.01 * (fmt == "onnx-int8"),
                         "bytes": SIZE[model, fmt], "latency_batch1_ms": ms / 4, "latency_batch8_ms": ms,
                         "prediction_agreement": 1.0 if model == "original" else 0.9,
                         "reasons_spearman": None if reference else {"occlusion": 0.8, "rise": 0.7},
                         # as deployment_figures computes them, from the latencies above
                         "speedup_batch8_vs_torch": LATENCY["original", "torch"] / ms,
                         "speedup_batch8_vs_onnx_fp32": LATENCY["original", "onnx-fp32"] / ms})
    reasons = [{"model": m, "format": "onnx-int8", "against": {"model": m, "format": "onnx-fp32"},
                "methods": {"occlusion": {"spearman": 0.99, "iou": 0.9}, "rise": {"spearman": 0.98, "iou": 0.8}}}
               for m in ("original", "pruned") if "onnx-int8" in formats]
    return {"rows": rows, "reasons": reasons, "int8_refused": refused,
            "timing": {"threads": 1, "load_average": [0.4, 0.7]},
            "settings": {"latency_batch": 8, "methods": ["occlusion", "rise"], "calibration": "minmax",
                         "calibration_images": 32, "rounds": 5}}


def _numbers(sec):
    return {n["key"]: n["value"] for n in sec["numbers"]}


def _pruning_record():
    return {"comparison": {"params_ratio": 2.0, "macs_ratio": 2.0, "original": {"accuracy": 0.95},
                           "pruned": {"accuracy": 0.93}}}


def test_headline_numbers_are_original_torch_against_pruned_int8():
    sec = deployment_section(_record())
    numbers = _numbers(sec)
    assert numbers[DEPLOYED_KEY] == "pruned + int8"
    assert numbers[SPEEDUP_KEY] == pytest.approx(8.0 / 1.6)
    assert numbers["speedup_deployed_vs_onnx"] == pytest.approx(5.0 / 1.6)
    assert numbers["accuracy_change_deployed"] == pytest.approx(0.92 - 0.95)
    assert numbers["size_ratio_deployed"] == pytest.approx(88_000 / 16_000)
    assert numbers["reasons_deployed"] == 0.8 and numbers["threads"] == 1 and numbers["load_average"] == 0.7
    table = sec["tables"][0]
    assert len(table["rows"]) == 6 and [r[5] for r in table["rows"]] == [LATENCY[r[0], r[1]] for r in table["rows"]]
    assert table["rows"][0][-2:] == [None, None]  # the reference has no agreement with itself
    assert sec["tables"][1]["rows"] == [["original", 0.99, 0.9, 0.98, 0.8], ["pruned", 0.99, 0.9, 0.98, 0.8]]
    assert sec["figures"][0]["data"]["pruned"] == [5.0, 3.0, 1.6] and "latency" in sec["figures"][0]["title"]


def test_the_verdict_names_the_deployed_speed_up():
    sec = deployment_section(_record())
    v = verdict(_pruning_record(), [sec])
    item = v["items"][-1]
    assert item["key"] == SPEEDUP_KEY and item["value"] == pytest.approx(5.0)
    assert "1 thread" in item["note"]
    assert verdict_sentence(v).endswith("deployed (pruned + int8) faster by 5.00×")
    # no deployment section: the verdict is the four pruning items, as before
    assert [i["key"] for i in verdict(_pruning_record(), [])["items"]] == [
        "params_ratio", "speedup", "accuracy_change", "reasons_agreement"]


def test_a_model_onnxruntime_cannot_quantize_is_deployed_in_fp32():
    refused = "onnxruntime cannot quantize op Expand of this model"
    sec = deployment_section(_record(formats=("torch", "onnx-fp32"), refused=refused))
    numbers = _numbers(sec)
    assert numbers[DEPLOYED_KEY] == "pruned, ONNX fp32" and refused in sec["text"]
    assert numbers[SPEEDUP_KEY] == pytest.approx(8.0 / 3.0)
    assert len(sec["tables"]) == 1 and len(sec["tables"][0]["rows"]) == 4
    assert verdict_sentence(verdict(_pruning_record(), [sec])).endswith("deployed (pruned, ONNX fp32) faster by 2.67×")


def test_a_skipped_deployment_says_why_and_stays_out_of_the_verdict():
    sec = deployment_section({"skipped": "the model cannot be exported"})
    assert sec["numbers"] == [] and "the model cannot be exported" in sec["text"]
    assert SPEEDUP_KEY not in {i["key"] for i in verdict(_pruning_record(), [sec])["items"]}
