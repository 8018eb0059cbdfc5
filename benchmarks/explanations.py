"""Explanation methods on zoo:resnet20-fmnist: every method × every metric, ROAR at reduced scale,
throughput, and Grad-CAM against pytorch-grad-cam on the same model, layer and batch.

Parts (``--parts``, default all; results are merged into the existing file, so parts can be re-run):
  scores      deletion / insertion AUC, MoRF / LeRF on ``--n`` class-balanced test images, and the
              cascading / independent sanity checks on ``--n-sanity`` of them
  roar        remove-and-retrain: maps of ResNet-20 on a class-balanced Fashion-MNIST subset
              (``--roar-train`` / ``--roar-test`` images), pixels replaced by the mean, a LeNet-5
              retrained from scratch per method and threshold (the reduced scale Hooker et al. allow)
  throughput  images/s of each method at batch 64; Grad-CAM interleaved with pytorch-grad-cam

Each part's run is stamped under ``provenance.<part>`` (commit, date, argv, threads, load average at
its start and end, and the keys it wrote), so a file merged from several runs says which run wrote
what; every throughput figure also carries the load it was measured under.

Usage: python benchmarks/explanations.py --root ../shared/data/fashion-mnist [--parts throughput]
Writes benchmarks/results/explanations.json and explanations.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from neurotomy.data import load_dataset
from neurotomy.data.subsets import balanced_indices
from neurotomy.explain import METHODS, applicable_methods, attribute
from neurotomy.jobs.roar import roar
from neurotomy.explain.rating import METRICS, better_direction, explainer, rate_explanations
from neurotomy.files import write_json
from neurotomy.loading import load_model
from neurotomy.provenance import begin_stamp, end_stamp, merge_part
from neurotomy.report.figures import save_figure
from neurotomy.timing import interleaved_timing, require_quiet_machine

RESULTS = Path(__file__).resolve().parent / "results"
ROAR_METHODS = ("gradient", "integrated_gradients", "smoothgrad_sq", "gradcam", "pathway")
COMPARED = ("gradient", "integrated_gradients", "gradcam")  # the paper's claim: pathway beats these
# the keys each part writes (its stamp lists them)
PART_KEYS = {"scores": ("scores", "better", "curves", "scores_setup"), "roar": ("roar",),
             "throughput": ("throughput", "throughput_load_average", "gradcam_throughput",
                            "gradcam_reference_throughput", "gradcam_speedup", "throughput_setup")}


def machine() -> dict:
    """The hardware; the load and threads of each run are in its stamp (``provenance``)."""
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "gpu": torch.cuda.is_available()}


def balanced(data, n: int, seed: int):
    picks = balanced_indices(data.targets, -(-n // len(data.classes)), seed=seed)[:n]
    return data.images[picks].float(), data.targets[picks]


def part_scores(model, test, args, results: dict, save) -> None:
    images, _ = balanced(test, args.n, args.seed)
    methods = applicable_methods(model)
    fast = ["deletion", "insertion", "morf", "lerf"]
    rated = rate_explanations(model, images, methods=methods, metrics=fast, seed=args.seed)
    sanity = rate_explanations(model, images[:args.n_sanity], methods=methods,
                               metrics=["sanity_cascading", "sanity_independent"], seed=args.seed)
    results["scores"] = {m: {**rated["scores"][m], **sanity["scores"][m]} for m in methods}
    results["better"] = {k: better_direction(k) for k in METRICS}
    results["curves"] = {m: {**{k: rated["details"][m][k] for k in fast},
                             **{k: sanity["details"][m][k]["steps"] for k in ("sanity_cascading",
                                                                             "sanity_independent")}}
                         for m in methods}
    results["scores_setup"] = {"images": len(images), "sanity_images": args.n_sanity, "deletion_steps": 28,
                               "substrate": "0 in normalised space (the dataset mean)",
                               "maps_ranked_by": "|map|", "targets": "predicted class"}
    save()


def part_roar(model, train, test, args, results: dict, save) -> None:
    train_x, train_y = balanced(train, args.roar_train, args.seed)
    test_x, test_y = balanced(test, args.roar_test, args.seed + 1)
    explainers = {m: explainer(m, **({"seed": args.seed} if "seed" in METHODS[m].options() else {}))
                  for m in ROAR_METHODS}

    def partial(record: dict) -> None:
        results["roar"] = record
        save()

    results["roar"] = roar(model, _dataset(train, train_x, train_y), _dataset(test, test_x, test_y), explainers,
                           seed=args.seed, on_result=partial)
    results["roar"]["scale"] = (f"maps from zoo:resnet20-fmnist; LeNet-5 retrained per method and threshold on "
                                f"{len(train_x)} train / {len(test_x)} test images (class-balanced subset)")
    save()


def _dataset(like, images, targets):
    from neurotomy.data.tensor_dataset import TensorImageDataset
    return TensorImageDataset(images, targets, like.classes, like.normalization, like.name)


def part_throughput(model, test, args, results: dict, save) -> None:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    require_quiet_machine(args.wait_quiet, args.allow_busy)
    images, _ = balanced(test, args.batch, args.seed)
    with torch.no_grad():
        targets = model(images).argmax(1)
    throughput, loads = {}, {}

    def images_per_second(timed: dict) -> float:  # one call = one batch
        return len(images) / (timed["median_ms"] / 1000)

    for method in applicable_methods(model):
        opts = {"seed": 0} if "seed" in METHODS[method].options() else {}
        fn = (lambda x, m=method, o=opts: attribute(model, x, targets[:len(x)], method=m, **o))
        fn(images[:4])  # warm-up
        repeats = 1 if METHODS[method].family == "cam" and method in ("scorecam", "ablationcam") else args.repeats
        (timed,) = interleaved_timing([lambda fn=fn: fn(images)], rounds=repeats, repeats=1, warmup=0)
        throughput[method], loads[method] = images_per_second(timed), timed["load_average"]
        print(f"{method:<22} {throughput[method]:9.1f} images/s (load {timed['load_average'][0]:.2f})", flush=True)
    # Grad-CAM vs pytorch-grad-cam, interleaved so both see the same machine load
    reference_targets = [ClassifierOutputTarget(int(t)) for t in targets]
    with GradCAM(model=model, target_layers=[model.layer3]) as reference:
        reference(input_tensor=images[:4], targets=reference_targets[:4])
        ours, theirs = interleaved_timing(
            [lambda: attribute(model, images, targets, method="gradcam", layer="layer3"),
             lambda: reference(input_tensor=images, targets=reference_targets)],
            rounds=args.repeats * 2, repeats=1, warmup=0)
    results["throughput"] = throughput
    results["throughput_load_average"] = loads
    results["gradcam_throughput"] = images_per_second(ours)
    results["gradcam_reference_throughput"] = images_per_second(theirs)
    results["gradcam_speedup"] = results["gradcam_throughput"] / results["gradcam_reference_throughput"]
    first = next(iter(loads.values()))
    results["throughput_setup"] = {"batch": args.batch, "repeats": args.repeats, "layer": "layer3",
                                   "statistic": "median images/s over interleaved rounds", "threads": ours["threads"],
                                   "load_average": [first[0], ours["load_average"][1]],
                                   "gradcam_load_average": ours["load_average"], "machine": machine()}
    print(f"Grad-CAM ours {results['gradcam_throughput']:.0f}/s vs pytorch-grad-cam "
          f"{results['gradcam_reference_throughput']:.0f}/s → {results['gradcam_speedup']:.2f}×", flush=True)
    save()


def verdict(results: dict) -> dict:
    """Does the pathway gradient beat gradient, IG and Grad-CAM, metric by metric (the paper's claim)?"""
    out = {}
    scores = results.get("scores", {})
    if "pathway" in scores:
        for metric in METRICS:
            better = better_direction(metric)
            mine = scores["pathway"][metric]
            beaten = [m for m in COMPARED if (mine < scores[m][metric] if better == "lower"
                                              else mine > scores[m][metric])]
            out[metric] = {"pathway": mine, **{m: scores[m][metric] for m in COMPARED}, "beats": beaten,
                           "beats_all": len(beaten) == len(COMPARED)}
    roar_record = results.get("roar", {})
    accuracy = roar_record.get("accuracy", {})
    complete = len(roar_record.get("thresholds", []))
    if complete and all(len(accuracy.get(m, [])) == complete for m in (*COMPARED, "pathway")):
        mean = {m: sum(v) / len(v) for m, v in accuracy.items() if v}  # lower accuracy = better map
        out["roar_mean_accuracy"] = {**{m: mean[m] for m in (*COMPARED, "pathway", "random") if m in mean},
                                     "beats": [m for m in COMPARED if mean["pathway"] < mean[m]]}
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    metrics = [m for m in METRICS if "scores" in results]
    panels = len(metrics) + (1 if results.get("roar") else 0) + (1 if results.get("throughput") else 0)
    if not panels:
        return
    cols = 4
    fig, axes = plt.subplots(-(-panels // cols), cols, figsize=(16, 3.4 * -(-panels // cols)), squeeze=False)
    flat = list(axes.flat)
    for ax, metric in zip(flat, metrics):
        names = list(results["scores"])
        values = [results["scores"][n][metric] for n in names]
        colors = ["#c0392b" if n == "pathway" else "#7f8c8d" if n in ("random", "sobel") else "#2c7fb8"
                  for n in names]
        ax.barh(names, values, color=colors)
        ax.set_title(f"{metric} ({results['better'][metric]} is better)", fontsize=9)
        ax.tick_params(labelsize=7)
    index = len(metrics)
    if results.get("roar"):
        ax = flat[index]
        index += 1
        record = results["roar"]
        for name, accuracy in record["accuracy"].items():
            if accuracy:
                ax.plot([100 * t for t in record["thresholds"][:len(accuracy)]], accuracy, marker="o", label=name)
        ax.axhline(record["baseline_accuracy"], color="k", ls=":", lw=1, label="no removal")
        ax.set_xlabel("pixels removed (%)")
        ax.set_ylabel("retrained accuracy")
        ax.set_title("ROAR (lower = better map)", fontsize=9)
        ax.legend(fontsize=6)
    if results.get("throughput"):
        ax = flat[index]
        index += 1
        names = list(results["throughput"])
        ax.barh(names, [results["throughput"][n] for n in names], color="#2c7fb8")
        ax.barh(["pytorch-grad-cam"], [results["gradcam_reference_throughput"]], color="#7f8c8d")
        ax.set_xscale("log")
        ax.set_title("images/s, batch 64 (log)", fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in flat[index:]:
        ax.axis("off")
    fig.suptitle("Explanations of zoo:resnet20-fmnist (Fashion-MNIST)", fontsize=11)
    fig.tight_layout()
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", help="Fashion-MNIST IDX directory (default: the shipped subset)")
    parser.add_argument("--parts", nargs="+", default=["throughput", "scores", "roar"])
    parser.add_argument("--n", type=int, default=100, help="test images for the perturbation metrics")
    parser.add_argument("--n-sanity", type=int, default=20)
    parser.add_argument("--roar-train", type=int, default=2000)
    parser.add_argument("--roar-test", type=int, default=500)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wait-quiet", type=float, default=600,
                        help="throughput: seconds to wait for a load ≤ half the cores before timing (default 600)")
    parser.add_argument("--allow-busy", action="store_true",
                        help="throughput: time a busy machine anyway (the load is recorded with every figure)")
    parser.add_argument("--out", default=str(RESULTS / "explanations.json"))
    args = parser.parse_args()
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    results.update(model="zoo:resnet20-fmnist", dataset="fashion-mnist", machine=machine(), seed=args.seed)
    model = load_model("zoo:resnet20-fmnist").eval()
    train = load_dataset("fashion-mnist", root=args.root, split="train")
    test = load_dataset("fashion-mnist", root=args.root, split="test")

    def save() -> None:
        results["verdict"] = verdict(results)
        write_json(out, results)
        plot(results, out.with_suffix(".png"))

    for part in args.parts:
        if part not in PART_KEYS:
            raise SystemExit(f"unknown part {part!r}; use scores, roar, throughput")
        start = time.perf_counter()
        stamp = begin_stamp()  # while the part runs, its stamp says so: what is saved meanwhile is this run's
        merge_part(results, part, {}, {**stamp, "note": "in progress: this run had not finished the part"})
        if part == "scores":
            part_scores(model, test, args, results, save)
        elif part == "roar":
            part_roar(model, train, test, args, results, save)
        elif part == "throughput":
            part_throughput(model, test, args, results, save)
        merge_part(results, part, {k: results[k] for k in PART_KEYS[part] if k in results}, end_stamp(stamp))
        results.setdefault("seconds", {})[part] = round(time.perf_counter() - start, 1)
        save()
    print(json.dumps(results.get("verdict", {}), indent=1))


if __name__ == "__main__":
    main()
