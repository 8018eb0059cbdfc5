"""The road to a CPU: zoo:resnet20-fmnist and a −50 % MACs pruned copy of it, each as PyTorch,
onnxruntime fp32 and onnxruntime int8 (static, QDQ, per-channel weights, min-max calibration), with
accuracy, size on disk, latency at batch 1 and 64 (interleaved rounds, threads and load stated) and
whether the deployed files keep the original's reasons: Spearman correlation of occlusion and RISE
maps, computed through onnxruntime, with the original PyTorch model's maps (issue #18).

The pruned copy is made here with the prune job (``--criterion``, default L1, uniform, −50 % MACs,
BatchNorm recalibration and ``--finetune-epochs``), or read from ``--pruned CHECKPOINT``. With
``--target-speedup X`` a second pruned copy is cut to a measured speed-up instead of a MACs count, its
widths chosen from a latency table measured in the runtime that will run it (``--latency-runtime``,
default onnxruntime fp32: issue #19's table, HALP's knapsack) — the widths a MACs cut picks (11, 23, 45)
fall between the vector widths onnxruntime's kernels like. ``--extra-models`` deploy more models of the same
input shape beside them (the ViT once the transformer issue has landed).

One record per model and format, with exactly ``model``, ``format``, ``accuracy``, ``bytes``,
``latency_batch1_ms``, ``latency_batch64_ms``, ``threads``, ``load_average`` and ``reasons_spearman``
(``{"occlusion", "rise"}`` against the original PyTorch model; ``null`` for that model itself), plus
the run's provenance stamp (flat keys; ``threads`` is the timed runs' thread count, which the whole
run uses). The full agreement records (IoU, per class, int8 against fp32) and the issue's targets,
checked, are beside the records.

Timing needs a quiet machine: the script waits (``--wait-quiet``) and refuses a busy one unless
``--allow-busy``.

Usage: python benchmarks/deploy.py --root ../shared/data/fashion-mnist [--threads 1]
Writes benchmarks/results/deploy.json and deploy.png (``--out`` elsewhere for a trial run).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from pathlib import Path

import torch

from neurotomy.data import load_dataset
from neurotomy.files import write_json
from neurotomy.jobs.deploy import deployment_figures
from neurotomy.jobs.prune import PruneJob
from neurotomy.loading import load_model
from neurotomy.provenance import run_stamp
from neurotomy.report.figures import save_figure
from neurotomy.timing import require_quiet_machine

RESULTS = Path(__file__).resolve().parent / "results"
FIELDS = ("model", "format", "accuracy", "bytes", "latency_batch1_ms", "latency_batch64_ms", "threads",
          "load_average", "reasons_spearman")
# the targets: int8 within 0.5 pt of fp32; pruned + int8 at batch 64 ≥ 2.5× the original fp32
# ONNX model's speed and ≥ 3.5× the original PyTorch model's; occlusion maps int8 vs fp32 ≥ 0.9
TARGETS = {"int8_accuracy_drop_pts": 0.5, "pruned_int8_vs_onnx_fp32": 2.5, "pruned_int8_vs_torch": 3.5,
           "occlusion_int8_vs_fp32": 0.9}


def machine() -> dict:
    """The hardware; the load and threads of the run are in every record's stamp."""
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "gpu": torch.cuda.is_available()}


KEPT = ("criterion", "macs_before", "macs_after", "macs_reduction", "acc_original", "acc_pruned", "acc_recalibrated",
        "acc_finetuned", "finetune_epochs", "target_speedup", "latency_runtime", "speedup_predicted",
        "speedup_measured", "widths", "channels")


def pruned_copy(model, train, test, args, speedup: float | None = None) -> tuple[torch.nn.Module, str, dict]:
    """The −``target`` MACs copy (read from ``--pruned`` or cut here with the prune job), or with
    ``speedup`` the copy cut to that measured speed-up in ``--latency-runtime``."""
    if args.pruned and speedup is None:
        return load_model(args.pruned).eval(), f"{args.pruned}", {"checkpoint": args.pruned}
    amount = ({"target_speedup": speedup, "latency_runtime": args.latency_runtime, "threads": args.threads,
               "latency_cache": args.latency_cache} if speedup else {"target_macs": args.target_macs})
    job = PruneJob(criterion=args.criterion, finetune_epochs=args.finetune_epochs, recalibrate_images=args.recalibrate_images,
                   measure_latency=False, seed=args.seed, quiet=args.quiet, **amount)
    pruned, record = job.run(model, train, test)
    amount_text = f"{speedup:g}× in {args.latency_runtime}" if speedup else f"−{args.target_macs:.0%} MACs"
    label = (f"{args.model} {amount_text} ({args.criterion}, "
             f"{args.finetune_epochs} fine-tune epoch{'s' if args.finetune_epochs != 1 else ''})")
    details = record.get("details", {})
    kept = {k: v for k, v in {**details, **record}.items() if k in KEPT}
    return pruned.eval(), label, {**kept, **({"target_speedup": speedup, "latency_runtime": args.latency_runtime}
                                             if speedup else {})}


