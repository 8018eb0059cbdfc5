"""Does the gradient mask (lateral inhibition, arXiv 2208.06918) help, as its paper claims?

Both arms — plain training and training with ``--grad-mask`` (our default rule: per sample and
channel keep g ≥ τ·mean|g| at every ReLU output, τ = 1; see ``neurotomy.grad_mask``) — use the
same seeds, data, schedule and epochs. LeNet-5 gets a third arm, ``mask-pool``, with the mask at its
max-pool outputs: its ReLUs feed max-pools, so their output gradients are already zero off each
window's maximum and the default mask there only trims the survivors. Each trained model is
measured on Fashion-MNIST:

- ``acc``: clean accuracy on the 10k test set;
- ``acc_pruned50``: after removing 50 % of the filters of every prunable layer by L1 norm
  (``prune_filters(ratio=0.5)``, uniform scope), no fine-tuning; models with BatchNorm (ResNet-20)
  get their BN statistics recalibrated on 4,096 training images, models without (LeNet-5) none;
- ``acc_fgsm`` / ``acc_pgd``: accuracy under FGSM and PGD (10 steps of 2.5ε/10, random start) at
  ``eps`` pixels, on the first ``attack_images`` test images;
- ``focus``: share of |∂y_true/∂x| on non-background pixels (pixel value 0 before normalisation),
  first 1,000 test images, with ``foreground_share`` (the focus a uniform map would have);
- ``coherence_plain`` / ``coherence_masked``: ‖mean g_i‖² / mean ‖g_i‖² of per-sample parameter
  gradients on 128 fixed training images, without and with the arm's mask (ReLU sites for the plain
  arm); ``mask_kept_fraction`` / ``mask_kept_mass``: share of non-zero gradient entries / of Σ|g|
  the mask keeps on 64 of them; ``coherence_conv_*`` the
  same over conv weights only (the mask acts on them; LeNet-5's parameters are mostly in its FC layers).

Usage: python benchmarks/grad_mask.py --root ../shared/data/fashion-mnist --resnet-seeds 0 1 --resnet-short-control
Writes benchmarks/results/grad_mask.json (after every run) and grad_mask.png. A re-run with the same
protocol resumes: finished runs are kept (every run is seeded, so the file does not depend on how
many invocations produced it); each record carries the stamp of the invocation that measured it
(commit, date, argv, threads, load average at its start and end).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from neurotomy.attacks import adversarial_accuracy
from neurotomy.data import load_dataset
from neurotomy.files import write_json
from neurotomy.grad_mask import GradientMask, GradMaskConfig
from neurotomy.gradient_quality import gradient_coherence, saliency_focus
from neurotomy.models import build_model
from neurotomy.provenance import begin_stamp, end_stamp
from neurotomy.recover import recalibrate_batchnorm
from neurotomy.scores import get_criterion
from neurotomy.surgery.filters import prune_filters
from neurotomy.train import TrainConfig, evaluate, fit, seed_everything

RESULTS = Path(__file__).resolve().parent / "results"
METRICS = ("acc", "acc_pruned50", "acc_fgsm", "acc_pgd", "focus", "coherence_plain", "coherence_masked",
           "coherence_conv_plain", "coherence_conv_masked")


def has_batchnorm(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def pruned50_accuracy(model, train, test, seed: int) -> tuple[float, bool]:
    result = prune_filters(model, get_criterion("l1")(model), ratio=0.5, input_shape=(1, 28, 28))
    recalibrated = has_batchnorm(result.model)
    if recalibrated:
        recalibrate_batchnorm(result.model, train, images=4096, seed=seed, quiet=True)
    return evaluate(result.model, test, quiet=True)["accuracy"], recalibrated


def kept_share(model, images: torch.Tensor, targets: torch.Tensor, mask: GradMaskConfig) -> tuple[float, float]:
    """Mean over masked sites of the share of non-zero gradient entries, and of Σ|g|, the mask keeps
    on one batch (model in train mode; BN running statistics restored afterwards)."""
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    with GradientMask(model, mask) as gm:
        torch.nn.functional.cross_entropy(model(images), targets).backward()
    model.zero_grad(set_to_none=True)
    model.load_state_dict(saved)
    model.eval()
    entries, mass = gm.kept_fraction(), gm.kept_mass()
    return statistics.fmean(entries.values()), statistics.fmean(mass.values())


def run_one(arch: str, seed: int, arm: str, args, train, test, probe_batch) -> dict:
    """Train one model in ``arm`` ("plain", "mask" at ReLU outputs, "mask-pool" at pool outputs,
    "plain-short": plain with one epoch fewer, a control at lower clean accuracy) and measure it."""
    spec = MODELS[arch]
    masked, sites = arm.startswith("mask"), "pool" if arm == "mask-pool" else "relu"
    epochs = spec["epochs"] - 1 if arm == "plain-short" else spec["epochs"]
    config = TrainConfig(epochs=epochs, lr=args.lr, batch_size=128, seed=seed, augment="none",
                         max_images=spec["images"], quiet=True, grad_mask=masked, grad_mask_rule=args.rule,
                         grad_mask_tau=args.tau, grad_mask_sites=sites)
    seed_everything(seed)
    model = build_model(arch, 1, 10, 28)
    start = time.perf_counter()
    history = fit(model, train, config)
    train_seconds = time.perf_counter() - start
    mask = GradMaskConfig(rule=args.rule, tau=args.tau, sites=sites)
    images, targets = probe_batch
    record = {"model": arch, "seed": seed, "grad_mask": masked, "arm": arm, "sites": sites if masked else None,
              "rule": args.rule if masked else None, "tau": args.tau if masked else None, "epochs": epochs,
              "train_images": spec["images"] or len(train), "train_seconds": round(train_seconds, 1),
              "final_train_loss": history[-1]["loss"], "final_train_acc": history[-1]["accuracy"]}
    record["acc"] = evaluate(model, test, quiet=True)["accuracy"]
    record["acc_pruned50"], record["pruned50_bn_recalibrated"] = pruned50_accuracy(model, train, test, seed)
    record["eps"] = args.eps
    record["attack_images"] = spec["attack_images"]
    record["pgd_steps"] = args.pgd_steps
    for attack in ("fgsm", "pgd"):
        record[f"acc_{attack}"] = adversarial_accuracy(model, test, attack, args.eps, spec["attack_images"],
                                                       steps=args.pgd_steps, seed=seed, quiet=True)
        if spec["eps_curve"]:
            record[f"acc_{attack}_by_eps"] = {
                str(e): adversarial_accuracy(model, test, attack, e, spec["attack_images"],
                                             steps=args.pgd_steps, seed=seed, quiet=True)
                for e in args.eps_curve}
    focus = saliency_focus(model, test, max_images=1000)
    record["focus"], record["foreground_share"] = focus.focus, focus.foreground_share
    record["coherence_plain"] = gradient_coherence(model, images, targets)
    record["coherence_masked"] = gradient_coherence(model, images, targets, mask)
    conv = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    record["coherence_conv_plain"] = gradient_coherence(model, images, targets, parameters=conv)
    record["coherence_conv_masked"] = gradient_coherence(model, images, targets, mask, parameters=conv)
    record["mask_kept_fraction"], record["mask_kept_mass"] = kept_share(model, images[:64], targets[:64], mask)
    return record


def summarise(records: list[dict]) -> dict:
    """Mean and spread per model and arm, and the paired (same seed) difference masked − plain."""
    summary = {}
    for arch in sorted({r["model"] for r in records}):
        rows = [r for r in records if r["model"] == arch]
        entry = {}
        for metric in METRICS:
            arms = {}
            by_seed = {(r["seed"], r["arm"]): r[metric] for r in rows}
            for arm in ARM_NAMES:
                values = [r[metric] for r in rows if r["arm"] == arm]
                if not values:
                    continue
                arms[arm] = {"mean": statistics.fmean(values),
                             "std": statistics.stdev(values) if len(values) > 1 else None, "n": len(values)}
                if arm != "plain":
                    diffs = [by_seed[(s, arm)] - by_seed[(s, "plain")] for s in sorted({r["seed"] for r in rows})
                             if (s, arm) in by_seed and (s, "plain") in by_seed]
                    arms[f"{arm}_minus_plain"] = {"by_seed": diffs,
                                                  "mean": statistics.fmean(diffs) if diffs else None,
                                                  "higher_in": f"{sum(d > 0 for d in diffs)} of {len(diffs)}"}
            entry[metric] = arms
        summary[arch] = entry
    return summary


def plot(result: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    from neurotomy.report.figures import save_figure

    records = result["records"]
    archs = sorted({r["model"] for r in records})
    metrics = ("acc", "acc_pruned50", "acc_fgsm", "acc_pgd", "focus", "coherence_conv_plain")
    fig, axes = plt.subplots(len(archs), len(metrics), figsize=(2.4 * len(metrics), 2.6 * len(archs)),
                             squeeze=False)
    for i, arch in enumerate(archs):
        for j, metric in enumerate(metrics):
            ax = axes[i][j]
            arms = [a for a in ARM_NAMES if any(r["model"] == arch and r["arm"] == a for r in records)]
            for x, arm in enumerate(arms):
                values = [r[metric] for r in records if r["model"] == arch and r["arm"] == arm]
                ax.scatter([x] * len(values), values, color=f"C{ARM_NAMES.index(arm)}", zorder=3)
                ax.hlines(statistics.fmean(values), x - 0.25, x + 0.25, color="k")
            ax.set_xticks(range(len(arms)), arms, fontsize=7)
            ax.set_xlim(-0.6, len(arms) - 0.4)
            if metric == "focus":
                share = statistics.fmean(r["foreground_share"] for r in records if r["model"] == arch)
                ax.axhline(share, ls="--", color="grey", lw=1, label="uniform map")
                ax.legend(fontsize=6)
            ax.set_title(f"{arch}: {metric}", fontsize=8)
            ax.grid(alpha=0.3)
    fig.suptitle(f"Gradient mask vs plain training, Fashion-MNIST (eps={result['eps']} px) — {result['machine']}",
                 fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


MODELS: dict[str, dict] = {}
ARM_NAMES = ("plain", "mask", "mask-pool", "plain-short")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--out", default=str(RESULTS / "grad_mask.json"))
    parser.add_argument("--lenet-seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--lenet-epochs", type=int, default=3)
    parser.add_argument("--resnet-seeds", type=int, nargs="*", default=[0])
    parser.add_argument("--resnet-epochs", type=int, default=3)
    parser.add_argument("--resnet-images", type=int, default=10000)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--rule", default="mean")
    parser.add_argument("--tau", type=float, default=1.0)
    parser.add_argument("--eps", type=float, default=0.03)
    parser.add_argument("--eps-curve", type=float, nargs="*", default=[0.01, 0.03, 0.1])
    parser.add_argument("--pgd-steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 is several times faster than 2 on the shared 2-core machine)")
    parser.add_argument("--lenet-pool-arm", action=argparse.BooleanOptionalAction, default=True,
                        help="also train LeNet-5 with the mask at its max-pool outputs (its ReLU-output "
                             "gradients are already zero off each pooling window's maximum)")
    parser.add_argument("--resnet-short-control", action="store_true",
                        help="also train ResNet-20 plainly with one epoch fewer: is a robustness gain more "
                             "than the lower clean accuracy of a less-trained model?")
    parser.add_argument("--plot-only", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    if args.plot_only:
        result = json.loads(out.read_text())
        result["summary"] = summarise(result["records"])
        write_json(out, result)
        return plot(result, out.with_suffix(".png"))
    torch.set_num_threads(args.threads)
    MODELS.update({
        "lenet5": {"epochs": args.lenet_epochs, "images": None, "attack_images": 2000, "eps_curve": True},
        "resnet20": {"epochs": args.resnet_epochs, "images": args.resnet_images, "attack_images": 1000,
                     "eps_curve": False},
    })
    train = load_dataset("fashion-mnist", root=args.root, split="train")
    test = load_dataset("fashion-mnist", root=args.root, split="test")
    rows = torch.randperm(len(train), generator=torch.Generator().manual_seed(12345))[:128]
    probe_batch = (train.images[rows], train.targets[rows])
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, "
                   f"{torch.get_num_threads()} torch thread(s), torch {torch.__version__}, no GPU",
        "question": "does the gradient mask improve accuracy, accuracy after 50 % filter pruning, adversarial "
                    "accuracy and saliency focus (arXiv 2208.06918's claims)?",
        "protocol": {"data": "Fashion-MNIST, full 10k test set; train: full 60k for LeNet-5, the first "
                             f"{args.resnet_images} of a seeded shuffle per epoch for ResNet-20",
                     "training": f"SGD Nesterov, one-cycle lr {args.lr}, batch 128, weight decay 5e-4, no "
                                 "augmentation (reduced budget for the shared 2-core machine), same seeds and "
                                 "epochs for both arms",
                     "epochs": {"lenet5": args.lenet_epochs, "resnet20": args.resnet_epochs},
                     "mask": f"rule {args.rule}, tau {args.tau}; arm 'mask': at every ReLU output (sites=relu); "
                             "arm 'mask-pool' (LeNet-5 only): at every max-pool output (sites=pool)",
                     "pruning": "prune_filters(ratio=0.5, uniform) by L1 norm, no fine-tuning; BatchNorm "
                                "recalibrated (4096 images) only where the model has BN (ResNet-20)",
                     "attacks": f"FGSM and PGD ({args.pgd_steps} steps of 2.5 eps/steps, random start), eps in "
                                "pixel units [0, 1]; first attack_images test images",
                     "focus": "share of |d logit_true / dx| on pixels that are non-zero before normalisation, "
                              "first 1000 test images",
                     "coherence": "||mean g_i||^2 / mean ||g_i||^2 over per-sample parameter gradients on 128 "
                                  "fixed training images, eval-mode BN; _masked: with the mask applied; "
                                  "coherence_conv_*: over conv weights only"},
        "eps": args.eps, "records": [],
    }
    result["arms"] = {"plain": "no mask", "mask": f"mask ({args.rule}, tau {args.tau}) at every ReLU output",
                      "mask-pool": "LeNet-5 only: the same mask at every max-pool output",
                      "plain-short": "ResNet-20 control: no mask, one epoch fewer (lower clean accuracy), to "
                                     "tell a robustness gain from the effect of a less-trained model"}
    if out.exists():  # resume: keep finished runs of the same protocol
        previous = json.loads(out.read_text())
        if previous.get("protocol") == result["protocol"]:
            result["records"] = previous["records"]
    done = {(r["model"], r["seed"], r["arm"]) for r in result["records"]}
    # One seed of each model first, so a run cut short still covers both models.
    lenet, resnet = [("lenet5", s) for s in args.lenet_seeds], [("resnet20", s) for s in args.resnet_seeds]
    plan = lenet[:1] + resnet[:1] + lenet[1:] + resnet[1:]
    for arch, seed in plan:
        arms = ["plain", "mask"] + (["mask-pool"] if arch == "lenet5" and args.lenet_pool_arm else []) \
            + (["plain-short"] if arch == "resnet20" and args.resnet_short_control else [])
        for arm in arms:
            if (arch, seed, arm) in done:
                continue
            stamp = begin_stamp()
            record = run_one(arch, seed, arm, args, train, test, probe_batch)
            record.update(end_stamp(stamp))  # each run's commit, argv, threads and load (train_seconds is a time)
            result["records"].append(record)
            result["summary"] = summarise(result["records"])
            write_json(out, result)
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in record.items()
                              if not k.endswith("_by_eps")}), flush=True)
    plot(result, out.with_suffix(".png"))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
