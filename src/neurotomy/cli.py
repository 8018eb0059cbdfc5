"""The ``neurotomy`` command: parse, call the API, print. No logic of its own.

User errors (:class:`NeurotomyError`) print one line and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from neurotomy.errors import NeurotomyError
from neurotomy.progress import set_quiet


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="seed for every random draw (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _data_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--data", required=required, help="dataset: digits, fashion-mnist, image-folder:PATH, "
                   "torchvision:NAME (default: the model's own dataset)")
    p.add_argument("--root", help="directory of the dataset files (default: shipped subset / NEUROTOMY_DATA)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--max-images", type=int, default=None, help="use at most this many images")
    _workers_arg(p)


def _workers_arg(p: argparse.ArgumentParser) -> None:
    def count(text: str) -> int:
        if not text.isdigit():
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of processes >= 0")
        return int(text)
    p.add_argument("--workers", type=count, default=0,
                   help="DataLoader worker processes reading images from disk (image folders, torchvision); "
                        "in-memory datasets are sliced directly (default 0)")


def _main_process() -> bool:
    """Under `accelerate launch` only the main process writes files and prints results."""
    from neurotomy.distributed import is_main_process
    return is_main_process()


def _explain_args(p: argparse.ArgumentParser, images: int, out: str, json: bool = True) -> None:
    """What the explanation commands share: how many images, method options, data, output."""
    p.add_argument("--n", type=int, default=images, help="test images, class-balanced (seeded)")
    p.add_argument("--layer", help="module name for CAM methods (default: the last feature map)")
    p.add_argument("--prune-fraction", type=float, default=None, help="pathway: share of units masked (0.85)")
    _data_args(p)
    p.add_argument("--out", help=out)
    if json:
        p.add_argument("--json", action="store_true")
    _common(p)


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2))


def _data_for(model, args, split: str):
    from neurotomy.data import load_dataset
    from neurotomy.errors import DataError

    name = args.data or getattr(getattr(model, "neurotomy_meta", None), "dataset", None)
    if not name:
        raise DataError("the model does not record its dataset; pass --data NAME")
    return load_dataset(name, root=args.root, split=split)


# ---------------------------------------------------------------- commands

def cmd_info(args) -> None:
    from neurotomy.models.summary import layer_table
    from neurotomy.report.tables import format_layer_table

    model, shape = _model_and_shape(args.model, args)
    table = layer_table(model, shape)
    if args.json:
        _print_json(table.to_dict())
    else:
        print(format_layer_table(table))


def _model_and_shape(spec: str, args):
    """A checkpoint/zoo model, or a fresh architecture built for ``--in-channels/--input-size``."""
    from neurotomy.models import ARCHITECTURES, build_model
    from neurotomy.models.zoo import load_model

    if spec.startswith("zoo:") or Path(spec).suffix == ".safetensors" or Path(spec).exists():
        model = load_model(spec)
        return model, model.neurotomy_meta.input_shape
    if spec in ARCHITECTURES or spec.startswith("torchvision:"):
        model = build_model(spec, args.in_channels, args.num_classes, args.input_size)
        return model.eval(), (args.in_channels, args.input_size, args.input_size)
    from neurotomy.errors import ModelError
    raise ModelError(f"{spec}: not a checkpoint, zoo:NAME or architecture; architectures: "
                     f"{', '.join(ARCHITECTURES)}")


def cmd_train(args) -> None:
    from neurotomy.checkpoint import save_checkpoint
    from neurotomy.train import TrainConfig, train_new_model

    config = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                         schedule=args.schedule, augment=args.augment, quiet=args.quiet,
                         max_images=args.max_images, grad_mask=args.grad_mask,
                         grad_mask_rule=args.grad_mask_rule, grad_mask_tau=args.grad_mask_tau,
                         grad_mask_q=args.grad_mask_q, grad_mask_sites=args.grad_mask_sites)
    if config.grad_mask:
        from neurotomy.grad_mask import GradMaskConfig
        GradMaskConfig(config.grad_mask_rule, config.grad_mask_tau, config.grad_mask_q,
                       config.grad_mask_sites)  # a bad value fails here, before any data is read
    model = train_new_model(args.model, args.data, args.root, config)
    if _main_process():
        path = save_checkpoint(model, model.neurotomy_meta, args.out)
        acc = model.neurotomy_meta.metrics["test"]["accuracy"]
        print(f"test accuracy {acc:.4f} — saved {path}")


def cmd_evaluate(args) -> None:
    from neurotomy.models.zoo import load_model
    from neurotomy.report.tables import format_metrics
    from neurotomy.train import evaluate

    model = load_model(args.model)
    data = _data_for(model, args, args.split)
    metrics = evaluate(model, data, batch_size=args.batch_size, max_images=args.max_images, quiet=args.quiet)
    if args.json:
        _print_json(metrics)
    else:
        print(format_metrics(metrics))


def cmd_zoo(args) -> None:
    from neurotomy.models.zoo import zoo_entries

    rows = zoo_entries()
    if args.json:
        _print_json(rows)
        return
    for row in rows:
        acc = "—" if row["test_accuracy"] is None else f"{row['test_accuracy']:.4f}"
        print(f"{row['name']:<24} {row['arch'] or '?':<10} test acc {acc:<7} {row['description']}")


def cmd_demo(args) -> None:
    from neurotomy.jobs.demo import run_demo
    from neurotomy.report.verdict import verdict_sentence

    report = run_demo(Path(args.out), root=args.root, quiet=args.quiet, seed=args.seed, budget=args.budget)
    print(f"{verdict_sentence(report['verdict'])}\nwrote {Path(args.out) / 'report.html'} and report.json")


def cmd_dissect(args) -> None:
    from neurotomy.models.zoo import load_model
    from neurotomy.jobs.budget import parse_budget
    from neurotomy.jobs.dissect import dissect
    from neurotomy.report.verdict import verdict_sentence

    budget = parse_budget(args.budget)  # a bad budget fails before the model loads
    model = load_model(args.model)
    report = dissect(model, _data_for(model, args, "train"), _data_for(model, args, "test"), out_dir=Path(args.out),
                     budget=budget, target_macs=args.target_macs, criterion=args.criterion, scope=args.scope,
                     seed=args.seed, quiet=args.quiet, model_name=args.model)
    print(f"{verdict_sentence(report['verdict'])}\nwrote {Path(args.out) / 'report.html'}, report.json and "
          f"pruned.safetensors")


def cmd_criteria(args) -> None:
    from neurotomy.scores import CRITERIA

    rows = [{"name": n, "data": c.needs_data, "paper": c.paper} for n, c in sorted(CRITERIA.items())]
    if args.json:
        _print_json(rows)
        return
    for r in rows:
        print(f"{r['name']:<16} {'data' if r['data'] else 'data-free':<10} {r['paper']}")


def cmd_score(args) -> None:
    from neurotomy.models.zoo import load_model
    from neurotomy.scores import get_criterion

    model = load_model(args.model)
    criterion = get_criterion(args.criterion)
    data = _data_for(model, args, "train") if criterion.needs_data else None
    scores = criterion(model, data, batch_size=args.batch_size, max_images=args.max_images,
                       seed=args.seed, quiet=args.quiet)
    if not _main_process():
        return
    path = scores.save(args.out)
    print(f"{args.criterion}: scored {sum(v.numel() for v in scores.values())} units in {len(scores)} "
          f"layers — wrote {path}")


def cmd_prune(args) -> None:
    from neurotomy.checkpoint import save_checkpoint
    from neurotomy.models.zoo import load_model
    from neurotomy.jobs.prune import PruneJob
    from neurotomy.report.tables import format_prune_record

    model = load_model(args.model)
    job = PruneJob(criterion=args.criterion, target_macs=args.target_macs, ratio=args.ratio,
                   target_params=args.target_params, scope=args.scope, min_channels=args.min_channels,
                   round_to=args.round_to, inner_only=args.inner_only,
                   ignored_layers=args.ignore, score_images=args.max_images,
                   finetune_epochs=args.finetune_epochs, finetune_lr=args.lr, distill=args.distill,
                   layers=args.layers, blocks=args.blocks, layer_threshold=args.layer_threshold,
                   steps=args.steps, finetune_between=args.finetune_between, sfp_epochs=args.sfp_epochs,
                   recalibrate_images=0 if args.no_recalibrate else args.recalibrate_images,
                   measure_latency=not args.no_latency, seed=args.seed, quiet=args.quiet)
    pruned, record = job.run(model, _data_for(model, args, "train"), _data_for(model, args, "test"))
    if not _main_process():
        return
    path = save_checkpoint(pruned, pruned.neurotomy_meta, args.out)
    record["checkpoint"] = str(path)
    if args.json:
        _print_json(record)
    else:
        print(format_prune_record(record))
        print(f"\nwrote {path}")


def cmd_finetune(args) -> None:
    from neurotomy.checkpoint import save_checkpoint
    from neurotomy.models.zoo import load_model
    from neurotomy.recover import finetune
    from neurotomy.train import evaluate

    model = load_model(args.model)
    teacher = load_model(args.teacher) if args.teacher else None
    train, test = _data_for(model, args, "train"), _data_for(model, args, "test")
    before = evaluate(model, test, quiet=args.quiet)["accuracy"]
    finetune(model, train, args.epochs, lr=args.lr, seed=args.seed, teacher=teacher, quiet=args.quiet,
             max_images=args.max_images)
    after = evaluate(model, test, quiet=args.quiet)
    model.neurotomy_meta.metrics["test"] = {"accuracy": after["accuracy"], "n": after["n"]}
    if _main_process():
        path = save_checkpoint(model, model.neurotomy_meta, args.out)
        print(f"accuracy {before:.4f} → {after['accuracy']:.4f} — wrote {path}")


def cmd_inspect(args) -> None:
    from neurotomy.jobs.inspect import inspect_model
    from neurotomy.models.zoo import load_model

    model = load_model(args.model)
    result = inspect_model(model, _data_for(model, args, args.split), Path(args.out), per_class=args.per_class,
                           k=args.k, threshold=args.layer_threshold, seed=args.seed, quiet=args.quiet)
    if not _main_process():
        return
    curve = result["modularity"]
    for layer, q, dq in zip(curve["layers"], curve["q"], result["delta_q"]):
        print(f"{layer:<24} Q {q:.3f}  ΔQ {dq:+.3f}")
    print(f"redundant by the rule (ΔQ < {args.layer_threshold} × mean rise per layer): "
          f"{', '.join(result['redundant_blocks']) or 'none'} — curve in {curve['seconds']:.1f}s; wrote {Path(args.out)}/")


def _explain_batch(model, args):
    """``--n`` class-balanced test images (seeded) and their labels."""
    from neurotomy.data.subsets import balanced_indices

    data = _data_for(model, args, "test")
    classes = len(getattr(data, "classes", [])) or int(data.targets.max()) + 1
    per_class = max(1, -(-args.n // classes))
    picks = balanced_indices(data.targets, per_class, seed=args.seed)[:args.n]
    return data.images[picks].float(), data.targets[picks], list(getattr(data, "classes", []))


def _method_opts(method: str, args) -> dict:
    from neurotomy.explain import METHODS, ExplainError

    if method not in METHODS:
        raise ExplainError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    wanted = {"layer": args.layer, "prune_fraction": args.prune_fraction, "seed": args.seed}
    return {k: v for k, v in wanted.items() if v is not None and k in METHODS[method].options()}


def _split_names(values: list[str]) -> list[str]:
    return [v for value in values for v in value.split(",") if v]


def cmd_explain(args) -> None:
    import torch

    from neurotomy.explain import METHODS, attribute
    from neurotomy.explain.figure import attribution_grid
    from neurotomy.models.zoo import load_model
    from neurotomy.report.figures import save_figure

    if args.list:
        for name, m in METHODS.items():
            print(f"{name:<22} {m.family:<9} {'signed' if m.signed else '≥ 0':<7} {m.paper}"
                  f"{'  options: ' + ', '.join(m.options()) if m.options() else ''}")
        return
    if not args.model or not args.out:
        from neurotomy.errors import NeurotomyError
        raise NeurotomyError("neurotomy explain needs MODEL and --out maps.png (or --list)")
    model = load_model(args.model)
    images, labels, classes = _explain_batch(model, args)
    target = args.target_class
    maps = {m: attribute(model, images, target, method=m, **_method_opts(m, args)) for m in _split_names(args.method)}
    with torch.no_grad():
        predicted = model(images).argmax(1)
    names = [classes[int(p)] if int(p) < len(classes) else str(int(p)) for p in predicted]
    fig = attribution_grid(images, maps, {m: METHODS[m].signed for m in maps}, names)
    path = save_figure(fig, args.out)
    print(f"explained {len(images)} images ({'class ' + str(target) if target is not None else 'predicted classes'})"
          f" with {', '.join(maps)} — wrote {path}")


def cmd_rate_explanations(args) -> None:
    from neurotomy.explain.rating import rate_explanations
    from neurotomy.files import write_json
    from neurotomy.models.zoo import load_model

    model = load_model(args.model)
    images, _, _ = _explain_batch(model, args)
    methods, metrics = _split_names(args.methods), _split_names(args.metrics)
    record = rate_explanations(model, images, methods=methods, metrics=metrics, seed=args.seed, quiet=args.quiet,
                               options={m: _method_opts(m, args) for m in methods})
    record["model"] = args.model
    if args.out:
        write_json(args.out, record)
    if args.json:
        _print_json({k: record[k] for k in ("scores", "better", "seconds", "n")})
        return
    print(f"{'method':<22}" + "".join(f"{m + ' (' + record['better'][m][0] + ')':>22}" for m in metrics))
    for method, row in record["scores"].items():
        print(f"{method:<22}" + "".join(f"{row[m]:>22.4f}" for m in metrics))
    print(f"{record['n']} test images; (l)ower / (h)igher is better" + (f" — wrote {args.out}" if args.out else ""))


def cmd_compare_reasons(args) -> None:
    from neurotomy.explain.rating import compare_reasons
    from neurotomy.files import write_json
    from neurotomy.models.zoo import load_model

    original, pruned = load_model(args.original), load_model(args.pruned)
    images, _, _ = _explain_batch(original, args)
    methods = _split_names(args.methods)
    record = compare_reasons(original, pruned, images, methods=methods, top=args.top, seed=args.seed,
                             quiet=args.quiet, options={m: _method_opts(m, args) for m in methods})
    record.update(original=args.original, pruned=args.pruned)
    if args.out:
        write_json(args.out, record)
    if args.json:
        _print_json(record)
        return
    print(f"{'method':<22}{'Spearman':>10}{'top-' + format(args.top, '.0%') + ' IoU':>14}")
    for method, r in record["methods"].items():
        print(f"{method:<22}{r['spearman']:>10.3f}{r['iou']:>14.3f}")
    print(f"{record['n']} test images; same predicted class {record['prediction_agreement']:.1%}"
          + (f" — wrote {args.out}" if args.out else ""))


def cmd_export(args) -> None:
    from neurotomy.export import export_onnx, onnxruntime_latency
    from neurotomy.models.zoo import load_model

    model = load_model(args.model)
    report = export_onnx(model, args.onnx, opset=args.opset, seed=args.seed)
    if args.compare:
        import tempfile

        shape = model.neurotomy_meta.input_shape
        with tempfile.TemporaryDirectory() as tmp:
            other = export_onnx(load_model(args.compare), Path(tmp) / "other.onnx", opset=args.opset)
            mine, theirs = onnxruntime_latency([args.onnx, other["path"]], shape)
        report["onnx_latency_ms"] = {"this": mine, "compare": theirs,
                                     "speedup_batch64": theirs["median_ms"] / mine["median_ms"]}
    if args.json:
        _print_json(report)
    else:
        print(f"wrote {report['path']} ({report['bytes'] / 1e6:.2f} MB, opset {report['opset']}); "
              f"onnxruntime matches PyTorch within {report['max_abs_diff']:.1e}")
        if args.compare:
            lat = report["onnx_latency_ms"]
            print(f"onnxruntime batch 64: {lat['this']['median_ms']:.2f} ms vs {lat['compare']['median_ms']:.2f} ms "
                  f"for {args.compare} ({lat['speedup_batch64']:.2f}× faster)")


# ---------------------------------------------------------------- parser

def cmd_subsets(args) -> None:
    from neurotomy.jobs.classes import subsets_job
    from neurotomy.files import write_json
    from neurotomy.models.zoo import load_model

    model = load_model(args.model)
    record = subsets_job(model, _data_for(model, args, "train"), _data_for(model, args, "test"),
                         criterion=args.criterion, k=args.k, retention=args.retention, ks=args.head_k,
                         finetune_epochs=args.finetune_epochs, seed=args.seed, quiet=args.quiet)
    if args.out:
        write_json(args.out, record)
    if args.json:
        _print_json(record)
        return
    print(f"smallest {args.criterion} subsets keeping {args.retention:.0%} of each class's precision and recall "
          f"({record['layer']}, width {record['width']}):")
    for r in record["subsets"]:
        print(f"  class {r['class']}: {r['size']:>3} / {r['width']}  features {r['features'][:8]}"
              f"{' …' if r['size'] > 8 else ''}")
    for h in record["heads"]:
        tuned = "" if h["acc_subsets_finetuned"] is None else f" → {h['acc_subsets_finetuned']:.4f} after fine-tune"
        print(f"head with k={h['k']} features per class ({h['macs']} of {h['macs_full']} MACs): test accuracy "
              f"{h['acc_subsets']:.4f}{tuned} (full layer {h['acc_full']:.4f})")


def cmd_split(args) -> None:
    from neurotomy.jobs.classes import parse_classes, split_job
    from neurotomy.models.zoo import load_model
    from neurotomy.models.anatomy import num_classes_of
    from neurotomy.surgery.class_modules import GAConfig

    model = load_model(args.model)
    train, test = _data_for(model, args, "train"), _data_for(model, args, "test")
    classes = parse_classes(args.classes, num_classes_of(model, train))
    ga = GAConfig(population=args.ga_population, generations=args.ga_generations)
    result = split_job(model, train, test, classes, args.out, criterion=args.criterion, search=args.search,
                       tolerance=args.tolerance, finetune_epochs=args.finetune_epochs, score_images=args.max_images,
                       ga=ga, seed=args.seed, quiet=args.quiet)
    result.pop("_modules")
    if args.json:
        _print_json(result)
        return
    for r in result["modules"]:
        print(f"class {r['class']}: kept {r['kept_fraction']:.1%} of filters, {r['macs'] / 1e6:.1f}M MACs, "
              f"one-vs-rest accuracy {r['ovr_accuracy']:.4f}, precision {r['precision']:.3f}, recall {r['recall']:.3f}")
    s = result["set"]
    print(f"coupling (mean Jaccard overlap) {s['coupling']:.3f}, cohesion {s['cohesion']:.3f} — wrote {Path(args.out)}/")


def cmd_patch(args) -> None:
    from neurotomy.checkpoint import save_checkpoint
    from neurotomy.jobs.classes import patch_job, resolve_checkpoint
    from neurotomy.models.zoo import load_model

    weak = load_model(args.weak)
    module = load_model(resolve_checkpoint(args.module))
    patched, record = patch_job(weak, module, _data_for(weak, args, "train"), _data_for(weak, args, "test"),
                                quiet=args.quiet)
    record["checkpoint"] = str(save_checkpoint(patched, patched.neurotomy_meta, args.out))
    if args.json:
        _print_json(record)
        return
    c = record["target_class"]
    print(f"class {c}: precision {record['precision_before']:.3f} → {record['precision_after']:.3f}, recall "
          f"{record['recall_before']:.3f} → {record['recall_after']:.3f}; other classes' accuracy "
          f"{record['other_acc_before']:.4f} → {record['other_acc_after']:.4f} — wrote {record['checkpoint']}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neurotomy", description="Score, prune, split and explain CNNs.",
        epilog="Several processes: `accelerate launch --multi_gpu --num_processes N -m neurotomy.cli COMMAND ...` "
               "(or torchrun; gloo on CPU). train/finetune then run data-parallel (DDP, each process trains on "
               "its shard of every global batch, BatchNorm uses global-batch statistics), score/inspect split "
               "the images and all-reduce their statistics; only the main process shows progress and writes files.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="per-layer table: output shape, params, MACs")
    p.add_argument("model", help="checkpoint, zoo:NAME, or an architecture name")
    p.add_argument("--in-channels", type=int, default=1)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--input-size", type=int, default=28)
    p.add_argument("--json", action="store_true")
    _common(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("train", help="train an architecture from scratch")
    p.add_argument("model", help="architecture name (see `neurotomy info`)")
    p.add_argument("--data", required=True)
    p.add_argument("--root")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--schedule", choices=["onecycle", "cosine", "constant"], default="onecycle")
    p.add_argument("--augment", choices=["auto", "crop-flip", "crop", "none"], default="auto")
    p.add_argument("--max-images", type=int, default=None)
    _workers_arg(p)
    p.add_argument("--out", required=True, help="checkpoint file to write (.safetensors)")
    p.add_argument("--grad-mask", action="store_true",
                   help="gradient mask (lateral inhibition, arXiv 2208.06918; our rule): zero weak "
                        "gradients at every ReLU output while training")
    p.add_argument("--grad-mask-rule", choices=["mean", "topq", "act-grad"], default="mean",
                   help="mean: keep |g| >= tau * mean |g| per sample and channel (default); topq: keep "
                        "the top q of each map; act-grad: as mean, scored by |activation * g|")
    p.add_argument("--grad-mask-tau", type=float, default=1.0, help="threshold factor of mean/act-grad")
    p.add_argument("--grad-mask-q", type=float, default=0.5, help="fraction of each map kept by topq")
    p.add_argument("--grad-mask-sites", choices=["relu", "conv", "pool"], default="relu",
                   help="which layers' output gradients are masked")
    _common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="accuracy, per-class precision/recall, confusion matrix")
    p.add_argument("model", help="checkpoint or zoo:NAME")
    _data_args(p)
    p.add_argument("--split", choices=["train", "test"], default="test")
    p.add_argument("--json", action="store_true")
    _common(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("zoo", help="list the shipped trained models")
    p.add_argument("--json", action="store_true")
    _common(p)
    p.set_defaults(func=cmd_zoo)

    p = sub.add_parser("criteria", help="list every unit-scoring criterion with its paper")
    p.add_argument("--json", action="store_true")
    _common(p)
    p.set_defaults(func=cmd_criteria)

    p = sub.add_parser("score", help="score every conv filter with one criterion")
    p.add_argument("model", help="checkpoint or zoo:NAME")
    p.add_argument("--criterion", required=True, help="see `neurotomy criteria`")
    _data_args(p)
    p.add_argument("--out", required=True, help="scores file to write (.npz)")
    _common(p)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("prune", help="remove the lowest-scoring filters, recover, measure")
    p.add_argument("model", help="checkpoint or zoo:NAME")
    p.add_argument("--criterion", default="l1", help="see `neurotomy criteria` (default l1)")
    amount = p.add_argument_group("amount (exactly one)")
    amount.add_argument("--target-macs", type=float, help="MACs reduction to reach, e.g. 0.5 removes half")
    amount.add_argument("--target-params", type=float, help="parameter reduction to reach")
    amount.add_argument("--ratio", type=float, help="fraction of channels to remove")
    amount.add_argument("--layers", help="remove residual blocks: modularity, random, last, or NAME,NAME")
    p.add_argument("--blocks", type=int, help="how many blocks --layers removes (modularity: default by rule)")
    p.add_argument("--layer-threshold", type=float, default=0.25,
                   help="modularity rule: remove blocks whose ΔQ < this × the curve's mean per-layer rise")
    p.add_argument("--scope", choices=["uniform", "global"], default="uniform")
    p.add_argument("--min-channels", type=int, default=1)
    p.add_argument("--round-to", type=int, default=None, help="keep channel counts multiples of this")
    p.add_argument("--inner-only", action="store_true", help="prune only channels not tied by residual adds")
    p.add_argument("--ignore", nargs="*", default=None, help="layers to keep whole (default: the classifier)")
    p.add_argument("--steps", type=int, default=1, help="reach --target-macs in this many re-scored cuts")
    p.add_argument("--finetune-between", type=int, default=0, help="fine-tune epochs between steps")
    p.add_argument("--sfp-epochs", type=int, default=0,
                   help="soft filter pruning: train this many epochs zeroing the lowest-L2 --ratio per layer")
    p.add_argument("--finetune-epochs", type=int, default=0)
    p.add_argument("--lr", type=float, default=0.01, help="fine-tune (and SFP) learning rate")
    p.add_argument("--distill", action="store_true", help="distil from the unpruned model while fine-tuning")
    p.add_argument("--recalibrate-images", type=int, default=4096)
    p.add_argument("--no-recalibrate", action="store_true", help="skip BatchNorm recalibration")
    p.add_argument("--no-latency", action="store_true", help="skip the CPU latency measurement")
    _data_args(p)
    p.add_argument("--out", required=True, help="pruned checkpoint to write")
    p.add_argument("--json", action="store_true")
    _common(p)
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("inspect", help="modularity curve, CKA heatmap and layer table (JSON + PNG)")
    p.add_argument("model", help="checkpoint or zoo:NAME")
    _data_args(p)
    p.add_argument("--split", choices=["train", "test"], default="test")
    p.add_argument("--per-class", type=int, default=100, help="probe samples per class")
    p.add_argument("--k", type=int, default=3, help="neighbours per sample in the kNN graph")
    p.add_argument("--layer-threshold", type=float, default=0.25,
                   help="redundant: ΔQ < this × the curve's mean per-layer rise")
    p.add_argument("--out", required=True, help="directory to write")
    _common(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("explain", help="attribution maps of test images, one column per method (PNG)")
    p.add_argument("model", nargs="?", help="checkpoint or zoo:NAME")
    p.add_argument("--method", nargs="+", default=["gradcam", "pathway"],
                   help="one or more methods (see --list), e.g. gradcam pathway")
    p.add_argument("--list", action="store_true", help="list the methods, their family and paper, and exit")
    p.add_argument("--target-class", type=int, default=None, help="explain this class (default: each prediction)")
    _explain_args(p, images=8, out="PNG to write", json=False)
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("rate-explanations", help="faithfulness metrics of attribution methods (table + JSON)")
    p.add_argument("model", help="checkpoint or zoo:NAME")
    p.add_argument("--methods", nargs="+", default=["gradient", "integrated_gradients", "gradcam", "pathway",
                                                    "sobel", "random"])
    p.add_argument("--metrics", nargs="+", default=["deletion", "insertion", "morf", "lerf"],
                   help="deletion insertion morf lerf sanity_cascading sanity_independent")
    _explain_args(p, images=64, out="JSON to write (scores and full curves)")
    p.set_defaults(func=cmd_rate_explanations)

    p = sub.add_parser("compare-reasons", help="do two models (original, pruned) point at the same pixels?")
    p.add_argument("original", help="checkpoint or zoo:NAME")
    p.add_argument("pruned", help="checkpoint or zoo:NAME")
    p.add_argument("--methods", nargs="+", default=["gradient", "gradcam", "pathway"])
    p.add_argument("--top", type=float, default=0.1, help="top fraction of pixels for the IoU")
    _explain_args(p, images=64, out="JSON to write")
    p.set_defaults(func=cmd_compare_reasons)

    p = sub.add_parser("export", help="write an ONNX file, verified against PyTorch in onnxruntime")
    p.add_argument("model", help="checkpoint or zoo:NAME")
    p.add_argument("--onnx", required=True, help="ONNX file to write")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--compare", help="another model (e.g. the unpruned one): onnxruntime latency side by side")
    p.add_argument("--json", action="store_true")
    _common(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("finetune", help="fine-tune a (pruned) model, optionally distilling from a teacher")
    p.add_argument("model", help="checkpoint or zoo:NAME")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--teacher", help="checkpoint or zoo:NAME to distil from")
    _data_args(p)
    p.add_argument("--out", required=True)
    _common(p)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("dissect", help="the whole job → report.html + report.json: layers, scores, prune, "
                       "dynamics, class subsets, explanations")
    p.add_argument("model", help="checkpoint or zoo:NAME")
    p.add_argument("--data", help="dataset (default: the model's own)")
    p.add_argument("--root", help="directory of the dataset files (default: shipped subset / NEUROTOMY_DATA)")
    p.add_argument("--out", required=True, help="directory to write report.html, report.json, pruned.safetensors")
    p.add_argument("--budget", default="fast", help="tiny, fast (default), full, or minutes (e.g. 4: fine-tune "
                   "epochs fitted to the time left)")
    p.add_argument("--target-macs", type=float, default=0.5, help="fraction of MACs to remove (default 0.5)")
    p.add_argument("--criterion", default="l1", help="criterion that drives the prune (default l1)")
    p.add_argument("--scope", choices=["uniform", "global"], default="uniform")
    _common(p)
    p.set_defaults(func=cmd_dissect)

    p = sub.add_parser("subsets", help="smallest penultimate-feature subset per class; decomposed final layer")
    p.add_argument("model")
    p.add_argument("--criterion", default="frequency", choices=["frequency", "contribution", "weight"],
                   help="feature ranking: Badola et al.'s top-k frequency (default), W·f contribution, weight")
    p.add_argument("--k", type=int, default=5, help="top-k of the frequency rule (default 5, the paper's)")
    p.add_argument("--retention", type=float, default=0.99,
                   help="keep this fraction of each class's precision and recall (default 0.99)")
    p.add_argument("--head-k", type=int, nargs="+", default=[5], help="features per class of the decomposed head(s)")
    p.add_argument("--finetune-epochs", type=int, default=3, help="Adam (lr 2e-4) epochs of the decomposed head")
    p.add_argument("--out", help="also write the record as JSON here")
    p.add_argument("--json", action="store_true")
    _data_args(p)
    _common(p)
    p.set_defaults(func=cmd_subsets)

    p = sub.add_parser("split", help="split a model into per-class modules (c vs rest sub-networks)")
    p.add_argument("model")
    p.add_argument("--classes", default="all", help="'all' or class indices, e.g. 0,3,7")
    p.add_argument("--out", required=True, help="directory for class{c}.safetensors and summary.json")
    p.add_argument("--criterion", default="class_activation", choices=["class_activation", "class_taylor"])
    p.add_argument("--search", default="threshold", choices=["threshold", "ga"],
                   help="one kept fraction for all layers (default) or the paper's genetic search")
    p.add_argument("--tolerance", type=float, default=0.99,
                   help="threshold search: keep ≥ this × the full model's c-vs-rest accuracy (default 0.99)")
    p.add_argument("--ga-population", type=int, default=16)
    p.add_argument("--ga-generations", type=int, default=10)
    p.add_argument("--finetune-epochs", type=int, default=1)
    p.add_argument("--json", action="store_true")
    _data_args(p)
    _common(p)
    p.set_defaults(func=cmd_split)

    p = sub.add_parser("patch", help="correct a weak model's class-c decisions with a strong model's module")
    p.add_argument("weak", help="the weak model (checkpoint or zoo:NAME)")
    p.add_argument("--module", required=True, help="a module from `neurotomy split`, e.g. modules/class3")
    p.add_argument("--out", required=True, help="the patched model's checkpoint")
    p.add_argument("--json", action="store_true")
    _data_args(p)
    _common(p)
    p.set_defaults(func=cmd_patch)

    p = sub.add_parser("demo", help="the main job on the shipped model and data: dissect zoo:resnet20-fmnist")
    p.add_argument("--out", default="demo-out")
    p.add_argument("--root", help="Fashion-MNIST directory (default: the shipped subset)")
    p.add_argument("--budget", default="fast", help="tiny, fast (default), full, or minutes")
    _common(p)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    set_quiet(getattr(args, "quiet", False))
    from neurotomy.data.batches import set_default_workers
    set_default_workers(getattr(args, "workers", 0))
    try:
        args.func(args)
        from neurotomy.distributed import shutdown
        shutdown()  # under accelerate launch: wait for the main process's writes, close the group
    except NeurotomyError as exc:
        print(f"neurotomy: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("neurotomy: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
