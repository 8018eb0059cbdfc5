"""benchmarks/transformer_scale.py's own logic: SPEC@SIZE parsing and option checks (one line, exit 2,
before any work), the targets and met flags of a record, a child stopped past its time or memory limit
recorded as a miss, and one real cut of a tiny ViT whose MACs reduction is recounted here independently."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from neurotomy.errors import ModelError, OptionError
from neurotomy.loading import load_model
from neurotomy.models.summary import count_macs_params
from neurotomy.scores import score_transformer
from neurotomy.surgery.transformer import prune_transformer

from tests.benchmark_scripts import load_benchmark

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "transformer_scale.py"
TINY_VIT = '''from neurotomy.models import build_model


def make(in_channels=3, num_classes=10, input_size=8):
    return build_model("vit_tiny", in_channels, num_classes, input_size, patch=2, dim=24, depth=2, num_heads=3,
                       mlp_hidden=32)
'''


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("transformer_scale")


@pytest.fixture
def tiny_vit(tmp_path) -> str:
    path = tmp_path / "tiny_vit.py"
    path.write_text(TINY_VIT)
    return f"{path}:make"


def test_parses_spec_at_size(bench, tiny_vit):
    assert bench.parse_model("torchvision:swin_t@64") == ("torchvision:swin_t", 64)
    assert bench.parse_model(f"{tiny_vit}@8") == (tiny_vit, 8)
    for bad, match in (("torchvision:swin_t", "give SPEC@SIZE"), ("@64", "give SPEC@SIZE"),
                       ("torchvision:swin_t@", "positive whole number"), ("timm:deit@0", "positive whole number"),
                       ("timm:deit@6.4", "positive whole number")):
        with pytest.raises(OptionError, match=match):
            bench.parse_model(bad)
    for bad, match in (("no_such_thing@64", "is not a model"), ("torchvision:swinn_t@64", "torchvision has no model"),
                       ("timm:deit_tiny_patch16_2244@224", "timm has no model")):
        with pytest.raises(ModelError, match=match):
            bench.parse_model(bad)


def test_bad_options_fail_before_any_work(bench, tmp_path):
    out = tmp_path / "out"
    for argv in (["--models", "torchvision:swin_t"], ["--cuts", "embedding"], ["--threads", "0"],
                 ["--timeout", "0"]):
        with pytest.raises(OptionError):
            bench.main([*argv, "--out", str(out)])
    assert not out.exists()


def test_bad_models_entry_is_one_line_and_exit_2(tmp_path):
    argv = [sys.executable, str(SCRIPT), "--models", "torchvision:swin_t@big", "--out", str(tmp_path / "o")]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "--models 'torchvision:swin_t@big'" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr and not (tmp_path / "o").exists()


def run_of(seconds=None, peak=None, ok=True, error=None, stopped=None, returncode=0, cut="filters"):
    events = [{"event": "baseline", "baseline_mb": 700.0, "threads": 1},
              {"event": "loaded", "load_seconds": 0.5, "model_mb": 800.0, "attention_layers": 2,
               "cuttable_attention_layers": 2, "head_refusal": None}]
    if seconds is not None:
        events.append({"event": "start", "cut": cut, "at": 100.0})
        events.append({"event": "cut", "cut": cut, "ok": ok, "error": error, "seconds": seconds, "score_seconds": 0.1,
                       "macs_reduction": 0.1 if ok else None, "peak_mb": peak})
    elif stopped:
        events.append({"event": "start", "cut": cut, "at": 100.0})
    return {"events": events, "stopped": stopped, "wall_seconds": 130.0, "ended_at": 125.0, "watched_peak_mb": 5000.0,
            "returncode": returncode, "stderr_tail": ["MemoryError"] if returncode else []}


@pytest.mark.parametrize("seconds,peak", [(1.0, 900.0), (60.0, 2048.0), (60.5, 900.0), (1.0, 2049.0), (75.0, 3000.0)])
def test_targets_and_met_flags(bench, seconds, peak):
    r = bench.make_record("torchvision:swin_t", 64, "filters", run_of(seconds, peak))
    assert r["ok"] and r["error"] is None and r["baseline_mb"] == 700.0 and r["model_mb"] == 800.0
    assert (r["target_seconds"], r["target_peak_mb"]) == (60.0, 2048.0)
    # the naive reading of the targets: at most 60 s and at most 2 GB
    assert r["seconds_met"] == (seconds <= 60) and r["peak_met"] == (peak <= 2048)
    assert r["met"] == (seconds <= 60 and peak <= 2048)


def test_failed_stopped_and_crashed_children_meet_nothing(bench):
    failed = bench.make_record("m", 8, "neurons", run_of(0.2, 900.0, ok=False, error="ModelError: no MLP"))
    assert not failed["ok"] and failed["error"] == "ModelError: no MLP" and not failed["met"]
    assert not failed["seconds_met"] and not failed["peak_met"]  # fast and small, but it did not cut
    stopped = bench.make_record("m", 8, "filters", run_of(stopped="stopped after 601 s (--timeout 600 s)"))
    assert not stopped["ok"] and stopped["error"].startswith("stopped after") and not stopped["met"]
    assert stopped["seconds"] == 25.0  # from the cut's start to the kill, not the child's whole life
    assert stopped["peak_mb"] == 5000.0  # what the parent saw
    crashed = bench.make_record("m", 8, "filters", run_of(returncode=-9))
    assert not crashed["ok"] and crashed["error"] == "child exited with status -9: MemoryError"


def test_heads_only_where_some_can_be_cut(bench):
    swin_like = {"attention_layers": 12, "cuttable_attention_layers": 0,
                 "head_refusal": "a: its bias holds per-head values"}
    assert bench.applicable("heads", None) and bench.applicable("heads", {"cuttable_attention_layers": 1})
    assert not bench.applicable("heads", swin_like) and bench.applicable("filters", swin_like)
    assert "per-head values" in bench.skipped_line("torchvision:swin_t", 64, "heads", swin_like)
    assert "no attention layer" in bench.skipped_line("m", 8, "heads", {"attention_layers": 0,
                                                                        "cuttable_attention_layers": 0})


@pytest.mark.parametrize("limit", [{"timeout": 0.05}, {"memory_limit_mb": 1.0}])
def test_a_child_past_its_limit_is_stopped_and_recorded(bench, tmp_path, limit):
    settings = {"timeout": 600.0, "memory_limit_mb": 8192.0, **limit}
    run = bench.run_child("no_such_thing", 8, "filters", threads=1, seed=0, workdir=tmp_path, **settings)
    assert run["stopped"] and run["returncode"] != 0 and run["wall_seconds"] < 30
    record = bench.make_record("no_such_thing", 8, "filters", run)
    assert not record["ok"] and not record["met"] and record["error"] == run["stopped"]


def test_tiny_vit_end_to_end(bench, tiny_vit, tmp_path, capsys):
    results = bench.main(["--models", f"{tiny_vit}@8", "--cuts", "neurons", "--out", str(tmp_path / "out"),
                          "--seed", "3"])
    written = json.loads((tmp_path / "out" / "transformer_scale.json").read_text())
    assert written == json.loads(json.dumps(results)) and (tmp_path / "out" / "transformer_scale.png").stat().st_size
    (record,) = written["records"]
    assert record["ok"], record["error"]
    assert record["child_threads"] == 1 and record["threads"] == 1 and record["git_commit"]
    assert record["load_average_start"] and record["load_average_end"]
    assert 0 < record["baseline_mb"] <= record["model_mb"] <= record["peak_mb"]
    assert 0 <= record["seconds"] < 60 and record["met"]
    # independently: the same cut in this process, its MACs counted on both models
    torch.manual_seed(3)
    model = load_model(tiny_vit, in_channels=3, num_classes=10, input_size=8)
    pruned = prune_transformer(model, score_transformer(model, "l1", "neuron"), units="neurons", ratio=0.2).model
    before, after = count_macs_params(model, (3, 8, 8))[0], count_macs_params(pruned, (3, 8, 8))[0]
    assert record["macs_reduction"] == pytest.approx(1 - after / before) and record["macs_reduction"] > 0
    assert record["removed"]["neurons_removed"] == 2 * round(0.2 * 32)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and "neurons" in lines[0] and lines[1].startswith("1/1 cuts within")
