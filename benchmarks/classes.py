"""Class-level decomposition on Fashion-MNIST: feature subsets, decomposed heads, modules, patching.

Questions (issue #6):
1. ``subsets``: how many penultimate features does each class need (Badola et al.'s frequency rule,
   and the W·f contribution ranking), ResNet-20 vs ResNet-56? ``heads``: accuracy of the decomposed
   final layer with k features per class, before and after an Adam (lr 2e-4) fine-tune of the head.
2. ``modules``: one c-vs-rest module per class of ResNet-20 (threshold search): one-vs-rest
   accuracy, precision, recall, kept filters, MACs; coupling and cohesion of the set; and the
   genetic search beside the threshold search on a few classes (``search_comparison``).
3. ``patching``: weak models patched with ResNet-20's modules — target-class precision and recall
   and accuracy on the other classes, before and after.
4. ``subsets_by_depth`` (issue #15): the same subset sizes (both rules, 99 % retention) for the final
   layer of each model in ``--depth-models`` (ResNet-20, the converged ResNet-56, VGG-16) and for its
   penultimate block, and ``heads_by_depth``: the decomposed-head accuracy at k = 3, 5, 8. The
   penultimate block's output is globally average-pooled (as the network pools its last block) and
   read by a linear probe trained on the same 10k images (Adam, lr 1e-3, 30 epochs): the block has
   no classifier of its own. ``subsets_by_depth_summary``: median and mean size per model, layer and
   rule beside the model's accuracy — is the per-class dimension smaller in deeper models, and does
   it track accuracy?

Scale (chosen for 2 shared CPU cores; each record's provenance stamp has the load it ran under): penultimate features of a stratified
10,000-image subset of the 60k training set, head accuracies on the full 10k test set; modules
scored on 2,000 training images, judged on a balanced 400-image calibration set, fine-tuned 1 epoch
on 1,000 balanced images, measured on a stratified 5,000-image test subset (as is patching, min-max
calibrated on 2,000 training images); weak models are LeNet-5s trained for 1–2 epochs on about
10,000 training images. Everything is seeded.

Usage: python benchmarks/classes.py --root ../shared/data/fashion-mnist
Smoke test of part 4: ... --parts subsets_by_depth --depth-models zoo:resnet20-fmnist --max-images 1000 \
    --out /tmp/classes.json
Writes benchmarks/results/classes.json (after every record; a re-run resumes, and each record carries
the stamp of the run that measured it: commit, date, argv, threads, load average) and classes_*.png.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from neurotomy.data import load_dataset
from neurotomy.jobs.classes import patch_job, split_job, subsets_job
from neurotomy.files import write_json
from neurotomy.models import build_model
from neurotomy.loading import load_model
from neurotomy.provenance import begin_stamp, end_stamp
from neurotomy.scores.class_subsets import penultimate_features
from neurotomy.jobs.split import split
from neurotomy.models.anatomy import layer_blocks
from neurotomy.models.sources import file_sha256
from neurotomy.loading.zoo import zoo_path
from neurotomy.probe import Probe
from neurotomy.scores.class_subsets import PenultimateFeatures
from neurotomy.data.batches import iterate_batches
from neurotomy.device import model_device, to_device
from neurotomy.surgery.class_modules import module_metrics
from neurotomy.surgery.class_search import GAConfig, jaccard
from neurotomy.train import TrainConfig, fit, seed_everything

RESULTS = Path(__file__).resolve().parent / "results"
PAPER_PATCHING = {"precision_gain_pt": 12.5, "recall_gain_pt": 2.1, "other_acc_gain_pt": 1.2,
                  "source": "Qi et al., ASE 2022 (CNNSplitter), averaged over their settings"}
PAPER_HEADS = {"k5_before_finetune": 0.931, "k16_before_finetune": 0.941, "full": 0.942,
               "source": "issue #6, measured on a ResNet-20 of 94.2 % (64 features) with the frequency rule",
               "target": "after the head's fine-tune, k ≤ 5 within 0.2 pt of the full layer"}


def stratified(data, per_class: int, seed: int, exclude_class: int | None = None, keep_of_excluded: int = 0):
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in range(len(data.classes)):
        rows = torch.nonzero(data.targets == c)[:, 0]
        n = keep_of_excluded if c == exclude_class else per_class
        picks.append(rows[torch.randperm(len(rows), generator=g)[:n]])
    picks = torch.cat(picks)
    return data.subset(picks[torch.randperm(len(picks), generator=g)])


# what each part writes, so that --redo can drop exactly that before measuring it again
PART_KEYS = {"subsets20": ("subsets", "heads"), "subsets56": ("subsets", "heads"),
             "modules_patch": ("modules",), "modules_rest": ("modules",), "patching": ("patching",),
             "search": ("search_comparison",), "heads_epochs": ("head_epochs",),
             "heads_network": ("head_network",), "heads_network_full": ("head_network_full",),
             "subsets_by_depth": ("subsets_by_depth", "heads_by_depth")}
PART_MODEL = {"subsets20": "resnet20-fmnist", "subsets56": "resnet56-fmnist"}


def drop_parts(result: dict, parts: list[str], depth_models: list[str]) -> None:
    """Remove the records that ``parts`` would write (only their model's, for the per-model parts), and
    the whole-file legacy stamp once no record predating the stamps is left."""
    for part in parts:
        models = ({PART_MODEL[part]} if part in PART_MODEL
                  else {model_name(m) for m in depth_models} if part == "subsets_by_depth" else None)
        for key in PART_KEYS.get(part, ()):
            kept = [r for r in result.get(key, []) if models is not None and r.get("model") not in models]
            result[key] = kept
    legacy = [r for value in result.values() if isinstance(value, list) for r in value
              if isinstance(r, dict) and "git_commit" in r and r.get("load_average_start") is None]
    if not legacy:
        result.get("provenance", {}).pop("before_stamps", None)


def save(result: dict, path: Path) -> None:
    result["seconds_so_far"] = round(time.perf_counter() - START, 1)
    write_json(path, result)


def run_subsets(result, path, train10k, test, models, seed: int = 0):
    for spec in models:
        name = spec.removeprefix("zoo:")
        if any(r["model"] == name for r in result["subsets"]):
            continue
        model = load_model(spec)
        t = time.perf_counter()
        features = penultimate_features(model, train10k, quiet=True), penultimate_features(model, test, quiet=True)
        print(f"{name}: features in {time.perf_counter() - t:.0f}s", flush=True)
        for criterion in ("frequency", "contribution"):
            t = time.perf_counter()
            stamp = begin_stamp()
            record = subsets_job(model, train10k, test, criterion=criterion, k=5, retention=0.99,
                                 ks=[1, 2, 3, 5, 8, 16, 32], finetune_epochs=3, seed=seed, quiet=True,
                                 features=features)
            stamp = end_stamp(stamp)
            for r in record["subsets"]:
                result["subsets"].append({"model": name, "criterion": criterion, "class": r["class"],
                                          "size": r["size"], "width": r["width"], "retention": 0.99,
                                          "precision_full": r["precision_full"], "recall_full": r["recall_full"],
                                          "precision_subset": r["precision_subset"], "recall_subset": r["recall_subset"],
                                          **stamp})
            for h in record["heads"]:
                result["heads"].append({"model": name, "criterion": criterion, "k": h["k"], "acc_full": h["acc_full"],
                                        "acc_subsets": h["acc_subsets"],
                                        "acc_subsets_finetuned": h["acc_subsets_finetuned"],
                                        "macs": h["macs"], "macs_full": h["macs_full"], **stamp})
            print(f"{name} {criterion}: sizes {[r['size'] for r in record['subsets']]}, heads "
                  f"{[(h['k'], round(h['acc_subsets'], 4), round(h['acc_subsets_finetuned'], 4)) for h in record['heads']]}"
                  f" full {record['acc_full']:.4f} ({time.perf_counter() - t:.0f}s)", flush=True)
            save(result, path)


DEPTH_KS = [3, 5, 8]
PROBE_EPOCHS, PROBE_LR = 30, 1e-3


def model_name(spec: str) -> str:
    """``zoo:NAME`` → NAME; a checkpoint path → its file name without suffix."""
    return spec.removeprefix("zoo:") if spec.startswith("zoo:") else Path(spec).stem


def checkpoint_sha(spec: str) -> str:
    path = zoo_path(spec.removeprefix("zoo:")) if spec.startswith("zoo:") else Path(spec)
    return file_sha256(path)[:16]


@torch.no_grad()
def pooled_block_features(model, data, block: str, batch_size: int = 256) -> PenultimateFeatures:
    """A block's output, globally average-pooled over its spatial positions (N × channels)."""
    seen, targets = [], []
    model.eval()
    with Probe(model, [block], on_output=lambda _, out: seen.append(out.mean((2, 3)).cpu())):
        for images, y in iterate_batches(data, batch_size):
            model(to_device(model_device(model), images))
            targets.append(y)
    features = torch.cat(seen)
    return PenultimateFeatures(features, torch.empty(len(features), 0), torch.cat(targets), "probe")


def linear_probe(fit: PenultimateFeatures, num_classes: int, seed: int = 0) -> torch.nn.Module:
    """A Linear classifier on fixed features (the readout a block without its own head needs), in a
    holder module under the name ``"probe"``, the layer name ``subsets_job`` looks the head up by."""
    from neurotomy.train import finetune_head

    torch.manual_seed(seed)
    probe = torch.nn.Linear(fit.features.shape[1], num_classes)
    finetune_head(probe, fit.features, fit.targets, epochs=PROBE_EPOCHS, lr=PROBE_LR, seed=seed, quiet=True)
    return torch.nn.ModuleDict({"probe": probe.eval()})


def run_subsets_by_depth(result, path, train10k, test, models, max_images=None, seed: int = 0):
    """Subset sizes and decomposed heads at the final layer and at the penultimate block of each model."""
    from neurotomy.train import evaluate

    if max_images is not None:  # smoke runs: stratified caps on both sets
        train10k = stratified(train10k, max(1, max_images // 10), seed=seed)
        test = stratified(test, max(1, max_images // 10), seed=seed)
    for spec in models:
        name, sha = model_name(spec), checkpoint_sha(spec)
        stale = [r for r in result["subsets_by_depth"] if r["model"] == name and r.get("model_sha") != sha]
        if stale:  # a retrained checkpoint of the same name: measure it again
            result["subsets_by_depth"] = [r for r in result["subsets_by_depth"] if r["model"] != name]
            result["heads_by_depth"] = [r for r in result["heads_by_depth"] if r["model"] != name]
        model = load_model(spec).eval()
        accuracy = evaluate(model, test, quiet=True)["accuracy"]
        block = layer_blocks(model)[-2]
        for position in ("final", "penultimate_block"):
            if any(r["model"] == name and r["position"] == position for r in result["subsets_by_depth"]):
                continue
            t = time.perf_counter()
            if position == "final":
                features = penultimate_features(model, train10k, quiet=True), penultimate_features(model, test, quiet=True)
                holder, layer, head_kind = model, features[0].layer + ":input", "the model's classifier"
            else:
                features = pooled_block_features(model, train10k, block), pooled_block_features(model, test, block)
                holder, layer = linear_probe(features[0], len(test.classes)), block
                head_kind = (f"linear probe on the globally pooled block output (Adam, lr {PROBE_LR}, "
                             f"{PROBE_EPOCHS} epochs on the fitting images)")
            for criterion in ("frequency", "contribution"):
                stamp = begin_stamp()
                record = subsets_job(holder, train10k, test, criterion=criterion, k=5, retention=0.99, ks=DEPTH_KS,
                                     finetune_epochs=3, seed=seed, quiet=True, features=features)
                stamp = end_stamp(stamp)
                common = {"model": name, "model_sha": sha, "model_accuracy": accuracy, "layer": layer,
                          "position": position, "criterion": criterion, "head": head_kind}
                for r in record["subsets"]:
                    result["subsets_by_depth"].append({**common, "class": r["class"], "size": r["size"],
                                                       "width": r["width"], "retention": 0.99,
                                                       "precision_full": r["precision_full"],
                                                       "recall_full": r["recall_full"], **stamp})
                for h in record["heads"]:
                    result["heads_by_depth"].append({**common, "k": h["k"], "acc_full": h["acc_full"],
                                                     "acc_subsets": h["acc_subsets"],
                                                     "acc_subsets_finetuned": h["acc_subsets_finetuned"], **stamp})
                print(f"{name} {layer} {criterion}: sizes {[r['size'] for r in record['subsets']]} of "
                      f"{record['width']}, heads {[(h['k'], round(h['acc_subsets'], 4)) for h in record['heads']]} "
                      f"full {record['acc_full']:.4f} ({time.perf_counter() - t:.0f}s)", flush=True)
            save(result, path)
    result["subsets_by_depth_summary"] = depth_summary(result)
    save(result, path)
    plot_depth(result, path.with_name(path.stem + "_depth.png"))


def depth_summary(result) -> list[dict]:
    """Per model, position and rule: median and mean subset size, the width, the model's accuracy
    and the decomposed heads' accuracy at each k."""
    rows = []
    keys = sorted({(r["model"], r["position"], r["criterion"]) for r in result["subsets_by_depth"]})
    for model, position, criterion in keys:
        mine = [r for r in result["subsets_by_depth"] if (r["model"], r["position"], r["criterion"]) ==
                (model, position, criterion)]
        sizes = [r["size"] for r in mine]
        heads = {h["k"]: h["acc_subsets_finetuned"] for h in result["heads_by_depth"]
                 if (h["model"], h["position"], h["criterion"]) == (model, position, criterion)}
        rows.append({"model": model, "position": position, "layer": mine[0]["layer"], "criterion": criterion,
                     "median_size": statistics.median(sizes), "mean_size": statistics.fmean(sizes),
                     "width": mine[0]["width"], "model_accuracy": mine[0]["model_accuracy"],
                     "head_accuracy_finetuned": heads})
    return rows


def plot_depth(result, path: Path) -> None:
    """Median subset size (bars, per rule) at the final layer and the penultimate block of each model."""
    import matplotlib.pyplot as plt

    from neurotomy.report.figures import save_figure

    rows = result["subsets_by_depth_summary"]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(8, 3.6))
    labels = sorted({(r["model"], r["position"]) for r in rows})
    for j, criterion in enumerate(("frequency", "contribution")):
        values = [next((r["median_size"] for r in rows if (r["model"], r["position"], r["criterion"]) ==
                        (*label, criterion)), float("nan")) for label in labels]
        ax.bar([i + 0.4 * j for i in range(len(labels))], values, width=0.4, label=f"{criterion} rule")
    widths = [next(r["width"] for r in rows if (r["model"], r["position"]) == label) for label in labels]
    accs = [next(r["model_accuracy"] for r in rows if r["model"] == label[0]) for label in labels]
    ax.set_xticks([i + 0.2 for i in range(len(labels))],
                  [f"{m}\n{p.replace('_', ' ')} (of {w}; acc {100 * a:.1f} %)" for (m, p), w, a in
                   zip(labels, widths, accs)], fontsize=7)
    ax.set(ylabel="median features per class (99 % retention)", title="class feature subsets across depth")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def run_head_epochs(result, path, train10k, test, spec="zoo:resnet20-fmnist", ks=(3, 5, 8), epochs=30, seed=0):
    """Is the 3-epoch head fine-tune simply too short? Test accuracy after each Adam epoch."""
    from neurotomy.scores.class_subsets import class_feature_scores, top_k_mask
    from neurotomy.surgery.heads import SubspaceHead, head_accuracy
    from neurotomy.train import finetune_head

    if result.get("head_epochs"):
        return
    model = load_model(spec)
    fit_f, test_f = penultimate_features(model, train10k, quiet=True), penultimate_features(model, test, quiet=True)
    head = dict(model.named_modules())[fit_f.layer]
    scores = class_feature_scores(fit_f.features, fit_f.targets, head, "frequency", k=5)[fit_f.layer]
    records = []
    for k in ks:
        stamp = begin_stamp()
        sub = SubspaceHead.from_linear(head, top_k_mask(scores, k))
        curve = [head_accuracy(sub, test_f.features, test_f.targets)]
        finetune_head(sub, fit_f.features, fit_f.targets, epochs=epochs, lr=2e-4, seed=seed, quiet=True,
                      on_epoch_end=lambda h, epoch: curve.append(head_accuracy(h, test_f.features, test_f.targets)))
        records.append({"model": spec.removeprefix("zoo:"), "k": k, "acc_full": head_accuracy(head, test_f.features,
                                                                                             test_f.targets),
                        "test_accuracy_by_epoch": curve, **end_stamp(stamp)})
        print(f"head k={k}: {[round(a, 4) for a in curve[::5]]}", flush=True)
    result["head_epochs"] = records
    save(result, path)


def run_head_network(result, path, train10k, test, spec="zoo:resnet20-fmnist", ks=(5,), epochs=2,
                     key="head_network", tune_data=None, tune_name="the 10k training subset", seed=0):
    """The decomposed head with the whole network fine-tuned (Adam, lr 2e-4, no augmentation).

    Subsets always come from the 10k subset's features; ``tune_data`` (default: the same subset) is
    what the network is fine-tuned on."""
    from neurotomy.scores.class_subsets import class_feature_scores, top_k_mask
    from neurotomy.surgery.heads import decompose_head
    from neurotomy.train import finetune_head
    from neurotomy.train import evaluate

    if result.get(key):
        return
    tune_data = tune_data if tune_data is not None else train10k
    model = load_model(spec)
    fit_f = penultimate_features(model, train10k, quiet=True)
    head = dict(model.named_modules())[fit_f.layer]
    scores = class_feature_scores(fit_f.features, fit_f.targets, head, "frequency", k=5)[fit_f.layer]
    records = []
    for k in ks:
        stamp = begin_stamp()
        decomposed = decompose_head(model, fit_f.layer, top_k_mask(scores, k))
        curve = [evaluate(decomposed, test, quiet=True)["accuracy"]]
        finetune_head(decomposed, tune_data.images, tune_data.targets, epochs=epochs, lr=2e-4, batch_size=128,
                      seed=seed, quiet=True,
                      on_epoch_end=lambda m, e: curve.append(evaluate(m, test, quiet=True)["accuracy"]))
        records.append({"model": spec.removeprefix("zoo:"), "k": k, "acc_full": evaluate(model, test, quiet=True)["accuracy"],
                        "test_accuracy_by_epoch": curve, "finetuned": "whole network, Adam lr 2e-4, "
                        f"{epochs} epochs on {tune_name}, no augmentation", **end_stamp(stamp)})
        print(f"network fine-tune k={k}: {[round(a, 4) for a in curve]}", flush=True)
    result[key] = records
    save(result, path)


def run_modules(result, path, strong, train, test, classes, module_dir, seed: int = 0):
    done = {r["class"] for r in result["modules"]}
    todo = [c for c in classes if c not in done]
    if not todo:
        return
    t = time.perf_counter()
    for c in todo:
        stamp = begin_stamp()
        record = split_job(strong, train, test, [c], module_dir / f"c{c}", score_images=2000,
                           calibration_images=400, finetune_images=1000, tolerance=0.98, finetune_epochs=1,
                           seed=seed, quiet=True)
        (m,) = record["modules"]
        module = record["_modules"][0]
        result["modules"].append({**{k: v for k, v in m.items() if k != "checkpoint"},
                                  "kept": module.kept, "checkpoint": m.get("checkpoint"), **end_stamp(stamp)})
        print(f"module {c}: kept {m['kept_fraction']:.3f}, macs {m['macs']}, ovr {m['ovr_accuracy']:.4f}, "
              f"P {m['precision']:.3f} R {m['recall']:.3f} ({time.perf_counter() - t:.0f}s)", flush=True)
        save(result, path)


def module_set(result):

    mods = result["modules"]
    pairs = [(a, b) for i, a in enumerate(mods) for b in mods[i + 1:]]
    return {"coupling": sum(jaccard(a["kept"], b["kept"]) for a, b in pairs) / max(1, len(pairs)),
            "cohesion": sum(m["cohesion"] for m in mods) / max(1, len(mods)), "modules": len(mods)}


def train_weak(train, kind: str, target: int, seed: int = 0):
    """``lenet_brief``: LeNet-5, 1 epoch on 10k images; ``few_target``: LeNet-5, 2 epochs on 9k images
    of the other classes plus 1 % (10) of the target class's."""
    if kind == "lenet_brief":
        data, epochs = stratified(train, 1000, seed), 1
    else:
        data, epochs = stratified(train, 1000, seed, exclude_class=target, keep_of_excluded=10), 2
    seed_everything(seed)
    model = build_model("lenet5", 1, 10, 28)
    fit(model, data, TrainConfig(epochs=epochs, lr=0.05, batch_size=64, seed=seed, quiet=True))
    from neurotomy.checkpoint import ModelMeta

    model.neurotomy_meta = ModelMeta(arch="lenet5", arch_args={"in_channels": 1, "num_classes": 10, "input_size": 28},
                                     dataset="fashion-mnist", normalization=train.normalization.to_dict(),
                                     classes=list(train.classes), seed=seed)
    return model.eval()


def run_patching(result, path, train, test, targets, module_dir, seed: int = 0):
    calibration = stratified(train, 200, seed=seed + 7)
    weak_cache = {}
    for target in targets:
        module = load_model(module_dir / f"c{target}" / f"class{target}.safetensors")
        for kind in ("lenet_brief", "few_target"):
            if any(r["target_class"] == target and r["weak_kind"] == kind for r in result["patching"]):
                continue
            key = kind if kind == "lenet_brief" else (kind, target)
            stamp = begin_stamp()
            if key not in weak_cache:
                weak_cache[key] = train_weak(train, kind, target, seed=seed)
            _, record = patch_job(weak_cache[key], module, calibration, test, quiet=True)
            record["weak_kind"] = kind
            record.update(end_stamp(stamp))
            result["patching"].append(record)
            print(f"patch {target} {kind}: P {record['precision_before']:.3f}→{record['precision_after']:.3f} "
                  f"R {record['recall_before']:.3f}→{record['recall_after']:.3f} other "
                  f"{record['other_acc_before']:.4f}→{record['other_acc_after']:.4f}", flush=True)
            save(result, path)


def run_search_comparison(result, path, strong, train, test, classes, seed: int = 0):
    from neurotomy.scores.classwise import ClassActivation

    scores = ClassActivation()(strong, train, max_images=2000, quiet=True)
    ga = GAConfig(population=8, generations=5, groups=8)
    for c in classes:
        for search in ("threshold", "ga"):
            if any(r["class"] == c and r["search"] == search for r in result["search_comparison"]):
                continue
            t = time.perf_counter()
            stamp = begin_stamp()
            module = split(strong, train, c, scores=scores, search=search, ga=ga, tolerance=0.98,
                           calibration_images=400, finetune_images=1000, finetune_epochs=1, seed=seed,
                           quiet=True)
            metrics = module_metrics(module.model, test, c)
            result["search_comparison"].append({
                "class": c, "search": search, "seconds": round(time.perf_counter() - t, 1), **metrics,
                "kept_fraction": module.kept_fraction, "macs": module.macs,
                "masked_balanced_accuracy": module.details["masked_balanced_accuracy"],
                "evaluations": module.details.get("evaluations", len(module.details.get("trace", [])) + 1),
                **end_stamp(stamp)})
            print(f"search {search} class {c}: kept {module.kept_fraction:.3f} ovr {metrics['ovr_accuracy']:.4f} "
                  f"({time.perf_counter() - t:.0f}s)", flush=True)
            save(result, path)


def plot(result) -> None:
    import matplotlib.pyplot as plt

    from neurotomy.report.figures import save_figure

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ax = axes[0]
    for i, model in enumerate(sorted({r["model"] for r in result["subsets"]})):
        rows = [r for r in result["subsets"] if r["model"] == model and r["criterion"] == "frequency"]
        ax.bar([r["class"] + 0.4 * i for r in rows], [r["size"] for r in rows], width=0.4,
               label=f"{model} (width {rows[0]['width']})")
    ax.set(xlabel="class", ylabel="features kept (99 % retention)", title="class feature subsets (frequency rule)")
    ax.legend()
    ax = axes[1]
    for model in sorted({r["model"] for r in result["heads"]}):
        rows = [r for r in result["heads"] if r["model"] == model and r["criterion"] == "frequency"]
        ax.plot([r["k"] for r in rows], [r["acc_subsets"] for r in rows], "o--", label=f"{model} before fine-tune")
        ax.plot([r["k"] for r in rows], [r["acc_subsets_finetuned"] for r in rows], "o-", label=f"{model} fine-tuned")
        ax.axhline(rows[0]["acc_full"], ls=":", color="grey")
    for r in result.get("head_epochs", []):
        ax.plot([r["k"]], [r["test_accuracy_by_epoch"][-1]], "k*", ms=9,
                label=f"{r['model']} head, {len(r['test_accuracy_by_epoch']) - 1} epochs" if r["k"] == 3 else None)
    for r in result.get("head_network", []) + result.get("head_network_full", []):
        ax.plot([r["k"]], [r["test_accuracy_by_epoch"][-1]], "gP", ms=9, label=f"{r['model']} whole network tuned")
    ax.set(xscale="log", xlabel="features per class k", ylabel="test accuracy", title="decomposed final layer")
    ax.legend(fontsize=7)
    ax = axes[2]
    rows = result["patching"]
    labels = [f"{r['target_class']}/{r['weak_kind'][:5]}" for r in rows]
    x = torch.arange(len(rows)).float()
    for j, (key, name) in enumerate((("precision", "precision"), ("recall", "recall"), ("other_acc", "other acc"))):
        ax.bar(x + 0.27 * j, [100 * (r[f"{key}_after"] - r[f"{key}_before"]) for r in rows], width=0.27, label=name)
    ax.set_xticks(x + 0.27, labels, rotation=45, fontsize=7)
    ax.axhline(0, color="black", lw=0.5)
    ax.set(ylabel="change after patching (pt)", title="patching weak models with ResNet-20 modules")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, RESULTS / "classes.png")
    if result["modules"]:
        fig, ax = plt.subplots(figsize=(6, 4))
        mods = result["modules"]
        ax.bar([m["class"] for m in mods], [m["kept_fraction"] for m in mods], label="filters kept")
        ax.plot([m["class"] for m in mods], [m["ovr_accuracy"] for m in mods], "ko-", label="one-vs-rest accuracy")
        ax.plot([m["class"] for m in mods], [m["balanced_accuracy"] for m in mods], "r^-", label="balanced accuracy")
        ax.set(xlabel="class", ylim=(0, 1.02), title="ResNet-20 class modules (threshold search)")
        ax.legend(fontsize=7)
        save_figure(fig, RESULTS / "classes_modules.png")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--out", default=str(RESULTS / "classes.json"))
    parser.add_argument("--module-dir", default="/tmp/neurotomy-class-modules")
    parser.add_argument("--patch-classes", type=int, nargs="+", default=[0, 4, 6])
    parser.add_argument("--compare-classes", type=int, nargs="+", default=[6])
    parser.add_argument("--parts", nargs="+", default=["subsets20", "modules_patch", "patching", "modules_rest",
                                                           "subsets56", "search", "subsets_by_depth", "plot"])
    parser.add_argument("--depth-models", nargs="+",
                        default=["zoo:resnet20-fmnist", "zoo:resnet56-fmnist", "zoo:vgg16-fmnist"],
                        help="models of the subsets_by_depth part (zoo:NAME or checkpoint paths)")
    parser.add_argument("--max-images", type=int, default=None,
                        help="subsets_by_depth: cap the fitting and test images (stratified) — for a smoke run")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the data subsets, the fine-tuning and the weak models")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--redo", action="store_true",
                        help="drop the records of the parts named in --parts first, so they are measured again "
                             "(by default a part skips what the results file already holds)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    path = Path(args.out)
    import json

    result = json.loads(path.read_text()) if path.exists() else {}
    result.setdefault("machine", f"{platform.machine()}, {os.cpu_count()} CPU cores, "
                                 f"{torch.get_num_threads()} threads, torch {torch.__version__}, no GPU")
    result["scale"] = __doc__.split("Scale ")[1].split("\n\n")[0].replace("\n", " ")
    result["paper"] = {"patching": PAPER_PATCHING, "heads": PAPER_HEADS}
    result["seed"] = args.seed  # of the parts this run measures; each record keeps its own stamp
    for key in ("subsets", "heads", "modules", "patching", "search_comparison", "subsets_by_depth", "heads_by_depth"):
        result.setdefault(key, [])
    train = load_dataset("fashion-mnist", root=args.root, split="train")
    test = load_dataset("fashion-mnist", root=args.root, split="test")
    train10k = stratified(train, 1000, seed=args.seed)  # 10k images
    test5k = stratified(test, 500, seed=args.seed)
    module_dir = Path(args.module_dir)
    if args.redo:
        drop_parts(result, args.parts, args.depth_models)
    strong = load_model("zoo:resnet20-fmnist")
    for part in args.parts:
        if part == "subsets20":
            run_subsets(result, path, train10k, test, ["zoo:resnet20-fmnist"], seed=args.seed)
        elif part == "subsets56":
            run_subsets(result, path, train10k, test, ["zoo:resnet56-fmnist"], seed=args.seed)
        elif part == "modules_patch":
            run_modules(result, path, strong, train10k, test5k, args.patch_classes, module_dir, seed=args.seed)
        elif part == "patching":
            run_patching(result, path, train, test5k, args.patch_classes, module_dir, seed=args.seed)
        elif part == "modules_rest":
            run_modules(result, path, strong, train10k, test5k, list(range(10)), module_dir, seed=args.seed)
            result["module_set"] = module_set(result)
            save(result, path)
        elif part == "search":
            run_search_comparison(result, path, strong, train10k, test5k, args.compare_classes, seed=args.seed)
        elif part == "heads_epochs":
            run_head_epochs(result, path, train10k, test, seed=args.seed)
        elif part == "heads_network":
            run_head_network(result, path, train10k, test, seed=args.seed)
        elif part == "heads_network_full":  # the same, fine-tuned on all 60k training images
            run_head_network(result, path, train10k, test, epochs=3, key="head_network_full", tune_data=train,
                             tune_name="all 60k training images", seed=args.seed)
        elif part == "subsets_by_depth":
            run_subsets_by_depth(result, path, train10k, test, args.depth_models, args.max_images, seed=args.seed)
        elif part == "plot":
            plot(result)
    save(result, path)


START = time.perf_counter()

if __name__ == "__main__":
    main()
