"""benchmarks/pruning_budget.py (issue 19's benchmark), its summary (benchmarks/budget_summary.py) and
its torch-pruning baselines (benchmarks/tp_baselines.py): the Spearman ranks against scipy, the summary's
targets and misses on made-up records, the --only filter, the baseline rebuilt bit-identical through our
surgery, and the benchmark's fine-tune equal to the one PruneJob runs."""

import argparse
import copy
import random
import shutil
import statistics
import warnings
from pathlib import Path

import pytest
import torch

from neurotomy.checkpoint import save_checkpoint
from neurotomy.jobs.prune import PruneJob
from neurotomy.loading import load_model
from neurotomy.models import build_model
from neurotomy.models.summary import count_macs_params

from tests.benchmark_scripts import load_benchmark

ROOT = Path(__file__).resolve().parents[1]



@pytest.fixture(scope="module")
def budget():
    return load_benchmark("pruning_budget")


@pytest.fixture(scope="module")
def summary():
    return load_benchmark("budget_summary")


@pytest.fixture(scope="module")
def tpb():
    return load_benchmark("tp_baselines")


def test_spearman_matches_scipy_with_ties(summary):
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(0)
    for n in (3, 4, 6, 9, 14):
        for _ in range(20):
            x = [rng.choice([0.1, 0.2, 0.3, 0.4, rng.random()]) for _ in range(n)]  # ties on purpose
            y = [rng.choice([0.5, 0.6, rng.random()]) for _ in range(n)]
            assert summary.average_ranks(x) == pytest.approx(list(stats.rankdata(x)))
            ours = summary.spearman(x, y)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # scipy's ConstantInputWarning: a constant side, on purpose
                ref = float(stats.spearmanr(x, y).statistic)
            assert (ours is None) == (ref != ref)  # a constant side: undefined in both
            if ours is not None:
                assert ours == pytest.approx(ref, abs=1e-12)
    assert summary.spearman([1, 2], [2, 1]) is None
    assert summary.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    with pytest.raises(ValueError):
        summary.spearman([1, 2, 3], [1, 2])


def test_only_patterns_and_keys(budget):
    spec = budget.Spec("ours", "l1", "uniform", "macs", 0.85, True)
    assert spec.key == "ours/l1/uniform/macs0.85/rec"
    assert budget.Spec("tp-default", "l1", "uniform", "speedup", 2.0).key == "tp-default/l1/uniform/speedup2/norec"
    assert budget.selected(spec.key, [])
    assert budget.selected(spec.key, ["ours/l1/*/macs0.85/*"])
    assert not budget.selected(spec.key, ["ours/l1/*/macs0.5/*", "tp-*"])
    assert budget.selected(spec.key, ["macs0.85"]) and not budget.selected(spec.key, ["macs0.5"])
    assert budget.nearest_macs_target(1.5, [0.85, 0.5, 0.7]) == 0.5
    assert budget.nearest_macs_target(3.0, [0.85, 0.5, 0.7]) == 0.7
    assert budget.nearest_macs_target(2.0, []) == 0.5


def _record(method, criterion, target, ft, recal=0.5, rec=None, refit=False, speedup=None, timed=None, scope="uniform"):
    return {"key": f"{method}/{criterion}/{scope}/{'speedup' if speedup else 'macs'}{speedup or target:g}/"
                   f"{'rec' if refit else 'norec'}",
            "method": method, "criterion": criterion, "scope": scope, "reconstruct": refit,
            "target_macs_reduction": None if speedup else target, "target_speedup": speedup,
            "macs_reduction": target, "acc_recalibrated": recal, "acc_reconstructed": rec, "acc_finetuned": ft,
            "acc_by_epoch": {"1": ft - 0.01, "2": ft - 0.005, "3": ft}, "reconstruction": {"seconds": 12.0} if refit else None,
            "speedup_batch64": timed, "speedup_batch64_predicted": speedup, "threads": 1, "load_average": [0.1, 0.2]}


