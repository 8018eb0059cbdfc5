"""Scoring and pruning: ``criteria``, ``score``, ``prune``, ``inspect``."""

from __future__ import annotations

from pathlib import Path

from neurotomy import validate
from neurotomy.cli.common import (CHECKPOINT_OUT, COUNT, MODEL, OUT_DIR, POSITIVE, RATE, SCORES_OUT, Checked,
                                  add_common, add_data, data_for, print_json)
from neurotomy.cli.common import add_force, add_model_options, add_resume, load_model_arg, run_state
from neurotomy.cli.distill import add_distill_options
from neurotomy.data import SPLITS
from neurotomy.distributed import is_main_process
from neurotomy.dynamics.layer_rules import LAYER_RULES
from neurotomy.surgery.planner import SCOPES


def _criteria():
    from neurotomy.scores import CRITERIA, TRANSFORMER_CRITERIA

    return [*CRITERIA.names(), *(n for n in TRANSFORMER_CRITERIA.names() if n not in CRITERIA)]


def _latency_runtimes():
    from neurotomy.jobs import latency_runtimes  # noqa: F401  (registers onnx and onnx-int8)
    from neurotomy.surgery.latency import LATENCY_RUNTIMES

    return LATENCY_RUNTIMES.names()


CRITERION = Checked(validate.known_name, names=_criteria, kind="criterion")
LAYER = Checked(validate.identifier, kind="layer name")


def add_parsers(sub) -> None:
    p = sub.add_parser("criteria", help="list every unit-scoring criterion (conv filters; transformer heads, "
                                       "neurons, embedding channels) with its paper")
    p.add_argument("--json", action="store_true")
    add_common(p, device=False)
    p.set_defaults(func=cmd_criteria)

    p = sub.add_parser("score", help="score every conv filter with one criterion")
    p.add_argument("model", type=MODEL, help="checkpoint or zoo:NAME (or any MODEL, see `info`)")
    add_model_options(p)
    p.add_argument("--criterion", required=True, type=CRITERION, help="see `neurotomy criteria`")
    p.add_argument("--units", choices=("head", "neuron", "embedding"),
                   help="a transformer's units to score (default: its conv filters)")
    add_data(p)
    p.add_argument("--out", required=True, type=SCORES_OUT,
                   help="scores file to write (.npz is appended when the name lacks it)")
    add_common(p)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("prune", help="remove the lowest-scoring filters, recover, measure")
    p.add_argument("model", type=MODEL, help="checkpoint or zoo:NAME (or any MODEL, see `info`)")
    add_model_options(p)
    p.add_argument("--criterion", default="l1", type=CRITERION, help="see `neurotomy criteria` (default l1)")
    amount = p.add_argument_group("amount (exactly one)")
    reduction = Checked(validate.fraction, interval="(0, 1)")
    amount.add_argument("--target-macs", type=reduction, help="MACs reduction to reach, e.g. 0.5 removes half")
    amount.add_argument("--target-params", type=reduction, help="parameter reduction to reach")
    amount.add_argument("--ratio", type=reduction, help="fraction of channels to remove")
    amount.add_argument("--layers", type=LAYER, help="remove blocks (residual, transformer, or a plain net's conv blocks): "
                        f"{', '.join(LAYER_RULES)}, or NAME,NAME")
    add_latency_target(p, amount)
    p.add_argument("--blocks", type=POSITIVE, help="how many blocks --layers removes (modularity: default by rule)")
    p.add_argument("--layer-threshold", type=Checked(validate.non_negative_float), default=0.25,
                   help="modularity rule: remove blocks whose ΔQ < this × the curve's mean per-layer rise")
    p.add_argument("--units", type=Checked(validate.identifier, kind="unit kinds"),
                   help="transformers: heads, neurons, embedding or all, comma-separated (default heads,neurons)")
    p.add_argument("--scope", choices=list(SCOPES), default="uniform")
    p.add_argument("--min-channels", type=POSITIVE, default=1)
    p.add_argument("--round-to", type=POSITIVE, default=None, help="keep channel counts multiples of this")
    p.add_argument("--inner-only", action="store_true", help="prune only channels not tied by residual adds")
    p.add_argument("--ignore", nargs="*", type=LAYER, default=None, help="layers to keep whole (default: the classifier)")
    p.add_argument("--steps", type=POSITIVE, default=1, help="reach --target-macs in this many re-scored cuts")
    p.add_argument("--finetune-between", type=COUNT, default=0, help="fine-tune epochs between steps")
    p.add_argument("--sfp-epochs", type=COUNT, default=0,
                   help="soft filter pruning: train this many epochs zeroing the lowest-L2 --ratio per layer")
    p.add_argument("--finetune-epochs", type=COUNT, default=0)
    p.add_argument("--lr", type=RATE, default=0.01, help="fine-tune (and SFP) learning rate")
    p.add_argument("--finetune-batch", type=POSITIVE, default=128,
                   help="fine-tune batch size (--batch-size is the batch that scores and evaluates)")
    p.add_argument("--distill", action="store_true", help="distil from the unpruned model while fine-tuning")
    add_distill_options(p, temperature=2.0, alpha=0.9)
    p.add_argument("--recalibrate-images", type=COUNT, default=4096)
    p.add_argument("--no-recalibrate", action="store_true", help="skip BatchNorm recalibration")
    p.add_argument("--reconstruct", action="store_true",
                   help="refit each layer after the cut to the original's outputs by least squares (no training)")
    p.add_argument("--reconstruct-images", type=POSITIVE, default=2048, help="training images --reconstruct fits on")
    p.add_argument("--no-latency", action="store_true", help="skip the CPU latency measurement")
    add_data(p)
    p.add_argument("--out", required=True, type=CHECKPOINT_OUT, help="pruned checkpoint to write")
    add_resume(p)
    add_force(p, "keep the fine-tuned model even when fine-tuning made it less accurate than before "
                 "(by default the better of the two is kept, and the record says which)")
    p.add_argument("--json", action="store_true")
    add_common(p)
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("inspect", help="modularity curve, CKA heatmap and layer table (JSON + PNG)")
    p.add_argument("model", type=MODEL, help="checkpoint or zoo:NAME (or any MODEL, see `info`)")
    add_model_options(p)
    add_data(p)
    p.add_argument("--split", choices=SPLITS, default="test")
    p.add_argument("--per-class", type=POSITIVE, default=100, help="probe samples per class")
    p.add_argument("--k", type=POSITIVE, default=3, help="neighbours per sample in the kNN graph")
    p.add_argument("--layer-threshold", type=Checked(validate.non_negative_float), default=0.25,
                   help="redundant: ΔQ < this × the curve's mean per-layer rise")
    p.add_argument("--out", required=True, type=OUT_DIR, help="directory to write")
    add_common(p)
    p.set_defaults(func=cmd_inspect)