def check_targets(figures: dict, original: str, pruned: str, name_of: dict | None = None) -> dict:
    """Each target of the issue for the original and the ``pruned`` copy: the value measured, the
    target, and whether it is met (``name_of``: label → short name; default "original"/"pruned")."""
    rows = {(r["model"], r["format"]): r for r in figures["rows"]}
    out = {}
    names = name_of or {original: "original", pruned: "pruned"}
    for label, name in ((original, names[original]), (pruned, names[pruned])):
        if (label, "onnx-int8") in rows:
            drop = (rows[label, "onnx-fp32"]["accuracy"] - rows[label, "onnx-int8"]["accuracy"]) * 100
            out[f"int8_accuracy_drop_pts ({name})"] = {"value": drop, "target": TARGETS["int8_accuracy_drop_pts"],
                                                       "met": drop <= TARGETS["int8_accuracy_drop_pts"]}
    if (pruned, "onnx-int8") in rows:
        fast = rows[pruned, "onnx-int8"]["latency_batch64_ms"]
        for fmt, key in (("onnx-fp32", "pruned_int8_vs_onnx_fp32"), ("torch", "pruned_int8_vs_torch")):
            speedup = rows[original, fmt]["latency_batch64_ms"] / fast
            out[f"{key} ({names[pruned]})"] = {"value": speedup, "target": TARGETS[key], "met": speedup >= TARGETS[key]}
    for entry in figures["reasons"]:
        if entry["format"] == "onnx-int8" and entry["against"]["format"] == "onnx-fp32" \
                and "occlusion" in entry["methods"]:
            rho = entry["methods"]["occlusion"]["spearman"]
            name = names.get(entry["model"])
            if name is None:
                continue
            out[f"occlusion_int8_vs_fp32 ({name})"] = {"value": rho, "target": TARGETS["occlusion_int8_vs_fp32"],
                                                       "met": rho >= TARGETS["occlusion_int8_vs_fp32"]}
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    records = results["records"]
    models = list(dict.fromkeys(r["model"] for r in records))
    formats = list(dict.fromkeys(r["format"] for r in records))
    colours = {"torch": "#7f8c8d", "onnx-fp32": "#2c7fb8", "onnx-int8": "#31a354"}
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    width = 0.8 / len(formats)
    for j, fmt in enumerate(formats):
        rows = [next((r for r in records if r["model"] == m and r["format"] == fmt), None) for m in models]
        xs = [i + (j - (len(formats) - 1) / 2) * width for i in range(len(models))]
        axes[0].bar(xs, [r["latency_batch64_ms"] if r else 0 for r in rows], width, label=fmt, color=colours.get(fmt))
        axes[1].bar(xs, [100 * r["accuracy"] if r else 0 for r in rows], width, color=colours.get(fmt))
        for k, method in enumerate(("occlusion", "rise")):
            values = [(r["reasons_spearman"] or {}).get(method, 1.0) if r else 0 for r in rows]
            axes[2].bar([x + k * width / 2 - width / 4 for x in xs], values, width / 2, color=colours.get(fmt),
                        alpha=1.0 if k == 0 else 0.55)
    short = [m if len(m) < 28 else m[:26] + "…" for m in models]
    for ax, title in zip(axes, ("latency, batch 64 (ms, lower is better)", "test accuracy (%)",
                                "reasons kept: Spearman vs original (occlusion | RISE)")):
        ax.set_xticks(range(len(models)), short, fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
    accuracies = [100 * r["accuracy"] for r in records]
    axes[1].set_ylim(max(0, min(accuracies) - 3), min(100, max(accuracies) + 1))
    axes[2].set_ylim(0, 1.05)
    axes[0].legend(fontsize=7)
    threads, load = records[0]["threads"], records[0]["load_average"]
    fig.suptitle(f"Deployment on the CPU ({threads} thread{'s' if threads != 1 else ''}, load {load[0]:.2f} → "
                 f"{load[1]:.2f})", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", help="Fashion-MNIST IDX directory (default: the shipped subset)")
    parser.add_argument("--model", default="zoo:resnet20-fmnist")
    parser.add_argument("--pruned", help="a pruned checkpoint to deploy instead of pruning here")
    parser.add_argument("--criterion", default="l1")
    parser.add_argument("--target-macs", type=float, default=0.5)
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--recalibrate-images", type=int, default=4096)
    parser.add_argument("--target-speedup", type=float, default=None,
                        help="also deploy a copy pruned to this measured speed-up (e.g. 2) in --latency-runtime")
    parser.add_argument("--latency-runtime", default="onnx", help="runtime of the latency table (default onnx: fp32)")
    parser.add_argument("--latency-cache", default=None, help="latency table cache directory (default: the user's)")
    parser.add_argument("--extra-models", nargs="*", default=[], help="more models of the same input shape")
    parser.add_argument("--calibration-images", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1,
                        help="threads of the timed runs, and of PyTorch from the deployment on (default 1)")
    parser.add_argument("--reason-images", type=int, default=100, help="class-balanced test images for the maps")
    parser.add_argument("--rise-masks", type=int, default=1000)
    parser.add_argument("--eval-images", type=int, default=None, help="test images for accuracy (default: all)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--wait-quiet", type=float, default=600,
                        help="seconds to wait for a load ≤ half the cores before timing (default 600)")
    parser.add_argument("--allow-busy", action="store_true", help="time a busy machine anyway (load recorded)")
    parser.add_argument("--out", default=str(RESULTS / "deploy.json"))
    args = parser.parse_args()
    out = Path(args.out)
    model = load_model(args.model).eval()
    dataset = model.neurotomy_meta.dataset
    train = load_dataset(dataset, root=args.root, split="train")
    test = load_dataset(dataset, root=args.root, split="test")
    if args.target_speedup:  # the latency table and the cut's measurement time things: a quiet machine first
        require_quiet_machine(args.wait_quiet, args.allow_busy)
    copies = [pruned_copy(model, train, test, args)]
    if args.target_speedup:
        copies.append(pruned_copy(model, train, test, args, speedup=args.target_speedup))
    models = {args.model: model, **{label: m for m, label, _ in copies},
              **{m: load_model(m).eval() for m in args.extra_models}}
    torch.set_num_threads(args.threads)  # from here on (maps, timing): the stamp's threads are the timed runs'
    require_quiet_machine(args.wait_quiet, args.allow_busy)
    with tempfile.TemporaryDirectory() as work, run_stamp() as stamp:
        figures = deployment_figures(models, train, test, work, int8=True, calibration_images=args.calibration_images,
                                     threads=args.threads, latency_batch=64, reason_images=args.reason_images,
                                     options={"rise": {"masks": args.rise_masks}}, eval_images=args.eval_images,
                                     rounds=args.rounds, seed=args.seed, quiet=args.quiet)
    results = {
        "question": "pruned and int8 on a CPU: how much faster, how much less accurate, and does the deployed "
                    "model still decide for the same reasons?",
        "how": "neurotomy.jobs.deploy.deployment_figures: ONNX export checked against PyTorch; int8 by onnxruntime "
               "quantize_static (QDQ, per-channel weights, min-max calibration on random training images); accuracy "
               "on the test set; latency = median ms per batch over interleaved rounds of every model and format "
               "(PyTorch under inference_mode, onnxruntime with intra-op threads = threads); reasons_spearman = mean "
               "Spearman of |map| against the original PyTorch model's maps for its predicted classes, on "
               "class-balanced test images, RISE with the same seeded masks for every model",
        "machine": machine(), "dataset": dataset, "prune": {label: record for _, label, record in copies},
        "settings": figures["settings"],
        "records": [{**stamp, **{k: row[k] for k in FIELDS}} for row in figures["rows"]],
        "reasons": figures["reasons"], "files": {m: {f: {k: v for k, v in entry.items() if k != "path"}
                                                     for f, entry in files.items()}
                                                 for m, files in figures["files"].items()},
        "targets": {k: v for i, (_, label, _) in enumerate(copies)
                    for k, v in check_targets(figures, args.model, label,
                                              {args.model: "original", label: ("pruned", "latency-pruned")[i]}).items()},
    }
    write_json(out, results)
    plot(results, out.with_suffix(".png"))
    for row in results["records"]:
        reasons = row["reasons_spearman"] or {}
        print(f"{row['model'][:40]:<40} {row['format']:<10} acc {row['accuracy']:.4f} {row['bytes'] / 1e6:6.2f} MB "
              f"b1 {row['latency_batch1_ms']:7.2f} ms b64 {row['latency_batch64_ms']:8.2f} ms "
              + " ".join(f"{m} {v:.3f}" for m, v in reasons.items()))
    for name, target in results["targets"].items():
        print(f"{name}: {target['value']:.3f} (target {target['target']}) {'met' if target['met'] else 'NOT met'}")
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