def test_summary_targets_and_misses(summary):
    records = [
        _record("ours", "l1", 0.5, 0.9440, recal=0.60), _record("ours", "chip", 0.5, 0.9430, recal=0.80),
        _record("ours", "random", 0.5, 0.9300, recal=0.40),
        _record("ours", "l1", 0.5, 0.9445, rec=0.935, refit=True),
        _record("tp-default", "l1", 0.5, 0.9450),  # ours 0.05 pt behind: a tie
        _record("ours", "l1", 0.85, 0.9200), _record("tp-taylor", "taylor", 0.85, 0.9300, scope="global"),
        _record("ours", "l1", 0.7, 0.93, rec=0.85, refit=True),
        _record("ours", "l1", 0.6, 0.93, speedup=2.0, timed=2.3),  # 15 % over: a miss
        _record("ours", "l1", 0.6, 0.93, speedup=2.0, timed=2.1, refit=True, rec=0.9),
        _record("tp-default", "l1", 0.6, 0.90, speedup=2.0, timed=1.5),
    ]
    results = {"records": records, "acc_original": 0.9465, "settings": {"finetune": {"epochs": 3}}}
    s = summary.summarize(results)
    assert s["macs_targets"]["0.5"]["met"] is True
    assert s["macs_targets"]["0.5"]["ours_minus_tp_pts"] == pytest.approx(-0.05)
    assert s["macs_targets"]["0.5"]["ours_best"]["key"] == "ours/l1/uniform/macs0.5/rec"
    assert s["macs_targets"]["0.85"]["met"] is False
    assert s["loss_at_85_pts"]["value"] == pytest.approx(2.65) and s["loss_at_85_pts"]["met"] is False
    assert s["reconstruct_only"]["0.5"]["met"] is True and s["reconstruct_only"]["0.7"]["met"] is False
    assert s["reconstruct_only"]["0.7"]["met_seconds"] is True
    saves = s["reconstruct_saves"]["0.5"]  # with reconstruct 0.9345, 0.9395, 0.9445 vs 0.9440 without after 3
    assert saves["epochs_to_match"] == 3 and saves["epochs_saved"] == 0
    speed = s["speedup_targets"]["2"]
    assert speed["hit_count"] == 1 and speed["timed"] == 2 and speed["met"] is False
    assert speed["ours_minus_tp_pts"] == pytest.approx(3.0)
    rho = next(g for g in s["spearman"] if g["target"] == "macs0.5" and g["x"] == "acc_recalibrated")
    assert rho["n"] == 3 and rho["rho"] == pytest.approx(0.5)  # recal ranks 2,3,1 vs fine-tuned ranks 3,2,1
    text = "\n".join(s["misses"])
    assert "−85% MACs after 3 epochs" in text and "-1.00 pt" in text
    assert "2.65 pt" in text and "−70% MACs reconstruct-only: 85.00%" in text and "+15%" in text
    assert "−50% MACs after" not in text


def test_reconstructed_cuts_screen_the_plain_cuts_fine_tuned_accuracy(summary):
    """The screen in seconds: each criterion's /rec record's reconstructed accuracy against its /norec
    record's fine-tuned accuracy; a criterion without a reconstructed twin is left out, not guessed."""
    records = [_record("ours", c, 0.85, ft) for c, ft in (("l1", 0.931), ("chip", 0.928), ("random", 0.921),
                                                          ("apoz", 0.920))]
    records += [_record("ours", c, 0.85, ft, rec=rc, refit=True)  # fine-tuned after the refit: not the y here
                for c, rc, ft in (("l1", 0.82, 0.90), ("chip", 0.84, 0.91), ("random", 0.81, 0.92))]
    s = summary.summarize({"records": records, "acc_original": 0.9465, "settings": {"finetune": {"epochs": 3}}})
    screen = [g for g in s["spearman"] if g.get("x_from")]
    assert len(screen) == 1 and screen[0]["target"] == "macs0.85" and screen[0]["reconstruct"] is False
    assert screen[0]["criteria"] == ["l1", "chip", "random"]  # apoz has no /rec record
    # reconstructed 0.82, 0.84, 0.81 (ranks 2, 3, 1) vs plain fine-tuned 0.931, 0.928, 0.921 (ranks 3, 2, 1)
    assert screen[0]["rho"] == pytest.approx(0.5)
    refit = next(g for g in s["spearman"] if g["reconstruct"])  # the refit's own fine-tune: ranks 2,3,1 vs 1,2,3
    assert refit["x"] == "acc_reconstructed" and "x_from" not in refit and refit["rho"] == pytest.approx(-0.5)


