"""Relevant directions of ResNet-20's last block on Fashion-MNIST: PRCA against PCA and random
directions, and DRSA's subspaces (issue #16; Chormai et al., TPAMI 2024).

The claim under test, reported as measured: PRCA's top-k directions capture more of the relevance
than PCA's top-k, and keep more accuracy when the block's output is projected onto them, at equal k.

* ``spectra`` — PRCA's relevance spectrum (eigenvalues of the symmetrised cross-moment of activations
  and their gradient context, as shares of the total relevance) and PCA's variance spectrum (shares of
  the total variance), fitted on ``--fit-images`` training images.
* ``comparison`` — for k in ``--ks``: ``relevance_captured`` and ``variance_captured`` on
  ``--held-out-images`` test images (directions fitted on the training images), and ``accuracy_kept`` on
  the whole test split with the block's output projected onto the k directions (removed directions
  held at their training mean). Random directions: the mean (and range) over ``--random-draws`` draws.
* ``drsa`` — for each (subspaces × size) of ``--drsa``: the relevance share of each subspace on the
  held-out images, the accuracy with each subspace removed, and the seconds the optimisation took.

Relevance is gradient × activation for each image's label logit (``neurotomy.scores.subspace``).
Usage: python benchmarks/subspaces.py --root ../shared/data/fashion-mnist
Writes benchmarks/results/subspaces.json (stamped: commit, date, argv, threads, load) and subspaces.png.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from neurotomy.data import load_dataset
from neurotomy.files import write_json
from neurotomy.jobs.concepts import compare_directions, drsa_record, spectra
from neurotomy.loading import load_model
from neurotomy.provenance import begin_stamp, end_stamp
from neurotomy.scores.subspace import observe_layer

RESULTS = Path(__file__).resolve().parent / "results"
MODEL, LAYER = "zoo:resnet20-fmnist", "layer3.2"


def random_summary(runs: list[dict], ks: list[int]) -> dict:
    """Mean, min and max over the random draws of each curve."""
    out = {}
    for key in ("relevance_captured", "variance_captured", "accuracy_kept"):
        columns = list(zip(*[run["random"][key] for run in runs]))
        out[key] = [sum(c) / len(c) for c in columns]
        out[key + "_range"] = [[min(c), max(c)] for c in columns]
    out["draws"] = len(runs)
    return out


def verdict(comparison: dict) -> dict:
    """Per k, whether PRCA beats PCA on each measure, and one honest sentence."""
    ks = comparison["ks"]
    wins = {key: [p > q for p, q in zip(comparison["prca"][key], comparison["pca"][key])]
            for key in ("relevance_captured", "accuracy_kept")}
    sentence = (f"PRCA captures more held-out relevance than PCA at {sum(wins['relevance_captured'])} of {len(ks)} k "
                f"and keeps more accuracy at {sum(wins['accuracy_kept'])} of {len(ks)} k (k = {ks}).")
    return {"prca_beats_pca": wins, "sentence": sentence}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from neurotomy.report.figures import save_figure

    comparison, spectrum = results["comparison"], results["spectra"]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    axes[0].plot(spectrum["prca_relevance"][:16], "o-", label="PRCA relevance")
    axes[0].plot(spectrum["pca_variance"][:16], "s-", label="PCA variance")
    axes[0].set(title="spectra (share of total)", xlabel="direction")
    for ax, key in zip(axes[1:], ("relevance_captured", "accuracy_kept")):
        for method, marker in (("prca", "o-"), ("pca", "s-"), ("random", "x--")):
            ax.plot(comparison["ks"], comparison[method][key], marker, label=method)
        ax.set(title=key.replace("_", " ") + " (held out)", xlabel="k directions kept")
        ax.set_xscale("log", base=2)
        ax.set_xticks(comparison["ks"], [str(k) for k in comparison["ks"]])
    axes[2].axhline(comparison["accuracy_full"], color="grey", lw=0.8, label="full")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", help="Fashion-MNIST IDX directory (default: the shipped subset)")
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--layer", default=LAYER)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--fit-images", type=int, default=2000, help="training images the directions are fitted on")
    parser.add_argument("--held-out-images", type=int, default=2000, help="test images relevance is measured on")
    parser.add_argument("--eval-images", type=int, default=None, help="test images for accuracy (default: all)")
    parser.add_argument("--random-draws", type=int, default=5)
    parser.add_argument("--drsa", nargs="+", default=["4x4", "8x8"], help="DRSA settings SUBSPACESxSIZE")
    parser.add_argument("--drsa-steps", type=int, default=300)
    parser.add_argument("--positions", type=int, default=16, help="sampled positions per image (DRSA's samples)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "subspaces.json"))
    args = parser.parse_args()

    start, stamp = time.perf_counter(), begin_stamp()
    model = load_model(args.model)
    train = load_dataset("fashion-mnist", root=args.root, split="train")
    test = load_dataset("fashion-mnist", root=args.root, split="test")
    t = time.perf_counter()
    fit = observe_layer(model, train, args.layer, max_images=args.fit_images, positions=args.positions,
                        seed=args.seed)
    held_out = observe_layer(model, test, args.layer, max_images=args.held_out_images, positions=args.positions,
                             seed=args.seed)
    observe_seconds = time.perf_counter() - t
    t = time.perf_counter()
    comparison = compare_directions(model, fit, held_out, test, ks=args.ks, methods=("prca", "pca"),
                                    eval_images=args.eval_images, seed=args.seed, quiet=False)
    runs = [compare_directions(model, fit, held_out, test, ks=args.ks, methods=("random",), eval_images=args.eval_images,
                               seed=args.seed + draw, quiet=True) for draw in range(args.random_draws)]
    comparison["random"] = random_summary(runs, comparison["ks"])
    compare_seconds = time.perf_counter() - t
    drsa = []
    for setting in args.drsa:
        subspaces, size = (int(v) for v in setting.split("x"))
        record, _ = drsa_record(model, fit, held_out, test, subspaces=subspaces, size=size,
                                eval_images=args.eval_images, seed=args.seed, steps=args.drsa_steps)
        drsa.append(record)
        print(f"DRSA {setting}: shares {[round(s, 3) for s in record['relevance_share']]}, accuracy with each "
              f"removed {[round(a, 4) for a in record['accuracy_removed']]}", flush=True)
    results = {"model": args.model, "layer": args.layer, "data": test.name, "fit_images": fit.images,
               "held_out_images": held_out.images, "channels": fit.channels, "target": fit.target,
               "relevance": "gradient × activation of the label logit (context = ∂y/∂a)",
               "projection": "a ↦ μ + UUᵀ(a − μ), μ the training mean of the block's output",
               "spectra": spectra(fit), "comparison": comparison, "verdict": verdict(comparison), "drsa": drsa,
               "seconds": {"observe": round(observe_seconds, 2), "compare": round(compare_seconds, 2),
                           "total": round(time.perf_counter() - start, 2)}}
    results.update(end_stamp(stamp))
    out = Path(args.out)
    write_json(out, results)
    plot(results, out.with_suffix(".png"))
    print(results["verdict"]["sentence"])
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
