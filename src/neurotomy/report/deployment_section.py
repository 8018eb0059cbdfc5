"""Report section: deployment — the original model, the pruned one, and the pruned one quantized to
int8, as they run on a CPU: PyTorch and onnxruntime (fp32, int8) accuracy, size on disk, latency at
batch 1 and B, and whether each still decides for the same reasons as the original PyTorch model.

The deployed files have no gradients, so the reasons are compared with the perturbation methods
that need only outputs (occlusion, Zeiler & Fergus 2014; RISE, Petsiuk et al. 2018): Spearman
correlation of the maps by magnitude, same images, same targets (the original's predictions).
Latency comes from :func:`neurotomy.timing.interleaved_timing` (every format timed in interleaved
rounds, medians), so the section states the threads and the machine's load while it ran.

Renders the record of :func:`neurotomy.jobs.deploy.deployment_figures` for the models
``original`` and ``pruned`` (:func:`neurotomy.jobs.dissect_stages.deployment_records`); a record
with ``skipped`` says why nothing was deployed; one with ``int8_refused`` (onnxruntime could not
quantize the model) shows the fp32 files, the pruned fp32 file as the deployed one.
:data:`SPEEDUP_KEY` is the number the verdict names, :data:`DEPLOYED_KEY` what it names.

Example:
    >>> rows = [{"model": m, "format": f, "accuracy": 0.9, "bytes": 1000, "latency_batch1_ms": 1.0,
    ...          "latency_batch8_ms": t, "prediction_agreement": 1.0, "reasons_spearman": None,
    ...          "speedup_batch8_vs_torch": 4.0 / t, "speedup_batch8_vs_onnx_fp32": 2.0 / t}
    ...         for m in ("original", "pruned") for f, t in (("torch", 4.0), ("onnx-fp32", 2.0), ("onnx-int8", 1.0))]
    >>> record = {"rows": rows, "reasons": [], "timing": {"threads": 1, "load_average": [0.5, 0.6]},
    ...           "settings": {"latency_batch": 8, "methods": ["occlusion"], "calibration": "minmax",
    ...                        "calibration_images": 32, "rounds": 3}}
    >>> {n["key"]: n["value"] for n in deployment_section(record)["numbers"]}[SPEEDUP_KEY]
    4.0
"""

from __future__ import annotations

from neurotomy.report import plots
from neurotomy.report.record import add_figure, add_number, add_table, section

SPEEDUP_KEY = "speedup_deployed"
"""The deployed speed-up: pruned + int8 in onnxruntime against the original PyTorch model, batch B."""
DEPLOYED_KEY = "deployed_as"
"""Which model and format the deployed numbers are of: ``pruned + int8`` (or ``pruned, ONNX fp32``)."""
METHOD_NAMES = {"occlusion": "occlusion", "rise": "RISE"}


def _row(rows: list[dict], model: str, fmt: str) -> dict | None:
    return next((r for r in rows if r["model"] == model and r["format"] == fmt), None)


def _spearman(row: dict, method: str):
    return (row.get("reasons_spearman") or {}).get(method)