def test_latency_targeted_cut_against_macs_targeted_at_equal_speedup(summary):
    """Issue #19 item 3: at equal measured latency, accuracy ≥ MACs-targeted pruning — the MACs-targeted
    cuts' accuracy is interpolated at the latency-targeted cut's measured speed-up, never extrapolated."""
    records = [
        _record("ours", "l1", 0.5, 0.9440, timed=1.3), _record("ours", "chip", 0.5, 0.9400, timed=1.4),
        _record("ours", "l1", 0.7, 0.9350, timed=1.8), _record("ours", "l1", 0.85, 0.9200),  # untimed: not on the curve
        _record("ours", "l1", 0.55, 0.9430, speedup=1.5, timed=1.55),
        _record("ours", "l1", 0.65, 0.9300, speedup=1.75, timed=1.75),
        _record("ours", "l1", 0.8, 0.9250, speedup=3.0, timed=2.9),
    ]
    s = summary.summarize({"records": records, "acc_original": 0.9465, "settings": {"finetune": {"epochs": 3}}})
    at15 = s["speedup_targets"]["1.5"]["vs_macs_targeted"]
    # halfway between (1.3×, 94.40 %) and (1.8×, 93.50 %): 93.95 %; the better 0.5 record (l1) is the curve's point
    assert at15["acc_macs_targeted"] == pytest.approx(0.9395) and at15["difference_pts"] == pytest.approx(0.35)
    assert at15["between"] == ["ours/l1/uniform/macs0.5/norec", "ours/l1/uniform/macs0.7/norec"] and at15["met"]
    at175 = s["speedup_targets"]["1.75"]["vs_macs_targeted"]  # 93.59 % at 1.75×: 0.59 pt behind
    assert at175["acc_macs_targeted"] == pytest.approx(0.9359) and at175["met"] is False
    assert any("1.75× speed-up" in m and "-0.59 pt" in m for m in s["misses"])
    outside = s["speedup_targets"]["3"]["vs_macs_targeted"]
    assert outside["acc_macs_targeted"] is None and outside["met"] is None and "not extrapolated" in outside["note"]


def test_latency_targeted_cut_against_torch_pruning_at_equal_measured_speedup(summary):
    """torch-pruning cut to the same MACs as a latency-targeted cut runs slower: the cut is also compared
    with each baseline's accuracy interpolated at the same measured speed-up, from all its timed records."""
    records = [
        _record("ours", "l1", 0.55, 0.9430, speedup=1.5, timed=1.55),
        _record("tp-default", "l1", 0.5, 0.9440, timed=1.3), _record("tp-default", "l1", 0.7, 0.9340, timed=1.8),
        _record("tp-default", "l1", 0.55, 0.9420, speedup=1.5, timed=1.35),  # same MACs as ours, slower
        _record("tp-taylor", "taylor", 0.5, 0.9400, scope="global", timed=1.6),  # one point: no curve
    ]
    s = summary.summarize({"records": records, "acc_original": 0.9465, "settings": {"finetune": {"epochs": 3}}})
    entry = s["speedup_targets"]["1.5"]
    assert entry["ours_minus_tp_pts"] == pytest.approx(0.1)  # at the same MACs
    tp = entry["vs_tp_at_equal_speedup"]["tp-default"]  # 1.55× lies between (1.35×, 94.20 %) and (1.8×, 93.40 %)
    assert tp["acc_tp"] == pytest.approx(0.9420 - 0.2 / 0.45 * 0.008) and tp["met"] is True
    assert tp["between"] == ["tp-default/l1/uniform/speedup1.5/norec", "tp-default/l1/uniform/macs0.7/norec"]
    assert entry["vs_tp_at_equal_speedup"]["tp-taylor"]["acc_tp"] is None  # outside its one-point range
    records[0]["acc_finetuned"] = 0.9300
    s = summary.summarize({"records": records, "acc_original": 0.9465, "settings": {"finetune": {"epochs": 3}}})
    assert s["speedup_targets"]["1.5"]["vs_tp_at_equal_speedup"]["tp-default"]["met"] is False
    assert any("tp-default at the same measured speed-up" in m for m in s["misses"])


