"""Modularity curves and layer pruning on Fashion-MNIST ResNets.

For each model: the modularity curve (Lu et al. protocol: 500 samples per class from the test set,
graphs of 500, k = 3, Q averaged over graphs) and its time; the single-graph variant over all
samples and its time; then layer pruning by the modularity rule vs random vs last blocks at equal
numbers of removed blocks — params, MACs, accuracy after pruning (with BN recalibration) and after
fine-tuning. Every time comes with the 1-minute load average at its start and end and the thread
count; every record and the run carry a provenance stamp. ``--retime`` re-measures the curve times
alone, once the machine is quiet (load ≤ half the cores), as ``seconds_idle``.

Usage: python benchmarks/layer_dynamics.py --root ../shared/data/fashion-mnist \
           --models zoo:resnet20-fmnist build/resnet56-fmnist.safetensors
Writes benchmarks/results/layer_dynamics.json and layer_dynamics.png.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
from pathlib import Path

import torch

from neurotomy.data import load_dataset
from neurotomy.files import write_json
from neurotomy.dynamics.modularity import modularity_curve
from neurotomy.models.summary import count_macs_params
from neurotomy.loading import load_model
from neurotomy.recover import finetune, recalibrate_batchnorm
from neurotomy.dynamics.layer_rules import choose_blocks
from neurotomy.models.anatomy import removable_blocks
from neurotomy.provenance import begin_stamp, end_stamp, load_average, machine_busy, merge_part
from neurotomy.timing import require_quiet_machine, torch_threads
from neurotomy.surgery.layers import remove_blocks
from neurotomy.train import evaluate

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--models", nargs="+", default=["zoo:resnet20-fmnist"])
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--threshold", type=float, default=0.25)
    parser.add_argument("--single-graph", nargs="*", default=["zoo:resnet20-fmnist"],
                        help="models whose curve is also computed as one graph over all samples (costly)")
    parser.add_argument("--out", default=str(RESULTS / "layer_dynamics.json"))
    parser.add_argument("--retime", action="store_true",
                        help="only re-measure the curve times on a quiet machine and update the results file")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for --retime (default: torch's)")
    parser.add_argument("--wait-quiet", type=float, default=600,
                        help="--retime: seconds to wait for a load ≤ half the cores (default 600)")
    parser.add_argument("--allow-busy", action="store_true",
                        help="--retime on a busy machine anyway (written as seconds_retimed, not seconds_idle)")
    args = parser.parse_args()
    if args.retime:
        return retime(args)
    run = begin_stamp()
    train = load_dataset("fashion-mnist", root=args.root, split="train")
    test = load_dataset("fashion-mnist", root=args.root, split="test")
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {torch.get_num_threads()} threads, "
                         f"torch {torch.__version__}, no GPU",
              "protocol": "500 test images per class (5,000), cosine kNN k=3, graphs of 500 averaged; "
                          "single_graph: one graph over all 5,000",
              "curve": {}, "single_graph": {}, "layer_pruning": []}
    for spec in args.models:
        model = load_model(spec)
        name = spec.removeprefix("zoo:")
        curve, timed = timed_curve(model, test, graph_size=500)
        result["curve"][name] = {**curve.to_dict(), **timed,
                                 "model_accuracy": model.neurotomy_meta.metrics["test"]["accuracy"]}
        if spec in args.single_graph:
            single, timed = timed_curve(model, test, graph_size=None)
            result["single_graph"][name] = {"q": single.q, "seconds": single.seconds, **timed}
        print(f"{name}: curve {curve.seconds:.1f}s, accuracy {model.neurotomy_meta.metrics['test']['accuracy']:.4f}")
        print("  " + " ".join(f"{layer}:{q:.3f}" for layer, q in zip(curve.layers, curve.q)), flush=True)

        acc_original = evaluate(model, test, quiet=True)["accuracy"]
        by_rule = curve.redundant(removable_blocks(model), threshold=args.threshold)
        count = max(1, len(by_rule))
        if not by_rule:  # the rule finds nothing: compare at one block, chosen by smallest ΔQ
            by_rule = curve.redundant(removable_blocks(model), count=count)
        macs0, _ = count_macs_params(model, model.neurotomy_meta.input_shape)
        for method in ("modularity", "random", "last"):
            stamp = begin_stamp()
            blocks = by_rule if method == "modularity" else choose_blocks(model, method, count=count, seed=0)[0]
            slim = remove_blocks(model, blocks)
            acc_cut = evaluate(slim, test, quiet=True)["accuracy"]
            recalibrate_batchnorm(slim, train, 4096, quiet=True)
            acc_recal = evaluate(slim, test, quiet=True)["accuracy"]
            tuned = copy.deepcopy(slim)
            finetune(tuned, train, args.finetune_epochs, lr=0.01, quiet=True)
            acc_ft = evaluate(tuned, test, quiet=True)["accuracy"]
            macs1, params1 = count_macs_params(slim, model.neurotomy_meta.input_shape)
            record = {"model": name, "method": method, "blocks_removed": blocks,
                      "rule_found": len(curve.redundant(removable_blocks(model), threshold=args.threshold)),
                      "macs_reduction": 1 - macs1 / macs0, "params": params1, "acc_original": acc_original,
                      "acc_pruned": acc_cut, "acc_recalibrated": acc_recal, "acc_finetuned": acc_ft,
                      "finetune_epochs": args.finetune_epochs, **end_stamp(stamp)}
            result["layer_pruning"].append(record)
            print(f"  {method:>10}: remove {blocks} MACs −{record['macs_reduction']:.1%} "
                  f"cut {acc_cut:.4f} recal {acc_recal:.4f} ft {acc_ft:.4f}", flush=True)
    result["provenance"] = {"run": end_stamp(run)}
    out = write_json(args.out, result)
    plot(result, out.with_suffix(".png"))
    print(f"wrote {out}")


def timed_curve(model, test, graph_size: int | None):
    """The modularity curve and what its ``seconds`` were measured under: threads and the 1-minute
    load average at the start and at the end."""
    start = load_average()[0]
    curve = modularity_curve(model, test, per_class=500, graph_size=graph_size, quiet=True)
    return curve, {"threads": torch.get_num_threads(), "load_average": [start, load_average()[0]]}


def retime(args) -> None:
    """Curve timings need a quiet machine; the full run shares the CPU with fine-tuning. The times
    are written as ``seconds_idle`` only when the load stayed at most half the cores from the first
    timing to the last (measured, with its value beside them); otherwise, under ``--allow-busy``,
    as ``seconds_retimed``."""
    require_quiet_machine(args.wait_quiet, args.allow_busy)
    out = Path(args.out)
    result = json.loads(out.read_text())
    test = load_dataset("fashion-mnist", root=args.root, split="test")
    stamp = begin_stamp()
    with torch_threads(args.threads):
        for spec in args.models:
            name = spec.removeprefix("zoo:")
            model = load_model(spec)
            runs = [timed_curve(model, test, graph_size=500) for _ in range(3)]
            write_retime(result["curve"][name], [c.seconds for c, _ in runs], runs)
            if name in result["single_graph"]:
                single = timed_curve(model, test, graph_size=None)
                write_retime(result["single_graph"][name], [single[0].seconds], [single])
            print(f"{name}: curve {min(c.seconds for c, _ in runs):.1f}s (best of 3), load "
                  f"{runs[0][1]['load_average'][0]:.2f}→{runs[-1][1]['load_average'][1]:.2f}", file=sys.stderr)
    merge_part(result, "retime", {"timing_note": "seconds: measured during the full run beside other jobs (load "
                                                 "beside it where recorded); seconds_idle: re-measured alone, on a "
                                                 "machine whose 1-minute load stayed ≤ half the cores "
                                                 "(seconds_idle_load_average)"},
               end_stamp(stamp))
    write_json(out, result)


def write_retime(entry: dict, seconds: list[float], runs: list) -> None:
    """Best of ``seconds`` as ``seconds_idle`` when every run's load stayed quiet, else ``seconds_retimed``."""
    loads = [runs[0][1]["load_average"][0], runs[-1][1]["load_average"][1]]
    quiet = not any(machine_busy(load) for _, timed in runs for load in timed["load_average"])
    key = "seconds_idle" if quiet else "seconds_retimed"
    entry.update({key: min(seconds), f"{key}_load_average": loads, f"{key}_threads": runs[0][1]["threads"]})


def plot(result: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    from neurotomy.report.figures import save_figure

    fig, ax = plt.subplots(figsize=(9, 4))
    for name, curve in result["curve"].items():
        depth = [i / (len(curve["q"]) - 1) for i in range(len(curve["q"]))]
        ax.errorbar(depth, curve["q"], yerr=curve["q_std"], marker="o", capsize=2, label=f"{name} (graphs of 500)")
        if name in result["single_graph"]:
            single = result["single_graph"][name]["q"]
            ax.plot(depth, single, ls="--", alpha=0.7, label=f"{name} (one graph of {curve['n_samples']})")
    ax.set_xlabel("relative depth (stem → penultimate)")
    ax.set_ylabel("modularity Q")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title(f"Modularity of layer graphs, Fashion-MNIST test — {result['machine']}", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


if __name__ == "__main__":
    main()
