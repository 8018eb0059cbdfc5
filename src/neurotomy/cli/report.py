"""The whole job and its report: ``dissect``, ``demo``."""

from __future__ import annotations

import argparse
from pathlib import Path

from neurotomy import validate
from neurotomy.cli.common import DATA, MODEL, OUT_DIR, Checked, add_common, data_for
from neurotomy.cli.common import add_force, add_model_options, add_resume, load_model_arg, run_state
from neurotomy.cli.prune import CRITERION
from neurotomy.surgery.planner import SCOPES


def budget(text: str, name: str | None = None) -> str:
    """``tiny``, ``fast``, ``full`` or a positive number of minutes (returned as given)."""
    from neurotomy.jobs.budget import parse_budget

    parse_budget(text)
    return text


BUDGET = Checked(budget)


def add_parsers(sub) -> None:
    p = sub.add_parser("dissect", help="the whole job → report.html + report.json: layers, scores, prune, "
                       "dynamics, class subsets, explanations")
    p.add_argument("model", type=MODEL, help="checkpoint or zoo:NAME (or any MODEL, see `info`)")
    add_model_options(p)
    p.add_argument("--data", type=DATA, help="dataset (default: the model's own)")
    p.add_argument("--root", type=Checked(validate.existing_dir),
                   help="directory of the dataset files (default: shipped subset / NEUROTOMY_DATA)")
    p.add_argument("--out", required=True, type=OUT_DIR,
                   help="directory to write report.html, report.json, pruned.safetensors")
    add_resume(p)
    add_force(p, "keep the fine-tuned pruned model even when fine-tuning made it less accurate")
    p.add_argument("--budget", default="fast", type=BUDGET, help="tiny, fast (default), full, or minutes (e.g. 4: "
                   "fine-tune epochs fitted to the time left)")
    p.add_argument("--target-macs", type=Checked(validate.fraction, interval="(0, 1)"), default=0.5,
                   help="fraction of MACs to remove (default 0.5)")
    p.add_argument("--criterion", default="l1", type=CRITERION, help="criterion that drives the prune (default l1)")
    p.add_argument("--scope", choices=list(SCOPES), default="uniform")
    p.add_argument("--deploy", action=argparse.BooleanOptionalAction, default=None,
                   help="the deployment section (original → pruned → pruned + int8 in onnxruntime): --no-deploy "
                        "leaves it out, --deploy adds it under the tiny budget too (needs onnxruntime); default: on "
                        "when onnxruntime is installed and the budget times latency (not tiny)")
    add_common(p)
    p.set_defaults(func=cmd_dissect)

    p = sub.add_parser("demo", help="the main job on the shipped model and data: dissect zoo:resnet20-fmnist")
    p.add_argument("--out", default="demo-out", type=OUT_DIR)
    p.add_argument("--root", type=Checked(validate.existing_dir), help="Fashion-MNIST directory (default: the shipped subset)")
    p.add_argument("--budget", default="fast", type=BUDGET, help="tiny, fast (default), full, or minutes")
    add_common(p)
    p.set_defaults(func=cmd_demo)


def cmd_dissect(args) -> None:
    from neurotomy.jobs.budget import parse_budget
    from neurotomy.jobs.dissect import dissect
    from neurotomy.report.verdict import verdict_sentence

    budget = parse_budget(args.budget)  # a bad budget fails before the model loads
    model = load_model_arg(args)
    with run_state(args) as state:
        report = dissect(model, data_for(model, args, "train"), data_for(model, args, "test"), out_dir=Path(args.out),
                         budget=budget, target_macs=args.target_macs, criterion=args.criterion, scope=args.scope,
                         seed=args.seed, quiet=args.quiet, model_name=args.model, force=args.force, state=state,
                         deploy=args.deploy)
    print(f"{verdict_sentence(report['verdict'])}\nwrote {Path(args.out) / 'report.html'}, report.json and "
          f"pruned.safetensors")


def cmd_demo(args) -> None:
    from neurotomy.jobs.demo import run_demo
    from neurotomy.report.verdict import verdict_sentence

    report = run_demo(Path(args.out), root=args.root, quiet=args.quiet, seed=args.seed, budget=args.budget,
                      device=args.device)
    print(f"{verdict_sentence(report['verdict'])}\nwrote {Path(args.out) / 'report.html'} and report.json")
