"""int8 for CPU deployment: static quantization of an ONNX file with onnxruntime's tools, and the
onnxruntime sessions that run ONNX files as batched classifiers.

:func:`quantize_int8` writes a QDQ model (QuantizeLinear/DequantizeLinear pairs around each
quantized op, which onnxruntime fuses into int8 kernels), int8 weights quantized per output channel,
uint8 activations (U8S8) whose ranges are calibrated on a few hundred training images fed by a
``CalibrationDataReader``.

**Activations in uint8**, not onnxruntime's default int8: with int8 activations onnxruntime 1.32's
CPU provider fuses only 9 of zoo:resnet20-fmnist's 21 convolutions into ``QLinearConv`` — the 12
convolutions followed by a ReLU and all 9 residual additions stay in float behind
DequantizeLinear, with 18 layout transposes around them — while with uint8 activations all 21 run as
``QLinearConv`` and the additions as ``QLinearAdd`` (2 transposes: in and out). The numbers barely
differ — 256 levels over each tensor's calibrated range either way, only the zero point rounds
differently (at most 0.02 pt of accuracy apart in the table below) — the kernels do. The record says
which ops onnxruntime runs (``runtime_ops``).

**Calibration: min-max**, chosen by measurement on zoo:resnet20-fmnist (10 000 test images, 256
calibration images, two draws; fp32 ONNX: 94.65 %):

================================  =============  ======================  ===============
calibration                        int8 accuracy  same class as fp32      mean |Δ logit|
================================  =============  ======================  ===============
min-max                            94.65 / 94.68  99.76 / 99.79 %         0.040 / 0.036
percentile 99.999 (ORT default)    94.60 / 94.72  99.77 / 99.74 %         0.039 / 0.039
percentile 99.99                   94.71 / 94.67  99.70 / 99.72 %         0.045 / 0.041
entropy (KL, 2048 → 128 bins)      94.12 / 94.15  97.60 / 97.48 %         0.404 / 0.422
================================  =============  ======================  ===============

Min-max is as faithful to the fp32 model as the best percentile (with 64 or 1024 calibration images
too) and simpler: no histogram, no threshold to tune. The KL threshold clips the tails of the
post-ReLU activations, which this small network needs, and costs half a point. (``quantize_static``'s
own ``Entropy`` builds 128-bin histograms with 128 quantized bins, so its threshold search has a single
candidate — the full range — and it writes exactly the min-max file; the row above ran onnxruntime's
entropy calibrator with 2048 bins, TensorRT's recipe.) ``calibration="percentile"`` is there to compare.

**Transformers: only the matrix products** (:data:`MATRIX_OPS`: Conv, Gemm, MatMul — the
projections, the MLP and the two attention products). A graph with LayerNormalization or Softmax
(:data:`TRANSFORMER_OPS`) is quantized with ``op_types_to_quantize`` set to those, the usual way to
quantize a transformer with onnxruntime (its documentation advises dynamic quantization for
transformers, which puts int8 in the matrix products and leaves the rest in float; Hugging Face
Optimum's static configurations name MatMul and little else; normalisation layers are kept in float
by TensorRT too): LayerNorm, Softmax, GELU and the residual additions stay in float between int8
matrix products. Measured on the 2-block ViT the tests train on the digits (360 test images, 256
calibration images, fp32 ONNX 95.0 %): quantizing every op onnxruntime can — QDQ around each
LayerNorm input, each residual Add, each Softmax — gives 94.4 %, 98.9 % of predictions as fp32's and
a mean |Δ logit| of 0.077; the matrix products only give 95.3 %, 99.7 % and 0.033. CNN graphs are
quantized as before (every op onnxruntime quantizes: the table above).

An op that onnxruntime cannot quantize is named, and the file refused (:class:`Int8Error`): a
weighted op left in float would make an "int8" model that is not one. Parameters that are added to
or joined with the activations rather than multiplied into them — a ViT's position embedding
(``Add``) and class token (``Expand``), :data:`FLOAT_PARAMETER_OPS` — may stay in float; the record
counts them (``float_ops``).

Every onnxruntime session made here states its thread count (:func:`onnx_session` takes it, no
default): a session never silently takes onnxruntime's default pool of one thread per core. The one
session this module does not make is the one ``quantize_static`` runs the calibration images through,
which onnxruntime does not let a caller configure.

Needs the ``onnx`` extra: ``pip install neurotomy[onnx]``.

Example:
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> from neurotomy.export import export_onnx
    >>> from neurotomy.loading import load_model
    >>> from neurotomy.data import load_dataset
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = export_onnx(load_model("zoo:lenet5-digits"), folder / "m.onnx")
    >>> record = quantize_int8(folder / "m.onnx", folder / "m.int8.onnx", load_dataset("digits").images[:64])
    >>> record["quantized_ops"]["Conv"], record["bytes"] < (folder / "m.onnx").stat().st_size
    (2, True)
    >>> logits = session_logits(onnx_session(folder / "m.int8.onnx", threads=1))(torch.zeros(3, 1, 8, 8))
    >>> logits.shape
    (3, 10)
    >>> OnnxClassifier(onnx_session(folder / "m.int8.onnx", threads=1))(torch.zeros(3, 1, 8, 8)).shape
    torch.Size([3, 10])
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
from collections import Counter
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from neurotomy.errors import DataError, ModelError, NeurotomyError
from neurotomy.files import atomic_write
from neurotomy.validate import existing_file, known_name, output_file, positive_int

CALIBRATIONS = ("minmax", "percentile")
"""Calibration methods :func:`quantize_int8` offers; min-max is the default (see the module's table)."""
CALIBRATION = "minmax"
CALIBRATION_BATCH = 32
QUANTIZATION_OPS = ("QuantizeLinear", "DequantizeLinear")
MATRIX_OPS = ("Conv", "Gemm", "MatMul")
"""The op types a transformer's graph has quantized: its matrix products (see the module's notes)."""
TRANSFORMER_OPS = ("LayerNormalization", "Softmax")
"""Op types that mark a graph as a transformer's, quantized in :data:`MATRIX_OPS` only."""
FLOAT_PARAMETER_OPS = ("Add", "Concat", "Div", "Expand", "Mul", "Sub", "Tile")
"""Ops whose parameters may stay in float: added to, scaled into or joined with the activations
(position embeddings, class tokens, layer scales), no multiply-accumulate over them."""


def _replace(what: str) -> str:
    return f"replace {what} with ops onnxruntime quantizes (Conv, Gemm, MatMul, …)"


class Int8Error(ModelError):
    """onnxruntime cannot quantize this model to int8. ``problem`` names the op, ``fix`` what to
    change in the model; a job that can go on without int8 words its own message from them."""

    def __init__(self, problem: str, fix: str = _replace("it")) -> None:
        super().__init__(f"{problem}; {fix}")
        self.problem, self.fix = problem, fix


def _onnxruntime():
    try:
        import onnx  # noqa: F401
        import onnxruntime
        import onnxruntime.quantization  # noqa: F401
    except ImportError:
        raise NeurotomyError("int8 deployment needs onnx and onnxruntime: pip install 'neurotomy[onnx]'") from None
    return onnxruntime


def session_options(threads: int):
    """onnxruntime session options with ``threads`` intra-op threads and one inter-op thread (the
    graph runs its nodes in order): stated, never onnxruntime's default pool of one thread per core,
    which would take every core of a shared machine and make a latency say nothing of its threads.

    Example:
        >>> options = session_options(2)
        >>> options.intra_op_num_threads, options.inter_op_num_threads
        (2, 1)
    """
    options = _onnxruntime().SessionOptions()
    options.intra_op_num_threads = positive_int(threads, "threads", maximum=1024)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: the graph optimiser's notes are not the user's business
    return options


def onnx_session(path: str | Path, threads: int):
    """An onnxruntime CPU session for ``path`` running ``threads`` intra-op threads (no default: time
    with the deployment's threads, compute with as many as PyTorch does, ``torch.get_num_threads()``).

    Example:
        >>> import os, tempfile
        >>> from neurotomy.export import export_onnx
        >>> from neurotomy.loading import load_model
        >>> path = os.path.join(tempfile.mkdtemp(), "m.onnx")
        >>> _ = export_onnx(load_model("zoo:lenet5-digits"), path)
        >>> onnx_session(path, threads=2).get_session_options().intra_op_num_threads
        2
    """
    return _onnxruntime().InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])


