"""int8 quantization (neurotomy.quantize): the graph it writes, min-max calibration checked by hand,
and the ops it cannot quantize named."""

import numpy as np
import pytest
import torch
from torch import nn

from neurotomy.data import load_dataset
from neurotomy.errors import DataError, ModelError
from neurotomy.export import export_onnx
from neurotomy.loading import load_model

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from neurotomy.quantize import OnnxClassifier, onnx_session, quantize_int8, session_logits, weighted_ops  # noqa: E402


@pytest.fixture(scope="module")
def lenet_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("quantize")
    model = load_model("zoo:lenet5-digits").eval()
    export_onnx(model, folder / "m.onnx")
    calibration = load_dataset("digits").images[:64]
    record = quantize_int8(folder / "m.onnx", folder / "m.int8.onnx", calibration)
    return model, folder, calibration, record


def initializers(path):
    return {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


def test_quantized_graph_is_int8_qdq_per_channel(lenet_files):
    model, folder, _, record = lenet_files
    assert record["quantized_ops"] == {"Conv": 2, "Gemm": 3}
    assert record["bytes"] == (folder / "m.int8.onnx").stat().st_size < 0.5 * (folder / "m.onnx").stat().st_size
    quantized, floating = weighted_ops(onnx.load(str(folder / "m.int8.onnx")))
    assert dict(quantized) == record["quantized_ops"] and not floating
    assert not weighted_ops(onnx.load(str(folder / "m.onnx")))[0]  # the fp32 file: every weight in float
    weights = initializers(folder / "m.int8.onnx")
    int8_weights = [w for w in weights.values() if w.dtype == np.int8 and w.ndim >= 2]
    assert len(int8_weights) == 5
    # per channel: one scale per output channel of each conv weight
    conv = model.features[0]
    scales = [w for n, w in weights.items() if n.endswith("_scale") and w.shape == (conv.out_channels,)]
    assert scales, "no per-channel weight scale of the first conv"
    # onnxruntime runs it in int8: every conv fused into QLinearConv, none left in float
    assert record["runtime_ops"]["QLinearConv"] == 2 and "Conv" not in record["runtime_ops"]
    assert record["activations"] == "uint8"


def test_minmax_calibration_of_the_input(lenet_files):
    """The input's activation range is min-max of the calibration images (256 levels, zero in range)."""
    _, folder, calibration, _ = lenet_files
    weights = initializers(folder / "m.int8.onnx")
    lo, hi = min(float(calibration.min()), 0.0), max(float(calibration.max()), 0.0)
    np.testing.assert_allclose(weights["images_scale"], (hi - lo) / 255, rtol=1e-5)


def test_int8_model_agrees_with_fp32(lenet_files):
    model, folder, _, _ = lenet_files
    test = load_dataset("digits", split="test")
    fp32 = session_logits(onnx_session(folder / "m.onnx", threads=1))(test.images)
    int8 = session_logits(onnx_session(folder / "m.int8.onnx", threads=1), batch_size=50)(test.images)
    with torch.no_grad():
        np.testing.assert_allclose(fp32, model(test.images).numpy(), atol=1e-4)
    assert (int8.argmax(1) == fp32.argmax(1)).mean() > 0.97
    assert 0 < np.abs(int8 - fp32).mean() < 0.2 * np.abs(fp32).mean()  # quantized: close, not equal
    as_module = OnnxClassifier(onnx_session(folder / "m.int8.onnx", threads=1))(test.images[:5])
    np.testing.assert_array_equal(as_module.numpy(), int8[:5])


class PReLUNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.act, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.PReLU(4), nn.Linear(256, 10)

    def forward(self, x):
        return self.fc(self.act(self.conv(x)).flatten(1))


def test_an_op_onnxruntime_cannot_quantize_is_named(tmp_path):
    export_onnx(PReLUNet(), tmp_path / "p.onnx", input_shape=(1, 8, 8))
    with pytest.raises(ModelError, match="cannot quantize op PRelu"):
        quantize_int8(tmp_path / "p.onnx", tmp_path / "p.int8.onnx", torch.randn(8, 1, 8, 8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.onnx"]  # nothing half-written


def test_calibration_images_that_do_not_fit(lenet_files, tmp_path):
    _, folder, _, _ = lenet_files
    with pytest.raises(DataError, match=r"shape \(4, 1, 28, 28\) do not fit the model, which takes N×1×8×8"):
        quantize_int8(folder / "m.onnx", tmp_path / "x.onnx", torch.zeros(4, 1, 28, 28))
    with pytest.raises(DataError, match="do not fit"):
        quantize_int8(folder / "m.onnx", tmp_path / "x.onnx", torch.zeros(0, 1, 8, 8))
    assert not (tmp_path / "x.onnx").exists()


# ---- transformers: the matrix products in int8, the rest in float ----------------------------------------------

@pytest.fixture(scope="module")
def vit_files(tmp_path_factory):
    from neurotomy.models import build_model

    folder = tmp_path_factory.mktemp("quantize-vit")
    torch.manual_seed(0)
    model = build_model("vit_tiny", in_channels=1, num_classes=10, input_size=8, patch=4, dim=32, depth=2,
                        num_heads=2, mlp_hidden=32).eval()
    export_onnx(model, folder / "v.onnx", input_shape=(1, 8, 8))
    record = quantize_int8(folder / "v.onnx", folder / "v.int8.onnx", load_dataset("digits").images[:64])
    return folder, record


def test_a_vit_is_quantized_in_its_matrix_products(vit_files):
    folder, record = vit_files
    assert record["op_types"] == ["Conv", "Gemm", "MatMul"]
    # patch embedding, head, and per block qkv, proj, fc1, fc2: every weight int8
    assert record["quantized_ops"] == {"Conv": 1, "Gemm": 1, "MatMul": 8}
    assert record["float_ops"] == {"Add": 1, "Expand": 1}  # the position embedding and the class token
    ops = record["runtime_ops"]
    # onnxruntime runs every matrix product in int8 (8 weights + q·kᵀ and attn·v in 2 blocks), softmax in float
    assert ops["QLinearMatMul"] == 12 and "MatMul" not in ops and ops["QLinearConv"] == 1 and ops["QGemm"] == 1
    assert "Softmax" in ops and "QLinearSoftmax" not in ops and "QLinearAdd" not in ops


def test_vit_matmul_weights_are_int8_per_output_column(vit_files):
    """Each MatMul weight against a naive symmetric per-column quantization: scale = max|w|/127, q = round(w/scale)."""
    folder, _ = vit_files
    fp32, int8 = initializers(folder / "v.onnx"), initializers(folder / "v.int8.onnx")
    checked = 0
    for name, w in fp32.items():
        if name.startswith("onnx::MatMul"):
            scale = np.abs(w).max(axis=0) / 127
            np.testing.assert_allclose(int8[f"{name}_scale"], scale, rtol=1e-6)
            q = int8[f"{name}_quantized"]
            assert q.dtype == np.int8 and q.shape == w.shape
            assert np.abs(q.astype(np.int32) - np.round(w / scale)).max() <= 1  # rounding ties may differ
            checked += 1
    assert checked == 8


def test_int8_vit_outputs_are_close_to_fp32(vit_files):
    folder, _ = vit_files
    images = load_dataset("digits", split="test").images
    fp32 = session_logits(onnx_session(folder / "v.onnx", threads=1))(images)
    int8 = session_logits(onnx_session(folder / "v.int8.onnx", threads=1))(images)
    error = np.abs(int8 - fp32).mean()
    assert 0 < error < 0.03 * np.abs(fp32).mean()  # measured 1.1 %; quantizing every op gives about 3×
    assert (int8.argmax(1) == fp32.argmax(1)).mean() > 0.97


def test_ops_to_quantize_picks_the_matrix_products_of_a_transformer_only(lenet_files, vit_files):
    from neurotomy.quantize import ops_to_quantize

    assert ops_to_quantize(onnx.load(str(lenet_files[1] / "m.onnx"))) is None
    assert ops_to_quantize(onnx.load(str(vit_files[0] / "v.onnx"))) == ("Conv", "Gemm", "MatMul")


class EinsumNet(nn.Module):
    """A transformer-like graph (LayerNorm) whose only weight feeds an Einsum: not quantizable."""

    def __init__(self):
        super().__init__()
        self.norm, self.weight = nn.LayerNorm(64), nn.Parameter(torch.randn(64, 10))

    def forward(self, x):
        return torch.einsum("bi,io->bo", self.norm(x.flatten(1)), self.weight)


def test_a_transformer_op_onnxruntime_cannot_quantize_is_named(tmp_path):
    from neurotomy.quantize import Int8Error

    export_onnx(EinsumNet(), tmp_path / "e.onnx", input_shape=(1, 8, 8))
    with pytest.raises(Int8Error, match="cannot quantize op Einsum of this model") as caught:
        quantize_int8(tmp_path / "e.onnx", tmp_path / "e.int8.onnx", torch.randn(8, 1, 8, 8))
    assert "\n" not in str(caught.value) and caught.value.problem in str(caught.value)
    assert "--int8" not in str(caught.value)  # a library refusal; each job words its own way out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.onnx"]


# ---- every session states its threads ----------------------------------------------------------------------------

def test_sessions_take_the_threads_they_are_given(lenet_files):
    from neurotomy.errors import NeurotomyError

    _, folder, _, _ = lenet_files
    options = onnx_session(folder / "m.onnx", threads=3).get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (3, 1)
    with pytest.raises(NeurotomyError, match="threads"):
        onnx_session(folder / "m.onnx", threads=0)
    with pytest.raises(TypeError):
        onnx_session(folder / "m.onnx")  # no default: every caller states its threads


def test_no_neurotomy_session_takes_the_default_thread_pool(lenet_files, tmp_path, monkeypatch):
    """Every InferenceSession made from neurotomy's code (export, its latency, quantization) is given
    options with its intra-op threads set (onnxruntime's default, 0, means one thread per core)."""
    import inspect

    import onnxruntime

    from neurotomy.export import onnxruntime_latency

    made = []
    real = onnxruntime.InferenceSession

    def spy(*args, **kwargs):
        caller = inspect.currentframe().f_back.f_globals.get("__name__", "")
        options = kwargs.get("sess_options", args[1] if len(args) > 1 else None)
        made.append((caller, None if options is None else options.intra_op_num_threads))
        return real(*args, **kwargs)
    monkeypatch.setattr(onnxruntime, "InferenceSession", spy)
    model, folder, calibration, _ = lenet_files
    export_onnx(model, tmp_path / "m.onnx")
    onnxruntime_latency([tmp_path / "m.onnx"], (1, 8, 8), batch_size=2, rounds=1, repeats=1, threads=2)
    quantize_int8(tmp_path / "m.onnx", tmp_path / "m.int8.onnx", calibration)
    ours = [(caller, threads) for caller, threads in made if caller.startswith("neurotomy")]
    assert {caller for caller, _ in ours} == {"neurotomy.export", "neurotomy.quantize"}
    assert ours[0] == ("neurotomy.export", torch.get_num_threads())  # the export's check: PyTorch's threads
    assert ("neurotomy.export", 2) in ours and all(threads and threads >= 1 for _, threads in ours)
    # onnxruntime's own calibration session is the one made elsewhere (its options cannot be given)
    assert any(caller.startswith("onnxruntime.quantization") for caller, _ in made)
