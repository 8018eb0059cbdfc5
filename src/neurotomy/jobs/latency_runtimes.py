"""onnxruntime as a latency runtime for pruning to a latency: ``onnx`` (fp32) and ``onnx-int8``.

Widths must be chosen for the runtime that will run the model (issue #18: a cut that is faster in
PyTorch can be slower in onnxruntime), so the latency table can be measured in onnxruntime too.
Each timed layer (:class:`~neurotomy.surgery.latency.LayerSpec`) is exported with
:func:`~neurotomy.export.export_onnx` (verified against PyTorch) and run in an onnxruntime session
with the deployment's intra-op threads (:func:`~neurotomy.quantize.session_options`); ``onnx-int8``
first quantizes it with :func:`~neurotomy.quantize.quantize_int8` (static QDQ, per-channel, as
``neurotomy deploy --int8`` does), calibrated on random inputs — ranges do not change the kernels'
speed. Whole models go the same way. Timing is the shared
:func:`~neurotomy.timing.interleaved_timing`.

These runtimes live on the jobs floor because export and quantization sit on the surgery floor's
level, which surgery may not import; they register themselves in
:data:`~neurotomy.surgery.latency.LATENCY_RUNTIMES` when this module is imported (the prune job
and the CLI do).

**What an ``onnx-int8`` entry measures.** Inside a quantized model a convolution reads a uint8
tensor (already channels-last) and writes one: onnxruntime fuses each QDQ group into a ``QLinearConv``,
and the whole model quantizes its float input, transposes it and dequantizes its output only once.
A layer exported and quantized alone carries that boundary itself — QuantizeLinear and Transpose
before the kernel, Transpose and DequantizeLinear after — which at batch 64 costs as much as the
kernel (quantizing a 64 × 16 × 28 × 28 float input took longer than the 16 → 16 convolution), so its
wall time says little about what the layer costs in a model, nor how that cost falls with width.
The table entry is therefore the **layer's own kernels as timed by onnxruntime's profiler**, in the
same interleaved runs: per run, the kernel times of every node between the leading boundary
(:data:`ENTRY_OPS`) and the trailing one (:data:`EXIT_OPS`); per round the fastest of its calls but
the first, and the median over the rounds. The first call of a round runs after the other layers of
the chunk have flushed the caches with their float inputs and outputs (a 16 → 16 convolution at
28 × 28 then took 1.66 ms, the next calls 1.22–1.27 ms; in the model it takes 1.18 ms, and 1.13–1.22
ms run back to back alone): inside a model a layer's neighbours move only uint8 tensors.

Measured on zoo:resnet20-fmnist (onnxruntime 1.32, 1 thread, batch 64): inside the int8 model the
convolutions' kernels are 92 % of its time (the rest — residual additions, the model's own
boundary, pooling, the gaps between nodes — is the table's constant ``rest``); a 4 → 4 convolution
at 28 × 28 costs *more* than 16 → 16 (1.39 vs 1.11 ms: the int8 kernels have a per-pixel floor, and
widths other than 16 at that resolution miss onnxruntime's fast path), which the old wall times of
lone layers, scaled down to the model, hid: they predicted 1.36× for a cut that measured 1.01×.
This machine's speed also wanders by tens of percent over the minute a table takes (a virtual
machine on a shared host), so every chunk of entries is timed with a fixed :data:`REFERENCE` layer
and scaled to the first chunk's. Validated there on a quiet machine (knapsack asks, every cut
measured interleaved with the original): asks of 1.1×, 1.15× and 1.2× measured 1.11×, 1.19× and
1.27× (the last 12.5 ms, from 15.8 ms); the fastest widths the table knows give 1.22× (every group at
16 channels — the 28 × 28 stage is over half the time and gets no cheaper below 16): 1.25× is
beyond what widths can buy. Narrow first-stage widths are predicted pessimistically (the 4-channel cut
above: 0.90× predicted, 1.06× measured).

The fp32 ``onnx`` entries stay wall times of the lone layer: in float, the layout reorders around
a layer of awkward width are paid inside the model too. The int8 method is part of the cache key
(:attr:`OnnxInt8Runtime.TABLE_METHOD`), so tables measured the old way are not reused.

Example:
    >>> import tempfile
    >>> from neurotomy.surgery.latency import LayerSpec, time_specs
    >>> spec = LayerSpec("conv", 8, 8, kernel=(3, 3), padding=(1, 1), spatial=(8, 8), batchnorm=True,
    ...                  activation="ReLU")
    >>> ms = time_specs([spec], OnnxRuntime(), batch=2, threads=1, cache_dir=tempfile.mkdtemp(), quiet=True)
    >>> ms[spec.key()] > 0
    True
"""

from __future__ import annotations

