"""benchmarks/latency_calibration.py: its summary compares the two predictors on the same first cuts
and counts the hits within ±10 % (pure function of the records), and its one-point prediction maps
the widths a prune chose back onto the table's options."""

import pytest

from neurotomy.scores import get_criterion
from neurotomy.surgery.latency_plan import latency_model
from neurotomy.surgery.planner import Planner, resolve_ignored
from tests.benchmark_scripts import load_benchmark
from tests.surgery.test_latency import SHAPE, FakeRuntime, tiny_cnn


def record(predicted, one_point, measured, retimed, target=2.0, attempts=1):
    return {"speedup_predicted_first": predicted, "speedup_predicted_one_point": one_point,
            "speedup_measured_first": measured, "speedup_batch64": retimed, "target_speedup": target,
            "attempts": [{}] * attempts}


def test_summary_compares_both_predictors_on_the_first_cut():
    bench = load_benchmark("latency_calibration")
    records = [record(2.0, 1.6, 2.0, 2.05), record(2.9, 2.4, 3.0, 3.4, target=3.0, attempts=2),
               record(1.5, 1.5, 1.4, 1.3, target=1.5)]
    s = bench.summarize(records)
    assert s["records"] == 3 and s["attempts_total"] == 4 and s["refused"] == 0
    assert s["calibrated"]["median_abs_error"] == pytest.approx(1 / 30)  # errors 0, 1/30, 1/14
    assert s["one_point"]["max_abs_error"] == pytest.approx(0.2)  # 1.6 against 2.0
    assert s["first_attempt_within"] == 3  # 2.0, 3.0, 1.4 all within 10 % of their targets
    assert s["retimed_within"] == 1  # 3.4 is +13 %, 1.3 is −13 %
    refused = {"criterion": "l1", "target_speedup": 9.0, "refused": "cannot be reached"}
    assert bench.summarize(records + [refused]) == {**s, "refused": 1}  # counted apart, out of the errors


def test_one_point_prediction_maps_the_chosen_widths_back_to_the_table(tmp_path):
    """On the fake runtime (timings a function of the layer: no wall clock), the widths of a choice give
    back that choice's prediction on the uncalibrated table."""
    bench = load_benchmark("latency_calibration")
    model = tiny_cnn()
    scores = get_criterion("l1")(model)
    planner = Planner(model, scores, SHAPE, resolve_ignored(model, None), 1, None, False)
    table = latency_model(model, planner, SHAPE, FakeRuntime(), 64, 1, tmp_path, quiet=True)
    for choice in (table.full_choice, [len(o) // 2 for o in table.options], [0] * len(table.options)):
        widths = table.widths(choice)
        predicted = bench.one_point_speedup(model, scores, SHAPE, widths, tmp_path, 1, runtime=FakeRuntime())
        assert predicted == pytest.approx(table.full_ms / table.predict(choice))
    assert table.full_ms / table.predict([0] * len(table.options)) > 2  # a choice that differs from the full one
