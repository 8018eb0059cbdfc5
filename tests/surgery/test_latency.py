"""Pruning to a latency: the knapsack, the cached latency table and the whole prune, on a fake
runtime whose timings are a deterministic function of the layer (no wall clock anywhere)."""

import itertools
import json
import math
import random

import pytest
import torch
from torch import nn

from neurotomy.errors import NeurotomyError, PruningError
from neurotomy.jobs.prune import PruneJob
from neurotomy.models import build_model
from neurotomy.models.summary import count_macs_params
from neurotomy.scores import get_criterion
from neurotomy.surgery.filters import apply_cuts, prune_filters
from neurotomy.surgery.knapsack import solve_knapsack
from neurotomy.surgery.latency import LatencyRuntime, LayerSpec, time_specs
from neurotomy.surgery.latency_plan import candidate_widths, latency_model
from neurotomy.surgery.planner import Planner

SHAPE = (3, 12, 12)


def spec_macs(spec: LayerSpec) -> float:
    """A layer's multiply-accumulates from its spec (stride-1 'same' convs and linear layers)."""
    if spec.kind == "linear":
        return spec.in_channels * spec.out_channels * max(1, math.prod(spec.spatial))
    per_output = (1 if spec.depthwise else spec.in_channels // spec.groups) * math.prod(spec.kernel)
    return per_output * spec.out_channels * math.prod(spec.spatial) / math.prod(spec.stride)


class FakeRuntime(LatencyRuntime):
    """Latency = MACs / 1e4 ms per image (× batch): linear in each width, like the work; counts calls."""

    name = "fake"

    def __init__(self, torch_version: str = "9.9") -> None:
        self.torch_version, self.timed = torch_version, []

    def versions(self) -> dict[str, str]:
        return {"torch": self.torch_version}

    def _record(self, ms: float) -> dict:
        return {"median_ms": ms, "min_ms": ms, "threads": 1, "load_average": [0.0, 0.0], "machine_busy": False}

    def time_layers(self, specs, batch, threads):
        self.timed += [s.key() for s in specs]
        return [self._record(batch * spec_macs(s) / 1e4) for s in specs]

    def time_models(self, models, input_shape, batch, threads):
        return [self._record(batch * count_macs_params(m, input_shape)[0] / 1e4) for m in models]


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)).eval()


def brute_force(values, costs, budget):
    best = None
    for choice in itertools.product(*[range(len(v)) for v in values]):
        if sum(c[i] for c, i in zip(costs, choice)) <= budget:
            value = sum(v[i] for v, i in zip(values, choice))
            best = value if best is None else max(best, value)
    return best


@pytest.mark.parametrize("seed", range(20))
def test_knapsack_matches_brute_force(seed):
    rng = random.Random(seed)
    items = rng.randint(2, 4)
    values = [[rng.uniform(-5, 5) for _ in range(rng.randint(1, 4))] for _ in range(items)]
    costs = [[rng.randint(0, 10) for _ in v] for v in values]
    budget = rng.randint(0, 25)
    choice = solve_knapsack(values, costs, budget, step=1)
    expected = brute_force(values, costs, budget)
    if expected is None:
        assert choice is None
        return
    assert sum(c[i] for c, i in zip(costs, choice)) <= budget
    assert sum(v[i] for v, i in zip(values, choice)) == pytest.approx(expected)


def test_knapsack_rounds_costs_up_so_a_choice_never_exceeds_the_budget():
    rng = random.Random(1)
    for _ in range(50):
        values = [[rng.random() for _ in range(5)] for _ in range(4)]
        costs = [[rng.uniform(0, 3) for _ in range(5)] for _ in range(4)]
        budget = rng.uniform(2, 10)
        choice = solve_knapsack(values, costs, budget, bins=64)
        if choice is not None:
            assert sum(c[i] for c, i in zip(costs, choice)) <= budget + 1e-9