import bisect
import functools
import json
import math
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from neurotomy.device import on_cpu
from neurotomy.errors import PruningError
from neurotomy.export import export_onnx
from neurotomy.quantize import quantize_int8, session_options
from neurotomy.surgery.latency import (LATENCY_RUNTIMES, LAYER_REPEATS, LAYER_ROUNDS, LAYER_WARMUP, MODEL_REPEATS,
                                       MODEL_ROUNDS, MODEL_WARMUP, LatencyRuntime, LayerSpec)
from neurotomy.timing import interleaved_timing

CALIBRATION_IMAGES = 16
ENTRY_OPS = ("QuantizeLinear", "Transpose", "Reshape")
"""Ops a lone int8 layer's graph runs before its own kernels (its float input quantized, laid out
channels-last, a linear layer's input reshaped): a model does that once, not per layer."""
EXIT_OPS = ("Transpose", "DequantizeLinear", "Reshape")
"""Ops a lone int8 layer's graph runs after its own kernels (back to channels-first float)."""
KERNEL_REPEATS = 4
"""Calls per round when timing kernels; the first of each round is not counted (see the module's notes)."""
REFERENCE = LayerSpec("conv", 16, 16, kernel=(3, 3), padding=(1, 1), spatial=(16, 16), batchnorm=True,
                      activation="ReLU")
"""A layer timed with every chunk of int8 entries: each chunk is scaled so that it takes what it
took in the first chunk (see :meth:`OnnxInt8Runtime.time_layers`)."""


class _AsImages(nn.Module):
    """A layer whose input is not an image batch (a linear layer's N × features), fed as N × F × 1 × 1."""

    def __init__(self, layer: nn.Module, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.layer, self.input_shape = layer, tuple(input_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x.reshape(x.shape[0], *self.input_shape))


@LATENCY_RUNTIMES.register("onnx")
class OnnxRuntime(LatencyRuntime):
    """onnxruntime's CPU provider, float32."""

    name = "onnx"
    int8 = False

    def __init__(self) -> None:
        try:
            import onnxruntime
        except ImportError:  # said when the runtime is chosen, before any work
            raise PruningError(f"the {self.name} latency runtime needs onnx and onnxruntime: "
                               "pip install 'neurotomy[onnx]' (or use --latency-runtime torch)") from None
        self.onnxruntime_version = onnxruntime.__version__

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__, "onnxruntime": self.onnxruntime_version}

    def _file(self, module: nn.Module, input_shape: tuple[int, ...], folder: Path,
              stem: str) -> tuple[Path, tuple[int, ...]]:
        """``module`` as an ONNX file in ``folder`` (int8: quantized), ready for a session, and the
        input shape the file takes."""
        path = folder / f"{stem}.onnx"
        if self.int8 and len(input_shape) != 3:  # the quantizer calibrates on image batches (N × C × H × W)
            module, input_shape = _AsImages(module, input_shape), (math.prod(input_shape), 1, 1)
        export_onnx(on_cpu(module).eval(), path, input_shape=input_shape)
        if not self.int8:
            return path, input_shape
        images = torch.randn(CALIBRATION_IMAGES, *input_shape, generator=torch.Generator().manual_seed(0))
        quantize_int8(path, folder / f"{stem}.int8.onnx", images)
        return folder / f"{stem}.int8.onnx", input_shape

    def _time(self, items: list[tuple[nn.Module, tuple[int, ...]]], batch: int, threads: int,
              rounds: int, repeats: int, warmup: int, kernels: bool = False) -> list[dict]:
        """Interleaved wall times of ``items``; with ``kernels``, each record's ``median_ms`` and
        ``min_ms`` are those of the layer's own kernels in the same runs (:func:`kernel_ms`), the
        wall times kept as ``wall_median_ms`` and ``wall_min_ms``."""
        import onnxruntime

        calls, sessions = [], []
        rng = np.random.default_rng(0)
        with tempfile.TemporaryDirectory() as tmp:
            for i, (module, shape) in enumerate(items):
                path, shape = self._file(module, shape, Path(tmp), f"m{i}")
                options = session_options(threads)
                if kernels:
                    options.enable_profiling = True
                    options.profile_file_prefix = str(Path(tmp) / f"profile{i}")
                session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                x = rng.standard_normal((batch, *shape), dtype=np.float32)
                sessions.append(session)
                calls.append(functools.partial(session.run, None, {session.get_inputs()[0].name: x}))
            records = interleaved_timing(calls, rounds=rounds, repeats=repeats, warmup=warmup, threads=threads,
                                         warn=False)
            if not kernels:
                return records
            for record, session in zip(records, sessions):
                runs = kernel_ms(session.end_profiling())[warmup:]
                # a round's first call comes after every other layer's runs, its caches cold: not counted;
                # of the others the fastest (another process's work only ever adds time)
                per_round = [min(runs[r * repeats + (repeats > 1):(r + 1) * repeats]) for r in range(rounds)]
                record.update(wall_median_ms=record["median_ms"], wall_min_ms=record["min_ms"],
                              median_ms=statistics.median(per_round), min_ms=min(per_round))
            return records

    def time_layers(self, specs: Sequence[LayerSpec], batch: int, threads: int) -> list[dict]:
        return self._time([(spec.build(), spec.input_shape()) for spec in specs], batch, threads,
                          LAYER_ROUNDS, LAYER_REPEATS, LAYER_WARMUP)

    def time_models(self, models: Sequence[nn.Module], input_shape: tuple[int, ...], batch: int,
                    threads: int) -> list[dict]:
        training = [m.training for m in models]  # exporting puts a model in eval mode: restored after
        try:
            return self._time([(m, tuple(input_shape)) for m in models], batch, threads,
                              MODEL_ROUNDS, MODEL_REPEATS, MODEL_WARMUP)
        finally:
            for m, mode in zip(models, training):
                m.train(mode)


