"""Class modules: ``subsets``, ``split``, ``patch``."""

from __future__ import annotations

from pathlib import Path

from neurotomy import validate
from neurotomy.cli.common import (CHECKPOINT_OUT, COUNT, MODEL, OUT_DIR, OUT_FILE, POSITIVE, Checked, add_common,
                                  add_data, data_for, model_spec, print_json)
from neurotomy.cli.common import add_force, add_model_options, add_resume, load_model_arg, run_state
from neurotomy.device import place
from neurotomy.loading import load_model
from neurotomy.scores import CRITERIA
from neurotomy.scores.class_subsets import FEATURE_CRITERIA
from neurotomy.surgery.class_search import CLASS_SEARCHES, GAConfig


def add_parsers(sub) -> None:
    p = sub.add_parser("subsets", help="smallest penultimate-feature subset per class; decomposed final layer")
    p.add_argument("model", type=MODEL)
    add_model_options(p)
    p.add_argument("--criterion", default="frequency", choices=list(FEATURE_CRITERIA),
                   help="feature ranking: Badola et al.'s top-k frequency (default), W·f contribution, weight")
    p.add_argument("--k", type=POSITIVE, default=5, help="top-k of the frequency rule (default 5, the paper's)")
    p.add_argument("--retention", type=Checked(validate.fraction, interval="(0, 1]"), default=0.99,
                   help="keep this fraction of each class's precision and recall (default 0.99)")
    p.add_argument("--head-k", type=POSITIVE, nargs="+", default=[5], help="features per class of the decomposed head(s)")
    p.add_argument("--finetune-epochs", type=COUNT, default=3, help="Adam (lr 2e-4) epochs of the decomposed head")
    p.add_argument("--out", type=OUT_FILE, help="also write the record as JSON here")
    p.add_argument("--json", action="store_true")
    add_data(p)
    add_common(p)
    p.set_defaults(func=cmd_subsets)

    p = sub.add_parser("split", help="split a model into per-class modules (c vs rest sub-networks)")
    p.add_argument("model", type=MODEL)
    add_model_options(p)
    p.add_argument("--classes", default="all", type=Checked(validate.class_selection),
                   help="'all' or class indices, e.g. 0,3,7")
    p.add_argument("--out", required=True, type=OUT_DIR, help="directory for class{c}.safetensors and summary.json")
    add_resume(p)
    add_force(p, "keep every fine-tuned module, even one whose balanced accuracy on the calibration set fell "
                 "(by default the module before that fine-tune is kept, and said so)")
    p.add_argument("--criterion", default="class_activation", choices=CRITERIA.names(axis="class"))
    p.add_argument("--search", default="threshold", choices=list(CLASS_SEARCHES),
                   help="one kept fraction for all layers (default) or the paper's genetic search")
    p.add_argument("--tolerance", type=Checked(validate.fraction, interval="(0, 1]"), default=0.99,
                   help="threshold search: keep ≥ this × the full model's c-vs-rest accuracy (default 0.99)")
    p.add_argument("--ga-population", type=Checked(validate.int_between, low=2, high=10_000), default=16)
    p.add_argument("--ga-generations", type=POSITIVE, default=10)
    p.add_argument("--finetune-epochs", type=COUNT, default=1)
    p.add_argument("--json", action="store_true")
    add_data(p)
    add_common(p)
    p.set_defaults(func=cmd_split)

    p = sub.add_parser("patch", help="correct a weak model's class-c decisions with a strong model's module")
    p.add_argument("weak", type=MODEL, help="the weak model (checkpoint or zoo:NAME)")
    add_model_options(p)
    p.add_argument("--module", required=True, type=Checked(module_file),
                   help="a module from `neurotomy split`, e.g. modules/class3")
    p.add_argument("--out", required=True, type=CHECKPOINT_OUT, help="the patched model's checkpoint")
    add_force(p, "write the patched model even when it lowers the weak model's F1 of the class or its accuracy "
                 "on the calibration (training) data; by default such a patch is refused")
    p.add_argument("--json", action="store_true")
    add_data(p)
    add_common(p)
    p.set_defaults(func=cmd_patch)


