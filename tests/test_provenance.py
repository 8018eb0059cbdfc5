import datetime
import os
import subprocess

import pytest
import torch

from neurotomy import provenance
from neurotomy.provenance import (STAMP_KEYS, begin_stamp, end_stamp, git_state, legacy_stamp, machine_busy,
                                  measured_load, merge_part, run_stamp)


@pytest.fixture
def loads(monkeypatch):
    """os.getloadavg replaced by a queue of 1-minute loads (5- and 15-minute: the same)."""
    queue = []

    def fake():
        value = queue.pop(0) if len(queue) > 1 else queue[0]
        return (value, value, value)

    monkeypatch.setattr(os, "getloadavg", fake)
    return queue


def test_stamp_records_the_run_and_the_load_at_both_ends(loads):
    loads[:] = [0.25, 3.5]
    with run_stamp(argv=["bench.py", "--x", "1"]) as stamp:
        assert stamp["load_average_end"] is None
    assert sorted(stamp) == sorted(STAMP_KEYS)
    assert stamp["load_average_start"] == [0.25, 0.25, 0.25] and stamp["load_average_end"] == [3.5, 3.5, 3.5]
    assert stamp["argv"] == ["bench.py", "--x", "1"] and stamp["threads"] == torch.get_num_threads()
    assert stamp["cpu_count"] == os.cpu_count() and stamp["device"] == "cpu"
    assert datetime.datetime.fromisoformat(stamp["date"]).utcoffset() == datetime.timedelta(0)
    assert measured_load(stamp)


def test_stamp_is_completed_when_the_block_fails(loads):
    loads[:] = [1.0, 2.0]
    with pytest.raises(RuntimeError):
        with run_stamp() as stamp:
            raise RuntimeError("boom")
    assert stamp["load_average_end"] == [2.0, 2.0, 2.0]


def test_end_stamp_returns_a_closed_copy(loads):
    loads[:] = [0.5, 0.75]
    opened = begin_stamp(argv=[])
    closed = end_stamp(opened)
    assert opened["load_average_end"] is None and closed["load_average_end"] == [0.75, 0.75, 0.75]
    assert {k: v for k, v in closed.items() if k != "load_average_end"} == \
        {k: v for k, v in opened.items() if k != "load_average_end"}


def test_git_state_of_a_repository_and_outside_git(tmp_path):
    outside = tmp_path / "plain"
    outside.mkdir()
    git_state.cache_clear()
    assert git_state(outside) == ("unknown", None)
    repo = tmp_path / "repo"
    repo.mkdir()
    run = lambda *a: subprocess.run(["git", "-C", str(repo), *a], check=True, capture_output=True, text=True)  # noqa: E731
    run("init", "-q")
    (repo / "f.txt").write_text("one\n")
    run("add", "f.txt")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    head = run("rev-parse", "HEAD").stdout.strip()
    assert git_state(repo) == (head, False)
    (repo / "f.txt").write_text("two\n")
    git_state.cache_clear()
    assert git_state(repo) == (head, True)
    (repo / "f.txt").write_text("one\n")
    (repo / "new.txt").write_text("untracked files do not make the tree dirty\n")
    git_state.cache_clear()
    assert git_state(repo) == (head, False)
    git_state.cache_clear()


def test_stamp_names_this_repository_commit():
    commit, dirty = git_state()
    assert commit == "unknown" or (len(commit) == 40 and isinstance(dirty, bool))
    assert begin_stamp(argv=[])["git_commit"] == commit


def test_merge_part_keeps_the_other_parts_and_their_stamps(loads):
    loads[:] = [0.1]
    results = {}
    with run_stamp(argv=["bench.py", "--parts", "scores"]) as first:
        pass
    merge_part(results, "scores", {"scores": {"a": 1}, "better": "lower"}, first)
    loads[:] = [4.0]
    with run_stamp(argv=["bench.py", "--parts", "throughput"]) as second:
        pass
    merge_part(results, "throughput", {"throughput": 3.0}, second)
    assert results["scores"] == {"a": 1} and results["throughput"] == 3.0
    assert results["provenance"]["scores"]["argv"][-1] == "scores"
    assert results["provenance"]["scores"]["load_average_start"] == [0.1, 0.1, 0.1]
    assert results["provenance"]["scores"]["keys"] == ["better", "scores"]
    assert results["provenance"]["throughput"]["load_average_end"] == [4.0, 4.0, 4.0]
    # a re-run of one part replaces that part's stamp only
    merge_part(results, "scores", {"scores": {"a": 2}}, second)
    assert results["provenance"]["scores"]["argv"][-1] == "throughput"
    assert set(results["provenance"]) == {"scores", "throughput"}


def test_legacy_stamp_never_invents_a_load():
    stamp = legacy_stamp("abc", "2026-01-01T00:00:00+00:00", "every record")
    assert stamp["load_average_start"] is None and stamp["load_average_end"] is None
    assert provenance.NOT_RECORDED in stamp["provenance_note"] and not measured_load(stamp)
    assert {"git_commit", "date"} <= set(stamp) and "note" not in stamp  # merges into records without a clash


def test_busy_is_half_the_cores(loads):
    assert machine_busy(1.1, cores=2) and not machine_busy(1.0, cores=2)
    loads[:] = [9.0]
    assert machine_busy(cores=16) and not machine_busy(cores=32)
