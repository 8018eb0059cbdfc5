"""The sections of the dissection report, one function each. Every function takes the plain
record a stage of the job produced (:mod:`neurotomy.jobs.dissect_stages`, the prune record) and
returns a section record (:mod:`neurotomy.report.record`) holding its numbers, tables and figures;
nothing here touches a model or data, and nothing is computed in the HTML.

Example:
    >>> table = {"layers": [{"name": "fc", "type": "Linear", "output_shape": [10], "params": 50, "macs": 40}],
    ...          "total_params": 50, "total_macs": 40}
    >>> sec = layers_section({"original": table, "pruned": table})
    >>> [n["value"] for n in sec["numbers"]], sec["tables"][0]["rows"][0][:4]
    ([50, 50, 40, 40], ['fc', 'Linear', '10', '10'])
"""

from __future__ import annotations

from neurotomy.provenance import busy_threshold
from neurotomy.report import plots
from neurotomy.report.record import add_figure, add_number, add_table, section


def _shape(shape) -> str:
    return "×".join(str(d) for d in shape)


def layers_section(layers: dict) -> dict:
    """Per-layer table (conv and linear layers) of the original and pruned model, side by side;
    ``layers`` holds each model's layer table (``{"original": …, "pruned": …}``, each with
    ``layers``, ``total_params`` and ``total_macs``)."""
    before, after = layers["original"], layers["pruned"]
    after_rows = {r["name"]: r for r in after["layers"]}
    sec = section("layers", "Layers", "Every convolution and linear layer: output shape, parameters and "
                  "multiply-accumulates (MACs) before and after pruning.")
    add_number(sec, "params_original", "parameters, original", before["total_params"], "int")
    add_number(sec, "params_pruned", "parameters, pruned", after["total_params"], "int")
    add_number(sec, "macs_original", "MACs, original", before["total_macs"], "int")
    add_number(sec, "macs_pruned", "MACs, pruned", after["total_macs"], "int")
    rows = []
    for r in before["layers"]:
        if r["type"] not in ("Conv2d", "Linear"):
            continue
        p = after_rows.get(r["name"])
        rows.append([r["name"], r["type"], _shape(r["output_shape"]), _shape(p["output_shape"]) if p else "removed",
                     r["params"], p["params"] if p else 0, r["macs"], p["macs"] if p else 0])
    rows.append(["total", "", "", "", before["total_params"], after["total_params"], before["total_macs"], after["total_macs"]])
    add_table(sec, "conv and linear layers", [("layer", "text"), ("type", "text"), ("output, original", "text"),
              ("output, pruned", "text"), ("params, original", "int"), ("params, pruned", "int"),
              ("MACs, original", "int"), ("MACs, pruned", "int")], rows,
              note="totals include every layer (BatchNorm parameters too)")
    return sec


def scores_section(scores: dict) -> dict:
    """Each criterion's cost and the Spearman rank agreement of every pair (mean over layers);
    ``scores`` is the record of :func:`neurotomy.jobs.dissect_stages.score_records` (or, for a
    transformer, ``transformer_score_records``, whose ``units`` says what was scored)."""
    pruning_criterion, agreement = scores["pruning_criterion"], scores["agreement"]
    names = [c["name"] for c in scores["criteria"]]
    sec = section("scores", "Unit scores", f"{len(names)} criteria scored "
                  f"{scores.get('units', 'every convolution filter')}. Do they agree on which units matter? Spearman "
                  f"rank correlation per layer, averaged over layers; pruning used {pruning_criterion}.")
    i = names.index(pruning_criterion)
    off_diagonal = [agreement[a][b] for a in range(len(names)) for b in range(len(names)) if a != b]
    if off_diagonal:
        add_number(sec, "mean_pairwise_agreement", "mean agreement of all pairs",
                   sum(off_diagonal) / len(off_diagonal), "float3")
    rows = [[c["name"], c["paper"], c["needs"], c["seconds"], agreement[i][j]] for j, c in enumerate(scores["criteria"])]
    add_table(sec, "criteria", [("criterion", "text"), ("paper", "text"), ("needs", "text"),
              ("seconds", "seconds"), (f"agreement with {pruning_criterion}", "float3")], rows)
    add_table(sec, "rank agreement (mean Spearman over layers)",
              [("criterion", "text")] + [(n, "float3") for n in names],
              [[a] + agreement[k] for k, a in enumerate(names)])
    add_figure(sec, "rank agreement between criteria",
               plots.matrix_heatmap(agreement, names, names, "Spearman agreement (mean over layers)",
                                    vmin=-1, vmax=1, cmap="RdBu_r"),
               data={"criteria": names, "agreement": agreement})
    layers, series = scores["per_layer"]["layers"], scores["per_layer"]["spearman"]
    if series:
        add_figure(sec, f"per-layer agreement with {pruning_criterion}",
                   plots.per_layer_lines(layers, series, "Spearman", f"agreement with {pruning_criterion} per layer"),
                   data={"layers": layers, "spearman": series}, wide=len(layers) > 10)
    return sec


