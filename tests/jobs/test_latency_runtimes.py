"""The onnxruntime latency runtimes: what an int8 table entry measures (the layer's own kernels,
read from onnxruntime's profiler, without the lone layer's quantize/transpose boundary), and that
tables measured the old way are not reused."""

import json
import os

import numpy as np
import pytest
import torch

from neurotomy.surgery.latency import LatencyCache, LayerSpec, cache_key, time_specs

pytest.importorskip("onnxruntime")

from neurotomy.export import export_onnx  # noqa: E402
from neurotomy.jobs.latency_runtimes import (ENTRY_OPS, EXIT_OPS, OnnxInt8Runtime, OnnxRuntime,  # noqa: E402
                                             kernel_ms)
from neurotomy.quantize import quantize_int8, session_options  # noqa: E402

SPEC = LayerSpec("conv", 4, 8, kernel=(3, 3), padding=(1, 1), spatial=(6, 6), batchnorm=True, activation="ReLU")


def node(op: str, ts: int, us: int) -> dict:
    return {"cat": "Node", "name": f"{op}_{ts}_kernel_time", "ts": ts, "dur": us, "args": {"op_name": op}}


def run(ts: int, us: int) -> dict:
    return {"cat": "Session", "name": "model_run", "ts": ts, "dur": us}


def write(tmp_path, events) -> str:
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(events))
    return str(path)


def test_kernel_ms_strips_the_boundary_of_each_run(tmp_path):
    first = [node("QuantizeLinear", 10, 400), node("Transpose", 420, 50), node("QLinearConv", 480, 900),
             node("Transpose", 1390, 60), node("DequantizeLinear", 1460, 300)]
    # a float op inside the layer (behind its own Dequantize/Quantize) is the layer's: counted
    second = [node("QuantizeLinear", 2010, 380), node("QLinearConv", 2400, 700), node("DequantizeLinear", 3110, 20),
              node("Sigmoid", 3140, 90), node("QuantizeLinear", 3240, 15), node("Transpose", 3260, 40),
              node("DequantizeLinear", 3310, 250)]
    trace = [*first, run(0, 1800), *second, run(2000, 1600), {"cat": "Session", "name": "model_loading_uri", "ts": 0,
                                                               "dur": 5}]
    path = write(tmp_path, trace)
    assert kernel_ms(path) == pytest.approx([0.9, (700 + 20 + 90 + 15) / 1000])
    assert not os.path.exists(path)  # the trace is removed once read


def test_kernel_ms_on_a_real_int8_profile_is_the_quantized_conv(tmp_path, one_thread):
    """Cross-check against a naive reading of the same trace: the QLinearConv node's own durations."""
    import onnxruntime

    export_onnx(SPEC.build(), tmp_path / "layer.onnx", input_shape=SPEC.input_shape())
    quantize_int8(tmp_path / "layer.onnx", tmp_path / "layer.int8.onnx", torch.randn(8, *SPEC.input_shape()))
    options = session_options(1)
    options.enable_profiling, options.profile_file_prefix = True, str(tmp_path / "profile")
    session = onnxruntime.InferenceSession(str(tmp_path / "layer.int8.onnx"), options,
                                           providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((4, *SPEC.input_shape()), dtype=np.float32)
    for _ in range(3):
        session.run(None, {session.get_inputs()[0].name: x})
    path = session.end_profiling()
    events = json.loads(open(path).read())
    nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    ops = [e["args"]["op_name"] for e in nodes]
    assert ops.count("QLinearConv") == 3 and "QuantizeLinear" in ops and "DequantizeLinear" in ops
    assert set(ops) <= {"QLinearConv", *ENTRY_OPS, *EXIT_OPS}
    conv = [e["dur"] / 1000 for e in nodes if e["args"]["op_name"] == "QLinearConv"]
    assert kernel_ms(path) == pytest.approx(conv)


def test_int8_entries_are_kernel_times_below_the_wall_time(one_thread):
    runtime = OnnxInt8Runtime()
    record, = runtime.time_layers([LayerSpec("conv", 8, 8, kernel=(3, 3), padding=(1, 1), spatial=(16, 16),
                                             batchnorm=True, activation="ReLU")], batch=16, threads=1)
    # the lone layer's run quantizes, transposes and dequantizes a 16 × 8 × 16 × 16 float tensor too
    assert 0 < record["min_ms"] <= record["median_ms"] < record["wall_median_ms"]
    fp32, = OnnxRuntime().time_layers([SPEC], batch=2, threads=1)
    assert "wall_median_ms" not in fp32 and fp32["median_ms"] > 0  # fp32 entries stay wall times


@pytest.mark.filterwarnings("ignore::neurotomy.timing.BusyMachineWarning")  # the entry's value is not checked
def test_int8_tables_of_the_old_method_are_not_reused(tmp_path, one_thread):
    runtime = OnnxInt8Runtime()
    key = cache_key(runtime, 2, 1)
    assert key["table"] == OnnxInt8Runtime.TABLE_METHOD and "table" not in cache_key(OnnxRuntime(), 2, 1)
    old = {k: v for k, v in key.items() if k != "table"}  # a table of lone layers' wall times, as first cached
    LatencyCache(tmp_path, old).update({SPEC.key(): [123.0, 123.0, 0.0]})
    info: dict = {}
    ms = time_specs([SPEC], runtime, batch=2, threads=1, cache_dir=tmp_path, quiet=True, info=info)
    assert info["measured"] == 1 and ms[SPEC.key()] != 123.0
    assert len(list(tmp_path.glob("onnx-int8-*.json"))) == 2  # the old file is left alone, not mixed in


class SteppedRuntime(OnnxInt8Runtime):
    """Kernel times = input channels (ms), on a machine that runs at ``speeds[i]`` (1 = normal,
    2 = twice as slow) while chunk ``i`` is timed: no onnxruntime run, no wall clock."""

    def __init__(self, speeds):
        super().__init__()
        self.speeds, self.chunk = speeds, 0

    def _time(self, items, batch, threads, rounds, repeats, warmup, kernels=False):
        speed = self.speeds[self.chunk]
        self.chunk += 1
        return [{"median_ms": speed * shape[0], "min_ms": speed * shape[0], "load_average": [0.0, 0.0]}
                for _, shape in items]


def test_int8_chunks_are_scaled_to_the_first_chunks_reference():
    runtime = SteppedRuntime([1.0, 2.0, 0.5])
    specs = [SPEC.at(c, 8) for c in (4, 8, 12)]
    chunks = [runtime.time_layers(specs[:1], 2, 1), runtime.time_layers(specs[1:], 2, 1),
              runtime.time_layers(specs[:1], 2, 1)]
    # each entry is the layer's time on the normal machine, whichever chunk measured it
    assert [r["median_ms"] for chunk in chunks for r in chunk] == pytest.approx([4, 8, 12, 4])
    assert [chunk[0]["drift"] for chunk in chunks] == pytest.approx([1, 2, 0.5])
