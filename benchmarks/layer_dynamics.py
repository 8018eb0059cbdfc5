"""Modularity curves and a fair layer-pruning experiment on Fashion-MNIST (issue #15).

For each model (ResNet-20, a converged ResNet-56, the plain VGG-16):

1. ``curve``: the modularity curve (Lu et al. protocol: 500 samples per class from the test set,
   graphs of 500, k = 3, Q averaged over graphs) and its time; ``single_graph``: the one-graph
   variant over all samples for the models named by ``--single-graph``.
2. ``plateau``: where the curve stops rising — ``start_layer`` is the last layer before the flat
   tail (every later block adds less than ``threshold`` × the curve's mean per-layer rise: the
   tail plateaus or falls), ``blocks_flagged`` the blocks the modularity rule flags at that
   threshold (:meth:`ModularityCurve.redundant`), ``rule`` says so in words. Drawn on the curve plot.
3. ``layer_pruning``: remove 1, 2, 4, … removable blocks, chosen by the modularity rule (the
   ``n`` smallest ΔQ), by the last blocks, by ``--draws`` random draws (each its own seed) and by a
   data criterion (each block's linear CKA with its input: the most similar go first); every cut
   model is BN-recalibrated and fine-tuned with the same budget (SGD + cosine from 0.01,
   ``--finetune-epochs``, seeded with the record's ``seed``: a random draw's seed decides both its
   blocks and its fine-tune, so the random spread holds fine-tuning noise too). The counts stop
   after the first one at which every method's accuracy after fine-tuning (random: the mean) is
   more than ``--stop-drop`` points below the original's. A VGG's removed blocks hand their input
   to the next conv, refit by least squares on 1,024 training images
   (:func:`neurotomy.surgery.layers.remove_blocks`).
4. ``summary``: per model and count, modularity / last / CKA against the random draws' mean ± sd,
   and per model whether the modularity choice beats random (above every draw) and last (by more
   than one random sd).

Each record carries ``seed``, ``finetune_epochs``, ``blocks_count`` and ``model_sha`` (the checkpoint's
hash: records of a replaced checkpoint are dropped, not mixed). The script is resumable: the output
is rewritten after every record, and a re-run skips every curve and record already there. Every
time comes with the 1-minute load average at its start and end and the thread count; ``--retime``
re-measures the curve times alone, once the machine is quiet (load ≤ half the cores), as ``seconds_idle``.

Usage: python benchmarks/layer_dynamics.py --root ../shared/data/fashion-mnist \
           --models zoo:resnet20-fmnist zoo:resnet56-fmnist build/vgg16-fmnist.safetensors
Smoke test: ... --models zoo:resnet20-fmnist --max-images 512 --finetune-epochs 1 --draws 2 --out /tmp/ld.json
Two processes at once (one thread each): one runs as above, the other a later count into its own file,
``... --counts 8 --out /tmp/ld_count8.json`` (a copy of the results file, so it finds the curves), then
``--merge /tmp/ld_count8.json`` adds its records to the results file.
Writes benchmarks/results/layer_dynamics.json, layer_dynamics.png (curves and plateaus) and
layer_dynamics_pruning.png (accuracy against blocks removed).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import platform
import statistics
import sys
from pathlib import Path

import torch

from neurotomy.data import load_dataset
from neurotomy.device import on_cpu, place, resolve_device
from neurotomy.dynamics.features import INPUT_SUFFIX
from neurotomy.dynamics.layer_rules import block_similarity, choose_blocks
from neurotomy.dynamics.modularity import ModularityCurve, modularity_curve
from neurotomy.files import write_json
from neurotomy.loading import load_model
from neurotomy.loading.zoo import zoo_path
from neurotomy.models.anatomy import plain_block_table, removable_blocks
from neurotomy.models.sources import file_sha256
from neurotomy.models.summary import count_macs_params
from neurotomy.provenance import begin_stamp, end_stamp, load_average, machine_busy, merge_part
from neurotomy.recover import finetune, recalibrate_batchnorm
from neurotomy.surgery.layers import remove_blocks
from neurotomy.timing import require_quiet_machine, torch_threads
from neurotomy.train import evaluate

RESULTS = Path(__file__).resolve().parent / "results"
FINETUNE_LR = 0.01
FIT_IMAGES = 1024  # training images for a plain block's least-squares successor fit
METHODS = ("modularity", "last", "cka", "random")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--models", nargs="+", default=["zoo:resnet20-fmnist"])
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--draws", type=int, default=5, help="random draws per block count (default 5)")
    parser.add_argument("--max-images", type=int, default=None,
                        help="cap every stage's images (fine-tune, recalibration, evaluation, the curve's "
                             "probe set: max-images / classes per class) — for a quick smoke run")
    parser.add_argument("--max-blocks", type=int, default=None, help="largest block count to try")
    parser.add_argument("--counts", type=int, nargs="+", default=None,
                        help="only these block counts (of 1, 2, 4, …): lets a second process run a later count "
                             "into its own --out, joined later by --merge")
    parser.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                        help="only add the layer_pruning records of these results files (same checkpoints) to "
                             "--out, then summarise and plot again")
    parser.add_argument("--stop-drop", type=float, default=1.0,
                        help="stop doubling once every method is this many points below the original")
    parser.add_argument("--threshold", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto")
    parser.add_argument("--single-graph", nargs="*", default=["zoo:resnet20-fmnist"],
                        help="models whose curve is also computed as one graph over all samples (costly)")
    parser.add_argument("--out", default=str(RESULTS / "layer_dynamics.json"))
    parser.add_argument("--curves-only", action="store_true",
                        help="measure the modularity curves and plateaus only, no layer pruning")
    parser.add_argument("--redo-curves", action="store_true",
                        help="measure the curves again though the results file holds them for the same checkpoints")
    parser.add_argument("--retime", action="store_true",
                        help="only re-measure the curve times on a quiet machine and update the results file")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for --retime (default: torch's)")
    parser.add_argument("--wait-quiet", type=float, default=600,
                        help="--retime: seconds to wait for a load ≤ half the cores (default 600)")
    parser.add_argument("--allow-busy", action="store_true",
                        help="--retime on a busy machine anyway (written as seconds_retimed, not seconds_idle)")
    args = parser.parse_args()
    if args.finetune_epochs < 1 or args.draws < 1 or (args.max_images is not None and args.max_images < 10):
        parser.error("--finetune-epochs and --draws must be ≥ 1, --max-images ≥ 10")
    if args.retime:
        return retime(args)
    if args.merge:
        return merge(args)
    out = Path(args.out)
    device = resolve_device(args.device)
    run = begin_stamp(device=device)
    train = load_dataset("fashion-mnist", root=args.root, split="train")
    test = load_dataset("fashion-mnist", root=args.root, split="test")
    result = previous_results(out)
    # this run's stamp from its start (the load measured then), so a run stopped part-way still says what it ran under
    result["provenance"] = {**result.get("provenance", {}), "run": dict(run)}
    result.update({"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {torch.get_num_threads()} threads, "
                              f"torch {torch.__version__}, {device}",
                   "protocol": protocol(args)})
    for spec in args.models:
        name = model_name(spec)
        model = place(load_model(spec), device).eval()
        sha = checkpoint_sha(spec)
        drop_stale(result, name, sha)
        acc_original = evaluate(model, test, max_images=args.max_images, quiet=True)["accuracy"]
        curve = model_curve(result, out, spec, name, sha, model, test, acc_original, args)
        removable = removable_blocks(model)
        result["plateau"][name] = plateau(curve, removable, args.threshold)
        save(result, out)
        print(f"{name}: accuracy {acc_original:.4f}, plateau from {result['plateau'][name]['start_layer']}, "
              f"flagged {result['plateau'][name]['blocks_flagged']}", flush=True)
        if not args.curves_only:
            prune_by_counts(result, out, model, name, sha, curve, removable, acc_original, train, test, args)
    result["provenance"] = {**result.get("provenance", {}), "run": end_stamp(run)}
    finish(result, out, args)


def finish(result: dict, out: Path, args) -> None:
    """Summarise every model's records, write the results and both plots."""
    result["summary"] = {name: summarize(result["layer_pruning"], name, args.stop_drop, args.draws)
                         for name in result["curve"]}
    save(result, out)
    plot(result, out.with_suffix(".png"))
    plot_pruning(result, out.with_name(out.stem + "_pruning.png"))
    for name, summary in result["summary"].items():
        print(f"{name}: {summary['verdict']}")
    print(f"wrote {out}")


