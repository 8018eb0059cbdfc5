"""Deployment: ``deploy`` — ONNX (and int8) files with their accuracy, size, latency and reasons."""

from __future__ import annotations

from neurotomy import validate
from neurotomy.cli.common import (COUNT, DATA, MODEL, OUT_DIR, POSITIVE, Checked, add_common, add_dataset_options,
                                  add_model_options, data_for, load_model_arg, print_json)
from neurotomy.data import dataset_specs

MAX_DROP = 1.0  # the API's default (neurotomy.jobs.deploy.MAX_DROP), repeated so --help loads no ONNX code


def add_parsers(sub) -> None:
    p = sub.add_parser("deploy", help="export to ONNX (and int8): accuracy, size, latency, and whether the deployed "
                                      "model keeps its reasons (occlusion, RISE through onnxruntime)")
    p.add_argument("model", type=MODEL, help="checkpoint or zoo:NAME (or any MODEL, see `info`)")
    add_model_options(p)
    p.add_argument("--data", type=DATA, help=f"dataset: {', '.join(dataset_specs())} (its training split calibrates "
                   "int8, its test split measures; default: the model's own dataset, from the root its checkpoint "
                   "records; said on stderr unless --quiet)")
    p.add_argument("--root", type=Checked(validate.existing_dir), help="directory of the dataset files")
    add_dataset_options(p)
    p.add_argument("--max-images", type=POSITIVE, default=None,
                   help="measure accuracy on at most this many test images (a class-balanced draw seeded by --seed)")
    p.add_argument("--out", required=True, type=OUT_DIR,
                   help="directory to write model.onnx, model.int8.onnx and deploy.json into (all or nothing)")
    p.add_argument("--int8", action="store_true",
                   help="also quantize statically to int8 (QDQ, per-channel weights, min-max calibration)")
    p.add_argument("--calibration-images", type=POSITIVE, default=256,
                   help="training images the int8 activation ranges are calibrated on (default 256)")
    p.add_argument("--threads", type=Checked(validate.positive_int, maximum=1024), default=1,
                   help="threads of the timed runs, PyTorch and onnxruntime alike (default 1: comparable on a "
                        "shared machine; give the deployment target's count)")
    p.add_argument("--latency-batch", type=Checked(validate.positive_int, maximum=65536), default=64,
                   help="the batch size timed besides batch 1 (default 64)")
    p.add_argument("--max-drop", type=Checked(validate.non_negative_float), default=MAX_DROP,
                   help=f"refuse an int8 model whose test accuracy falls more than this many points below the "
                        f"fp32 model's (default {MAX_DROP:g})")
    p.add_argument("--reason-images", type=COUNT, default=20,
                   help="class-balanced test images whose occlusion and RISE maps are compared (default 20; 0: skip)")
    p.add_argument("--json", action="store_true", help="print the whole record (deploy.json) instead of a table")
    add_common(p, device="where the PyTorch model's accuracy and maps are computed; ONNX runs on the CPU, and "
                         "every latency is CPU latency")
    p.set_defaults(func=cmd_deploy)


def cmd_deploy(args) -> None:
    from neurotomy.data.subsets import balanced_subset
    from neurotomy.jobs.deploy import deploy

    model = load_model_arg(args)
    train = data_for(model, args, "train")
    test = balanced_subset(data_for(model, args, "test"), args.max_images, args.seed)  # not the first N
    record = deploy(model, args.out, train, test, label=args.model, int8=args.int8,
                    calibration_images=args.calibration_images, threads=args.threads,
                    latency_batch=args.latency_batch, max_drop=args.max_drop, reason_images=args.reason_images,
                    eval_images=args.max_images, seed=args.seed, quiet=args.quiet, device=args.device)
    if args.json:
        print_json(record)
        return
    print(deployment_table(record))


def deployment_table(record: dict) -> str:
    """One line per format: accuracy, size, latency at batch 1 and B, reasons kept (Spearman)."""
    batch = record["settings"]["latency_batch"]
    methods = record["settings"]["methods"] if record["settings"]["reason_images"] else []
    head = (f"{'format':<10} {'accuracy':>8} {'size':>9} {'batch 1':>9} {f'batch {batch}':>9} "
            + "".join(f" {m + ' ρ':>12}" for m in methods))
    lines = [head]
    for row in record["rows"]:
        reasons = row.get("reasons_spearman") or {}
        lines.append(f"{row['format']:<10} {row['accuracy']:>8.2%} {row['bytes'] / 1e6:>7.2f}MB "
                     f"{row['latency_batch1_ms']:>7.2f}ms {row[f'latency_batch{batch}_ms']:>7.2f}ms"
                     + "".join(f" {reasons[m]:>12.3f}" if m in reasons else f" {'reference':>12}" for m in methods))
    load = record["timing"]["load_average"]
    files = ", ".join(sorted({r["path"] for r in record["rows"] if r["path"]}))
    lines.append(f"{record['timing']['threads']} thread(s), load average {load[0]:.2f} → {load[1]:.2f}; "
                 f"reasons vs the PyTorch model on {record['settings']['reason_images']} test images; wrote {files} "
                 "and deploy.json")
    return "\n".join(lines)
