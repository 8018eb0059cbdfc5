"""Each model timed in its own process: the alternation, the aggregation, a real child, and errors."""

import pytest

from neurotomy.errors import NeurotomyError
from neurotomy.jobs import isolated_timing
from neurotomy.jobs.isolated_timing import isolated_latency


def test_processes_alternate_and_medians_are_over_processes(monkeypatch):
    calls = []
    fake = {"a": [5.0, 1.0, 3.0], "b": [2.0, 4.0, 6.0]}

    def child(request, timeout_s, env):
        name = request["source"].removeprefix("zoo:")
        calls.append(name)
        ms = fake[name][sum(c == name for c in calls) - 1]
        return {"median_ms": ms, "min_ms": ms - 0.5, "threads": request["threads"], "pid": len(calls)}

    monkeypatch.setattr(isolated_timing, "check_model_spec", lambda s: s)
    monkeypatch.setattr(isolated_timing, "run_child", child)
    a, b = isolated_latency(["zoo:a", "zoo:b"], rounds=3, threads=1, warn=False)
    assert a["env"] == {}
    assert calls == ["a", "b", "b", "a", "a", "b"]  # A B, B A, A B: a drift hits both alike
    assert a["median_ms"] == 3.0 and b["median_ms"] == 4.0  # median of the process medians, not their mean
    assert a["min_ms"] == 0.5 and b["min_ms"] == 1.5
    assert a["process_median_ms"] == [5.0, 1.0, 3.0] and a["rounds"] == 3 and a["method"] == "isolated"
    assert len(a["load_average"]) == 2


def test_a_real_child_process_times_a_zoo_model():
    (t,) = isolated_latency(["zoo:lenet5-digits"], batch_size=4, rounds=1, inner_rounds=2, repeats=1, warmup=1,
                            warn=False)
    assert t["threads"] == 1 and t["median_ms"] >= t["min_ms"] > 0 and len(t["process_median_ms"]) == 1


def test_a_bad_spec_is_refused_before_any_process_starts(monkeypatch, tmp_path):
    monkeypatch.setattr(isolated_timing, "run_child", lambda *a: pytest.fail("a process started"))
    with pytest.raises(NeurotomyError, match="no-such.safetensors"):
        isolated_latency(["zoo:lenet5-digits", str(tmp_path / "no-such.safetensors")], warn=False)
    with pytest.raises(NeurotomyError, match="must be ≥ 1"):
        isolated_latency(["zoo:lenet5-digits"], rounds=0, warn=False)


def test_a_child_that_fails_names_the_model(tmp_path):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(NeurotomyError, match="broken.safetensors in its own process failed"):
        isolated_latency([str(broken)], rounds=1, inner_rounds=1, repeats=1, warmup=0, warn=False)


def test_extra_environment_reaches_every_child_and_the_record(monkeypatch):
    import subprocess

    seen = []

    def fake_run(argv, **kw):
        seen.append(kw["env"])
        line = isolated_timing.MARKER + '{"median_ms": 2.0, "min_ms": 1.0, "threads": 1, "pid": 1}'
        return subprocess.CompletedProcess(argv, 0, stdout=f"noise\n{line}\n", stderr="")

    monkeypatch.setattr(isolated_timing.subprocess, "run", fake_run)
    (t,) = isolated_latency(["zoo:lenet5-digits"], rounds=2, threads=1, warn=False,
                            env={"MALLOC_TRIM_THRESHOLD_": "4000000000"})
    assert len(seen) == 2 and all(e["MALLOC_TRIM_THRESHOLD_"] == "4000000000" and e["OMP_NUM_THREADS"] == "1"
                                  for e in seen)
    assert t["env"] == {"MALLOC_TRIM_THRESHOLD_": "4000000000"} and t["median_ms"] == 2.0
