"""onnxruntime as a latency runtime for pruning to a latency: ``onnx`` (fp32) and ``onnx-int8``.

Widths must be chosen for the runtime that will run the model (issue #18: a cut that is faster in
PyTorch can be slower in onnxruntime), so the latency table can be measured in onnxruntime too.
Each timed layer (:class:`~neurotomy.surgery.latency.LayerSpec`) is exported with
:func:`~neurotomy.export.export_onnx` (verified against PyTorch) and run in an
:func:`~neurotomy.quantize.onnx_session` with the deployment's intra-op threads; ``onnx-int8``
first quantizes it with :func:`~neurotomy.quantize.quantize_int8` (static QDQ, per-channel, as
``neurotomy deploy --int8`` does), calibrated on random inputs — ranges do not change the kernels'
speed. Whole models go the same way. Timing is the shared
:func:`~neurotomy.timing.interleaved_timing`.

These runtimes live on the jobs floor because export and quantization sit on the surgery floor's
level, which surgery may not import; they register themselves in
:data:`~neurotomy.surgery.latency.LATENCY_RUNTIMES` when this module is imported (the prune job
and the CLI do).

Caveat of ``onnx-int8``: a layer quantized alone quantizes its float input and dequantizes its
output, which the whole quantized model does once; the table's sum therefore overestimates the
model, and :class:`~neurotomy.surgery.latency_plan.LatencyModel` scales it down to the measured model.

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

import functools
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from neurotomy.device import on_cpu
from neurotomy.errors import PruningError
from neurotomy.export import export_onnx
from neurotomy.quantize import onnx_session, quantize_int8
from neurotomy.surgery.latency import (LATENCY_RUNTIMES, LAYER_REPEATS, LAYER_ROUNDS, LAYER_WARMUP, MODEL_REPEATS,
                                       MODEL_ROUNDS, MODEL_WARMUP, LatencyRuntime, LayerSpec)
from neurotomy.timing import interleaved_timing

CALIBRATION_IMAGES = 16


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
              rounds: int, repeats: int, warmup: int) -> list[dict]:
        calls = []
        rng = np.random.default_rng(0)
        with tempfile.TemporaryDirectory() as tmp:
            for i, (module, shape) in enumerate(items):
                path, shape = self._file(module, shape, Path(tmp), f"m{i}")
                session = onnx_session(path, threads)
                x = rng.standard_normal((batch, *shape), dtype=np.float32)
                calls.append(functools.partial(session.run, None, {session.get_inputs()[0].name: x}))
            return interleaved_timing(calls, rounds=rounds, repeats=repeats, warmup=warmup, threads=threads,
                                      warn=False)

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
    """onnxruntime's CPU provider on statically quantized int8 files (QDQ, per-channel weights)."""

    name = "onnx-int8"
    int8 = True
