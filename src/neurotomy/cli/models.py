"""Models: ``info``, ``train``, ``evaluate``, ``zoo``, ``export``, ``finetune``."""

from __future__ import annotations

from pathlib import Path

from neurotomy import validate
from neurotomy.cli.common import (CHECKPOINT_OUT, DATA, MODEL, OUT_FILE, POSITIVE, RATE, Checked, add_common, add_data,
                                  add_dataset_options, add_workers, data_for, dataset_options, print_json)
from neurotomy.cli.common import add_model_options, add_resume, load_model_arg, run_state
from neurotomy.cli.distill import add_distill_options
from neurotomy.data import SPLITS, dataset_specs
from neurotomy.distributed import is_main_process
from neurotomy.errors import ModelError
from neurotomy.export import OPSETS
from neurotomy.grad_mask import RULES, SITE_KINDS, GradMaskConfig
from neurotomy.train import AUGMENTATIONS, OPTIMIZERS, PRECISIONS, SCHEDULES


def add_parsers(sub) -> None:
    p = sub.add_parser("info", help="per-layer table: output shape, params, MACs")
    p.add_argument("model", type=MODEL, help="zoo:NAME, a checkpoint, torchvision:NAME, timm:NAME, "
                   "path/to/file.py:factory, or an architecture name")
    add_model_options(p)
    p.add_argument("--json", action="store_true")
    add_common(p, device="counting runs on the CPU whatever the device (the device is only checked)")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("train", help="train an architecture from scratch")
    p.add_argument("model", type=MODEL, help="architecture name (see `neurotomy info`)")
    p.add_argument("--data", required=True, type=DATA, help=f"dataset: {', '.join(dataset_specs())}")
    p.add_argument("--root", type=Checked(validate.existing_dir))
    add_dataset_options(p)
    p.add_argument("--epochs", type=POSITIVE, default=15)
    p.add_argument("--lr", type=RATE, default=None,
                   help="peak learning rate (default: 0.1 for neurotomy's architectures, 0.01 for torchvision, "
                        "timm and your own models); a diverging loss stops the run and says so")
    p.add_argument("--batch-size", type=POSITIVE, default=128)
    p.add_argument("--schedule", choices=SCHEDULES, default="onecycle")
    p.add_argument("--augment", choices=AUGMENTATIONS, default="auto")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd", help="sgd (Nesterov) or adamw (transformers)")
    p.add_argument("--weight-decay", type=Checked(validate.non_negative_float), default=5e-4)
    p.add_argument("--label-smoothing", type=Checked(validate.fraction, interval="[0, 1)"), default=0.0)
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="bf16: autocast forward (fp32 weights)")
    p.add_argument("--teacher", type=MODEL, help="checkpoint or zoo:NAME to distil from while training")
    add_distill_options(p, temperature=4.0, alpha=0.5)
    p.add_argument("--max-images", type=POSITIVE, default=None)
    add_workers(p)
    p.add_argument("--out", required=True, type=CHECKPOINT_OUT, help="checkpoint file to write (.safetensors)")
    add_resume(p)
    p.add_argument("--grad-mask", action="store_true",
                   help="gradient mask (lateral inhibition, arXiv 2208.06918; our rule): zero weak "
                        "gradients at every ReLU output while training")
    p.add_argument("--grad-mask-rule", choices=list(RULES), default="mean",
                   help="mean: keep |g| >= tau * mean |g| per sample and channel (default); topq: keep "
                        "the top q of each map; act-grad: as mean, scored by |activation * g|")
    p.add_argument("--grad-mask-tau", type=Checked(validate.non_negative_float), default=1.0,
                   help="threshold factor of mean/act-grad")
    p.add_argument("--grad-mask-q", type=Checked(validate.fraction, interval="(0, 1]"), default=0.5,
                   help="fraction of each map kept by topq")
    p.add_argument("--grad-mask-sites", choices=list(SITE_KINDS), default="relu",
                   help="which layers' output gradients are masked")
    add_common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="accuracy, per-class precision/recall, confusion matrix")
    p.add_argument("model", type=MODEL, help="checkpoint or zoo:NAME (or any MODEL, see `info`)")
    add_model_options(p)
    add_data(p)
    p.add_argument("--split", choices=SPLITS, default="test")
    p.add_argument("--json", action="store_true")
    add_common(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("zoo", help="list the shipped trained models")
    p.add_argument("--json", action="store_true")
    add_common(p, device=False)
    p.set_defaults(func=cmd_zoo)

    p = sub.add_parser("export", help="write an ONNX file, verified against PyTorch in onnxruntime")
    p.add_argument("model", type=MODEL, help="checkpoint or zoo:NAME (or any MODEL, see `info`)")
    add_model_options(p)
    p.add_argument("--onnx", required=True, type=OUT_FILE, help="ONNX file to write")
    p.add_argument("--opset", type=Checked(validate.int_between, low=OPSETS[0], high=OPSETS[-1]), default=17)
    p.add_argument("--compare", type=MODEL, help="another model (e.g. the unpruned one): onnxruntime latency side by side")
    p.add_argument("--json", action="store_true")
    add_common(p, device="ONNX export and its onnxruntime check run on the CPU whatever the device (the device "
                         "is only checked)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("finetune", help="fine-tune a (pruned) model, optionally distilling from a teacher")
    p.add_argument("model", type=MODEL, help="checkpoint or zoo:NAME (or any MODEL, see `info`)")
    add_model_options(p)
    p.add_argument("--epochs", type=POSITIVE, default=3)
    p.add_argument("--lr", type=RATE, default=0.01)
    p.add_argument("--finetune-batch", type=POSITIVE, default=128,
                   help="fine-tune batch size (--batch-size is the batch that evaluates)")
    p.add_argument("--teacher", type=MODEL, help="checkpoint or zoo:NAME to distil from")
    add_distill_options(p, temperature=2.0, alpha=0.9)
    add_data(p)
    p.add_argument("--out", required=True, type=CHECKPOINT_OUT)
    add_resume(p)
    add_common(p)
    p.set_defaults(func=cmd_finetune)


def cmd_info(args) -> None:
    from neurotomy.models.summary import layer_table
    from neurotomy.report.tables import format_layer_table

    args.device = None  # MACs and params are counted on the CPU
    model, shape = _model_and_shape(args.model, args)
    try:
        table = layer_table(model, shape)
    except RuntimeError as exc:  # e.g. an input smaller than the architecture's kernels and pools
        raise ModelError(f"{args.model} cannot run on {shape[0]}×{shape[1]}×{shape[2]} inputs "
                         f"({str(exc).strip().splitlines()[0]}); try a larger --input-size") from None
    if args.json:
        print_json(table.to_dict())
    else:
        print(format_layer_table(table))


def _model_and_shape(spec: str, args):
    """MODEL (:func:`neurotomy.loading.load_model`: a checkpoint, zoo:NAME, torchvision:/timm:,
    file.py:factory or an architecture built for the model options) and its input shape."""
    model = load_model_arg(args)
    return model, model.neurotomy_meta.input_shape


def cmd_train(args) -> None:
    from neurotomy.checkpoint import save_checkpoint
    from neurotomy.jobs.new_model import train_new_model
    from neurotomy.train import TrainConfig

    config = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                         schedule=args.schedule, augment=args.augment, quiet=args.quiet,
                         optimizer=args.optimizer, weight_decay=args.weight_decay,
                         label_smoothing=args.label_smoothing, precision=args.precision,
                         max_images=args.max_images, grad_mask=args.grad_mask,
                         grad_mask_rule=args.grad_mask_rule, grad_mask_tau=args.grad_mask_tau,
                         grad_mask_q=args.grad_mask_q, grad_mask_sites=args.grad_mask_sites,
                         distill_temperature=args.distill_temperature, distill_alpha=args.distill_alpha)
    if config.grad_mask:
        GradMaskConfig(config.grad_mask_rule, config.grad_mask_tau, config.grad_mask_q,
                       config.grad_mask_sites)  # a bad value fails here, before any data is read
    teacher = load_model_arg(args, args.teacher) if args.teacher else None
    with run_state(args) as state:
        model = train_new_model(args.model, args.data, args.root, config, data_options=dataset_options(args),
                                state=state, device=args.device, teacher=teacher)
        if is_main_process():  # under `accelerate launch` only the main process writes and prints
            path = save_checkpoint(model, model.neurotomy_meta, args.out)
    if is_main_process():
        acc = model.neurotomy_meta.metrics["test"]["accuracy"]
        print(f"test accuracy {acc:.4f} — saved {path}")


def cmd_evaluate(args) -> None:
    from neurotomy.data.subsets import balanced_subset
    from neurotomy.report.tables import format_metrics
    from neurotomy.train import evaluate

    model = load_model_arg(args)
    data = balanced_subset(data_for(model, args, args.split), args.max_images, args.seed)  # not the first N
    metrics = evaluate(model, data, batch_size=args.batch_size, max_images=args.max_images, quiet=args.quiet)
    if args.json:
        print_json(metrics)
    else:
        print(format_metrics(metrics))


def cmd_zoo(args) -> None:
    from neurotomy.loading.zoo import zoo_entries

    rows = zoo_entries()
    if args.json:
        print_json(rows)
        return
    for row in rows:
        acc = "—" if row["test_accuracy"] is None else f"{row['test_accuracy']:.4f}"
        print(f"{row['name']:<24} {row['arch'] or '?':<10} test acc {acc:<7} {row['description']}")


def cmd_export(args) -> None:
    from neurotomy.export import export_onnx, onnxruntime_latency
    from neurotomy.loading import check_compatible
    from neurotomy.report.tables import speed_phrase

    args.device = None  # ONNX export and onnxruntime are CPU work: the models stay on the CPU
    model = load_model_arg(args)
    compare = load_model_arg(args, args.compare) if args.compare else None  # a bad --compare fails before anything is written
    if compare is not None:
        check_compatible(model, compare, args.model, f"--compare {args.compare}")
    report = export_onnx(model, args.onnx, opset=args.opset, seed=args.seed)
    if compare is not None:
        import tempfile

        shape = model.neurotomy_meta.input_shape
        with tempfile.TemporaryDirectory() as tmp:
            other = export_onnx(compare, Path(tmp) / "other.onnx", opset=args.opset)
            mine, theirs = onnxruntime_latency([args.onnx, other["path"]], shape)
        report["onnx_latency_ms"] = {"this": mine, "compare": theirs,
                                     "speedup_batch64": theirs["median_ms"] / mine["median_ms"]}
    if args.json:
        print_json(report)
    else:
        print(f"wrote {report['path']} ({report['bytes'] / 1e6:.2f} MB, opset {report['opset']}); "
              f"onnxruntime matches PyTorch within {report['max_abs_diff']:.1e}")
        if args.compare:
            lat = report["onnx_latency_ms"]
            print(f"onnxruntime batch 64: {lat['this']['median_ms']:.2f} ms vs {lat['compare']['median_ms']:.2f} ms "
                  f"for {args.compare} ({speed_phrase(lat['speedup_batch64'])})")


def cmd_finetune(args) -> None:
    from neurotomy.checkpoint import save_checkpoint
    from neurotomy.loading import check_compatible
    from neurotomy.recover import finetune
    from neurotomy.train import evaluate

    model = load_model_arg(args)
    teacher = load_model_arg(args, args.teacher) if args.teacher else None
    if teacher is not None:
        check_compatible(model, teacher, args.model, f"--teacher {args.teacher}")
    train, test = data_for(model, args, "train"), data_for(model, args, "test")
    before = evaluate(model, test, quiet=args.quiet)["accuracy"]
    with run_state(args) as state:
        finetune(model, train, args.epochs, lr=args.lr, batch_size=args.finetune_batch, seed=args.seed,
                 teacher=teacher, quiet=args.quiet, max_images=args.max_images, state=state,
                 distill_temperature=args.distill_temperature, distill_alpha=args.distill_alpha)
        after = evaluate(model, test, quiet=args.quiet)
        model.neurotomy_meta.metrics["test"] = {"accuracy": after["accuracy"], "n": after["n"]}
        if is_main_process():
            path = save_checkpoint(model, model.neurotomy_meta, args.out)
    if is_main_process():
        print(f"accuracy {before:.4f} → {after['accuracy']:.4f} — wrote {path}")
