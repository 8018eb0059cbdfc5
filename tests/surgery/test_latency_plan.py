"""The latency knapsack's value (neurotomy.surgery.latency_plan.option_values): a hand computation from
the layers' own weights, and a toy network whose narrow, latency-heavy layer the summed-score value
guts while the log-share value keeps it above its narrowest width (fake runtime: no wall clock)."""

import math

import pytest
import torch
from torch import nn

from neurotomy.scores import get_criterion
from neurotomy.surgery.filters import apply_cuts, prune_filters
from neurotomy.surgery.latency_plan import latency_model, option_values
from neurotomy.surgery.planner import Planner
from tests.surgery.test_latency import SHAPE, FakeRuntime, spec_macs, tiny_cnn


def test_option_values_by_hand():
    scores = torch.tensor([3.0, 1.0, 2.0, 2.0])  # total 8, two layers' worth per channel
    # removing the 1 and then a 2 keeps 5 of 8; nothing removed keeps all
    assert option_values(scores, [(2, 3.0), (3, 1.0), (4, 0.0)]) == pytest.approx(
        [2 * math.log(5 / 8), 2 * math.log(7 / 8), 0.0])
    # no score mass to share (all zero): the kept width's share, still weighted by the layers it cuts
    assert option_values(torch.zeros(4), [(1, 0.0), (4, 0.0)]) == pytest.approx([math.log(1 / 4), 0.0])
    # a layer's scale does not matter, only the shares: ×10 scores give the same values
    assert option_values(scores * 10, [(2, 30.0)]) == pytest.approx([20 * math.log(5 / 8)])


def test_table_values_are_log_shares_of_each_layers_l1_norms(tmp_path):
    """tiny CNN: each conv is its own group (one layer), so the value of keeping k channels is the log
    of the share of that layer's filter L1 norms its k largest filters hold — computed here from the
    weights, not from the planner."""
    model = tiny_cnn()
    planner = Planner(model, get_criterion("l1")(model), SHAPE, [model[-1]], 1, None, False)
    table = latency_model(model, planner, SHAPE, FakeRuntime(), batch=2, threads=1, cache_dir=tmp_path, quiet=True)
    assert sorted(g.root_name for g in planner.groups) == ["0", "3", "6"]
    for g, group in enumerate(planner.groups):
        conv = model.get_submodule(group.root_name)
        norms = conv.weight.detach().abs().sum(dim=(1, 2, 3)).double().sort(descending=True).values
        for i, (kept, _) in enumerate(table.options[g]):
            expected = math.log(float(norms[:kept].sum() / norms.sum()))
            assert table.values[g][i] == pytest.approx(expected, rel=1e-6, abs=1e-9)
    choice = [1, 0, len(table.options[2]) - 1]
    assert table.values[2][-1] == 0 and table.value(choice) == pytest.approx(table.values[0][1] + table.values[1][0])