def add_latency_target(p, amount) -> None:
    """``--target-speedup`` / ``--target-latency-ms`` (in the amount group) and how the latency is measured."""
    amount.add_argument("--target-speedup", type=Checked(validate.positive_float),
                        help="prune until this many times faster (> 1), measured on this machine (CNN filters by a "
                             "latency table; a transformer by timing its cut)")
    amount.add_argument("--target-latency-ms", type=Checked(validate.positive_float),
                        help="prune to this many ms per batch of --latency-batch images")
    latency = p.add_argument_group("latency target")
    latency.add_argument("--latency-batch", type=Checked(validate.positive_int, maximum=65536), default=64,
                         help="batch size the latency is measured at (default 64)")
    latency.add_argument("--threads", type=Checked(validate.positive_int, maximum=1024), default=None,
                         help="threads of the deployment, for the latency table and the timing (default: torch's; "
                              "1 on a shared machine)")
    latency.add_argument("--latency-runtime", type=Checked(validate.known_name, names=_latency_runtimes,
                                                           kind="latency runtime"), default="torch",
                         help="runtime the latency table is measured in: torch, onnx or onnx-int8 (default torch)")
    latency.add_argument("--latency-cache", type=OUT_DIR, default=None,
                         help="latency table cache directory (default ~/.cache/neurotomy/latency or "
                              "NEUROTOMY_LATENCY_CACHE)")


def cmd_criteria(args) -> None:
    from neurotomy.scores import criteria_table, transformer_criteria_table

    # conv criteria (per unit / per class), then the transformer ones (per head / neuron / embedding)
    rows = [{"name": r["name"], "data": r["needs_data"], "axis": r["axis"], "paper": r["paper"]}
            for table in (criteria_table(), transformer_criteria_table())
            for r in sorted(table, key=lambda r: r["name"])]
    if args.json:
        print_json(rows)
        return
    width = max(len(r["axis"]) for r in rows) + 4
    for r in rows:
        print(f"{r['name']:<18} {'data' if r['data'] else 'data-free':<10} {'per ' + r['axis']:<{width}} {r['paper']}")


