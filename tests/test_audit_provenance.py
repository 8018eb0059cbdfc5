"""benchmarks/audit_provenance.py (issue #17): stamps found at any depth, a load counts only when it
holds numbers, files without any stamp flagged."""

import json

from tests.benchmark_scripts import load_benchmark


def load_audit():
    return load_benchmark("audit_provenance")


def test_audit_lists_stamps_without_a_measured_load(tmp_path):
    audit = load_audit()
    (tmp_path / "a.json").write_text(json.dumps({
        "records": [{"git_commit": "x", "load_average_start": [0.5, 0.4, 0.3], "load_average_end": None},
                    {"git_commit": "y", "load_average_start": None, "load_average_end": None},
                    {"acc": 0.9}],
        "provenance": {"run": {"git_commit": "z", "load_average": "idle"}}}))  # a label, not a measurement
    (tmp_path / "b.json").write_text(json.dumps({"accuracy": 0.9}))
    (tmp_path / "c.json").write_text(json.dumps([{"git_commit": "w", "load_average": [1.0, 1.0]}]))
    (tmp_path / "runs" / "x").mkdir(parents=True)  # a benchmark's variant written with --out under results/
    (tmp_path / "runs" / "x" / "d.json").write_text(json.dumps({"git_commit": "v", "load_average_start": None}))
    report = audit.audit(tmp_path)
    assert report["runs/x/d.json"] == {"stamps": 1, "has_stamp": True, "without_load": ["/"]}
    assert report["a.json"] == {"stamps": 3, "has_stamp": True, "without_load": ["/records/1", "/provenance/run"]}
    assert report["b.json"] == {"stamps": 0, "has_stamp": False, "without_load": []}
    assert report["c.json"]["without_load"] == [] and report["c.json"]["stamps"] == 1


def test_every_committed_results_file_is_stamped_with_a_measured_load():
    """Issue #17's "Done when": every record of every committed results JSON has a git_commit and a load."""
    audit = load_audit()
    report = audit.audit(audit.RESULTS)
    assert report and all(entry["has_stamp"] for entry in report.values()), report
    assert {name: entry["without_load"] for name, entry in report.items() if entry["without_load"]} == {}