def session_logits(session, batch_size: int = 256) -> Callable[[torch.Tensor | np.ndarray], np.ndarray]:
    """``logits = f(images)`` for an onnxruntime session: float32 images ``B × C × H × W`` (torch or
    numpy) in, numpy logits out, run ``batch_size`` images at a time."""
    name = session.get_inputs()[0].name

    def logits(images: torch.Tensor | np.ndarray) -> np.ndarray:
        if isinstance(images, torch.Tensor):
            images = images.detach().cpu().numpy()
        images = np.ascontiguousarray(images, dtype=np.float32)
        return np.concatenate([session.run(None, {name: images[i:i + batch_size]})[0]
                               for i in range(0, len(images), batch_size)])
    return logits


class OnnxClassifier(nn.Module):
    """An onnxruntime session as an ``nn.Module`` without parameters or gradients: ``forward`` runs the
    session on the CPU and returns the logits on the inputs' device. Evaluation and every method that
    needs only outputs (occlusion, RISE) then run on a deployed file through the very code that runs
    them on the PyTorch model."""

    def __init__(self, session, batch_size: int = 256) -> None:
        super().__init__()
        self.run_session = session_logits(session, batch_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.run_session(images)).to(images.device)


def _input_shape(model) -> tuple[str, tuple]:
    """The graph's first input: its name and its dims after the batch (None where symbolic)."""
    first = model.graph.input[0]
    dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in first.type.tensor_type.shape.dim)
    return first.name, dims[1:]


