"""Explanations: ``explain``, ``rate-explanations``, ``compare-reasons``."""

from __future__ import annotations

import argparse

from neurotomy import validate
from neurotomy.cli.common import MODEL, OUT_FILE, POSITIVE, Checked, add_common, add_data, data_for, print_json
from neurotomy.cli.common import add_model_options, load_model_arg
from neurotomy.errors import NeurotomyError, OptionError


def _methods():
    from neurotomy.explain import METHODS

    return METHODS


def _metrics():
    from neurotomy.explain.rating import METRICS

    return METRICS


METHOD_NAMES = Checked(validate.known_names, names=_methods, kind="method")


def add_parsers(sub) -> None:
    p = sub.add_parser("explain", help="attribution maps of test images, one column per method (PNG)")
    p.add_argument("model", nargs="?", type=MODEL, help="checkpoint or zoo:NAME")
    p.add_argument("--method", nargs="+", type=METHOD_NAMES, help="one or more methods (see --list); default: gradcam pathway")
    p.add_argument("--list", action="store_true", help="list the methods, their family and paper, and exit")
    p.add_argument("--target-class", type=Checked(validate.non_negative_int), default=None,
                   help="explain this class (default: each prediction)")
    _add_explain_options(p, images=8, out="PNG to write", json=False)
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("rate-explanations", help="faithfulness metrics of attribution methods (table + JSON)")
    p.add_argument("model", type=MODEL, help="checkpoint or zoo:NAME")
    p.add_argument("--methods", nargs="+", type=METHOD_NAMES, help="methods to rate (see explain --list); default: "
                   "gradient integrated_gradients gradcam pathway sobel random")
    p.add_argument("--metrics", nargs="+", type=Checked(validate.known_names, names=_metrics, kind="metric"),
                   help="deletion insertion morf lerf sanity_cascading sanity_independent; default: the first four")
    _add_explain_options(p, images=64, out="JSON to write (scores and full curves)")
    p.set_defaults(func=cmd_rate_explanations)

    p = sub.add_parser("compare-reasons", help="do two models (original, pruned) point at the same pixels?")
    p.add_argument("original", type=MODEL, help="checkpoint or zoo:NAME")
    p.add_argument("pruned", type=MODEL, help="checkpoint or zoo:NAME")
    p.add_argument("--methods", nargs="+", type=METHOD_NAMES, help="methods to compare; default: gradient gradcam pathway")
    p.add_argument("--top", type=Checked(validate.fraction, interval="(0, 1]"), default=0.1,
                   help="top fraction of pixels for the IoU")
    _add_explain_options(p, images=64, out="JSON to write")
    p.set_defaults(func=cmd_compare_reasons)


def _add_explain_options(p: argparse.ArgumentParser, images: int, out: str, json: bool = True) -> None:
    """What the explanation commands share: how many images, method options, data, output."""
    p.add_argument("--n", type=POSITIVE, default=images, help="test images, class-balanced (seeded)")
    p.add_argument("--layer", type=Checked(validate.identifier, kind="layer name"),
                   help="module name for CAM methods (default: the last feature map)")
    p.add_argument("--prune-fraction", type=Checked(validate.fraction, interval="[0, 1)"), default=None,
                   help="pathway: share of units masked (0.85)")
    add_model_options(p)
    add_data(p)
    p.add_argument("--out", type=OUT_FILE, help=out)
    if json:
        p.add_argument("--json", action="store_true")
    add_common(p)


