"""Pruning a transformer to a latency (neurotomy.surgery.transformer_latency): the search over the MACs
target meets the goal on a runtime whose latency is known in closed form, re-aims past the part that
does not shrink, keeps the closest cut, and refuses impossible goals in one line (PruneJob and the CLI:
tests/jobs/test_prune_transformer.py)."""

import pytest

from neurotomy.errors import NeurotomyWarning, PruningError
from neurotomy.models.summary import count_macs_params
from neurotomy.surgery.latency import LatencyRuntime
from neurotomy.surgery.latency_plan import LATENCY_TOLERANCE
from neurotomy.surgery.transformer_latency import kept_fraction_for, prune_transformer_to_latency
from tests.surgery.test_transformer_pruning import embedding_l1, tiny_vit, weight_l1_scores

SHAPE = (1, 8, 8)


class AffineRuntime(LatencyRuntime):
    """Latency = ``fixed`` ms + MACs / 1e4 ms per image: a part that no cut shrinks (as LayerNorms,
    patch embedding and softmax are) plus work proportional to the MACs. Records the MACs it timed."""

    name = "affine"

    def __init__(self, fixed_ms: float = 0.0) -> None:
        self.fixed_ms, self.timed = fixed_ms, []

    def time_layers(self, specs, batch, threads):
        raise AssertionError("a transformer's latency search times whole models, never a layer table")

    def time_models(self, models, input_shape, batch, threads):
        out = []
        for m in models:
            macs = count_macs_params(m, input_shape)[0]
            self.timed.append(macs)
            ms = self.fixed_ms + batch * macs / 1e4
            out.append({"median_ms": ms, "min_ms": ms, "threads": 1, "load_average": [0.5, 0.5],
                        "machine_busy": False})
        return out


def scores(model):
    return [weight_l1_scores(model), embedding_l1(model)]


def full_ms(model, fixed_ms=0.0, batch=4):
    return fixed_ms + batch * count_macs_params(model, SHAPE)[0] / 1e4


@pytest.mark.parametrize("fixed_share", [0.0, 0.3])
def test_meets_a_speedup_within_the_tolerance(fixed_share):
    model = tiny_vit()
    work = full_ms(model)
    fixed = fixed_share * work / (1 - fixed_share)  # the share of the original's latency no cut removes
    runtime = AffineRuntime(fixed)
    result = prune_transformer_to_latency(model, scores(model), target_speedup=1.5, units=["heads", "neurons"],
                                          runtime=runtime, latency_batch=4, threads=1, input_shape=SHAPE)
    d = result.details
    expected = full_ms(model, fixed) / full_ms(result.model, fixed)  # independent of the search's bookkeeping
    assert d["speedup_measured"] == pytest.approx(expected)
    assert abs(d["speedup_measured"] / 1.5 - 1) <= LATENCY_TOLERANCE + 0.02  # unit granularity of a tiny model
    assert d["target_speedup"] == 1.5 and d["latency_runtime"] == "affine" and d["threads"] == 1
    assert d["heads_removed"] + d["neurons_removed"] > 0
    first = d["latency_attempts"][0]
    assert first["target_macs"] == pytest.approx(1 - 1 / 1.5)  # proportional first aim
    if fixed_share:  # the fixed part makes the proportional aim too timid: the search cuts deeper after it
        assert len(d["latency_attempts"]) >= 2
        assert d["latency_attempts"][-1]["macs_reduction"] > first["macs_reduction"]
        assert first["speedup_measured"] < 1.5 * (1 - LATENCY_TOLERANCE)


def test_meets_a_latency_in_ms():
    model = tiny_vit()
    goal = 0.6 * full_ms(model, 1.0)
    result = prune_transformer_to_latency(model, scores(model), target_latency_ms=goal, runtime=AffineRuntime(1.0),
                                          latency_batch=4, threads=1, input_shape=SHAPE, units=["heads", "neurons"])
    assert result.details["target_latency_ms"] == goal
    assert abs(full_ms(result.model, 1.0) / goal - 1) <= LATENCY_TOLERANCE + 0.02


def test_the_secant_aim_lands_on_an_affine_latency():
    latency = lambda kept: 3.0 + 7.0 * kept  # noqa: E731
    points = [(0.5, latency(0.5)), (0.35, latency(0.35))]
    assert kept_fraction_for(5.0, points) == pytest.approx(2 / 7)
    assert kept_fraction_for(5.0, points[:1]) == pytest.approx(0.5 * 5.0 / 6.5)  # one point: proportional


def test_impossible_goals_are_one_line_errors():
    model = tiny_vit()
    with pytest.raises(PruningError, match="not below the unpruned"):
        prune_transformer_to_latency(model, scores(model), target_latency_ms=1e9, runtime=AffineRuntime(),
                                     latency_batch=4, threads=1, input_shape=SHAPE)
    with pytest.raises(PruningError, match="no speed-up"):
        prune_transformer_to_latency(model, scores(model), target_speedup=0.9, runtime=AffineRuntime())


def test_a_missed_speedup_is_one_warning_line_measured_against_asked():
    model = tiny_vit()
    runtime = AffineRuntime(fixed_ms=100 * full_ms(model))  # no cut can shrink the part that dominates
    missed = r"latency target missed .*measured 1\.0\d× speed-up against the 1\.50×"
    with pytest.warns(NeurotomyWarning, match=missed):
        result = prune_transformer_to_latency(model, scores(model), target_speedup=1.5, units=["heads", "neurons"],
                                              runtime=runtime, latency_batch=4, threads=1, input_shape=SHAPE)
    assert result.details["speedup_measured"] < 1.1