def module_file(text: str, name: str | None = None) -> str:
    """A module checkpoint (``modules/class3`` finds ``modules/class3.safetensors``)."""
    from neurotomy.jobs.classes import resolve_checkpoint

    return model_spec(resolve_checkpoint(text) if text.strip() else text, name)


def cmd_subsets(args) -> None:
    from neurotomy.files import write_json
    from neurotomy.jobs.classes import subsets_job

    model = load_model_arg(args)
    test = data_for(model, args, "test")
    record = subsets_job(model, data_for(model, args, "train"), test,
                         criterion=args.criterion, k=args.k, retention=args.retention, ks=args.head_k,
                         finetune_epochs=args.finetune_epochs, seed=args.seed, quiet=args.quiet)
    if args.out:
        write_json(args.out, record)
    if args.json:
        print_json(record)
        return
    print(f"smallest {args.criterion} subsets keeping {args.retention:.0%} of each class's precision and recall "
          f"({record['layer']}, width {record['width']}):")
    names = list(getattr(test, "classes", None) or [])
    for r in record["subsets"]:
        name = f" ({names[r['class']]})" if r["class"] < len(names) and names[r["class"]] != str(r["class"]) else ""
        print(f"  class {r['class']}{name}: {r['size']:>3} / {r['width']}  features {r['features'][:8]}"
              f"{' …' if r['size'] > 8 else ''}")
    for h in record["heads"]:
        tuned = "" if h["acc_subsets_finetuned"] is None else f" → {h['acc_subsets_finetuned']:.4f} after fine-tune"
        print(f"head with k={h['k']} features per class ({h['macs']} of {h['macs_full']} MACs): test accuracy "
              f"{h['acc_subsets']:.4f}{tuned} (full layer {h['acc_full']:.4f})")


def cmd_split(args) -> None:
    from neurotomy.jobs.classes import parse_classes, split_job
    from neurotomy.models.anatomy import num_classes_of

    model = load_model_arg(args)
    train, test = data_for(model, args, "train"), data_for(model, args, "test")
    classes = parse_classes(args.classes, num_classes_of(model, train))
    ga = GAConfig(population=args.ga_population, generations=args.ga_generations)
    with run_state(args) as state:
        result = split_job(model, train, test, classes, args.out, criterion=args.criterion, search=args.search,
                           tolerance=args.tolerance, finetune_epochs=args.finetune_epochs,
                           score_images=args.max_images, ga=ga, seed=args.seed, quiet=args.quiet, force=args.force,
                           state=state)
    result.pop("_modules")
    if args.json:
        print_json(result)
        return
    for r in result["modules"]:
        print(f"class {r['class']}: kept {r['kept_fraction']:.1%} of filters, {r['macs'] / 1e6:.1f}M MACs, "
              f"one-vs-rest accuracy {r['ovr_accuracy']:.4f}, precision {r['precision']:.3f}, recall {r['recall']:.3f}")
    s = result["set"]
    print(f"coupling (mean Jaccard overlap) {s['coupling']:.3f}, cohesion {s['cohesion']:.3f} — wrote {Path(args.out)}/")


def cmd_patch(args) -> None:
    from neurotomy.checkpoint import save_checkpoint
    from neurotomy.jobs.classes import patch_job, resolve_checkpoint

    weak = load_model_arg(args, args.weak, main=True)
    module = place(load_model(resolve_checkpoint(args.module)), args.device)
    patched, record = patch_job(weak, module, data_for(weak, args, "train"), data_for(weak, args, "test"),
                                quiet=args.quiet, force=args.force)
    record["checkpoint"] = str(save_checkpoint(patched, patched.neurotomy_meta, args.out))
    if args.json:
        print_json(record)
        return
    c = record["target_class"]
    print(f"class {c}: precision {record['precision_before']:.3f} → {record['precision_after']:.3f}, recall "
          f"{record['recall_before']:.3f} → {record['recall_after']:.3f}; other classes' accuracy "
          f"{record['other_acc_before']:.4f} → {record['other_acc_after']:.4f} — wrote {record['checkpoint']}")
