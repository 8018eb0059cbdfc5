"""Which committed results still lack a measured load (issue #17, "Done when": every record has a
``git_commit`` and a measured load).

A provenance stamp is any JSON object with a ``git_commit`` (``neurotomy.provenance.begin_stamp`` /
``end_stamp`` write them, into records or run sections); it has a measured load when one of
``load_average_start``, ``load_average_end`` or ``load_average`` holds numbers. This lists, per results
file, how many stamps it has, which of them lack a measured load (by JSON path), and files with no stamp
at all — the benchmarks to rerun.

Usage: python benchmarks/audit_provenance.py [--results benchmarks/results] [--json]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
LOAD_FIELDS = ("load_average_start", "load_average_end", "load_average")


def stamps(node, path: str = "") -> Iterator[tuple[str, dict]]:
    """(JSON path, object) of every object under ``node`` that carries a ``git_commit``."""
    if isinstance(node, dict):
        if "git_commit" in node:
            yield path or "/", node
        for key, value in node.items():
            yield from stamps(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from stamps(value, f"{path}/{i}")


def has_load(stamp: dict) -> bool:
    """Whether ``stamp`` holds a measured load average (a number, or a list of numbers)."""
    def measured(value) -> bool:
        return (isinstance(value, (int, float)) and not isinstance(value, bool)) or (
            isinstance(value, list) and bool(value) and all(isinstance(v, (int, float)) for v in value))
    return any(measured(stamp.get(field)) for field in LOAD_FIELDS)


def audit(results: Path) -> dict:
    """Per results file (subdirectories included, keyed by the path under ``results``): ``stamps``,
    ``without_load`` (JSON paths) and whether it ``has_stamp`` at all."""
    report = {}
    for path in sorted(results.rglob("*.json")):
        found = list(stamps(json.loads(path.read_text())))
        report[path.relative_to(results).as_posix()] = {"stamps": len(found), "has_stamp": bool(found),
                             "without_load": [where for where, stamp in found if not has_load(stamp)]}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(RESULTS), help="directory of results JSON files")
    parser.add_argument("--json", action="store_true", help="print the whole report as JSON")
    args = parser.parse_args()
    report = audit(Path(args.results))
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for name, entry in report.items():
        missing = entry["without_load"]
        state = "no stamp" if not entry["has_stamp"] else (f"{len(missing)} of {entry['stamps']} stamps without a "
                                                           f"measured load" if missing else f"{entry['stamps']} stamps, "
                                                           "all with a measured load")
        print(f"{name:32} {state}" + (f" (e.g. {', '.join(missing[:3])})" if missing else ""))


if __name__ == "__main__":
    main()