def _reader(name: str, images: np.ndarray):
    from onnxruntime.quantization import CalibrationDataReader

    class CalibrationImages(CalibrationDataReader):
        """Feeds the calibration images in batches of :data:`CALIBRATION_BATCH`."""

        def __init__(self) -> None:
            self.batches = iter(range(0, len(images), CALIBRATION_BATCH))

        def get_next(self) -> dict | None:
            start = next(self.batches, None)
            return None if start is None else {name: images[start:start + CALIBRATION_BATCH]}

    return CalibrationImages()


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """onnxruntime's quantizer prints progress and logs a pre-processing hint on the root logger;
    both are silenced while it runs (and restored after)."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(previous)


def weighted_ops(model) -> tuple[Counter, Counter]:
    """Op types of the nodes that read a weight tensor (an initializer of two or more dims), counted
    by whether the weight arrives quantized (through DequantizeLinear) or in float."""
    from onnx import TensorProto

    weights = {i.name: i for i in model.graph.initializer if len(i.dims) >= 2}
    dequantized = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    quantized, floating = Counter(), Counter()
    for node in model.graph.node:
        if node.op_type in QUANTIZATION_OPS:
            continue
        for name in node.input:
            if name in dequantized and dequantized[name] in weights:
                quantized[node.op_type] += 1
                break
            if name in weights and weights[name].data_type in (TensorProto.FLOAT, TensorProto.FLOAT16,
                                                                TensorProto.DOUBLE):
                floating[node.op_type] += 1
                break
    return quantized, floating


def runtime_ops(path: str | Path) -> dict[str, int]:
    """Op types of the graph onnxruntime's CPU provider actually runs for ``path`` (after its graph
    optimisations: QDQ groups fused into ``QLinearConv``, ``QLinearAdd``, …), counted."""
    import tempfile

    import onnx

    ort = _onnxruntime()
    with tempfile.TemporaryDirectory() as tmp:
        options = session_options(1)  # run for its optimised graph only: one thread is plenty
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return dict(sorted(Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node).items()))


def _failed_op(message: str, model) -> str:
    """The op type of the node an onnxruntime error names, else the error's first line."""
    ops = {node.name: node.op_type for node in model.graph.node if node.name}
    for name in sorted(ops, key=len, reverse=True):
        if name in message:
            return f"{ops[name]} (node {name})"
    for op in sorted({node.op_type for node in model.graph.node}, key=len, reverse=True):
        if re.search(rf"\b{re.escape(op)}\b", message):
            return op
    return message.strip().splitlines()[0] if message.strip() else "an op"


def ops_to_quantize(model) -> tuple[str, ...] | None:
    """The op types to quantize in the ONNX graph ``model``: :data:`MATRIX_OPS` for a transformer's
    graph (one with an op of :data:`TRANSFORMER_OPS`), ``None`` — every op onnxruntime quantizes —
    otherwise.

    Example:
        >>> import onnx
        >>> node = onnx.helper.make_node("Softmax", ["x"], ["y"])
        >>> ops_to_quantize(onnx.helper.make_model(onnx.helper.make_graph([node], "g", [], [])))
        ('Conv', 'Gemm', 'MatMul')
    """
    return MATRIX_OPS if any(node.op_type in TRANSFORMER_OPS for node in model.graph.node) else None