def merge(args) -> None:
    """Join the records other processes wrote into their own ``--out`` (e.g. ``--counts 8`` beside a
    run of the smaller counts) into ``--out``: a record is added when its model's checkpoint is the
    one ``--out`` measured and ``--out`` holds no record of the same cut (model, method, count, seed,
    epochs). Example: ``--out benchmarks/results/layer_dynamics.json --merge /tmp/ld_count8.json``."""
    out = Path(args.out)
    result = previous_results(out)
    for path in args.merge:
        added = merge_records(result, previous_results(Path(path))["layer_pruning"])
        print(f"{path}: {added} records added", file=sys.stderr)
    finish(result, out, args)


def merge_records(result: dict, records: list[dict]) -> int:
    """Add ``records`` that ``result`` lacks (same checkpoint only); return how many were added."""
    added = 0
    for r in records:
        same_checkpoint = result["curve"].get(r["model"], {}).get("model_sha") == r.get("model_sha")
        if same_checkpoint and find(result, r["model"], r["method"], r["blocks_count"], r["seed"],
                                    r["finetune_epochs"]) is None:
            result["layer_pruning"].append(r)
            added += 1
    return added


def model_name(spec: str) -> str:
    """``zoo:NAME`` → NAME; a checkpoint path → its file name without suffix (build/vgg16-fmnist.safetensors
    → vgg16-fmnist)."""
    return spec.removeprefix("zoo:") if spec.startswith("zoo:") else Path(spec).stem


