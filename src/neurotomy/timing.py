"""Timing you can trust on a shared machine: interleaved rounds, median and minimum, and the load
and thread count recorded with every figure.

On a small shared machine a multi-threaded PyTorch process slows down 5–50× while another process
is busy (OpenMP threads wait on each other), so a latency means little without the load it was
measured under. :func:`interleaved_timing` therefore

* warms every callable up, then runs them in rounds, alternating the order (A B, B A, A B, …) so a
  drift in load or clock hits all of them alike and none always runs right after another;
* reports, per callable, the median and the minimum milliseconds per call, the torch threads and the
  1-minute load average at the start and at the end;
* warns in one line when the load is above half the cores (:func:`~neurotomy.provenance.machine_busy`);
* takes ``threads=1`` for timing on a shared machine (restored afterwards).

Benchmarks that need a quiet machine call :func:`require_quiet_machine` first (wait, then refuse
unless told to time anyway).

Example:
    >>> calls = []
    >>> t = interleaved_timing([lambda: calls.append("a"), lambda: calls.append("b")],
    ...                        rounds=2, repeats=1, warmup=0, warn=False)
    >>> calls
    ['a', 'b', 'b', 'a']
    >>> sorted(t[0])
    ['load_average', 'machine_busy', 'median_ms', 'min_ms', 'repeats', 'rounds', 'threads']
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Sequence

import torch

from neurotomy.errors import NeurotomyError, NeurotomyWarning
from neurotomy.provenance import busy_threshold, load_average, machine_busy


class BusyMachineWarning(NeurotomyWarning):
    """The machine's load is above half its cores: timings measure the other jobs too."""


class BusyMachineError(NeurotomyError):
    """A benchmark refused to time a machine that stayed busy."""


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Run the block with ``threads`` torch threads (``None``: leave them), restoring them after."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def busy_message(load: float, cores: int | None = None) -> str:
    """The one-line warning for a busy machine."""
    cores = cores or os.cpu_count() or 1
    return (f"load average {load:.2f} on {cores} cores (> {busy_threshold(cores):g}): timings include other "
            f"jobs' work; time on a quiet machine or with threads=1")


def warn_if_busy(load: float | None = None, stacklevel: int = 2) -> bool:
    """Warn (one line, :class:`BusyMachineWarning`) when the 1-minute load is above half the cores;
    returns whether it did."""
    load = load_average()[0] if load is None else load
    busy = machine_busy(load)
    if busy:
        warnings.warn(busy_message(load), BusyMachineWarning, stacklevel=stacklevel + 1)
    return busy


MIN_BUDGET_ROUNDS = 3  # a time budget never leaves fewer rounds than this: a median needs a few


def interleaved_timing(functions: Sequence[Callable[[], object]], rounds: int = 15, repeats: int = 5,
                       warmup: int = 3, threads: int | None = None, warn: bool = True,
                       budget_s: float | None = None) -> list[dict]:
    """Time each of ``functions`` (called without arguments) in ``rounds`` interleaved rounds of
    ``repeats`` calls, after ``warmup`` calls each; even rounds run them in order, odd rounds in
    reverse. Per function: ``median_ms`` and ``min_ms`` per call over the rounds, ``threads``,
    ``load_average`` (1-minute, ``[start, end]``), ``machine_busy`` (either above half the cores),
    ``rounds`` and ``repeats`` (those run).

    ``budget_s``: fewer repeats, then fewer rounds (never below :data:`MIN_BUDGET_ROUNDS`), when
    the rounds would take longer than this, judged from the last warm-up call of each function — a
    ViT-B at batch 64 costs ~1 s a call here, and 15 × 5 calls of two models took minutes.

    >>> t = interleaved_timing([lambda: time.sleep(0.05)], rounds=15, repeats=5, warmup=1, warn=False,
    ...                        budget_s=0.1)  # ≥ 50 ms a call: one repeat, the minimum of rounds
    >>> t[0]["rounds"], t[0]["repeats"]
    (3, 1)
    """
    if rounds < 1 or repeats < 1:
        raise ValueError(f"rounds and repeats must be ≥ 1 (got {rounds}, {repeats})")
    with torch_threads(threads) as used:
        start_load = load_average()[0]
        if warn:
            warn_if_busy(start_load, stacklevel=2)
        last_call = [0.0 for _ in functions]
        for i, fn in enumerate(functions):
            for _ in range(max(warmup, 1 if budget_s is not None else 0)):
                start = time.perf_counter()
                fn()
                last_call[i] = time.perf_counter() - start
        if budget_s is not None and sum(last_call) > 0:
            one_round = sum(last_call)  # seconds of one call of each function
            repeats = max(1, min(repeats, int(budget_s / (MIN_BUDGET_ROUNDS * one_round))))
            rounds = max(min(rounds, MIN_BUDGET_ROUNDS), min(rounds, int(budget_s / (repeats * one_round))))
        times: list[list[float]] = [[] for _ in functions]
        order = list(range(len(functions)))
        for r in range(rounds):
            for i in (order if r % 2 == 0 else order[::-1]):
                start = time.perf_counter()
                for _ in range(repeats):
                    functions[i]()
                times[i].append((time.perf_counter() - start) / repeats * 1000)
        end_load = load_average()[0]
    busy = machine_busy(start_load) or machine_busy(end_load)
    return [{"median_ms": statistics.median(t), "min_ms": min(t), "threads": used,
             "load_average": [start_load, end_load], "machine_busy": busy, "rounds": rounds, "repeats": repeats}
            for t in times]


def wait_until_quiet(timeout_s: float, poll_s: float = 15.0, sleep: Callable[[float], None] = time.sleep) -> bool:
    """Wait up to ``timeout_s`` seconds for the 1-minute load to fall to half the cores or below,
    polling every ``poll_s``; returns whether it did (benchmarks then time, or refuse to)."""
    waited = 0.0
    while machine_busy():
        if waited >= timeout_s:
            return False
        step = min(poll_s, timeout_s - waited)
        sleep(step)
        waited += step
    return True


def require_quiet_machine(wait_s: float = 600, allow_busy: bool = False, poll_s: float = 15.0,
                          sleep: Callable[[float], None] = time.sleep) -> bool:
    """For a benchmark about to time something: wait up to ``wait_s`` seconds for a quiet machine;
    if it stays busy, raise :class:`BusyMachineError` — or, with ``allow_busy``, warn in one line
    and go on (the load is recorded with every figure anyway). Returns whether it is quiet."""
    if wait_until_quiet(wait_s, poll_s, sleep):
        return True
    message = f"{busy_message(load_average()[0])} (waited {wait_s:.0f} s)"
    if not allow_busy:
        raise BusyMachineError(f"{message}; not timing a busy machine — wait, or pass --allow-busy to time it "
                               "anyway with the load recorded")
    warnings.warn(message, BusyMachineWarning, stacklevel=2)
    return False