def _check_quantized(model) -> tuple[dict, dict]:
    """The weighted ops of the quantized graph ``model`` that were quantized and those left in float
    by design (:data:`FLOAT_PARAMETER_OPS`); any other weighted op left in float, or no weighted op
    quantized, is refused (:class:`Int8Error`)."""
    quantized, floating = weighted_ops(model)
    refused = sorted(op for op in floating if op not in FLOAT_PARAMETER_OPS)
    if refused or not quantized:
        ops = ", ".join(refused) or ", ".join(sorted({n.op_type for n in model.graph.node} - set(QUANTIZATION_OPS)))
        one = len(refused) == 1
        raise Int8Error(f"onnxruntime cannot quantize {'op' if one else 'ops'} {ops} of this model "
                        f"({'its' if one else 'their'} weights would stay in float)",
                        _replace("it" if one else "them"))
    return dict(sorted(quantized.items())), {op: floating[op] for op in sorted(floating)}


def quantize_int8(source: str | Path, destination: str | Path, calibration_images: torch.Tensor | np.ndarray,
                  calibration: str = CALIBRATION) -> dict:
    """Quantize the ONNX file ``source`` to int8 (static, QDQ, per-channel int8 weights, uint8
    activations) with activation ranges calibrated on ``calibration_images`` (``N × C × H × W``, normalised as
    the model's inputs) — a transformer's matrix products only (:func:`ops_to_quantize`); write it
    atomically to ``destination`` and return what was done: ``bytes``, ``calibration``,
    ``calibration_images``, ``op_types`` (``None``: every op onnxruntime quantizes), the op types whose
    weights were quantized (``quantized_ops``) and those whose parameters stay in float
    (``float_ops``), the ops onnxruntime runs (``runtime_ops``) and the settings. A model onnxruntime
    cannot quantize is refused with the op named (:class:`Int8Error`), nothing written."""
    _onnxruntime()
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    source = existing_file(source, "source")
    destination = output_file(destination, "destination")
    calibration = known_name(calibration, "calibration", names=CALIBRATIONS)
    images = calibration_images.detach().cpu().numpy() if isinstance(calibration_images, torch.Tensor) \
        else np.asarray(calibration_images)
    model = onnx.load(str(source))
    name, dims = _input_shape(model)
    if images.ndim != 4 or len(images) == 0 or any(d is not None and d != s for d, s in zip(dims, images.shape[1:])):
        wanted = "×".join("?" if d is None else str(d) for d in dims)
        raise DataError(f"calibration images of shape {tuple(images.shape)} do not fit the model, which takes "
                        f"N×{wanted}; give images of the model's size and channels, normalised as in training")
    images = np.ascontiguousarray(images, dtype=np.float32)
    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}[calibration]
    op_types = ops_to_quantize(model)

    def write(tmp: Path) -> None:
        try:
            with _quiet_quantizer():
                quantize_static(str(source), str(tmp), _reader(name, images), quant_format=QuantFormat.QDQ,
                                op_types_to_quantize=None if op_types is None else list(op_types),
                                per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                calibrate_method=method)
        except Exception as exc:  # the quantizer raises many types; each means "this graph cannot be quantized"
            raise Int8Error(f"onnxruntime cannot quantize {_failed_op(str(exc), model)}: "
                            f"{' '.join(str(exc).split())[:200]}", _replace("that op")) from None
        record["quantized_ops"], record["float_ops"] = _check_quantized(onnx.load(str(tmp)))

    record: dict = {}
    path = atomic_write(destination, write)
    return {"path": str(path), "bytes": os.path.getsize(path), "format": "QDQ", "activations": "uint8",
            "weights": "int8, per channel", "calibration": calibration, "calibration_images": int(len(images)),
            "op_types": None if op_types is None else list(op_types), **record, "runtime_ops": runtime_ops(path)}


__all__ = ["CALIBRATION", "CALIBRATIONS", "FLOAT_PARAMETER_OPS", "Int8Error", "MATRIX_OPS", "OnnxClassifier",
           "TRANSFORMER_OPS", "onnx_session", "ops_to_quantize", "quantize_int8", "runtime_ops", "session_logits",
           "session_options", "weighted_ops"]
