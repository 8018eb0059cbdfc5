"""How strong are the tests? The mutation check of issue #17, as a table.

For every registered criterion (per-unit and class-wise) and attribution method, the hand-written
mutants of ``tests/mutants.py`` — return a constant, shuffle the output, drop a term of the formula,
change a documented setting — are applied one at a time by monkeypatching, and the method's
cross-check (the plain function its ordinary test calls) is run against each. A mutant is *killed*
when the cross-check fails. ``tests/test_strength.py`` runs the same in ``make test`` and fails when
this file no longer says what the tests can do.

Usage: python benchmarks/test_strength.py        (make test-strength)
Writes benchmarks/results/test_strength.json: one record per (method, mutant) with ``killed`` and
what killed it, a per-method summary, the surviving mutants, and the run's provenance stamp.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the cross-checks live in the test suite

from neurotomy.files import write_json  # noqa: E402
from neurotomy.provenance import run_stamp  # noqa: E402
from tests.mutants import CHECK_THREADS, run_mutants  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "test_strength.json"


def summarise(records: list[dict]) -> dict:
    per_method: dict[str, dict] = {}
    for r in records:
        entry = per_method.setdefault(f"{r['family']}:{r['method']}", {"killed": 0, "survived": 0, "surviving": []})
        entry["killed" if r["killed"] else "survived"] += 1
        if not r["killed"]:
            entry["surviving"].append(r["mutant"])
    return per_method


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    with run_stamp() as stamp:
        start = time.perf_counter()
        records = run_mutants()
        seconds = round(time.perf_counter() - start, 1)
    per_method = summarise(records)
    survivors = [{"method": r["method"], "family": r["family"], "mutant": r["mutant"], "kind": r["kind"]}
                 for r in records if not r["killed"]]
    results = {
        "question": "does each criterion's and attribution method's cross-check fail for broken versions of it?",
        "how": "tests/mutants.py: each mutant monkeypatched in turn, the method's cross-check run against it "
               "(tiny two-conv model and LeNet-5 on four digits; expected values computed independently, once)",
        "mutants": len(records), "killed": sum(r["killed"] for r in records), "survived": survivors,
        "methods": len(per_method), "per_method": per_method, "seconds": seconds,
        "threads_during_checks": CHECK_THREADS, "records": records, **stamp,
    }
    write_json(args.out, results)
    surviving = ", ".join(f"{s['method']}: {s['mutant']}" for s in survivors) or "none"
    print(f"{results['killed']}/{len(records)} mutants killed over {len(per_method)} methods in {seconds} s; "
          f"surviving: {surviving} — wrote {args.out}")


if __name__ == "__main__":
    main()
