"""Where a measurement came from: the stamp every benchmark record (or run section) carries.

A *stamp* is a flat dict — the code (``git_commit``, ``git_dirty``), the run (``date`` in UTC,
``argv``) and the machine as it was (``threads``, ``cpu_count``, ``platform``, ``device``, ``torch``,
and the load average ``[1, 5, 15 min]`` at the start and at the end). "Idle" is then a measured
load, never a label. Merge it into the record it stamps (its keys, :data:`STAMP_KEYS`, are chosen
not to clash with a record's own ``machine`` or ``note``)::

    with run_stamp() as stamp:
        record = measure_something()
    record.update(stamp)            # complete once the block has ended

or, when the end is not the end of a block, ``stamp = begin_stamp()`` … ``record.update(end_stamp(stamp))``.

A results file that several runs write in parts (``--parts throughput`` today, ``roar`` tomorrow)
keeps one stamp per part under its ``"provenance"`` key: :func:`merge_part` writes a part's values
and its stamp together, leaving the other parts' stamps alone. So in ``benchmarks/results``: a record
carries the stamp of the run that created it (flat keys); a part merged into a file later carries
its own under ``provenance.<part>``; results older than the stamps carry a :func:`legacy_stamp`
(the commit that committed them, ``load_average_start: null``), never an invented load.

Example:
    >>> results = {}
    >>> with run_stamp(argv=["bench.py", "--parts", "a"]) as stamp:
    ...     pass
    >>> sorted(stamp) == sorted(STAMP_KEYS)
    True
    >>> merge_part(results, "a", {"speed": 1.0}, stamp)["provenance"]["a"]["argv"]
    ['bench.py', '--parts', 'a']
    >>> merge_part(results, "b", {"size": 2}, stamp)["speed"], sorted(results["provenance"])
    (1.0, ['a', 'b'])
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import os
import platform
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

STAMP_KEYS = ("git_commit", "git_dirty", "date", "argv", "threads", "cpu_count", "platform", "device", "torch",
              "load_average_start", "load_average_end")
# The parts of a results file that predate the stamps say so instead of guessing (see legacy_stamp).
NOT_RECORDED = "not recorded at the time"
_SOURCE = Path(__file__).resolve().parent


def load_average() -> list[float]:
    """The 1-, 5- and 15-minute load averages (runnable processes), rounded to 0.01."""
    return [round(x, 2) for x in os.getloadavg()]


def busy_threshold(cores: int | None = None) -> float:
    """The 1-minute load above which this machine counts as busy: half its cores. Past it, a
    multi-threaded timing measures the other jobs as much as the code (issue #19: a 2-thread
    PyTorch op ran 5–50× slower while one other process was busy)."""
    return 0.5 * (cores or os.cpu_count() or 1)


def machine_busy(load: float | None = None, cores: int | None = None) -> bool:
    """Whether the 1-minute load (now, unless given) is above :func:`busy_threshold`."""
    return (load_average()[0] if load is None else load) > busy_threshold(cores)


@functools.lru_cache(maxsize=8)
def git_state(directory: str | os.PathLike | None = None) -> tuple[str, bool | None]:
    """``(commit, dirty)`` of the git working tree holding ``directory`` (default: this package's
    source, i.e. the repository the benchmarks run from); ``("unknown", None)`` outside git or without
    it. ``dirty``: tracked files differ from the commit (untracked files are not counted). Cached per
    process: a run is stamped with the tree it started from."""
    where = str(directory or _SOURCE)

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", where, *args], capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return "unknown", None
    return commit, dirty


def device_name(device: str | torch.device | None = None) -> str:
    """``"cpu"`` or ``"cuda:0 (NVIDIA H200)"``: the device a run computed on (default: torch's
    default device)."""
    device = torch.device(device) if device is not None else torch.get_default_device()
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)


def begin_stamp(argv: Sequence[str] | None = None, device: str | torch.device | None = None) -> dict:
    """A stamp opened now: everything but ``load_average_end`` (``None`` until :func:`end_stamp`)."""
    commit, dirty = git_state()
    return {"git_commit": commit, "git_dirty": dirty,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "argv": list(sys.argv if argv is None else argv), "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "device": device_name(device), "torch": torch.__version__,
            "load_average_start": load_average(), "load_average_end": None}


def end_stamp(stamp: dict) -> dict:
    """The stamp closed now: a copy with ``load_average_end`` measured — the dict to merge into a
    record (``threads`` is re-read too, in case the run changed it)."""
    return {**stamp, "threads": torch.get_num_threads(), "load_average_end": load_average()}


@contextlib.contextmanager
def run_stamp(argv: Sequence[str] | None = None, device: str | torch.device | None = None) -> Iterator[dict]:
    """The stamp of what runs inside the block; it is completed in place when the block ends (on
    error too)."""
    stamp = begin_stamp(argv, device)
    try:
        yield stamp
    finally:
        stamp.update(end_stamp(stamp))


def merge_part(results: dict, part: str, values: Mapping[str, Any], stamp: Mapping[str, Any]) -> dict:
    """Write one run's ``values`` into ``results`` (a results file's dict, read from disk) and its
    stamp under ``results["provenance"][part]``, listing the keys it wrote; the other parts' values
    and stamps stay. Returns ``results``."""
    results.update(values)
    provenance = results.setdefault("provenance", {})
    provenance[part] = {**stamp, "keys": sorted(values)}
    return results


def legacy_stamp(commit: str, date: str, covers: str | None = None, said: str | None = None) -> dict:
    """What is known of results written before the stamps existed: the commit that committed them
    (``git log -1 --format=%H -- FILE``) and its date — never a load that nobody measured. Flat, so
    it can be merged into a record like a stamp; ``covers`` says which parts of a file it stands for,
    ``said`` quotes what the file claimed about the machine at the time (a label, not a measurement)."""
    stamp = {"git_commit": commit, "date": date, "load_average_start": None, "load_average_end": None,
             "provenance_note": f"load {NOT_RECORDED}: measured before the provenance stamps existed; git_commit "
                                "and date are those of the commit that committed these results, not of the run"}
    if covers:
        stamp["covers"] = covers
    if said:
        stamp["said_at_the_time"] = said
    return stamp


def measured_load(stamp: Mapping[str, Any]) -> bool:
    """Whether a stamp holds a measured load (a legacy stamp does not)."""
    return stamp.get("load_average_start") is not None and stamp.get("load_average_end") is not None
