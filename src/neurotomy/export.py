"""Export to ONNX for deployment, verified against PyTorch with onnxruntime.

The exported graph takes ``images`` (batch × C × H × W, dynamic batch) and returns ``logits``.
After writing, the file is run in onnxruntime on random inputs and the largest absolute difference
from PyTorch is reported; above ``tolerance`` the export is refused (nothing is left on disk).
Every onnxruntime session here states its threads — the check runs with as many as PyTorch computes
with, :func:`onnxruntime_latency` times with ``threads`` (default 1) — never onnxruntime's default
pool of one thread per core. Needs the ``onnx`` extra: ``pip install neurotomy[onnx]``.

Example:
    >>> import tempfile, os
    >>> from neurotomy.loading import load_model
    >>> report = export_onnx(load_model("zoo:lenet5-digits"), os.path.join(tempfile.mkdtemp(), "m.onnx"))
    >>> report["max_abs_diff"] < 1e-4
    True
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from neurotomy.device import c_function, on_cpu
from neurotomy.files import atomic_write
from neurotomy.errors import NeurotomyError
from neurotomy.models.anatomy import require_input_shape
from neurotomy.validate import int_between, output_file, positive_float, positive_int

OPSET = 17
OPSETS = (7, 20)
"""Lowest and highest ONNX opset torch's TorchScript exporter writes."""


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise NeurotomyError("ONNX export needs onnx and onnxruntime: pip install 'neurotomy[onnx]'") from None
    return onnxruntime


def _session(source: str | Path | bytes, threads: int, quiet: bool = False):
    """An onnxruntime CPU session for an ONNX file (or its bytes) running ``threads`` intra-op threads
    and one inter-op thread (:func:`neurotomy.quantize.onnx_session` does the same for deployment; it
    sits on this module's floor, so the two cannot share one). ``quiet`` keeps onnxruntime's own log
    off stderr: for the export check, whose failures become one-line errors of ours."""
    ort = _onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = positive_int(threads, "threads", maximum=1024)
    options.inter_op_num_threads = 1
    if quiet:
        options.log_severity_level = 4  # fatal only: an error here is raised to us, not just logged
    return ort.InferenceSession(source if isinstance(source, bytes) else str(source), options,
                                providers=["CPUExecutionProvider"])


def export_onnx(model: nn.Module, path: str | Path, input_shape: tuple[int, ...] | None = None,
                tolerance: float = 1e-4, opset: int = OPSET, seed: int = 0) -> dict:
    """Write ``model`` as ONNX to ``path`` and check it in onnxruntime; returns what was measured."""
    opset = int_between(opset, "opset", *OPSETS)
    path = output_file(path, "path")  # before the export runs, not after
    tolerance = positive_float(tolerance, "tolerance")
    _onnxruntime()
    shape = input_shape or require_input_shape(model)
    model = on_cpu(model).eval()  # ONNX export and onnxruntime run on the CPU, whatever the model's device
    example = torch.randn(2, *shape, generator=torch.Generator().manual_seed(seed))
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), _without_exporter_log():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=opset,
                              input_names=["images"], output_names=["logits"],
                              dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    except Exception as exc:  # the exporter raises many types; all mean "this op cannot go to ONNX"
        reason = _first_line(exc).split(" Please feel free")[0]  # torch's request for a pull request is no fix
        fix = ("export at a larger input size (--input-size, input_shape=): at this one the adaptive pooling "
               "upsamples its input, which ONNX cannot express" if "adaptive_avg_pool" in reason and
               "not factor of input size" in reason else
               "replace the unsupported op or try another opset (opset=, --opset)")
        raise NeurotomyError(f"ONNX cannot export this model ({reason[:300]}); {fix}") from None
    data = buffer.getvalue()
    x = torch.randn(8, *shape, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        expected = model(x).numpy()
    got = _run_check(data, x, example)
    diff = float(abs(got - expected).max())
    if diff > tolerance:
        raise NeurotomyError(f"the ONNX graph disagrees with PyTorch by {diff:.2e} (> {tolerance}); "
                             "not written — report this model to the neurotomy issue tracker")
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
    return {"path": str(path), "bytes": len(data), "opset": opset, "max_abs_diff": diff}


@contextlib.contextmanager
def _without_exporter_log():
    """Standard output closed at the file-descriptor level while torch's TorchScript exporter runs: its C++
    log, on by default in this torch (``setup_onnx_logging`` tests a function object for truth), prints the
    whole IR graph — a hundred lines — before the exception we turn into one line. Where descriptor 1
    cannot be duplicated (no standard output at all) nothing is redirected."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            try:
                yield
            finally:
                _flush_c_stdio()  # what the C++ side buffered goes to /dev/null, not later to stdout
                os.dup2(saved, 1)
    finally:
        os.close(saved)


def _flush_c_stdio() -> None:
    flush = c_function("fflush")
    if flush is not None:  # None: no C library to load (Windows), nothing buffered
        flush(None)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _run_check(data: bytes, x: torch.Tensor, example: torch.Tensor):
    """The exported graph's logits for ``x`` (a batch of another size than the traced ``example``),
    or one line saying why onnxruntime cannot run it."""
    try:
        session = _session(data, torch.get_num_threads(), quiet=True)  # a check, not a timing
    except Exception as exc:  # onnxruntime raises its own types (Fail, InvalidGraph, ...)
        raise NeurotomyError(f"onnxruntime cannot load the exported graph ({_first_line(exc)}); "
                             "try another opset (opset=, --opset)") from None
    try:
        return session.run(None, {"images": x.numpy()})[0]
    except Exception as exc:
        reason = _first_line(exc)
    try:
        session.run(None, {"images": example.numpy()})
    except Exception:
        raise NeurotomyError(f"onnxruntime cannot run the exported graph ({reason}); replace the op it names "
                             "or try another opset (opset=, --opset)") from None
    raise NeurotomyError(f"the exported graph runs at batch size {len(example)} but not {len(x)} ({reason}): "
                         "the forward bakes the traced batch size in as a Python int (len(x), int(x.shape[0])); "
                         "take it from the tensor instead, e.g. cls.expand(x.shape[0], -1, -1)") from None


def onnxruntime_latency(paths: list[str | Path], input_shape: tuple[int, ...], batch_size: int = 64,
                        rounds: int = 15, repeats: int = 5, threads: int = 1) -> list[dict]:
    """Median and minimum ms per batch of each ONNX file in onnxruntime with ``threads`` intra-op
    threads (default 1: comparable on a shared machine), interleaved in rounds."""
    import statistics

    import numpy as np

    sessions = [_session(p, threads) for p in paths]
    x = np.random.default_rng(0).standard_normal((batch_size, *input_shape), dtype=np.float32)
    for s in sessions:
        s.run(None, {"images": x})
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(rounds):
        for i, s in enumerate(sessions):
            start = time.perf_counter()
            for _ in range(repeats):
                s.run(None, {"images": x})
            times[i].append((time.perf_counter() - start) / repeats * 1000)
    return [{"median_ms": statistics.median(t), "min_ms": min(t)} for t in times]
