"""How well the latency knapsack predicts a cut's speed-up, and whether a speed-up prune lands on its
target (issue #19, item 3): the one-point calibration (on the unpruned model alone: the table plus a
constant rest, or scaled down to the model) against the calibration on measured cuts (:meth:`neurotomy.surgery.latency_plan.LatencyModel.calibrate`).

For each model (``--models``: ResNet-20 with its residual additions, VGG-16 without), data-free
criterion (``--criteria``: l1, bn_scale, random — no images needed, so the run is about latency
alone) and speed-up target (``--targets`` 1.5/2/3×) it prunes the model with
:func:`neurotomy.surgery.filters.prune_filters` (batch 64, ``--threads`` 1, the cached table in
``--cache``), then times the kept cut against the original again, interleaved (``--rounds`` × ``--repeats``),
on a quiet machine (``--wait-quiet``; refused when busy unless ``--allow-busy``). Per record:

* ``attempts`` — how many cuts the prune measured (besides the fastest cut it calibrates on), and each
  attempt's ``speedup_predicted`` (calibrated, before it was measured) and ``speedup_measured``;
* ``speedup_predicted_one_point`` — what the one-point calibration predicts for the same first choice
  (a fresh table from the same cache, not calibrated), to compare the two predictors on one cut;
* ``speedup_batch64`` / ``speedup_batch64_min`` — the quiet re-timing (medians / minima), and
  ``speedup_miss`` = ``speedup_batch64`` / target − 1 (target ±10 %);
* ``prune_seconds``, ``threads``, ``load_average`` [start, end], a provenance stamp.

A target the prune refuses as out of reach is recorded with its message (``refused``).
``summary`` (all records, and per model in ``by_model``): per predictor the median and largest
|predicted / measured − 1| over the first attempts, how many first attempts landed within ±10 % while
pruning, how many re-timed cuts are within ±10 %, how many targets were refused, and the median
|re-timed / measured while pruning − 1| of the kept cuts (the same models timed twice: the noise floor).

Usage: python benchmarks/latency_calibration.py [--models zoo:resnet20-fmnist zoo:vgg16-fmnist] [--cache DIR]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

from neurotomy.errors import PruningError
from neurotomy.files import write_json
from neurotomy.loading import load_model
from neurotomy.measure import interleaved_latency
from neurotomy.models.anatomy import require_input_shape
from neurotomy.provenance import begin_stamp, end_stamp
from neurotomy.scores import get_criterion
from neurotomy.surgery.filters import prune_filters
from neurotomy.surgery.latency import LatencyRuntime, default_cache_dir
from neurotomy.surgery.latency_plan import LATENCY_TOLERANCE, latency_model
from neurotomy.surgery.planner import Planner, resolve_ignored
from neurotomy.timing import require_quiet_machine, torch_threads
from neurotomy.train import seed_everything

RESULTS = Path(__file__).resolve().parent / "results"
NAME = "latency_calibration"
BATCH = 64


def one_point_speedup(model, scores, shape, widths: list[int], cache: Path, threads: int,
                      runtime: str | LatencyRuntime = "torch") -> float:
    """The speed-up the uncalibrated table (constant rest) predicts for the cut of these group ``widths``."""
    planner = Planner(model, scores, shape, resolve_ignored(model, None), 1, None, False)
    table = latency_model(model, planner, shape, runtime, BATCH, threads, cache, quiet=True)
    choice = [[kept for kept, _ in options].index(w) for options, w in zip(table.options, widths)]
    return table.full_ms / table.predict(choice)


def measure(model, criterion: str, target: float, args, shape) -> dict:
    """One speed-up prune, the one-point prediction of its first cut, and the quiet re-timing."""
    seed_everything(args.seed)
    scores = get_criterion(criterion)(model, seed=args.seed)
    stamp = begin_stamp()
    started = time.perf_counter()
    try:
        result = prune_filters(model, scores, target_speedup=target, input_shape=shape, latency_batch=BATCH,
                               threads=args.threads, latency_cache=args.cache, quiet=True)
    except PruningError as error:  # refused as out of reach: a result too, not the end of the run
        return {"criterion": criterion, "target_speedup": target, "refused": str(error),
                "provenance": end_stamp(stamp)}
    seconds = time.perf_counter() - started
    d = result.details
    first = d["latency_attempts"][0]
    one_point = one_point_speedup(model, scores, shape, first["widths"], args.cache, args.threads)
    require_quiet_machine(args.wait_quiet, args.allow_busy)
    t0, t1 = interleaved_latency([model, result.model], shape, BATCH, rounds=args.rounds, repeats=args.repeats,
                                 threads=args.threads)
    speedup = t0["median_ms"] / t1["median_ms"]
    return {"criterion": criterion, "target_speedup": target, "prune_seconds": seconds,
            "attempts": [{k: a[k] for k in ("speedup_predicted", "speedup_measured", "widths", "miss")}
                         for a in d["latency_attempts"]],
            "speedup_predicted_first": first["speedup_predicted"], "speedup_measured_first": first["speedup_measured"],
            "speedup_predicted_one_point": one_point, "speedup_measured_while_pruning": d["speedup_measured"],
            # absent where the package predates the calibration on measured cuts (an A/B run of the old code)
            "calibration": d["latency_table"].get("calibration"), "fastest_speedup":
                d["latency_table"]["full_ms"] / d["latency_table"]["fastest_ms"] if "fastest_ms" in d["latency_table"]
                else None,
            "speedup_batch64": speedup, "speedup_batch64_min": t0["min_ms"] / t1["min_ms"],
            "speedup_miss": speedup / target - 1, "threads": t0["threads"],
            "load_average": [t0["load_average"][0], t1["load_average"][-1]], "provenance": end_stamp(stamp)}


def summarize(records: list[dict]) -> dict:
    """Prediction errors of the two predictors on the first attempts, and hits within ±10 %.

    Example:
        >>> r = {"speedup_predicted_first": 2.0, "speedup_measured_first": 2.1, "speedup_predicted_one_point": 1.8,
        ...      "speedup_batch64": 2.15, "target_speedup": 2.0, "attempts": [{}]}
        >>> s = summarize([r])
        >>> [round(s[p]["median_abs_error"], 3) for p in ("calibrated", "one_point")], s["retimed_within"]
        ([0.048, 0.143], 1)
    """
    refused = [r for r in records if r.get("refused")]
    records = [r for r in records if not r.get("refused")]

    def errors(field: str) -> list[float]:
        return [abs(r[field] / r["speedup_measured_first"] - 1) for r in records]

    summary = {"records": len(records), "refused": len(refused), "tolerance": LATENCY_TOLERANCE}
    for name, field in (("calibrated", "speedup_predicted_first"), ("one_point", "speedup_predicted_one_point")):
        e = errors(field)
        summary[name] = {"median_abs_error": statistics.median(e) if e else None, "max_abs_error": max(e, default=None)}
    summary["first_attempt_within"] = sum(abs(r["speedup_measured_first"] / r["target_speedup"] - 1)
                                          <= LATENCY_TOLERANCE for r in records)
    summary["retimed_within"] = sum(abs(r["speedup_batch64"] / r["target_speedup"] - 1) <= LATENCY_TOLERANCE
                                    for r in records)
    summary["attempts_total"] = sum(len(r["attempts"]) for r in records)
    # the noise floor: the same cut timed while pruning and again minutes later
    again = [abs(r["speedup_batch64"] / r["speedup_measured_while_pruning"] - 1) for r in records
             if r.get("speedup_measured_while_pruning")]
    summary["retimed_vs_while_pruning_median"] = statistics.median(again) if again else None
    return summary


def plot(records: list[dict], path: Path) -> None:
    import matplotlib.pyplot as plt

    from neurotomy.report.figures import save_figure

    records = [r for r in records if not r.get("refused")]
    fig, ax = plt.subplots(figsize=(5.5, 5))
    measured = [r["speedup_measured_first"] for r in records]
    ax.scatter(measured, [r["speedup_predicted_one_point"] for r in records], marker="x",
               label="one-point (unpruned model only)")
    ax.scatter(measured, [r["speedup_predicted_first"] for r in records], marker="o", facecolors="none",
               edgecolors="C1", label="calibrated on measured cuts")
    top = max(measured + [r["speedup_predicted_first"] for r in records]) * 1.05
    ax.plot([1, top], [1, top], color="grey", lw=0.8)
    ax.set_xlabel("measured speed-up of the first cut (batch 64)")
    ax.set_ylabel("predicted speed-up")
    ax.set_title("latency table: predicted vs measured")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["zoo:resnet20-fmnist", "zoo:vgg16-fmnist"])
    parser.add_argument("--criteria", nargs="+", default=["l1", "bn_scale", "random"])
    parser.add_argument("--targets", nargs="+", type=float, default=[1.5, 2.0, 3.0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cache", type=Path, default=default_cache_dir(), help="latency table cache")
    parser.add_argument("--wait-quiet", type=float, default=600)
    parser.add_argument("--allow-busy", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    records = []
    with torch_threads(args.threads):
        for name in args.models:
            model = load_model(name).cpu().eval()
            shape = require_input_shape(model)
            for criterion in args.criteria:
                for target in args.targets:
                    require_quiet_machine(args.wait_quiet, args.allow_busy)
                    record = {"model": name, **measure(copy.deepcopy(model), criterion, target, args, shape)}
                    records.append(record)
                    if record.get("refused"):
                        print(f"{name} {criterion:>9} {target:.1f}×: refused: {record['refused']}", flush=True)
                        continue
                    print(f"{name} {criterion:>9} {target:.1f}×: first cut predicted "
                          f"{record['speedup_predicted_first']:.2f}× "
                          f"(one-point {record['speedup_predicted_one_point']:.2f}×), measured "
                          f"{record['speedup_measured_first']:.2f}×; {len(record['attempts'])} attempt(s); re-timed "
                          f"{record['speedup_batch64']:.2f}× (load {record['load_average']})", flush=True)
    by_model = {name: summarize([r for r in records if r["model"] == name]) for name in args.models}
    results = {"models": args.models, "batch": BATCH, "threads": args.threads, "records": records,
               "summary": {**summarize(records), "by_model": by_model}}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / f"{NAME}.json", results)
    plot(records, args.out / f"{NAME}.png")
    print(results["summary"])


if __name__ == "__main__":
    sys.exit(main())
