"""Progress bars in one place, so ``--quiet`` silences every one of them.

Example:
    >>> with progress_bar(quiet=True) as bar:
    ...     task = bar.add_task("work", total=3)
    ...     for _ in range(3): bar.advance(task)
"""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

_state = {"quiet": False}


def set_quiet(quiet: bool) -> None:
    """Silence (or restore) every progress bar of this process."""
    _state["quiet"] = bool(quiet)


def is_quiet() -> bool:
    return _state["quiet"]


@contextlib.contextmanager
def progress_bar(quiet: bool | None = None) -> Iterator[Progress]:
    """A rich Progress on stderr; disabled when quiet (explicitly or via :func:`set_quiet`) and on
    every process but the main one when several run (``accelerate launch``)."""
    from neurotomy.distributed import is_main_process

    quiet = (_state["quiet"] if quiet is None else quiet) or not is_main_process()
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=Console(file=sys.stderr), disable=quiet, transient=False,
    )
    with progress:
        yield progress


def add_task(progress: Progress, description: str, total: int | None) -> int:
    """A task with an empty ``info`` field (filled with loss/accuracy as it runs)."""
    return progress.add_task(description, total=total, info="")
