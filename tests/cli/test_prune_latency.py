"""``neurotomy prune --target-speedup / --target-latency-ms``: bad input is one line and exit 2
before any work; a good request runs end to end (on the deterministic fake runtime)."""

import json

import pytest

from neurotomy.cli import main
from neurotomy.surgery.latency import LATENCY_RUNTIMES
from tests.surgery.test_latency import FakeRuntime

if "fake" not in LATENCY_RUNTIMES:
    LATENCY_RUNTIMES.add("fake", FakeRuntime)


@pytest.mark.parametrize("args, message", [
    (["--target-speedup", "0.5"], "above 1"),
    (["--target-speedup", "1"], "above 1"),
    (["--target-speedup", "2", "--target-macs", "0.5"], "exactly one"),
    (["--target-speedup", "2", "--round-to", "8"], "round_to does not apply"),
    (["--target-speedup", "2", "--latency-runtime", "tpu"], "unknown latency runtime"),
    (["--target-speedup", "2", "--threads", "0"], "--threads"),
    (["--target-latency-ms", "-3"], "--target-latency-ms"),
    (["--target-speedup", "2", "--steps", "3"], "MACs target"),
])
def test_bad_latency_targets_exit_2_in_one_line(tmp_path, capsys, args, message):
    out = tmp_path / "p.safetensors"
    code = main(["prune", "zoo:lenet5-digits", *args, "--latency-cache", str(tmp_path / "cache"), "--out", str(out),
                 "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_prune_to_a_speedup_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "p.safetensors"
    assert main(["prune", "zoo:lenet5-digits", "--target-speedup", "1.5", "--latency-runtime", "fake", "--threads", "1",
                 "--latency-batch", "2", "--latency-cache", str(tmp_path / "cache"), "--recalibrate-images", "64",
                 "--no-latency", "--out", str(out), "--json", "--quiet"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["settings"]["target_speedup"] == 1.5 and record["scope"] == "latency"
    assert 1.5 <= record["speedup_predicted"] <= 1.5 * 1.1
    for key in ("speedup_measured", "latency_ms_predicted", "latency_ms_measured", "threads", "load_average"):
        assert key in record, key
    assert list((tmp_path / "cache").glob("fake-*.json")) and out.exists()