@LATENCY_RUNTIMES.register("onnx-int8")
class OnnxInt8Runtime(OnnxRuntime):
    """onnxruntime's CPU provider on statically quantized int8 files (QDQ, per-channel weights);
    a layer's table entry is its own kernels' time, without the lone layer's float boundary (see
    the module's notes)."""

    name = "onnx-int8"
    int8 = True
    TABLE_METHOD = "kernels-profiled-referenced-2"
    """How table entries are measured: part of the cache key (entries of lone layers' wall times,
    the first method, are not reused)."""

    def versions(self) -> dict[str, str]:
        return {**super().versions(), "table": self.TABLE_METHOD}

    def __init__(self) -> None:
        super().__init__()
        self.reference_ms: float | None = None

    def time_layers(self, specs: Sequence[LayerSpec], batch: int, threads: int) -> list[dict]:
        """Kernel times of ``specs``, and of :data:`REFERENCE` among them; every chunk after the first
        is scaled by the reference's time in the first over its time in this one (``drift``): this
        machine's speed wanders by tens of percent over the minute a table takes (a virtual machine
        on a shared host), and entries of one chunk would otherwise be compared with another's."""
        *records, reference = self._time([(spec.build(), spec.input_shape()) for spec in [*specs, REFERENCE]],
                                         batch, threads, LAYER_ROUNDS, KERNEL_REPEATS, LAYER_WARMUP, kernels=True)
        if self.reference_ms is None:
            self.reference_ms = reference["median_ms"]
        drift = reference["median_ms"] / self.reference_ms
        for record in records:
            record.update(median_ms=record["median_ms"] / drift, min_ms=record["min_ms"] / drift, drift=drift)
        return records


def kernel_ms(profile: str | Path) -> list[float]:
    """Per run recorded in the onnxruntime profile ``profile`` (a JSON trace), in order: the
    milliseconds of the kernels between the run's leading :data:`ENTRY_OPS` nodes and its trailing
    :data:`EXIT_OPS` nodes — the layer itself, as inside a quantized model. The trace's file is
    removed once read.

    Example:
        >>> import json, tempfile
        >>> def node(op, ts, us):
        ...     return {"cat": "Node", "name": f"{op}_kernel_time", "ts": ts, "dur": us, "args": {"op_name": op}}
        >>> trace = [node("QuantizeLinear", 1, 400), node("Transpose", 401, 50), node("QLinearConv", 451, 900),
        ...          node("Transpose", 1351, 50), node("DequantizeLinear", 1401, 300),
        ...          {"cat": "Session", "name": "model_run", "ts": 0, "dur": 1710}]
        >>> path = tempfile.mktemp(suffix=".json")
        >>> _ = open(path, "w").write(json.dumps(trace))
        >>> kernel_ms(path)
        [0.9]
    """
    path = Path(profile)
    try:
        events = json.loads(path.read_text())
    finally:
        path.unlink(missing_ok=True)
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                  if e.get("cat") == "Session" and e.get("name") == "model_run")
    starts = [start for start, _ in runs]
    nodes: list[list[tuple[str, float]]] = [[] for _ in runs]
    for e in sorted((e for e in events if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")),
                    key=lambda e: e["ts"]):
        i = bisect.bisect_right(starts, e["ts"]) - 1
        if i >= 0 and e["ts"] <= runs[i][1]:
            nodes[i].append((e.get("args", {}).get("op_name", ""), float(e["dur"])))
    out = []
    for run in nodes:
        first, last = 0, len(run)
        while first < last and run[first][0] in ENTRY_OPS:
            first += 1
        while last > first and run[last - 1][0] in EXIT_OPS:
            last -= 1
        out.append(sum(us for _, us in run[first:last]) / 1000)
    return out