def pruning_section(record: dict, original_metrics: dict, final_metrics: dict) -> dict:
    """The prune: target, accuracy at each stage, size and speed, per-class recall, channels."""
    cmp = record["comparison"]
    o, p = cmp["original"], cmp["pruned"]
    recalibrated = "recalibration" not in record  # set only when there was no BatchNorm (a ViT's LayerNorms)
    stages = [("original", "acc_original"), ("right after the cut", "acc_pruned"),
              *([("after BatchNorm recalibration", "acc_recalibrated")] if recalibrated else []),
              (f"after {record['finetune_epochs']} fine-tune epoch(s)", "acc_finetuned")]
    recovery = ("BatchNorm recalibration and" if recalibrated
                else "no recalibration (LayerNorm keeps no running statistics), only")
    sec = section("pruning", "Pruning", f"Criterion {record['criterion']}, {record['scope']} scope, target: "
                  f"remove {record['settings']['target_macs']:.0%} of the MACs; then {recovery} "
                  f"{record['finetune_epochs']} fine-tune epoch(s). Latency: CPU, {cmp['threads']} threads, "
                  f"interleaved rounds, median.")
    add_number(sec, "macs_reduction", "MACs removed", record["macs_reduction"], "pct")
    add_number(sec, "params_reduction", "parameters removed", record["params_reduction"], "pct")
    add_number(sec, "params_ratio", "smaller by (parameters)", cmp["params_ratio"], "ratio")
    speedups = sorted(k for k in cmp if k.startswith("speedup_batch"))
    for key in speedups:
        add_number(sec, key, f"faster at batch {key.removeprefix('speedup_batch')}", cmp[key], "ratio")
    add_number(sec, "accuracy_change", "accuracy change", final_metrics["accuracy"] - original_metrics["accuracy"], "pt")
    add_table(sec, "accuracy at each stage", [("stage", "text"), ("accuracy", "pct"), ("change", "pt")],
              [[label, record[key], record[key] - record["acc_original"]] for label, key in stages if key in record])
    latency_keys = sorted(k for k in o if k.startswith("latency_b"))
    columns = [("model", "text"), ("params", "int"), ("MACs", "int"), ("checkpoint", "mb"), ("accuracy", "pct")]
    columns += [(f"latency b{k.removeprefix('latency_b')}", "ms") for k in latency_keys]
    add_table(sec, "size and speed", columns,
              [[name, m["params"], m["macs"], m["file_bytes"], m.get("accuracy")]
               + [m[k]["median_ms"] for k in latency_keys] for name, m in (("original", o), ("pruned", p))])
    classes = [str(c) for c in original_metrics["classes"]]
    recall_o, recall_p = original_metrics["per_class_recall"], final_metrics["per_class_recall"]
    add_table(sec, "recall per class", [("class", "text"), ("original", "pct"), ("pruned", "pct"), ("change", "pt")],
              [[c, a, b, None if None in (a, b) else b - a] for c, a, b in zip(classes, recall_o, recall_p)])
    add_figure(sec, "recall per class", plots.paired_bars(classes, recall_o, recall_p, "recall", "recall per class"),
               data={"classes": classes, "original": recall_o, "pruned": recall_p})
    channels = record.get("channels", {})
    if channels:
        layers = list(channels)
        kept_before = [v[0] for v in channels.values()]
        kept_after = [v[1] for v in channels.values()]
        add_figure(sec, "channels per layer", plots.paired_bars(layers, kept_before, kept_after, "channels",
                   "output channels per pruned layer"), data={"layers": layers, "original": kept_before,
                                                              "pruned": kept_after}, wide=len(layers) > 16)
    return sec