def deployment_section(record: dict) -> dict:
    """Original → pruned → pruned + int8: the headline speed-ups, accuracy, size and reasons kept;
    every model in every format; the int8 files against their fp32 files; latency per format."""
    if "skipped" in record:
        return section("deployment", "Deployment", f"Not deployed: {record['skipped']}")
    rows, settings, timing = record["rows"], record["settings"], record["timing"]
    batch, methods = settings["latency_batch"], settings["methods"]
    latency = f"latency_batch{batch}_ms"
    refused = record.get("int8_refused")
    deployed_as = "pruned, ONNX fp32" if refused else "pruned + int8"
    original, deployed = _row(rows, "original", "torch"), _row(rows, "pruned", "onnx-fp32" if refused else "onnx-int8")
    original_onnx = _row(rows, "original", "onnx-fp32")
    load = timing["load_average"]
    sec = section("deployment", "Deployment: original → pruned → pruned + int8",
                  f"Each model exported to ONNX (checked against PyTorch) and quantized to int8 (static, QDQ, "
                  f"per-channel weights, {settings['calibration']} calibration on {settings['calibration_images']} "
                  f"training images), then measured as it runs: test accuracy, size on disk, CPU latency at batch 1 "
                  f"and {batch} ({timing['threads']} thread(s), {settings['rounds']} interleaved rounds, medians), and "
                  f"the reasons kept: Spearman correlation of each format's "
                  f"{' and '.join(METHOD_NAMES.get(m, m) for m in methods)} maps with the "
                  f"original PyTorch model's (output-only methods: the deployed files have no gradients)."
                  + (f" No int8 file: {refused}" if refused else ""))
    first = methods[0]
    add_number(sec, DEPLOYED_KEY, "deployed model", deployed_as, "text")
    add_number(sec, SPEEDUP_KEY, f"{deployed_as} faster than the original (PyTorch), batch {batch}",
               deployed[f"speedup_batch{batch}_vs_torch"], "ratio")
    add_number(sec, "speedup_deployed_vs_onnx", f"{deployed_as} faster than the original (ONNX fp32), batch {batch}",
               deployed[f"speedup_batch{batch}_vs_onnx_fp32"], "ratio")
    add_number(sec, "accuracy_change_deployed", f"accuracy, {deployed_as} − original", deployed["accuracy"]
               - original["accuracy"], "pt")
    add_number(sec, "size_ratio_deployed", f"smaller on disk (original ONNX fp32 ÷ {deployed_as})",
               original_onnx["bytes"] / deployed["bytes"], "ratio")
    add_number(sec, "reasons_deployed", f"reasons kept, {deployed_as}: Spearman ({first})",
               _spearman(deployed, first), "float3")
    add_number(sec, "threads", "threads while timed", timing["threads"], "int")
    add_number(sec, "load_average", "load average while timed", max(load), "float1")
    columns = [("model", "text"), ("format", "text"), ("accuracy", "pct"), ("size", "mb"), ("latency b1", "ms"),
               (f"latency b{batch}", "ms"), ("same prediction", "pct")]
    columns += [(f"reasons: {METHOD_NAMES.get(m, m)}", "float3") for m in methods]
    add_table(sec, "every model in every format", columns,
              [[r["model"], r["format"], r["accuracy"], r["bytes"], r["latency_batch1_ms"], r[latency],
                r["prediction_agreement"]] + [_spearman(r, m) for m in methods] for r in rows],
              note="size: the safetensors checkpoint for PyTorch, the .onnx file otherwise; same prediction and "
                   "reasons (Spearman of the maps): against the original PyTorch model (— for that model itself)")
    int8 = [r for r in record["reasons"] if r["against"]["format"] == "onnx-fp32"]
    if int8:
        add_table(sec, "int8 against its own fp32 file: same reasons?",
                  [("model", "text")] + [(f"{METHOD_NAMES.get(m, m)} {what}", "float3") for m in methods
                                         for what in ("Spearman", "top-10 % IoU")],
                  [[r["model"]] + [r["methods"][m][what] for m in methods for what in ("spearman", "iou")]
                   for r in int8])
    formats = [f for f in ("torch", "onnx-fp32", "onnx-int8") if _row(rows, "original", f) and _row(rows, "pruned", f)]
    ms = {m: [_row(rows, m, f)[latency] for f in formats] for m in ("original", "pruned")}
    add_figure(sec, f"latency at batch {batch} per format (CPU, {timing['threads']} thread(s))",
               plots.paired_bars(formats, ms["original"], ms["pruned"], "ms", f"median latency, batch {batch}"),
               data={"formats": formats, **ms, "threads": timing["threads"], "load_average": load})
    return sec


__all__ = ["DEPLOYED_KEY", "SPEEDUP_KEY", "deployment_section"]