def heavy_stem_cnn() -> nn.Module:
    """Two 16-wide convs at 24×24 (most of the work, like ResNet's first stage), then a stride-4
    conv to 64 channels at 6×6 and another 64-wide one."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 64, 3, stride=4, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)).eval()


def test_log_share_keeps_a_narrow_latency_heavy_group_that_summed_scores_gut(tmp_path):
    shape = (3, 24, 24)
    model = heavy_stem_cnn()
    planner = Planner(model, get_criterion("l1")(model), shape, [model[-1]], 1, None, False)
    table = latency_model(model, planner, shape, FakeRuntime(), batch=2, threads=1, cache_dir=tmp_path, quiet=True)
    stem = [g for g, group in enumerate(planner.groups) if group.channels == 16]
    wide = [g for g, group in enumerate(planner.groups) if group.channels == 64]
    assert len(stem) == len(wide) == 2
    budget = table.full_ms / 2
    choice = table.allocate(budget)
    widths = table.widths(choice)
    # the old value (the summed scores kept) on the same table: a channel of a 16-wide group counts
    # like one of a 64-wide group, so the heavy stem goes to its narrowest candidate while the wide
    # layers (cheap per channel) stay whole
    log_values, table.values = table.values, [[-lost for _, lost in options] for options in table.options]
    old_choice = table.allocate(budget)
    old = table.widths(old_choice)
    assert [old[g] for g in stem] == [4, 4] and [old[g] for g in wide] == [64, 64]
    table.values = log_values
    assert table.predict(choice) <= budget
    assert min(widths[g] for g in stem) >= 8, widths  # no 16-wide group at a quarter of its width…
    assert min(widths[g] for g in wide) < 64, widths  # …a wide one gives channels instead
    assert table.predict(old_choice) <= budget and table.value(choice) > table.value(old_choice)  # it fits; worth less



class FlooredRuntime(FakeRuntime):
    """Like onnxruntime int8 on this CPU: below 8 channels on either side a layer gets slower, not faster
    (kernel blocking) — it costs 1.5× the same layer at 8 — so the narrowest widths are not the fastest."""

    def time_layers(self, specs, batch, threads):
        self.timed += [s.key() for s in specs]
        return [self._record(batch * spec_macs(s.at(max(s.in_channels, 8), max(s.out_channels, 8))) / 1e4
                             * (1.5 if min(s.in_channels, s.out_channels) < 8 else 1.0)) for s in specs]


def test_allocate_starts_from_the_fastest_choice_when_narrowest_is_slower(tmp_path):
    model = tiny_cnn()
    planner = Planner(model, get_criterion("l1")(model), SHAPE, [model[-1]], 1, None, False)
    table = latency_model(model, planner, SHAPE, FlooredRuntime(), batch=2, threads=1, cache_dir=tmp_path, quiet=True)
    narrowest = table.predict([0] * len(table.options))
    fastest = table.fastest()
    assert table.predict(fastest) < narrowest  # the narrowest widths are not the fastest here
    assert all(w >= 8 for w in table.widths(fastest))
    # a budget between the fastest and the narrowest choice: reachable (refused before), and met
    budget = (table.predict(fastest) + narrowest) / 2
    choice = table.allocate(budget)
    assert table.predict(choice) <= budget


class DriftedRuntime(FakeRuntime):
    """The fake machine running ``factor`` times slower than when a cache was written (a VM's speed drifts)."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def _record(self, ms: float) -> dict:
        return super()._record(ms * self.factor)


def test_a_cached_table_is_scaled_to_the_machines_speed_now(tmp_path):
    """A table read from the cache on a machine now 1.25× slower predicts what a table timed afresh at
    that speed predicts — not the old table plus a rest grown by the whole difference — and only the
    unpruned layers are timed again."""
    model = tiny_cnn()
    planner = Planner(model, get_criterion("l1")(model), SHAPE, [model[-1]], 1, None, False)
    kwargs = {"batch": 2, "threads": 1, "quiet": True}
    first = latency_model(model, planner, SHAPE, DriftedRuntime(1.0), cache_dir=tmp_path / "cache", **kwargs)
    assert "drift" not in first.info  # timed just now: nothing to rescale
    slower = DriftedRuntime(1.25)
    later = latency_model(model, planner, SHAPE, slower, cache_dir=tmp_path / "cache", **kwargs)
    afresh = latency_model(model, planner, SHAPE, DriftedRuntime(1.25), cache_dir=tmp_path / "fresh", **kwargs)
    assert later.info["drift"]["ratio"] == pytest.approx(1.25)
    assert sorted(slower.timed) == sorted(layer.spec.key() for layer in later.layers)  # the unpruned layers only
    assert later.rest_ms == pytest.approx(afresh.rest_ms)
    choices = [[0] * len(later.options), later.fastest(), [len(o) // 2 for o in later.options]]
    for choice in choices:
        assert later.predict(choice) == pytest.approx(afresh.predict(choice))


class RestRuntime(FakeRuntime):
    """A model whose latency shrinks more slowly than its layers' table: it pays ``kept`` of the table's
    sum plus a fixed share of the unpruned model's (framework overhead, work no cut shrinks). At full width
    the table matches the model, so the one-point calibration sees no rest and takes cuts for faster
    than they are."""

    def __init__(self, full_ms: float, kept: float = 0.6) -> None:
        super().__init__()
        self.full_ms, self.kept = full_ms, kept

    def time_models(self, models, input_shape, batch, threads):
        records = super().time_models(models, input_shape, batch, threads)
        for record in records:
            record["median_ms"] = self.kept * record["median_ms"] + (1 - self.kept) * self.full_ms
        return records


def rest_runtime(model) -> RestRuntime:
    return RestRuntime(FakeRuntime().time_models([model], SHAPE, 2, 1)[0]["median_ms"])


def test_measured_cuts_calibrate_what_the_one_point_guess_gets_wrong(tmp_path):
    """Before calibration the table predicts the fastest cut faster than it measures; calibrated on that
    cut, the prediction is exact at both measured ends and, the runtime being affine in the table, in
    between."""
    model = tiny_cnn()
    runtime = rest_runtime(model)
    planner = Planner(model, get_criterion("l1")(model), SHAPE, [model[-1]], 1, None, False)
    table = latency_model(model, planner, SHAPE, runtime, batch=2, threads=1, cache_dir=tmp_path, quiet=True)

    def truth(choice):
        return runtime.time_models([apply_cuts(model, table.cuts(choice), SHAPE)], SHAPE, 2, 1)[0]["median_ms"]

    fastest, middle = table.fastest(), [len(o) // 2 for o in table.options]
    assert table.predict(fastest) < 0.6 * truth(fastest) and table.predict(middle) < 0.9 * truth(middle)
    knots = table.calibrate([(fastest, truth(fastest))])
    assert len(knots) == 2 and table.knots == knots
    for choice in (fastest, middle, table.full_choice):
        assert table.predict(choice) == pytest.approx(truth(choice))
    # noise that makes a narrower cut measure slower than a wider one is pooled, never a falling map
    table.calibrate([(fastest, truth(fastest)), (middle, 0.5 * truth(fastest))])
    assert len(table.knots) == 2 and table.knots[0][1] == pytest.approx(0.75 * truth(fastest))  # the two pooled
    assert table.predict(fastest) < table.predict(middle) < table.predict(table.full_choice)


def test_a_speedup_prune_calibrates_on_the_fastest_cut_and_lands_at_once(tmp_path):
    """End to end on that runtime: the fastest cut is timed first, so the first cut aimed lands on the
    target, and the details say how the table was calibrated. With the one-point calibration alone the
    first cut measured 1.46× for the 2× asked, and the prune took three cuts."""
    model = tiny_cnn()
    result = prune_filters(model, get_criterion("l1")(model), target_speedup=2, input_shape=SHAPE, latency_batch=2,
                           threads=1, runtime=rest_runtime(model), latency_cache=tmp_path, quiet=True)
    d = result.details
    first = d["latency_attempts"][0]
    assert len(d["latency_attempts"]) == 1 and abs(first["speedup_measured"] / 2 - 1) <= 0.10
    assert first["speedup_predicted"] == pytest.approx(first["speedup_measured"])
    calibration = d["latency_table"]["calibration"]
    assert len(calibration) == 2 and calibration[-1]["ms"] == pytest.approx(d["latency_table"]["full_ms"])
    assert calibration[0]["ms"] == pytest.approx(d["latency_table"]["fastest_ms"])