def dynamics_section(dynamics: dict) -> dict:
    """Modularity curves of both models (Lu et al., ECCV 2022) and linear CKA between their layers
    (Kornblith et al., ICML 2019): did the pruned model keep the original's layer dynamics?
    ``dynamics`` is the record of :func:`neurotomy.jobs.dissect_stages.dynamics_records`."""
    original, pruned, cka = dynamics["original"], dynamics["pruned"], dynamics["cka"]
    sec = section("dynamics", "Layer dynamics", f"Modularity Q of class-balanced kNN graphs (k={original['k']}, "
                  f"{original['n_samples']} samples) at every block, and linear CKA between the two models' "
                  f"layers on {cka['samples']} images. Q rising with depth = classes separating.")
    diagonal = [cka["values"][i][cka["layers_b"].index(layer)] for i, layer in enumerate(cka["layers_a"])
                if layer in cka["layers_b"]]
    add_number(sec, "q_last_original", "final-layer Q, original", original["q"][-1], "float3")
    add_number(sec, "q_last_pruned", "final-layer Q, pruned", pruned["q"][-1], "float3")
    if diagonal:
        add_number(sec, "cka_same_layer_mean", "same-layer CKA, mean", sum(diagonal) / len(diagonal), "float3")
    pruned_q = dict(zip(pruned["layers"], pruned["q"]))
    same = dict(zip([a for a in cka["layers_a"] if a in cka["layers_b"]], diagonal))
    add_table(sec, "per layer", [("layer", "text"), ("Q original", "float3"), ("Q pruned", "float3"),
              ("CKA original vs pruned", "float3")],
              [[layer, q, pruned_q.get(layer), same.get(layer)] for layer, q in zip(original["layers"], original["q"])])
    add_figure(sec, "modularity curves", plots.per_layer_lines(
        original["layers"], {"original": original["q"], "pruned": [pruned_q.get(x) for x in original["layers"]]},
        "modularity Q", "modularity per layer", colors={"original": plots.ORIGINAL, "pruned": plots.PRUNED}),
        data={"layers": original["layers"], "original": original["q"], "pruned": pruned["q"]})
    add_figure(sec, "linear CKA, original (rows) vs pruned (columns)",
               plots.matrix_heatmap(cka["values"], cka["layers_a"], cka["layers_b"], "linear CKA",
                                    annotate=len(cka["layers_a"]) <= 12), data=cka)
    return sec


def _provenance_sentence(stamp: dict | None) -> str:
    """The code and the machine's load behind the report's timings, from its provenance stamp."""
    if not stamp:
        return ""
    commit = (stamp.get("git_commit") or "unknown")[:10] + (" (uncommitted changes)" if stamp.get("git_dirty") else "")
    start, end = stamp.get("load_average_start"), stamp.get("load_average_end")
    load = lambda la: "unmeasured" if not la else f"{la[0]:.2f}"  # noqa: E731
    return (f" Code {commit}, run on {stamp.get('date', '?')}; 1-minute load average {load(start)} at the start and "
            f"{load(end)} at the end (above {busy_threshold(stamp.get('cpu_count')):g} the timings are those of a busy "
            "machine).")


def run_section(report: dict, stage_seconds: dict[str, float], total_seconds: float) -> dict:
    """How the report was made: the budget, seed and machine recorded in ``report``, and the
    seconds each stage of the job took."""
    m = report["machine"]
    sec = section("run", "How this report was made",
                  f"Budget {report['budget']['name']}, seed {report['seed']}, {report['train_images']} training and "
                  f"{report['test_images']} test images. Machine: {m['platform']}, {m['cpu_count']} CPUs, "
                  f"{m['torch_threads']} torch threads, GPU {'yes' if m['gpu'] else 'no'}; computed on "
                  f"{m.get('device', 'cpu')}, latency timed on the {m.get('latency_device', 'cpu').upper()}; "
                  f"torch {m['torch']}." + _provenance_sentence(report.get("provenance")))
    add_table(sec, "stages", [("stage", "text"), ("seconds", "seconds")],
              [[name, s] for name, s in stage_seconds.items()] + [["total", total_seconds]])
    return sec