@pytest.mark.parametrize("importance,global_pruning", [("magnitude_l1", False), ("group_taylor", True)])
def test_tp_baseline_rebuilt_bit_identical_and_reloadable(tpb, digits_train, tmp_path, importance, global_pruning):
    torch.manual_seed(0)
    model = build_model("resnet20", 1, 10, 8).eval()
    grads = tpb.taylor_gradients(model, digits_train, 256) if importance == "group_taylor" else None
    if grads is not None:
        assert set(grads) == {n for n, p in model.named_parameters()} and all(p.grad is None for p in model.parameters())
    before = copy.deepcopy(model.state_dict())
    pruned, info = tpb.tp_bisect(model, 0.6, (1, 8, 8), getattr(tpb, importance), global_pruning, grads,
                                 tolerance=0.02)  # a loose stop: a few bisections keep the test fast
    assert info["rebuilt_identical"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the original is untouched
    macs0, macs1 = count_macs_params(model, (1, 8, 8))[0], count_macs_params(pruned, (1, 8, 8))[0]
    assert 1 - macs1 / macs0 == pytest.approx(info["macs_reduction"])
    assert abs(info["macs_reduction"] - 0.6) <= 0.02 and len(info["bisection"]) < 14
    direct, _ = tpb.tp_prune(model, info["ratio"], (1, 8, 8), getattr(tpb, importance), global_pruning, grads)
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(direct(x), pruned(x))  # torch-pruning's own model, independently of our check
    again = load_model(str(save_checkpoint(pruned, tmp_path / "tp.safetensors")))
    with torch.no_grad():
        assert torch.equal(again(x), pruned(x))


def test_benchmark_finetune_is_prunejobs(budget, lenet, digits_train, digits_test, one_thread):
    """The benchmark fine-tunes outside the job (to read every epoch); it must be the job's fine-tune."""
    job = dict(criterion="l1", target_macs=0.4, measure_latency=False, quiet=True, recalibrate_images=256)
    tuned, record = PruneJob(finetune_epochs=2, force=True, **job).run(lenet, digits_train, digits_test)
    cut, _ = PruneJob(**job).run(lenet, digits_train, digits_test)
    args = argparse.Namespace(finetune_epochs=2, finetune_lr=0.01, finetune_batch=128, distill=False,
                              distill_temperature=4.0, distill_alpha=0.5, seed=0, quiet=True, build="unused")
    bench = budget.Budget(args, lenet, digits_train, digits_test, {"acc_original": record["acc_original"]}, None)
    out = bench.recover(cut)
    assert out["acc_finetuned"] == record["acc_finetuned"] and set(out["acc_by_epoch"]) == {"1", "2"}
    assert all(torch.equal(a, b) for a, b in zip(cut.state_dict().values(), tuned.state_dict().values()))


def test_summary_prefers_the_quiet_reconstruction_timing(summary):
    """The ≤ 30 s reconstruction target is judged on the quiet re-timing when the timing stage made one
    (the accuracy stage runs beside other jobs), and says which figure it used."""
    quiet, busy = (_record("ours", "l1", t, 0.94, rec=0.935, refit=True) for t in (0.5, 0.7))
    quiet["reconstruction"] = {"seconds": 50.0, "seconds_quiet": 26.5, "load_average_quiet": [1.0, 1.1]}
    busy["reconstruction"] = {"seconds": 45.0}
    s = summary.summarize({"records": [quiet, busy], "acc_original": 0.9465, "settings": {"finetune": {"epochs": 3}}})
    at50, at70 = s["reconstruct_only"]["0.5"], s["reconstruct_only"]["0.7"]
    assert (at50["seconds"], at50["seconds_measured"], at50["met_seconds"]) == (26.5, "quiet", True)
    assert at50["seconds_accuracy_stage"] == 50.0 and at50["load_average"] == [1.0, 1.1]
    assert (at70["seconds"], at70["seconds_measured"], at70["met_seconds"]) == (45.0, "accuracy stage", False)


def test_retime_reconstructions_reruns_the_recorded_refit(budget, lenet, digits_train, digits_test, one_thread):
    """The timing stage re-runs a reconstruct record's cut and refit (same seed: same accuracy, checked)
    and stores the quiet seconds with their load; a record the re-run does not reproduce is refused."""
    from neurotomy.errors import NeurotomyError

    args = argparse.Namespace(threads=1, recalibrate_images=256, reconstruct_images=128, seed=0, quiet=True,
                              build="unused", only=[], retime=False, wait_quiet=0.0, allow_busy=True, finetune_lr=0.01)
    saved = []
    results = {"acc_original": 0.9, "records": []}
    bench = budget.Budget(args, lenet, digits_train, digits_test, results, lambda r: saved.append(True))
    _, fields = bench.cut_ours(budget.Spec("ours", "l1", "uniform", "macs", 0.4, True))
    row = {**_record("ours", "l1", 0.4, 0.9, rec=fields["acc_reconstructed"], refit=True), "provenance": {}}
    results["records"] = [row, {**_record("ours", "l1", 0.4, 0.9), "provenance": {}}]  # no refit: left alone
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a busy machine is allowed here (allow_busy)
        assert bench.retime_reconstructions()
    refit = row["reconstruction"]
    assert refit["seconds"] == 12.0 and refit["seconds_quiet"] > 0 and refit["threads_quiet"] == 1
    assert len(refit["load_average_quiet"]) == 2 and row["provenance"]["reconstruction_timing"]["git_commit"]
    assert saved and "reconstruction_timing" not in results["records"][1]["provenance"]
    assert not bench.retime_reconstructions()  # done: nothing left to re-time
    row["reconstruction"] = {"seconds": 12.0}
    row["acc_reconstructed"] += 0.01
    with pytest.raises(NeurotomyError, match="not reproducible"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bench.retime_reconstructions()


def test_smoke_refuses_the_results_directory(budget, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        budget.parse_args(["--smoke", "--root", str(tmp_path), "--out", str(ROOT / "benchmarks" / "results")])
    assert exc.value.code == 2 and "--smoke writes trial numbers" in capsys.readouterr().err
    args = budget.parse_args(["--smoke", "--root", str(tmp_path)])
    shutil.rmtree(args.out)  # the temporary directory it made
    assert Path(args.out).resolve() != (ROOT / "benchmarks" / "results").resolve()
    assert args.criteria == ["l1"] and args.max_train == 512 and args.finetune_epochs == 1
    assert Path(args.build).is_relative_to(Path(args.out))


def test_timing_runs_are_kept_and_the_speedup_is_their_median(budget, lenet, digits_train, digits_test, tmp_path,
                                                              one_thread):
    """A re-time adds a run to the record's timing_runs (a record timed before runs were kept brings its
    earlier_timings and current figure along as runs), and speedup_batch64 is the median over all of them."""
    path = save_checkpoint(copy.deepcopy(lenet), tmp_path / "same.safetensors")
    row = {**_record("ours", "l1", 0.5, 0.9, timed=3.0), "checkpoint": str(path), "macs_ratio": 2.0,
           "speedup_batch64_min": 2.9, "earlier_timings": [{"speedup_batch64": 5.0, "load_average": [0.9, 0.9],
                                                            "date": "2026-11-30T16:51"}],
           "provenance": {"timing": {"date": "2026-11-30T20:00", "git_commit": "abc"}}}
    args = argparse.Namespace(threads=1, rounds=3, repeats=1, only=[], retime=True, wait_quiet=0.0, allow_busy=True,
                              build=str(tmp_path))
    bench = budget.Budget(args, lenet, digits_train, digits_test, {"acc_original": 0.9, "records": [row]},
                          lambda r: None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a busy machine is allowed here (allow_busy)
        assert bench.timing_stage()
        assert bench.timing_stage()
    runs = row["timing_runs"]
    assert [r["speedup_batch64"] for r in runs[:2]] == [5.0, 3.0] and runs[1]["git_commit"] == "abc"
    assert "earlier_timings" not in row and len(runs) == 4
    new = [r["speedup_batch64"] for r in runs[2:]]
    assert all(0.2 < s < 5 for s in new)  # the same model twice: measured now, about 1×
    assert row["speedup_batch64"] == pytest.approx(statistics.median([5.0, 3.0, *new]))
    assert row["speedup_over_macs_ratio"] == pytest.approx(row["speedup_batch64"] / 2.0)
    assert row["load_average"] == runs[-1]["load_average"] and row["provenance"]["timing"]["date"] == runs[-1]["date"]


def test_iterative_records_take_their_between_epochs_out_of_the_budget(budget, lenet, digits_train, digits_test,
                                                                       tmp_path, one_thread):
    """--steps 2 --finetune-between 1 with --finetune-epochs 2: one epoch between the steps, one after the
    cut, and the record says 2 in all; the key names the schedule; the options are checked up front."""
    args = argparse.Namespace(finetune_epochs=2, finetune_lr=0.01, finetune_batch=128, distill=False,
                              distill_temperature=4.0, distill_alpha=0.5, seed=0, quiet=True,
                              build=str(tmp_path), threads=1, recalibrate_images=256, reconstruct_images=128,
                              steps=2, finetune_between=1, wait_quiet=0.0, allow_busy=True)
    results = {"acc_original": 0.9, "records": []}
    bench = budget.Budget(args, lenet, digits_train, digits_test, results, lambda r: None)
    spec = budget.Spec("ours", "l1", "uniform", "macs", 0.4, False, *bench.schedule)
    assert spec.key == "ours/l1/uniform/macs0.4/norec/steps2+1ep"
    assert budget.Spec("ours", "l1", "uniform", "macs", 0.4).key == "ours/l1/uniform/macs0.4/norec"  # old keys stay
    row = bench.measure_spec(spec)
    assert row["steps"] == 2 and row["finetune_epochs_between"] == 1 and row["finetune_epochs"] == 2
    assert list(row["acc_by_epoch"]) == ["1"] and abs(row["macs_reduction"] - 0.4) < 0.03
    assert row["checkpoint_verified"]
    root = ["--root", str(tmp_path)]
    for bad in (["--steps", "3", "--finetune-between", "1", "--finetune-epochs", "2", "--speedup-targets"],
                ["--steps", "2"]):  # all epochs spent between the steps; speed-up targets with steps
        with pytest.raises(SystemExit):
            budget.parse_args(root + bad)


def test_merge_joins_lanes_of_one_recipe_and_refuses_another(budget, tmp_path, capsys):
    import json
    settings = {"finetune": {"epochs": 3, "lr": 0.005}, "latency": {"threads": 1}}
    run = {"acc_original": 0.9465, "settings": settings, "test_images": 10000, "model": "zoo:m", "machine": "here",
           "conv_layers": ["conv"], "widths_original": [16]}
    lane_a, lane_b, other, out = (tmp_path / n for n in ("a", "b", "other", "out"))
    for lane, records, ranking in ((lane_a, [_record("ours", "l1", 0.85, 0.93), _record("tp-default", "l1", 0.85, 0.92)],
                                    {"uniform/macs0.85": {"l1": {"acc_recalibrated": 0.2}}}),
                                   (lane_b, [_record("ours", "l1", 0.5, 0.944), _record("ours", "l1", 0.85, 0.10)],
                                    {"uniform/macs0.85": {"chip": {"acc_recalibrated": 0.3}}})):
        lane.mkdir()
        (lane / "pruning_budget.json").write_text(json.dumps(
            {**run, "records": [{**r, "widths": [8]} for r in records], "ranking": ranking}))
    files = [str(lane_a / "pruning_budget.json"), str(lane_b / "pruning_budget.json")]
    budget.merge(budget.parse_args(["--root", str(tmp_path), "--out", str(out), "--merge", *files]))
    merged = json.loads((out / "pruning_budget.json").read_text())
    by_key = {r["key"]: r for r in merged["records"]}
    assert len(merged["records"]) == 3 and by_key["ours/l1/uniform/macs0.85/norec"]["acc_finetuned"] == 0.93  # kept
    assert set(merged["ranking"]["uniform/macs0.85"]) == {"l1", "chip"}
    assert merged["summary"]["macs_targets"]["0.85"]["met"] is True and (out / "pruning_budget.png").exists()
    assert [m["records_added"] for m in merged["provenance"]["merged"]] == [2, 1]
    # a lane seeded with a copy of the merged file (as lanes are) brings its stages, not the history again
    seeded = {**merged, "records": merged["records"] + [_record("ours", "l1", 0.7, 0.935)],
              "provenance": {**merged["provenance"], "accuracy": {"git_commit": "lane"}}}
    (lane_a / "pruning_budget.json").write_text(json.dumps(seeded))
    budget.merge(budget.parse_args(["--root", str(tmp_path), "--out", str(out), "--merge", files[0]]))
    history = json.loads((out / "pruning_budget.json").read_text())["provenance"]["merged"]
    assert [m["records_added"] for m in history] == [2, 1, 1] and history[-1]["stages"] == {
        "accuracy": {"git_commit": "lane"}}
    other.mkdir()
    (other / "pruning_budget.json").write_text(json.dumps(
        {"records": [_record("ours", "l1", 0.7, 0.93)], "settings": {"finetune": {"epochs": 3, "lr": 0.01}}}))
    with pytest.raises(budget.NeurotomyError, match="other settings"):
        budget.merge(budget.parse_args(["--root", str(tmp_path), "--out", str(out), "--merge",
                                        str(other / "pruning_budget.json")]))
    assert len(json.loads((out / "pruning_budget.json").read_text())["records"]) == 4  # nothing written


def test_a_record_whose_checkpoint_is_elsewhere_is_timed_from_its_recipe(budget, lenet, digits_train, digits_test,
                                                                        tmp_path, one_thread):
    """A run resumed on another machine has the records but not BUILD/models: the merge and the run add
    each record's surgery recipe while its checkpoint is there, and the timing stage rebuilds the same
    widths from it (and refuses a recipe that gives other widths)."""
    job = PruneJob(criterion="l1", target_macs=0.5, recalibrate_images=64, measure_latency=False, quiet=True)
    pruned, _ = job.run(lenet, digits_train, digits_test)
    path = save_checkpoint(pruned, tmp_path / "cut.safetensors")
    row = {**_record("ours", "l1", 0.5, 0.9), "checkpoint": str(path), "macs_ratio": 2.0,
           "widths": budget.conv_widths(pruned), "provenance": {}}
    results = {"acc_original": 0.9, "records": [row]}
    assert budget.add_recipes(results) == 1 and row["recipe"] == pruned.neurotomy_meta.recipe != []
    path.unlink()  # now on "another machine"
    assert budget.add_recipes(results) == 0 and budget.timable(row)
    args = argparse.Namespace(threads=1, rounds=2, repeats=1, only=[], retime=False, wait_quiet=0.0, allow_busy=True,
                              build=str(tmp_path))
    bench = budget.Budget(args, lenet, digits_train, digits_test, results, lambda r: None)
    rebuilt, source = bench.timed_model(row)
    assert source == "recipe" and budget.conv_widths(rebuilt) == row["widths"]
    kept, again = pruned.state_dict(), rebuilt.state_dict()  # LeNet-5 has no BatchNorm and no fine-tune ran:
    assert again.keys() == kept.keys() and all(torch.equal(again[k], kept[k]) for k in kept)  # the same tensors
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a busy machine is allowed here (allow_busy)
        assert bench.timing_stage()
    assert row["timed_from"] == "recipe" and row["speedup_batch64"] > 0
    row["widths"] = [w + 1 for w in row["widths"]]
    with pytest.raises(budget.NeurotomyError, match="rebuilds conv widths"):
        bench.timed_model(row)


def test_a_kept_cut_is_fine_tuned_as_the_cut_made_in_place(budget, lenet, digits_train, digits_test, tmp_path,
                                                         one_thread):
    """The cut stage keeps a record's cut; the accuracy stage fine-tunes it to the very numbers a run that
    cuts in place reaches, and says where the cut came from. A kept cut of other settings is ignored."""
    def run(build, stages):
        args = argparse.Namespace(finetune_epochs=1, finetune_lr=0.01, finetune_batch=128, distill=False,
                                  distill_temperature=4.0, distill_alpha=0.5, seed=0, quiet=True, build=str(build),
                                  threads=1, recalibrate_images=256, reconstruct_images=128, steps=1,
                                  finetune_between=0, wait_quiet=0.0, allow_busy=True, only=[])
        results = {"acc_original": 0.9, "records": [], "settings": {"seed": 0, "finetune": {"lr": 0.01}}}
        bench = budget.Budget(args, lenet, digits_train, digits_test, results, lambda r: None)
        bench.plan = lambda: [budget.Spec("ours", "l1", "uniform", "macs", 0.4, True)]
        return bench, [getattr(bench, f"{stage}_stage")() for stage in stages], results

    bench, made, _ = run(tmp_path / "kept", ["cut"])
    spec = bench.plan()[0]
    assert made == [True] and bench.kept_cut(spec) is not None and bench.cut_stage() is False  # kept: not cut again
    _, _, kept = run(tmp_path / "kept", ["accuracy"])
    _, _, direct = run(tmp_path / "direct", ["accuracy"])
    a, b = kept["records"][0], direct["records"][0]
    assert "cut" in a["provenance"] and "cut" not in b["provenance"]
    for field in ("widths", "acc_pruned", "acc_recalibrated", "acc_reconstructed", "acc_finetuned", "recipe"):
        assert a[field] == b[field], field
    bench.results["settings"]["seed"] = 1  # another seed's cut would differ: not used
    assert bench.kept_cut(spec) is None
