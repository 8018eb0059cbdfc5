"""CPU speed of the pruned architectures of benchmarks/pruning_criteria.py, measured quietly.

Latency needs a quiet machine, which the long accuracy benchmark (fine-tuning for an hour) cannot
promise, so speed has its own pass: it waits until the 1-minute load is at most half the cores
(``--wait-quiet``; it refuses to time a busy machine unless ``--allow-busy``), rebuilds every pruned
architecture of the results file (the accuracy run's seed → same scores → same cuts; torch-pruning's default
likewise), measures batch-64 and batch-1 latency against the original under
``torch.inference_mode()`` after warm-up, interleaving original and pruned in rounds, and writes
median and minimum speed-ups into the same records, each latency with its threads and load. It also
measures channel rounding (``round_to`` 8) on the L1 cuts, to show where it pays. The pass's stamp
is ``provenance.speed`` in the results file; the accuracy run's stamps stay as they were.

Usage: python benchmarks/pruning_speed.py --root ../shared/data/fashion-mnist [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pruning_criteria import RESULTS, machine, tp_default_prune  # noqa: E402

from neurotomy.data import load_dataset
from neurotomy.files import write_json  # noqa: E402
from neurotomy.measure import interleaved_latency  # noqa: E402
from neurotomy.provenance import merge_part, run_stamp  # noqa: E402
from neurotomy.timing import require_quiet_machine  # noqa: E402
from neurotomy.models.summary import count_macs_params  # noqa: E402
from neurotomy.loading import load_model  # noqa: E402
from neurotomy.scores import get_criterion  # noqa: E402
from neurotomy.surgery.filters import prune_filters  # noqa: E402


def speedups(original, pruned, shape, threads: int | None = None) -> dict:
    out, loads = {}, []
    for batch in (64, 1):
        a, b = interleaved_latency([original, pruned], shape, batch, rounds=9, repeats=3 if batch > 1 else 20,
                                   threads=threads)
        out[f"speedup_batch{batch}"] = a["median_ms"] / b["median_ms"]
        out[f"speedup_batch{batch}_min"] = a["min_ms"] / b["min_ms"]
        out[f"latency_batch{batch}_ms"] = {"original": a, "pruned": b}
        out["speed_threads"] = a["threads"]
        loads += a["load_average"]
    # 1-minute load at the first round and after the last ("speed_": a record's own stamp is its accuracy run's)
    out["speed_load_average"] = [loads[0], loads[-1]]
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--results", default=str(RESULTS / "pruning_criteria.json"))
    parser.add_argument("--criteria", nargs="*", default=None,
                        help="which criteria to time (default: tp-default, l1, random and the two best by "
                             "recalibrated accuracy at the first target); the others keep speedup null")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for timing (default: torch's; 1 for a shared machine)")
    parser.add_argument("--wait-quiet", type=float, default=600,
                        help="seconds to wait for a load ≤ half the cores before timing (default 600)")
    parser.add_argument("--allow-busy", action="store_true", help="time even if the machine stays busy")
    args = parser.parse_args()
    path = Path(args.results)
    result = json.loads(path.read_text())
    model = load_model(result["model"])
    shape = model.neurotomy_meta.input_shape
    train = load_dataset(model.neurotomy_meta.dataset, root=args.root, split="train")
    timed = set(args.criteria or default_criteria(result["records"]))
    require_quiet_machine(args.wait_quiet, args.allow_busy)
    with run_stamp() as stamp:
        rounding = time_records(result, model, shape, train, timed, args.threads)
    merge_part(result, "speed", {"speed_machine": machine(), "speed_criteria": sorted(timed), "round_to": rounding},
               stamp)
    write_json(path, result)
    print(f"updated {path}")


def time_records(result: dict, model, shape, train, timed: set[str], threads: int | None) -> list[dict]:
    """Speed-ups of the timed criteria's records (written into them) and of L1 cuts with and without
    ``round_to=8`` (returned)."""
    cache: dict = {}
    scores_cache: dict = {}
    for record in result["records"]:
        key = (record["criterion"], record["scope"], record["target_macs_reduction"])
        if record["criterion"] not in timed:
            continue
        if key not in cache:
            name, scope, target = key
            if name == "tp-default":
                pruned = tp_default_prune(model, target, scope, shape)
            else:
                if name not in scores_cache:
                    scores_cache[name] = get_criterion(name)(model, train, seed=result.get("seed", 0), quiet=True)
                pruned = prune_filters(model, scores_cache[name], target_macs=target, scope=scope).model
            macs = count_macs_params(pruned, shape)[0]
            assert abs(model_macs(model, shape) / macs - record["macs_ratio"]) < 1e-6, key  # same architecture
            cache[key] = speedups(model, pruned.eval(), shape, threads)
            print(f"{name:>16} {scope:>7} −{target:.0%}: b64 {cache[key]['speedup_batch64']:.2f}× "
                  f"(min {cache[key]['speedup_batch64_min']:.2f}×) b1 {cache[key]['speedup_batch1']:.2f}× "
                  f"for MACs {record['macs_ratio']:.2f}×", flush=True)
        record.update(cache[key])
        record["speedup_to_macs_ratio"] = record["speedup_batch64"] / record["macs_ratio"]
    rounding = []
    scores = scores_cache.get("l1") or get_criterion("l1")(model)
    for target in sorted({r["target_macs_reduction"] for r in result["records"]}):
        for round_to in (None, 8):
            try:
                res = prune_filters(model, scores, target_macs=target, round_to=round_to)
            except Exception as exc:  # a target beyond what rounding allows is a finding, not a crash
                rounding.append({"target_macs_reduction": target, "round_to": round_to, "error": str(exc)})
                continue
            row = {"target_macs_reduction": target, "round_to": round_to, "macs_reduction": res.macs_reduction,
                   "macs_ratio": 1 / (1 - res.macs_reduction), **speedups(model, res.model.eval(), shape, threads)}
            row["speedup_to_macs_ratio"] = row["speedup_batch64"] / row["macs_ratio"]
            rounding.append(row)
            print(f"l1 uniform −{target:.0%} round_to={round_to}: MACs {row['macs_ratio']:.2f}× "
                  f"b64 {row['speedup_batch64']:.2f}×", flush=True)
    return rounding


def default_criteria(records: list[dict]) -> list[str]:
    first = min(r["target_macs_reduction"] for r in records)
    ours = sorted((r for r in records if r["target_macs_reduction"] == first and r["finetune_epochs"] == 0
                   and r["criterion"] not in ("tp-default", "random", "l1")), key=lambda r: -r["acc_recalibrated"])
    best = []
    for r in ours:
        if r["criterion"] not in best:
            best.append(r["criterion"])
    return ["tp-default", "l1", "random"] + best[:2]


def model_macs(model, shape) -> int:
    return count_macs_params(model, shape)[0]


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
