"""Every criterion × MACs target × scope on zoo:resnet20-fmnist, against torch-pruning's default.

Per configuration: accuracy right after the cut, after BatchNorm recalibration (4,096 training
images), and — for the baseline and the best criteria only (see --finetune-top) — after 1 and 3
fine-tune epochs on the full training set (one 3-epoch cosine run, evaluated after epochs 1 and 3);
params, MACs; scoring time against one forward pass over the same images. CPU speed-ups come from
benchmarks/pruning_speed.py, which waits for a quiet machine (load ≤ half the cores, measured and
recorded), rebuilds the same architectures and writes its measurements into the same records.
Every record carries the provenance stamp of its own measurement (commit, date, argv, threads,
load average at its start and end); the run's stamp is under ``provenance.run``.

Usage: python benchmarks/pruning_criteria.py --root ../shared/data/fashion-mnist
Writes benchmarks/results/pruning_criteria.json and pruning_criteria.png.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tp_baselines import magnitude_l1, tp_bisect  # noqa: E402

from neurotomy.data import load_dataset  # noqa: E402
from neurotomy.files import write_json
from neurotomy.models.summary import count_macs_params
from neurotomy.loading import load_model
from neurotomy.jobs.prune import PruneJob, forward_seconds
from neurotomy.provenance import begin_stamp, end_stamp
from neurotomy.recover import finetune, recalibrate_batchnorm
from neurotomy.scores import CRITERIA, get_criterion
from neurotomy.train import evaluate

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = (0.5, 0.7, 0.85)
SCOPES = ("uniform", "global")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return (f"{cpu}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, no GPU")


def tp_default_prune(model, target: float, scope: str, shape) -> torch.nn.Module:
    """Torch-Pruning's own pipeline: MetaPruner + MagnitudeImportance(p=1), the classifier ignored,
    its pruning ratio bisected so the MACs reduction lands on ``target`` like ours (see
    benchmarks/tp_baselines.py; the model comes back rebuilt through our surgery, bit-identical)."""
    return tp_bisect(model, target, tuple(shape), magnitude_l1, global_pruning=(scope == "global"))[0]


def measure(original, pruned, shape, acc_original, label: dict) -> dict:
    macs0, params0 = count_macs_params(original, shape)
    macs1, params1 = count_macs_params(pruned, shape)
    return {**label, "macs_reduction": 1 - macs1 / macs0, "params_reduction": 1 - params1 / params0,
            "acc_original": acc_original, "macs_ratio": macs0 / macs1, "speedup_batch64": None}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--criteria", nargs="*", default=sorted(CRITERIA.names(axis="unit")))
    parser.add_argument("--targets", nargs="*", type=float, default=list(TARGETS))
    parser.add_argument("--scopes", nargs="*", default=list(SCOPES))
    parser.add_argument("--finetune-top", type=int, default=1,
                        help="fine-tune the baseline and this many best criteria per target/scope")
    parser.add_argument("--finetune-epochs", nargs="*", type=int, default=[1, 3])
    parser.add_argument("--finetune-targets", nargs="*", type=float, default=[0.5, 0.85],
                        help="MACs targets at which to fine-tune (fine-tuning is the long part on 2 cores)")
    parser.add_argument("--model", default="zoo:resnet20-fmnist")
    parser.add_argument("--out", default=str(RESULTS / "pruning_criteria.json"))
    parser.add_argument("--seed", type=int, default=0, help="seeds the scores' data draws and the fine-tuning")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    run = begin_stamp()

    model = load_model(args.model)
    shape = model.neurotomy_meta.input_shape
    dataset = model.neurotomy_meta.dataset
    train = load_dataset(dataset, root=args.root, split="train")
    test = load_dataset(dataset, root=args.root, split="test")
    original_metrics = evaluate(model, test, quiet=True)
    acc_original = original_metrics["accuracy"]
    print(f"{args.model}: test accuracy {acc_original:.4f} on {len(test)} images; {machine()}", flush=True)

    records, pruned_models = [], {}
    for name in args.criteria:
        scores = get_criterion(name)(model, train, seed=args.seed, quiet=True)
        images = getattr(get_criterion(name), "default_images", 0) if CRITERIA[name].needs_data else 0
        fwd = forward_seconds(model, train, images) if images else None
        for scope in args.scopes:
            for target in args.targets:
                job = PruneJob(criterion=name, target_macs=target, scope=scope, measure_latency=False,
                               quiet=True)
                stamp = begin_stamp()
                start = time.perf_counter()
                pruned, rec = job.run(model, train, test, scores=scores, original_metrics=original_metrics)
                row = measure(model, pruned, shape, acc_original,
                              {"criterion": name, "scope": scope, "target_macs_reduction": target})
                row.update(acc_pruned=rec["acc_pruned"], acc_recalibrated=rec["acc_recalibrated"],
                           acc_finetuned=None, finetune_epochs=0, score_seconds=scores.info["seconds"],
                           forward_seconds=fwd, score_images=images, **end_stamp(stamp))
                records.append(row)
                pruned_models[(name, scope, target)] = pruned
                print(f"{name:>16} {scope:>7} −{target:.0%}: MACs −{row['macs_reduction']:.1%} "
                      f"cut {row['acc_pruned']:.4f} recal {row['acc_recalibrated']:.4f} "
                      f"({time.perf_counter() - start:.0f}s)", flush=True)
        save(args, result_of(args, model, acc_original, test, records, run, partial=True))

    for scope in args.scopes:  # the baseline
        for target in args.targets:
            stamp = begin_stamp()
            pruned = tp_default_prune(model, target, scope, shape)
            acc_cut = evaluate(pruned, test, quiet=True)["accuracy"]
            recalibrate_batchnorm(pruned, train, 4096, quiet=True)
            row = measure(model, pruned, shape, acc_original,
                          {"criterion": "tp-default", "scope": scope, "target_macs_reduction": target})
            row.update(acc_pruned=acc_cut, acc_recalibrated=evaluate(pruned, test, quiet=True)["accuracy"],
                       acc_finetuned=None, finetune_epochs=0, score_seconds=None, forward_seconds=None,
                       **end_stamp(stamp))
            records.append(row)
            pruned_models[("tp-default", scope, target)] = pruned
            print(f"{'tp-default':>16} {scope:>7} −{target:.0%}: MACs −{row['macs_reduction']:.1%} "
                  f"cut {acc_cut:.4f} recal {row['acc_recalibrated']:.4f}", flush=True)

    finetuned = []
    save(args, result_of(args, model, acc_original, test, records + finetuned, run, partial=True))
    for scope in args.scopes:
        for target in args.finetune_targets:
            ours = sorted((r for r in records if r["scope"] == scope and r["target_macs_reduction"] == target
                           and r["criterion"] not in ("tp-default", "random")),
                          key=lambda r: -r["acc_recalibrated"])[:args.finetune_top]
            base = [r for r in records if r["criterion"] == "tp-default" and r["scope"] == scope
                    and r["target_macs_reduction"] == target]
            for row in base + ours:
                m = copy.deepcopy(pruned_models[(row["criterion"], scope, target)])
                stamp = begin_stamp()
                start = time.perf_counter()
                total = max(args.finetune_epochs)

                def after_epoch(model_, epoch, row=row, start=start, stamp=stamp):
                    if epoch + 1 in args.finetune_epochs:
                        acc = evaluate(model_, test, quiet=True)["accuracy"]
                        model_.train()
                        finetuned.append({**row, "acc_finetuned": acc, "finetune_epochs": epoch + 1,
                                          "finetune_schedule": f"epoch {epoch + 1} of one {total}-epoch cosine run",
                                          "finetune_seconds": time.perf_counter() - start, **end_stamp(stamp)})
                        print(f"{row['criterion']:>16} {row['scope']:>7} −{row['target_macs_reduction']:.0%}: "
                              f"{epoch + 1} epochs → {acc:.4f}", flush=True)
                        save(args, result_of(args, model, acc_original, test, records + finetuned, run,
                                             partial=True))
                finetune(m, train, total, lr=0.01, seed=args.seed, quiet=True, on_epoch_end=after_epoch)
    records += finetuned
    out = save(args, result_of(args, model, acc_original, test, records, run, partial=False))
    print(f"wrote {out}")


def result_of(args, model, acc_original, test, records, run: dict, partial: bool) -> dict:
    return {"machine": machine(), "provenance": {"run": end_stamp(run)}, "model": args.model, "seed": args.seed,
            "acc_original": acc_original,
            "test_images": len(test), "recalibration_images": 4096, "partial": partial,
            "finetune": f"SGD lr 0.01, one {max(args.finetune_epochs)}-epoch cosine run evaluated after epochs "
                        f"{args.finetune_epochs}, batch 128, full 60k train set; only tp-default and the "
                        f"top {args.finetune_top} criteria by recalibrated accuracy per scope, at MACs "
                        f"targets {args.finetune_targets} (the rest skipped for time on 2 cores)",
            "records": records}


def save(args, result: dict) -> Path:
    """Written after every fine-tune too, so a stopped run keeps what it measured."""
    out = write_json(args.out, result)
    plot(result, out.with_suffix(".png"))
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    from neurotomy.report.figures import save_figure

    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    for ax, scope in zip(axes, ("uniform", "global")):
        rows = [r for r in result["records"] if r["scope"] == scope and r["finetune_epochs"] == 0]
        for name in sorted({r["criterion"] for r in rows}):
            pts = sorted((r["macs_reduction"], r["acc_recalibrated"]) for r in rows if r["criterion"] == name)
            style = dict(lw=2.5, color="black") if name == "tp-default" else dict(lw=1, alpha=0.8)
            ax.plot(*zip(*pts), marker="o", label=name, **style)
        ft = [r for r in result["records"] if r["scope"] == scope and r["finetune_epochs"] == 3]
        for name in sorted({r["criterion"] for r in ft}):
            pts = sorted((r["macs_reduction"], r["acc_finetuned"]) for r in ft if r["criterion"] == name)
            ax.plot(*zip(*pts), marker="s", ls="--", label=f"{name} +3 ep")
        ax.axhline(result["acc_original"], color="grey", ls=":", label="unpruned")
        ax.set_title(f"{scope} scope — after BN recalibration (solid), after 3 fine-tune epochs (dashed)",
                     fontsize=9)
        ax.set_xlabel("MACs reduction")
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("test accuracy (10k Fashion-MNIST)")
    axes[1].legend(fontsize=7, ncol=2, loc="lower left")
    fig.suptitle(f"{result['model']} — {result['machine']}", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


if __name__ == "__main__":
    main()