def cmd_score(args) -> None:
    from neurotomy.scores import get_criterion

    model = load_model_arg(args)
    if args.units:
        from neurotomy.scores import TRANSFORMER_CRITERIA, score_transformer

        data = data_for(model, args, "train") if TRANSFORMER_CRITERIA.get(args.criterion).needs_data else None
        scores = score_transformer(model, args.criterion, args.units, data, max_images=args.max_images,
                                   batch_size=args.batch_size, seed=args.seed, quiet=args.quiet)
    else:
        criterion = get_criterion(args.criterion)
        data = data_for(model, args, "train") if criterion.needs_data else None
        scores = criterion(model, data, batch_size=args.batch_size, max_images=args.max_images,
                           seed=args.seed, quiet=args.quiet)
    if not is_main_process():  # under `accelerate launch` only the main process writes and prints
        return
    path = scores.save(args.out)
    print(f"{args.criterion}: scored {sum(v.numel() for v in scores.values())} units in {len(scores)} "
          f"layers — wrote {path}")


def cmd_prune(args) -> None:
    from neurotomy.checkpoint import save_checkpoint
    from neurotomy.jobs.prune import PruneJob
    from neurotomy.report.tables import format_prune_record

    model = load_model_arg(args)
    job = PruneJob(criterion=args.criterion, target_macs=args.target_macs, ratio=args.ratio,
                   target_params=args.target_params, target_speedup=args.target_speedup,
                   target_latency_ms=args.target_latency_ms, latency_batch=args.latency_batch, threads=args.threads,
                   latency_runtime=args.latency_runtime, latency_cache=args.latency_cache,
                   scope=args.scope, min_channels=args.min_channels,
                   round_to=args.round_to, inner_only=args.inner_only,
                   ignored_layers=args.ignore, score_images=args.max_images,
                   finetune_epochs=args.finetune_epochs, finetune_lr=args.lr, finetune_batch=args.finetune_batch,
                   distill=args.distill, distill_temperature=args.distill_temperature,
                   distill_alpha=args.distill_alpha,
                   layers=args.layers, blocks=args.blocks, layer_threshold=args.layer_threshold, units=args.units,
                   steps=args.steps, finetune_between=args.finetune_between, sfp_epochs=args.sfp_epochs,
                   recalibrate_images=0 if args.no_recalibrate else args.recalibrate_images,
                   reconstruct=args.reconstruct, reconstruct_images=args.reconstruct_images,
                   measure_latency=not args.no_latency, seed=args.seed, quiet=args.quiet, force=args.force)
    with run_state(args) as state:
        pruned, record = job.run(model, data_for(model, args, "train"), data_for(model, args, "test"), state=state)
        if not is_main_process():
            return
        path = save_checkpoint(pruned, pruned.neurotomy_meta, args.out)
    record["checkpoint"] = str(path)
    if args.json:
        print_json(record)
    else:
        print(format_prune_record(record))
        if "speedup_measured" in record:
            load = record["load_average"]
            # a transformer's cut is timed, not predicted from a table: its record has no prediction
            predicted = f"{record['speedup_predicted']:.2f}× predicted, " if "speedup_predicted" in record else ""
            print(f"latency target: {predicted}{record['speedup_measured']:.2f}× "
                  f"measured ({record['latency_ms_measured']:.2f} ms; {record['latency_runtime']}, batch "
                  f"{record['latency_batch']}, {record['threads']} thread(s), load {load[0]:.2f} → {load[1]:.2f})")
        print(f"\nwrote {path}")


def cmd_inspect(args) -> None:
    from neurotomy.jobs.inspect import inspect_model

    model = load_model_arg(args)
    result = inspect_model(model, data_for(model, args, args.split), Path(args.out), per_class=args.per_class,
                           k=args.k, threshold=args.layer_threshold, seed=args.seed, quiet=args.quiet)
    if not is_main_process():
        return
    curve = result["modularity"]
    for layer, q, dq in zip(curve["layers"], curve["q"], result["delta_q"]):
        print(f"{layer:<24} Q {q:.3f}  ΔQ {dq:+.3f}")
    # the same rule in `prune --layers modularity` reads training images: on another split it can choose others
    print(f"redundant by the rule (ΔQ < {args.layer_threshold} × mean rise per layer, {args.split} split; "
          f"`prune --layers modularity` reads the train split): {', '.join(result['redundant_blocks']) or 'none'} "
          f"— curve in {curve['seconds']:.1f}s; wrote {Path(args.out)}/")