def protocol(args) -> str:
    per_class = probe_per_class(args)
    return (f"curve: {per_class} test images per class, cosine kNN k=3, graphs of 500 averaged; single_graph: one "
            f"graph over all of them. Layer pruning: 1, 2, 4, … removable blocks by the modularity rule (smallest "
            f"ΔQ), the last blocks, {args.draws} random draws and linear CKA of block output with input (50 test "
            f"images per class); BN recalibrated on {min(4096, args.max_images or 4096)} training images, then "
            f"{args.finetune_epochs} fine-tune epochs (SGD, cosine from {FINETUNE_LR}) on "
            f"{args.max_images or 'all'} training images; VGG successors refit by least squares on "
            f"{min(FIT_IMAGES, args.max_images or FIT_IMAGES)} training images; test accuracy on "
            f"{args.max_images or 'all'} test images; counts stop once every method is > {args.stop_drop} pt "
            "below the original")


def probe_per_class(args) -> int:
    """500 test images per class; under ``--max-images`` a multiple of 50, so that the probe set
    splits into whole graphs of 500 (a last graph of a few samples gives a meaningless Q)."""
    return 500 if args.max_images is None else max(50, min(500, args.max_images // 10 // 50 * 50))


def previous_results(out: Path) -> dict:
    """The results written so far (resume), without records of an older protocol (no ``blocks_count``)."""
    result = json.loads(out.read_text()) if out.exists() else {}
    for key in ("curve", "single_graph", "plateau"):
        result.setdefault(key, {})
    old = [r for r in result.get("layer_pruning", []) if "blocks_count" not in r]
    if old:
        print(f"dropping {len(old)} layer_pruning records of the earlier protocol (one draw, one epoch)", file=sys.stderr)
    result["layer_pruning"] = [r for r in result.get("layer_pruning", []) if "blocks_count" in r]
    return result


def checkpoint_sha(spec: str) -> str:
    """The first 16 hex digits of the checkpoint file's SHA-256 (zoo:NAME or a path)."""
    path = zoo_path(spec.removeprefix("zoo:")) if spec.startswith("zoo:") else Path(spec)
    return file_sha256(path)[:16]


def drop_stale(result: dict, name: str, sha: str) -> None:
    """Forget a model's curve and records measured on another checkpoint of the same name."""
    if name in result["curve"] and result["curve"][name].get("model_sha") != sha:
        print(f"{name}: the checkpoint changed; its curve and records are measured again", file=sys.stderr)
        for key in ("curve", "single_graph", "plateau"):
            result[key].pop(name, None)
        result["layer_pruning"] = [r for r in result["layer_pruning"] if r["model"] != name]


def save(result: dict, out: Path) -> None:
    write_json(out, result)


def model_curve(result, out, spec, name, sha, model, test, accuracy, args) -> ModularityCurve:
    """The model's modularity curve: measured, or the one a previous run stored."""
    per_class = probe_per_class(args)
    stored = result["curve"].get(name)
    if stored is None or stored.get("n_samples") != per_class * len(test.classes) or args.redo_curves:
        stamp = begin_stamp()
        curve, timed = timed_curve(model, test, graph_size=500, per_class=per_class)
        result["curve"][name] = stored = {**curve.to_dict(), **timed, "model_accuracy": accuracy, "model_sha": sha,
                                          **end_stamp(stamp)}
        print(f"{name}: curve {curve.seconds:.1f}s\n  " + " ".join(f"{layer}:{q:.3f}" for layer, q in
                                                             zip(curve.layers, curve.q)), flush=True)
        save(result, out)
    if spec in args.single_graph and name not in result["single_graph"]:
        single, timed = timed_curve(model, test, graph_size=None, per_class=per_class)
        result["single_graph"][name] = {"q": single.q, "seconds": single.seconds, **timed}
        save(result, out)
    known = {f.name for f in dataclasses.fields(ModularityCurve)}
    return ModularityCurve(**{k: v for k, v in stored.items() if k in known})


def timed_curve(model, test, graph_size: int | None, per_class: int = 500):
    """The modularity curve and what its ``seconds`` were measured under: threads and the 1-minute
    load average at the start and at the end."""
    start = load_average()[0]
    curve = modularity_curve(model, test, per_class=per_class, graph_size=graph_size, quiet=True)
    return curve, {"threads": torch.get_num_threads(), "load_average": [start, load_average()[0]]}


def plateau(curve: ModularityCurve, removable: list[str], threshold: float) -> dict:
    """Where Q stops rising: the flat (or falling) tail of the curve's blocks, and the flagged blocks.

    Example:
        >>> c = ModularityCurve(["stem", "b1", "b2", "b3", "fc:input"], [0.2, 0.5, 0.8, 0.81, 0.82], 3, 10, None, 0.0)
        >>> plateau(c, ["b1", "b2", "b3"], 0.25)["start_layer"], plateau(c, ["b1", "b2", "b3"], 0.25)["tail"]
        ('b2', ['b3'])
    """
    deltas = dict(zip(curve.layers, curve.delta_q()))
    mean_rise = (curve.q[-1] - curve.q[0]) / max(1, len(curve.q) - 1)
    layers = [layer for layer in curve.layers if not layer.endswith(INPUT_SUFFIX)]  # stem and blocks
    tail: list[str] = []
    for layer in reversed(layers[1:]):  # the stem's ΔQ (from 0) never counts as flat
        if deltas[layer] >= threshold * mean_rise:
            break
        tail.insert(0, layer)
    start = layers[layers.index(tail[0]) - 1] if tail else None
    return {"start_layer": start, "tail": tail, "threshold": threshold, "mean_rise": mean_rise,
            "blocks_flagged": curve.redundant(removable, threshold=threshold),
            "rule": f"start_layer: the last layer before the tail of blocks whose ΔQ is below {threshold} × the "
                    "mean per-layer rise ((Q_last − Q_first) / (layers − 1)), null when the last block still "
                    "rises; blocks_flagged: every removable block below that line (ModularityCurve.redundant)"}


def counts_to_try(removable: int, cap: int | None) -> list[int]:
    """1, 2, 4, … up to the removable blocks (and ``cap``)."""
    top = min(removable, cap or removable)
    counts, n = [], 1
    while n <= top:
        counts.append(n)
        n *= 2
    return counts


def choices(model, count: int, curve: ModularityCurve, removable: list[str], cka: dict[str, float],
            args) -> list[tuple[str, list[str], int]]:
    """(method, blocks, seed) for one block count."""
    by_cka = sorted(reversed(removable), key=lambda b: -cka[b])[:count]  # as the cka rule: ties tail first
    picks = [("modularity", curve.redundant(removable, count=count), args.seed),
             ("last", choose_blocks(model, "last", count=count)[0], args.seed),
             ("cka", [b for b in removable if b in by_cka], args.seed)]
    return picks + [("random", choose_blocks(model, "random", count=count, seed=args.seed + d)[0], args.seed + d)
                    for d in range(args.draws)]


def prune_by_counts(result, out, model, name, sha, curve, removable, acc_original, train, test, args) -> None:
    cka = block_similarity(model, test, removable, per_class=min(50, probe_per_class(args)), seed=args.seed)
    result["curve"][name]["block_cka"] = cka
    macs0, _ = count_macs_params(on_cpu(model), model.neurotomy_meta.input_shape)
    flagged = len(curve.redundant(removable, threshold=args.threshold))
    adaptation = "least_squares" if plain_block_table(model) else "shortcut"
    for count in counts_to_try(len(removable), args.max_blocks):
        if args.counts and count not in args.counts:
            continue
        for method, blocks, seed in choices(model, count, curve, removable, cka, args):
            if find(result, name, method, count, seed, args.finetune_epochs) is not None:
                continue
            stamp = begin_stamp()
            record = {"model": name, "model_sha": sha, "method": method, "blocks_count": count,
                      "blocks_removed": blocks, "seed": seed, "finetune_epochs": args.finetune_epochs,
                      "finetune_lr": FINETUNE_LR, "max_images": args.max_images, "rule_found": flagged,
                      "adaptation": adaptation, "acc_original": acc_original}
            same = same_cut(result, name, blocks, seed, args.finetune_epochs)
            if same is not None:  # another method picked exactly these blocks with this seed: same numbers
                record.update({k: same[k] for k in ("macs_reduction", "params", "acc_pruned", "acc_recalibrated",
                                                    "acc_finetuned")}, same_as=same["method"])
            else:
                record.update(cut_and_tune(model, blocks, seed, macs0, train, test, args))
            result["layer_pruning"].append({**record, **end_stamp(stamp)})
            # the summary follows the records, so a run stopped part-way leaves a file that agrees with itself
            result["summary"] = {n: summarize(result["layer_pruning"], n, args.stop_drop, args.draws)
                                 for n in result["curve"]}
            save(result, out)
            print(f"  {count} × {method:>10} (seed {seed}): remove {blocks} MACs −{record['macs_reduction']:.1%} "
                  f"cut {record['acc_pruned']:.4f} recal {record['acc_recalibrated']:.4f} "
                  f"ft {record['acc_finetuned']:.4f}", flush=True)
        if all_dropped(result["layer_pruning"], name, count, acc_original, args.stop_drop):
            print(f"  every method is > {args.stop_drop} pt below the original at {count} blocks: stop", flush=True)
            break


def cut_and_tune(model, blocks: list[str], seed: int, macs0: int, train, test, args) -> dict:
    slim = remove_blocks(model, blocks, train, max_images=min(FIT_IMAGES, args.max_images or FIT_IMAGES), seed=seed)
    acc_cut = evaluate(slim, test, max_images=args.max_images, quiet=True)["accuracy"]
    recalibrate_batchnorm(slim, train, min(4096, args.max_images or 4096), seed=seed, quiet=True)
    acc_recal = evaluate(slim, test, max_images=args.max_images, quiet=True)["accuracy"]
    tuned = copy.deepcopy(slim)
    finetune(tuned, train, args.finetune_epochs, lr=FINETUNE_LR, seed=seed, max_images=args.max_images, quiet=True)
    acc_ft = evaluate(tuned, test, max_images=args.max_images, quiet=True)["accuracy"]
    macs1, params1 = count_macs_params(on_cpu(slim), model.neurotomy_meta.input_shape)
    return {"macs_reduction": 1 - macs1 / macs0, "params": params1, "acc_pruned": acc_cut,
            "acc_recalibrated": acc_recal, "acc_finetuned": acc_ft}


def find(result: dict, name: str, method: str, count: int, seed: int, epochs: int) -> dict | None:
    return next((r for r in result["layer_pruning"] if r["model"] == name and r["method"] == method
                 and r["blocks_count"] == count and r["seed"] == seed and r["finetune_epochs"] == epochs), None)


def same_cut(result: dict, name: str, blocks: list[str], seed: int, epochs: int) -> dict | None:
    return next((r for r in result["layer_pruning"] if r["model"] == name and sorted(r["blocks_removed"]) ==
                 sorted(blocks) and r["seed"] == seed and r["finetune_epochs"] == epochs), None)


def accuracies(records: list[dict], name: str, count: int) -> dict[str, list[float]]:
    """Accuracy after fine-tuning per method at one block count (a list: the random draws)."""
    found: dict[str, list[float]] = {m: [] for m in METHODS}
    for r in records:
        if r["model"] == name and r["blocks_count"] == count:
            found[r["method"]].append(r["acc_finetuned"])
    return found


def all_dropped(records: list[dict], name: str, count: int, original: float, drop_pt: float) -> bool:
    found = accuracies(records, name, count)
    best = max(statistics.fmean(v) for v in found.values() if v)
    return 100 * (original - best) > drop_pt


def summarize(records: list[dict], name: str, drop_pt: float, min_draws: int = 5) -> dict:
    """Per block count: modularity, last and CKA against the random draws; and the verdict, over the
    counts with ``min_draws`` draws (a count whose draws are still running is listed, not judged)."""
    rows = []
    for count in sorted({r["blocks_count"] for r in records if r["model"] == name}):
        acc = accuracies(records, name, count)
        if not (acc["modularity"] and acc["random"]):
            continue
        draws = acc["random"]
        mean = statistics.fmean(draws)
        sd = statistics.stdev(draws) if len(draws) > 1 else None
        mod = acc["modularity"][0]
        rows.append({"blocks_count": count, "modularity": mod, "last": (acc["last"] or [None])[0],
                     "cka": (acc["cka"] or [None])[0], "random_mean": mean, "random_sd": sd,
                     "random_min": min(draws), "random_max": max(draws), "random_draws": len(draws),
                     "modularity_z": (mod - mean) / sd if sd else None,
                     # above every draw: under exchangeability a chance of 1 in draws + 1
                     "modularity_beats_random": mod > max(draws),
                     # a lead over last within one random sd is fine-tuning noise
                     "modularity_beats_last": acc["last"] != [] and sd is not None and mod - acc["last"][0] > sd})
    judged = [r for r in rows if r["random_draws"] >= min_draws]
    beats_random = [r["blocks_count"] for r in judged if r["modularity_beats_random"]]
    beats_last = [r["blocks_count"] for r in judged if r["modularity_beats_last"]]
    counts = [r["blocks_count"] for r in judged]
    verdict = (f"at {len(counts)} block counts {counts}: the modularity choice is above every random draw at "
               f"{beats_random or 'none'} and ahead of the last blocks by more than one random sd at "
               f"{beats_last or 'none'}") if judged else f"no block count with {min_draws} random draws yet"
    return {"rows": rows, "beats_random_at": beats_random, "beats_last_at": beats_last, "verdict": verdict,
            "stop_drop_pt": drop_pt}


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
            name = model_name(spec)
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
    """The curves, each with its plateau shaded from ``start_layer`` on and its flagged blocks marked."""
    import matplotlib.pyplot as plt

    from neurotomy.report.figures import save_figure

    fig, ax = plt.subplots(figsize=(9, 4))
    for name, curve in result["curve"].items():
        depth = [i / (len(curve["q"]) - 1) for i in range(len(curve["q"]))]
        line = ax.errorbar(depth, curve["q"], yerr=curve["q_std"], marker="o", ms=3, capsize=2,
                           label=f"{name} (graphs of 500)")
        colour = line[0].get_color()
        if name in result["single_graph"]:
            single = result["single_graph"][name]["q"]
            ax.plot(depth, single, ls="--", alpha=0.7, color=colour, label=f"{name} (one graph of {curve['n_samples']})")
        found = result.get("plateau", {}).get(name)
        if found and found["start_layer"] in curve["layers"]:
            ax.axvspan(depth[curve["layers"].index(found["start_layer"])], 1, color=colour, alpha=0.08)
            ax.axvline(depth[curve["layers"].index(found["start_layer"])], color=colour, ls=":", lw=1,
                       label=f"{name}: plateau from {found['start_layer']}")
        flagged = [curve["layers"].index(b) for b in (found or {}).get("blocks_flagged", []) if b in curve["layers"]]
        if flagged:
            ax.plot([depth[i] for i in flagged], [curve["q"][i] for i in flagged], "x", color=colour, ms=9, mew=2,
                    label=f"{name}: flagged by the rule ({len(flagged)})")
    ax.set_xlabel("relative depth (stem → penultimate)")
    ax.set_ylabel("modularity Q")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax.set_title(f"Modularity of layer graphs, Fashion-MNIST test — {result['machine']}", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def plot_pruning(result: dict, path: Path) -> None:
    """Accuracy after fine-tuning against blocks removed, per model: modularity, last, CKA, and the
    random draws' mean ± sd."""
    import matplotlib.pyplot as plt

    from neurotomy.report.figures import save_figure

    models = [name for name, s in result["summary"].items() if s["rows"]]
    if not models:
        return
    fig, axes = plt.subplots(1, len(models), figsize=(4.5 * len(models), 3.6), squeeze=False)
    for ax, name in zip(axes[0], models):
        rows = result["summary"][name]["rows"]
        x = [r["blocks_count"] for r in rows]
        for method, style in (("modularity", "o-"), ("last", "s--"), ("cka", "^-.")):
            ax.plot(x, [100 * r[method] if r[method] is not None else float("nan") for r in rows], style, label=method)
        ax.errorbar(x, [100 * r["random_mean"] for r in rows], yerr=[100 * (r["random_sd"] or 0) for r in rows],
                    fmt="k:", capsize=3, label=f"random ({rows[0]['random_draws']} draws, mean ± sd)")
        original = next(r["acc_original"] for r in result["layer_pruning"] if r["model"] == name)
        ax.axhline(100 * original, color="grey", lw=0.8)
        ax.axhline(100 * original - result["summary"][name]["stop_drop_pt"], color="grey", lw=0.8, ls="--")
        ax.set(xscale="log", xticks=x, xlabel="blocks removed", ylabel="test accuracy after fine-tune (%)", title=name)
        ax.minorticks_off()
        ax.set_xticklabels([str(v) for v in x])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


if __name__ == "__main__":
    main()