def _explain_batch(model, args):
    """``--n`` class-balanced test images (seeded) and their labels; ``--layer`` must name a module."""
    from neurotomy.data import batch_at
    from neurotomy.data.subsets import balanced_indices

    if args.layer is not None and args.layer not in dict(model.named_modules()):
        raise OptionError(f"--layer: the model has no layer {args.layer!r}; see `neurotomy info MODEL` "
                          "for layer names")
    data = data_for(model, args, "test")  # any dataset: read through the protocol (neurotomy.data.dataset)
    per_class = max(1, -(-args.n // len(data.classes)))
    picks = balanced_indices(data.targets, per_class, seed=args.seed)[:args.n]
    images, labels = batch_at(data, picks)
    return images.float(), labels, list(data.classes)


def _method_opts(method: str, args) -> dict:
    """The method's options among ``--layer``, ``--prune-fraction`` and ``--seed``; an unknown method fails."""
    from neurotomy.explain import METHODS

    wanted = {"layer": args.layer, "prune_fraction": args.prune_fraction, "seed": args.seed}
    options = METHODS[method].options()
    return {k: v for k, v in wanted.items() if v is not None and k in options}


def _split_names(values: list) -> list[str]:
    """Flat names from defaults (``"a,b"`` strings) or checked options (lists of names)."""
    return [v for value in values for v in (value if isinstance(value, list) else value.split(",")) if v]


def cmd_explain(args) -> None:
    import torch

    from neurotomy.explain import METHODS, attribute
    from neurotomy.explain.figure import attribution_grid
    from neurotomy.explain.rating import SHOWN_METHODS, default_methods
    from neurotomy.report.figures import save_figure

    if args.list:
        for name, m in METHODS.items():
            print(f"{name:<22} {m.family:<9} {'signed' if m.signed else '≥ 0':<7} {m.paper}"
                  f"{'  options: ' + ', '.join(m.options()) if m.options() else ''}")
        return
    if not args.model or not args.out:
        raise NeurotomyError("neurotomy explain needs MODEL and --out maps.png (or --list)")
    model = load_model_arg(args)
    images, _, classes = _explain_batch(model, args)
    target = args.target_class
    methods = _split_names(args.method) if args.method else default_methods(SHOWN_METHODS, model)
    maps = {m: attribute(model, images, target, method=m, **_method_opts(m, args)) for m in methods}
    with torch.no_grad():
        predicted = model(images).argmax(1)
    names = [classes[int(p)] if int(p) < len(classes) else str(int(p)) for p in predicted]
    fig = attribution_grid(images, maps, {m: METHODS[m].signed for m in maps}, names)
    path = save_figure(fig, args.out)
    print(f"explained {len(images)} images ({'class ' + str(target) if target is not None else 'predicted classes'})"
          f" with {', '.join(maps)} — wrote {path}")


def cmd_rate_explanations(args) -> None:
    from neurotomy.explain.rating import RATED_METHODS, RATED_METRICS, default_methods, rate_explanations
    from neurotomy.files import write_json

    model = load_model_arg(args)
    images, _, _ = _explain_batch(model, args)
    methods = _split_names(args.methods) if args.methods else default_methods(RATED_METHODS, model)
    metrics = _split_names(args.metrics or RATED_METRICS)
    record = rate_explanations(model, images, methods=methods, metrics=metrics, seed=args.seed, quiet=args.quiet,
                               options={m: _method_opts(m, args) for m in methods})
    record["model"] = args.model
    if args.out:
        write_json(args.out, record)
    if args.json:
        print_json({k: record[k] for k in ("scores", "better", "seconds", "n")})
        return
    print(f"{'method':<22}" + "".join(f"{m + ' (' + record['better'][m][0] + ')':>22}" for m in metrics))
    for method, row in record["scores"].items():
        print(f"{method:<22}" + "".join(f"{row[m]:>22.4f}" for m in metrics))
    print(f"{record['n']} test images; (l)ower / (h)igher is better" + (f" — wrote {args.out}" if args.out else ""))


def cmd_compare_reasons(args) -> None:
    from neurotomy.explain.rating import COMPARED_METHODS, compare_reasons, default_methods
    from neurotomy.files import write_json
    from neurotomy.loading import check_compatible

    original, pruned = load_model_arg(args, args.original, main=True), load_model_arg(args, args.pruned)
    check_compatible(original, pruned, args.original, args.pruned)
    images, _, _ = _explain_batch(original, args)
    methods = _split_names(args.methods) if args.methods else default_methods(COMPARED_METHODS, original, pruned)
    record = compare_reasons(original, pruned, images, methods=methods, top=args.top, seed=args.seed,
                             quiet=args.quiet, options={m: _method_opts(m, args) for m in methods})
    record.update(original=args.original, pruned=args.pruned)
    if args.out:
        write_json(args.out, record)
    if args.json:
        print_json(record)
        return
    print(f"{'method':<22}{'Spearman':>10}{'top-' + format(args.top, '.0%') + ' IoU':>14}")
    for method, r in record["methods"].items():
        print(f"{method:<22}{r['spearman']:>10.3f}{r['iou']:>14.3f}")
    print(f"{record['n']} test images; same predicted class {record['prediction_agreement']:.1%}"
          + (f" — wrote {args.out}" if args.out else ""))
