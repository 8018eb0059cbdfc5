"""benchmarks/vit.py's seed repeats: other seeds' runs are read only when every setting but the seed
matches, and the ours-vs-baseline lead over seeds is the per-seed difference, its mean and sd."""

import json
import statistics
from pathlib import Path

import pytest

from neurotomy.errors import NeurotomyError

from tests.benchmark_scripts import load_benchmark

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"model": "zoo:vit-tiny-fmnist", "train_images": 60000, "test_images": 10000,
            "finetune": {"epochs": 3, "lr": 3e-4, "seed": 0}, "score_images": 640, "seed": 0}


@pytest.fixture(scope="module")
def vit():
    return load_benchmark("vit", "vit_bench")


def record(key: str, method: str, acc: float) -> dict:
    return {"key": key, "method": method, "criterion": "taylor", "units": "all", "scope": "global",
            "target_macs_reduction": 0.5, "macs_reduction": 0.5, "acc_pruned": 0.5, "acc_finetuned": acc,
            "finetune_epochs": 3}


def run(path: Path, seed: int, ours: float, base: float, **changes) -> str:
    finetune = {**SETTINGS["finetune"], "seed": seed}  # the fine-tune is seeded by the run's seed too
    path.write_text(json.dumps({**SETTINGS, "seed": seed, "finetune": finetune, **changes,
                                "records": [record("ours@0.5", "ours", ours), record("tp@0.5", "torch-pruning", base)]}))
    return str(path)


def test_lead_over_seeds_is_the_mean_of_per_seed_differences(vit, tmp_path):
    repeats = vit.read_repeats([run(tmp_path / "a.json", 1, 0.9175, 0.9150), run(tmp_path / "b.json", 2, 0.9100, 0.9160)],
                               SETTINGS)
    assert sorted({r["seed"] for r in repeats}) == [1, 2] and len(repeats) == 4
    results = {"seed": 0, "records": [record("ours@0.5", "ours", 0.9165), record("tp@0.5", "torch-pruning", 0.9184)],
               "seed_repeats": repeats}
    lead = vit.lead_over_seeds(results, results["records"][0], results["records"][1])
    expected = [(0.9165 - 0.9184) * 100, (0.9175 - 0.9150) * 100, (0.9100 - 0.9160) * 100]
    assert lead["seeds"] == [0, 1, 2]
    assert lead["values"] == pytest.approx(expected)
    assert lead["mean"] == pytest.approx(statistics.mean(expected))
    assert lead["sd"] == pytest.approx(statistics.stdev(expected))
    assert lead["met"] is (statistics.mean(expected) >= 0)


def test_lead_over_seeds_needs_two_seeds_with_both_configs(vit):
    results = {"seed": 0, "records": [record("ours@0.5", "ours", 0.92), record("tp@0.5", "torch-pruning", 0.91)],
               "seed_repeats": [{**record("ours@0.5", "ours", 0.93), "seed": 1}]}  # seed 1 lacks the baseline
    assert vit.lead_over_seeds(results, results["records"][0], results["records"][1]) is None


def test_repeats_of_other_settings_or_the_same_seed_are_refused(vit, tmp_path):
    other = run(tmp_path / "lr.json", 1, 0.9, 0.9, finetune={"epochs": 3, "lr": 1e-3, "seed": 1})
    with pytest.raises(NeurotomyError, match="finetune.lr"):
        vit.read_repeats([other], SETTINGS)
    same = run(tmp_path / "same.json", 0, 0.9, 0.9)
    with pytest.raises(NeurotomyError, match="another --seed"):
        vit.read_repeats([same], SETTINGS)


def test_timing_runs_are_all_kept_and_records_carry_their_median(vit, tmp_path, one_thread):
    """A re-time adds a run instead of replacing the last one; a file timed before runs were kept
    becomes the first run; each record's speed-up is the median over the runs that timed it."""
    import argparse
    import warnings

    import torch

    from neurotomy.checkpoint import save_checkpoint
    from neurotomy.data import load_dataset
    from neurotomy.models import build_model

    torch.manual_seed(0)
    model = build_model("vit_tiny", 1, 10, 8, patch=2, dim=16, depth=1, num_heads=2, mlp_hidden=16).eval()
    path = save_checkpoint(model, tmp_path / "same.safetensors")
    row = {**record("ours@0.5", "ours", 0.9), "checkpoint": str(path), "macs_ratio": 1.0,
           "speedup_batch64": 0.5, "speedup_batch64_min": 0.6, "latency_batch64_ms": 2.0, "latency_batch64_min_ms": 1.9}
    results = {"records": [row], "timing": {"git_commit": "abc", "original_median_ms": 1.0, "threads": 1,
                                            "load_average": [0.2, 0.3], "speedup": "old wording"}}
    args = argparse.Namespace(rounds=3, repeats=1, threads=1, wait_quiet=0.0, allow_busy=True, retime=True,
                              timing_method="interleaved")
    test = load_dataset("digits", split="test")
    saves = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a busy machine is allowed here (allow_busy)
        for _ in range(2):
            assert vit.timing_stage(model, test, args, results, saves.append)
    runs = results["timing_runs"]
    assert len(runs) == 3 and runs[0]["git_commit"] == "abc" and runs[0]["speedups"] == {"ours@0.5": 0.5}
    assert "speedup" not in runs[0] and runs[1]["git_commit"] != "abc" and len(saves) == 2
    new = [r["speedups"]["ours@0.5"] for r in runs[1:]]
    assert all(s > 0 and s != 0.5 for s in new)  # measured now, not the old figure carried over
    assert row["speedup_batch64_runs"] == [0.5, *new]
    assert row["speedup_batch64"] == pytest.approx(statistics.median([0.5, *new]))
    assert results["timing"]["original_median_ms"] == runs[-1]["original_median_ms"]



