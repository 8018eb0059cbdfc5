"""Each model timed in a fresh process of its own, as it runs once deployed.

:func:`~neurotomy.timing.interleaved_timing` times several models in one process, alternating them,
so a drift in load hits all alike. On this project's 2-core machine that is not the whole story: the
same pruned ViT measured 1.41–1.61× against its original when eight models were interleaved in one
process, and 1.87–2.11× in fresh processes that held only the two — the models share the process's
caches, allocator and thread pools, which a deployed model does not. Neither figure is "the" answer,
so a benchmark can record both.

:func:`isolated_latency` starts one process per model per round (the order alternating between rounds,
A B, B A, …, so a drift still hits all alike); each process loads its model, sets its threads before
any work, warms up and times ``inner_rounds`` × ``repeats`` forward passes of one batch through
:func:`~neurotomy.timing.interleaved_timing`. Per model it reports the median over the processes of
their medians, the minimum over all, each process's figures, the threads and the 1-minute load
``[start, end]`` of the whole measurement.

A fresh process is not free of its own bias: with glibc's default allocator the unpruned ViT-tiny ran
82–91 ms alone (median of 5 processes, two runs; its larger activations are mapped and trimmed back to
the system on every call, page faults each time) and 69 ms once ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` kept the memory (64–70 ms in one process with the other models), while the
model pruned by half ran 40–49 ms in every setting. Those figures were taken while the ViT formed its
attention matrices explicitly, large allocations of their own; with PyTorch's fused attention (since
fb87ba2) the original runs 72–73 ms alone with either allocator setting, 69–70 ms in one process, and the
half model 42–47 ms (benchmarks/results/vit.json, ``timing_history`` for the earlier figures). ``env``
sets such variables for the children, so a benchmark can show how much of a speed-up is the allocator's.

Example:
    >>> from neurotomy.jobs.isolated_timing import isolated_latency
    >>> times = isolated_latency(["zoo:lenet5-digits", "zoo:lenet5-digits"], batch_size=8, rounds=2,
    ...                          inner_rounds=2, repeats=2, warn=False)  # doctest: +SKIP
    >>> times[0]["method"], len(times[0]["process_median_ms"])  # doctest: +SKIP
    ('isolated', 2)
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence

from neurotomy.errors import NeurotomyError
from neurotomy.loading import check_model_spec
from neurotomy.provenance import load_average, machine_busy
from neurotomy.timing import warn_if_busy

MARKER = "neurotomy-isolated-timing:"  # the child's one result line on stdout, whatever else it prints
CHILD = "import sys; from neurotomy.jobs.isolated_timing import child_main; child_main(sys.argv[1:])"


def time_in_this_process(source: str, batch_size: int, inner_rounds: int, repeats: int, warmup: int,
                         threads: int, seed: int) -> dict:
    """Load ``source`` and time ``batch_size``-image forward passes here (what each child runs):
    ``median_ms``/``min_ms`` over ``inner_rounds`` rounds of ``repeats`` calls, after ``warmup`` calls."""
    import torch

    from neurotomy.loading import load_model
    from neurotomy.timing import interleaved_timing

    torch.set_num_threads(threads)
    model = load_model(source).cpu().eval()
    shape = tuple(model.neurotomy_meta.input_shape)
    images = torch.randn((batch_size, *shape), generator=torch.Generator().manual_seed(seed))

    def forward() -> None:
        with torch.inference_mode():
            model(images)

    timed = interleaved_timing([forward], rounds=inner_rounds, repeats=repeats, warmup=warmup, threads=threads,
                               warn=False)[0]
    return {"median_ms": timed["median_ms"], "min_ms": timed["min_ms"], "threads": timed["threads"],
            "pid": os.getpid()}


def child_main(argv: Sequence[str]) -> None:
    """The child process's entry: one JSON argument in, one marked JSON line out."""
    request = json.loads(argv[0])
    print(MARKER + json.dumps(time_in_this_process(**request)), flush=True)


def run_child(request: dict, timeout_s: float, env: dict[str, str] | None = None) -> dict:
    """One fresh Python process timing ``request["source"]`` (``env``: extra environment variables);
    a failure becomes one line naming it."""
    env = {**os.environ, **(env or {}), "OMP_NUM_THREADS": str(request["threads"]),
           "MKL_NUM_THREADS": str(request["threads"])}
    try:
        done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(request)], capture_output=True, text=True,
                              env=env, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise NeurotomyError(f"timing {request['source']} in its own process took over {timeout_s:.0f} s; "
                             "give a smaller batch or fewer rounds") from None
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARKER)]
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise NeurotomyError(f"timing {request['source']} in its own process failed ({last}); check that the model "
                             "loads with `neurotomy info`")
    return json.loads(lines[-1][len(MARKER):])


def isolated_latency(sources: Sequence[str | os.PathLike], batch_size: int = 64, rounds: int = 5,
                     inner_rounds: int = 10, repeats: int = 5, warmup: int = 3, threads: int = 1, seed: int = 0,
                     timeout_s: float = 600, warn: bool = True, env: dict[str, str] | None = None) -> list[dict]:
    """Per model spec (``zoo:…``, a checkpoint, ``timm:…``; see :func:`neurotomy.loading.load_model`):
    ``median_ms`` (median over the ``rounds`` processes of each process's median), ``min_ms``,
    ``process_median_ms`` / ``process_min_ms`` (one per process), ``threads``, ``load_average``
    ``[start, end]``, ``machine_busy``, ``rounds``, ``inner_rounds``, ``repeats`` and ``method``
    ``"isolated"``. ``env``: extra environment variables of every child (e.g. the C allocator's
    ``MALLOC_TRIM_THRESHOLD_``: a fresh process's latency depends on it, see the module docstring).
    Every spec is checked before the first process starts."""
    if rounds < 1 or inner_rounds < 1 or repeats < 1 or batch_size < 1 or threads < 1:
        raise NeurotomyError(f"rounds, inner_rounds, repeats, batch_size and threads must be ≥ 1 (got {rounds}, "
                             f"{inner_rounds}, {repeats}, {batch_size}, {threads})")
    sources = [check_model_spec(str(s)) for s in sources]
    start_load = load_average()[0]
    if warn:
        warn_if_busy(start_load, stacklevel=2)
    runs: list[list[dict]] = [[] for _ in sources]
    order = list(range(len(sources)))
    for r in range(rounds):
        for i in (order if r % 2 == 0 else order[::-1]):
            runs[i].append(run_child({"source": sources[i], "batch_size": batch_size, "inner_rounds": inner_rounds,
                                      "repeats": repeats, "warmup": warmup, "threads": threads, "seed": seed},
                                     timeout_s, env))
    end_load = load_average()[0]
    busy = machine_busy(start_load) or machine_busy(end_load)
    return [{"median_ms": statistics.median(p["median_ms"] for p in per), "min_ms": min(p["min_ms"] for p in per),
             "process_median_ms": [p["median_ms"] for p in per], "process_min_ms": [p["min_ms"] for p in per],
             "threads": per[0]["threads"], "load_average": [start_load, end_load], "machine_busy": busy,
             "rounds": rounds, "inner_rounds": inner_rounds, "repeats": repeats, "method": "isolated",
             "env": dict(env or {})}
            for per in runs]


__all__ = ["isolated_latency", "time_in_this_process"]
