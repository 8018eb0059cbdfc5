"""The ``neurotomy`` command: parse, call a job or the API, print. No logic of its own.

One module per command group declares its parsers next to its handlers; shared options live in
:mod:`neurotomy.cli.common`. User errors (:class:`NeurotomyError`) print one line and exit with
status 2; no traceback.
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings

from neurotomy.cli import classes, concepts, deploy, explain, models, prune, report
from neurotomy.cli.common import OneLineParser
from neurotomy.data.batches import set_default_workers
from neurotomy.distributed import shutdown
from neurotomy.errors import NeurotomyError, NeurotomyWarning
from neurotomy.progress import set_quiet

GROUPS = (models, deploy, prune, explain, concepts, classes, report)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # a terminal's formatting codes (bold, colour)

_format_warning = warnings.formatwarning


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """A :class:`NeurotomyWarning` as one line, ``neurotomy: warning: …``; others as Python shows them."""
    if issubclass(category, NeurotomyWarning):
        return f"neurotomy: warning: {' '.join(str(message).split())}\n"
    return _format_warning(message, category, filename, lineno, line)


warnings.formatwarning = _one_line_warning


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
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
    """Run one command and return its exit status: a bad argument (argparse) or a user error
    (NeurotomyError) prints one line and returns 2, an operating-system error (disk full,
    permission) one line and 1; none prints a traceback."""
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:  # a usage error (one line, see OneLineParser) or --help: its status
            return exc.code if isinstance(exc.code, int) else 2
        set_quiet(getattr(args, "quiet", False))
        set_default_workers(getattr(args, "workers", 0))
        args.func(args)
        shutdown()  # under accelerate launch: wait for the main process's writes, close the group
    except NeurotomyError as exc:
        print(f"neurotomy: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        sys.stderr.close()
        return 0
    except OSError as exc:  # the machine's answer, not a bug: say it in one line
        print(f"neurotomy: error: {one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:  # a job with a state file says how to resume (neurotomy.run_state.Interrupted)
        print(f"neurotomy: {one_line(exc)}" if str(exc) else "neurotomy: interrupted", file=sys.stderr)
        return 130
    return 0


def one_line(exc: BaseException) -> str:
    """An error message on one line (a message from a library may span several), without the
    terminal formatting (bold, colour) some libraries put in theirs."""
    return " ".join(_ANSI.sub("", str(exc)).split()) or type(exc).__name__