@pytest.mark.filterwarnings("ignore:load average")  # a busy machine is allowed here (allow_busy)
def test_isolated_timing_is_kept_beside_the_in_process_figure(vit, tmp_path, monkeypatch):
    """--timing-method isolated: its runs go to isolated_timing_runs and speedup_batch64_isolated (the
    median over those runs); speedup_batch64 and its target verdict stay the in-process figures."""
    import argparse

    checkpoint = tmp_path / "pruned.safetensors"
    checkpoint.write_bytes(b"")
    row = {**record("ours@0.5", "ours", 0.9), "checkpoint": str(checkpoint), "macs_ratio": 2.0,
           "speedup_batch64": 1.5, "speedup_over_macs_ratio": 0.75, "speedup_meets_target": False}
    results = {"records": [row]}
    pruned_ms = iter([50.0, 40.0, 45.0])
    seen = []

    def fake(sources, **options):
        seen.append((list(sources), options))
        ms = next(pruned_ms)
        return [{"median_ms": 90.0, "min_ms": 80.0, "process_median_ms": [90.0], "threads": 1,
                 "load_average": [0.9, 1.0], "machine_busy": False},
                {"median_ms": ms, "min_ms": ms - 1, "process_median_ms": [ms], "threads": 1,
                 "load_average": [0.9, 1.0], "machine_busy": False}]

    monkeypatch.setattr(vit, "isolated_latency", fake)
    args = argparse.Namespace(model="zoo:vit-tiny-fmnist", rounds=7, repeats=2, threads=1, wait_quiet=0.0,
                              allow_busy=True, retime=True, timing_method="isolated", isolated_rounds=3, seed=0,
                              child_env=[])
    for _ in range(3):
        assert vit.timing_stage(None, list(range(100)), args, results, lambda r: None)
    assert seen[0][0] == ["zoo:vit-tiny-fmnist", str(checkpoint)]
    assert seen[0][1]["rounds"] == 3 and seen[0][1]["inner_rounds"] == 7 and seen[0][1]["batch_size"] == 64
    assert row["speedup_batch64_isolated_runs"] == [1.8, 2.25, 2.0]
    assert row["speedup_batch64_isolated"] == 2.0 and row["speedup_isolated_over_macs_ratio"] == 1.0
    assert row["speedup_batch64"] == 1.5 and "timing_runs" not in results  # the in-process figure is untouched
    assert [r["method"] for r in results["isolated_timing_runs"]] == ["isolated"] * 3
    pruned_ms = iter([60.0])  # a run with the allocator's thresholds raised: kept apart, by environment
    args.child_env = ["MALLOC_TRIM_THRESHOLD_=4000000000"]
    assert vit.timing_stage(None, list(range(100)), args, results, lambda r: None)
    assert seen[-1][1]["env"] == {"MALLOC_TRIM_THRESHOLD_": "4000000000"}
    assert row["speedup_batch64_isolated"] == 2.0 and row["speedup_batch64_isolated_runs"] == [1.8, 2.25, 2.0]
    assert row["speedup_batch64_isolated_by_env"] == {"default": 2.0, "MALLOC_TRIM_THRESHOLD_=4000000000": 1.5}
    targets = vit.check_targets({"acc_original": 0.92, "records": [row]}, 3)
    assert targets["speedup_vs_macs_ratio_at_50"]["met"] is False
    assert targets["speedup_vs_macs_ratio_at_50_isolated"]["met"] is True
    assert targets["speedup_vs_macs_ratio_at_50_isolated"]["by_env"]["MALLOC_TRIM_THRESHOLD_=4000000000"] == 0.75
    with pytest.raises(SystemExit):
        vit.parse_args(["--child-env", "MALLOC_TRIM_THRESHOLD_"])


def test_a_config_may_round_our_widths_and_never_the_baseline(vit):
    config = vit.parse_config("ours:l1:heads+neurons:global:round8")
    assert config.round_to == 8 and config.name == "ours:l1:heads+neurons:global:round8"
    assert vit.parse_config("ours:l1:heads+neurons:global").round_to is None  # the committed keys stay as they were
    with pytest.raises(NeurotomyError, match="without rounding"):
        vit.parse_config("tp:taylor:all:global:round8")
    with pytest.raises(NeurotomyError, match="roundN"):
        vit.parse_config("ours:l1:heads+neurons:global:round")
