"""The ``neurotomy`` command: parse, call a job or the API, print. No logic of its own.

One module per command group declares its parsers next to its handlers; shared options live in
:mod:`neurotomy.cli.common`. User errors (:class:`NeurotomyError`) print one line and exit with
status 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys

from neurotomy.cli import classes, explain, models, prune, report
from neurotomy.data.batches import set_default_workers
from neurotomy.distributed import shutdown
from neurotomy.errors import NeurotomyError
from neurotomy.progress import set_quiet

GROUPS = (models, prune, explain, classes, report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neurotomy", description="Score, prune, split and explain CNNs.",
        epilog="Several processes: `accelerate launch --multi_gpu --num_processes N -m neurotomy.cli COMMAND ...` "
               "(or torchrun; gloo on CPU). train/finetune then run data-parallel (DDP, each process trains on "
               "its shard of every global batch, BatchNorm uses global-batch statistics), score/inspect split "
               "the images and all-reduce their statistics; only the main process shows progress and writes files.")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    set_quiet(getattr(args, "quiet", False))
    set_default_workers(getattr(args, "workers", 0))
    try:
        args.func(args)
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