def test_table_cache_hit_miss_and_invalidation(tmp_path):
    spec = LayerSpec("conv", 8, 8, kernel=(3, 3), padding=(1, 1), spatial=(6, 6), batchnorm=True, activation="ReLU")
    specs = [spec.at(a, b) for a in (4, 8) for b in (4, 8)]
    runtime = FakeRuntime()
    info = {}
    first = time_specs(specs, runtime, batch=2, threads=1, cache_dir=tmp_path, quiet=True, info=info)
    assert info["measured"] == 4 and info["cached"] == 0 and len(runtime.timed) == 4
    assert first[spec.at(4, 8).key()] == pytest.approx(2 * spec_macs(spec.at(4, 8)) / 1e4)
    saved = json.loads(next(tmp_path.glob("fake-*.json")).read_text())  # JSON, keyed by machine and setting
    assert saved["key"]["threads"] == 1 and saved["key"]["batch"] == 2 and saved["key"]["cpu"]
    again = time_specs(specs + [spec.at(8, 2)], runtime, batch=2, threads=1, cache_dir=tmp_path, quiet=True, info=info)
    assert info["measured"] == 1 and info["cached"] == 4 and runtime.timed[4:] == [spec.at(8, 2).key()]
    assert {k: again[k] for k in first} == first
    for other, setting in ((runtime, dict(threads=2)), (FakeRuntime("10.0"), dict(threads=1)),
                           (runtime, dict(threads=1, batch=4))):
        info = {}
        time_specs(specs, other, **{"batch": 2, **setting}, cache_dir=tmp_path, quiet=True, info=info)
        assert info["measured"] == 4, setting  # another thread count, torch version or batch: a new table
    assert len(list(tmp_path.glob("fake-*.json"))) == 4
    path = next(tmp_path.glob("fake-*.json"))
    path.write_text("{not json")  # a corrupt cache file counts as empty and is rewritten
    for other in (runtime, FakeRuntime("10.0")):
        for threads in (1, 2):
            for batch in (2, 4):
                time_specs(specs, other, batch=batch, threads=threads, cache_dir=tmp_path, quiet=True)
    assert all(json.loads(p.read_text())["entries"] for p in tmp_path.glob("fake-*.json"))


def test_predicted_latency_is_the_fake_models_latency(tmp_path):
    """The table's prediction for any choice of widths equals the cut model's own (fake) latency:
    widths are mapped to layers exactly (checked on ResNet-20's residual coupling too)."""
    for model, shape in ((tiny_cnn(), SHAPE), (build_model("resnet20", 1, 10, 12).eval(), (1, 12, 12))):
        scores = get_criterion("l1")(model)
        ignored = [m for m in model.modules() if isinstance(m, nn.Linear)][-1:]
        planner = Planner(model, scores, shape, ignored, 1, None, False)
        runtime = FakeRuntime()
        table = latency_model(model, planner, shape, runtime, batch=2, threads=1, cache_dir=tmp_path, quiet=True)
        rng = random.Random(0)
        for _ in range(2):
            choice = [rng.randrange(len(o)) for o in table.options]
            pruned = apply_cuts(model, table.cuts(choice), shape)
            measured = runtime.time_models([pruned], shape, 2, 1)[0]["median_ms"]
            assert table.predict(choice) == pytest.approx(measured, rel=0.02)


def test_allocation_is_the_best_choice_within_the_budget(tmp_path):
    """On the tiny CNN (few enough choices to enumerate), the knapsack's widths keep as much score
    as the best of all choices whose predicted latency fits."""
    model = tiny_cnn()
    planner = Planner(model, get_criterion("l2")(model), SHAPE, [model[-1]], 1, None, False)
    table = latency_model(model, planner, SHAPE, FakeRuntime(), batch=2, threads=1, cache_dir=tmp_path, quiet=True)
    for speedup in (1.3, 2, 3):
        budget = table.full_ms / speedup
        choice = table.allocate(budget)
        assert table.predict(choice) <= budget
        best = max(table.value(list(c)) for c in itertools.product(*[range(len(o)) for o in table.options])
                   if table.predict(list(c)) <= budget)
        assert table.value(choice) == pytest.approx(best)


def test_prune_to_speedup_end_to_end(tmp_path):
    model = tiny_cnn()
    result = prune_filters(model, get_criterion("l1")(model), target_speedup=2, input_shape=SHAPE, latency_batch=2,
                           threads=1, runtime=FakeRuntime(), latency_cache=tmp_path, quiet=True)
    d = result.details
    assert abs(d["speedup_predicted"] / 2 - 1) <= 0.10 and d["speedup_predicted"] >= 2
    assert d["speedup_measured"] == pytest.approx(d["speedup_predicted"], rel=0.02)  # the fake world is the table
    assert d["latency_ms_measured"] == pytest.approx(d["latency_ms_predicted"], rel=0.02)
    assert d["threads"] == 1 and len(d["load_average"]) == 2 and d["latency_runtime"] == "fake"
    assert len(d["latency_attempts"]) == 1  # on target at once: no re-aim
    widths = [m.out_channels for m in result.model.modules() if isinstance(m, nn.Conv2d)]
    assert all(w in candidate_widths(full) for w, full in zip(widths, (16, 32, 32)))
    assert widths != [16, 32, 32] and result.scope == "latency"
    assert count_macs_params(result.model, SHAPE)[0] == result.macs_after
    x = torch.randn(2, *SHAPE)
    assert result.model(x).shape == (2, 10)


def test_prune_to_speedup_through_grouped_convolutions(tmp_path):
    """A residual block with a groups=2 conv (on both sides of it: its inputs and the stream it writes)."""
    class GroupedBlock(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
            self.a = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                   nn.Conv2d(16, 16, 3, padding=1, groups=2), nn.BatchNorm2d(16))
            self.head = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))

        def forward(self, x):
            x = self.stem(x)
            return self.head(x + self.a(x))

    model = GroupedBlock().eval()
    result = prune_filters(model, get_criterion("l1")(model), target_speedup=1.5, input_shape=SHAPE, latency_batch=2,
                           threads=1, runtime=FakeRuntime(), latency_cache=tmp_path, quiet=True)
    grouped = result.model.a[3]
    assert grouped.groups == 2 and grouped.in_channels % 2 == 0 and grouped.out_channels % 2 == 0
    assert result.details["speedup_measured"] >= 1.5 * 0.9
    assert result.model(torch.randn(2, *SHAPE)).shape == (2, 4)


def test_latency_ms_target_and_reaim(tmp_path):
    """A runtime whose whole-model latency is 30 % above the table's sum: the first cut misses, the
    aim is corrected and the kept attempt lands within 10 % of the target."""
    class Slower(FakeRuntime):
        def time_models(self, models, input_shape, batch, threads):
            records = super().time_models(models, input_shape, batch, threads)
            for r, m in zip(records, models):
                if m is not model:
                    r["median_ms"] *= 1.3
            return records

    model = tiny_cnn()
    full = FakeRuntime().time_models([model], SHAPE, 2, 1)[0]["median_ms"]
    result = prune_filters(model, get_criterion("l1")(model), target_latency_ms=full / 2, input_shape=SHAPE,
                           latency_batch=2, threads=1, runtime=Slower(), latency_cache=tmp_path, quiet=True)
    attempts = result.details["latency_attempts"]
    assert len(attempts) >= 2 and abs(attempts[0]["miss"]) > 0.1
    assert abs(result.details["latency_ms_measured"] / (full / 2) - 1) <= 0.10


@pytest.mark.parametrize("kwargs, message", [
    (dict(target_speedup=1.0), "above 1"),
    (dict(target_speedup=0.5), "above 1"),
    (dict(target_speedup=2, target_macs=0.5), "exactly one"),
    (dict(target_speedup=2, round_to=8), "round_to does not apply"),
    (dict(target_latency_ms=-1), "target_latency_ms"),
    (dict(target_speedup=2, runtime="tpu"), "unknown latency runtime"),
    (dict(target_speedup=2, latency_batch=0), "latency_batch"),
    (dict(target_speedup=1e6), "cannot be reached"),
    (dict(target_latency_ms=1e9), "not below"),
])
def test_bad_latency_requests_are_one_line_errors(tmp_path, kwargs, message):
    model = tiny_cnn()
    runtime = kwargs.pop("runtime", FakeRuntime())
    with pytest.raises(NeurotomyError) as error:
        prune_filters(model, get_criterion("l1")(model), input_shape=SHAPE, threads=1, runtime=runtime,
                      latency_cache=tmp_path, quiet=True, **{"latency_batch": 2, **kwargs})
    assert message in str(error.value) and "\n" not in str(error.value)


def test_unreachable_target_names_the_numbers(tmp_path):
    model = tiny_cnn()
    with pytest.raises(PruningError, match=r"predicts at least [0-9.]+ ms \([0-9.]+×\)"):
        prune_filters(model, get_criterion("l1")(model), target_speedup=1e6, input_shape=SHAPE, latency_batch=2,
                      threads=1, runtime=FakeRuntime(), latency_cache=tmp_path, quiet=True)


def test_the_latency_table_refuses_a_transformer_and_names_the_way_that_works(tmp_path):
    """The CNN latency table cannot time a transformer's coupled matmuls layer by layer: prune_filters
    says which function prunes a transformer to a latency, and PruneJob accepts the request (it routes
    there; tests/jobs/test_prune_transformer.py), round_to included."""
    model = build_model("vit_tiny", 1, 10, 28, depth=1)
    PruneJob(target_speedup=2, criterion="l1", round_to=8, quiet=True)._validate(model)
    with pytest.raises(PruningError, match="prune_transformer_to_latency"):
        prune_filters(model, get_criterion("l1")(model), target_speedup=2, runtime=FakeRuntime(),
                      latency_cache=tmp_path)


def test_onnx_runtimes_time_and_key_their_versions(tmp_path, one_thread):
    pytest.importorskip("onnxruntime")
    from neurotomy.jobs.latency_runtimes import OnnxInt8Runtime, OnnxRuntime

    spec = LayerSpec("conv", 4, 8, kernel=(3, 3), padding=(1, 1), spatial=(6, 6), batchnorm=True, activation="ReLU")
    for runtime in (OnnxRuntime(), OnnxInt8Runtime()):
        info = {}
        ms = time_specs([spec], runtime, batch=2, threads=1, cache_dir=tmp_path, quiet=True, info=info)
        assert ms[spec.key()] > 0 and info["measured"] == 1
        key = json.loads(open(info["cache"]).read())["key"]
        assert key["runtime"] == runtime.name and key["onnxruntime"]
    model = tiny_cnn()
    original, same = OnnxRuntime().time_models([model, model], SHAPE, 2, 1)
    assert original["median_ms"] > 0 and same["threads"] == 1
