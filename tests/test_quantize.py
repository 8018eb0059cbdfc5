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
    fp32 = session_logits(onnx_session(folder / "m.onnx"))(test.images)
    int8 = session_logits(onnx_session(folder / "m.int8.onnx", threads=1), batch_size=50)(test.images)
    with torch.no_grad():
        np.testing.assert_allclose(fp32, model(test.images).numpy(), atol=1e-4)
    assert (int8.argmax(1) == fp32.argmax(1)).mean() > 0.97
    assert 0 < np.abs(int8 - fp32).mean() < 0.2 * np.abs(fp32).mean()  # quantized: close, not equal
    as_module = OnnxClassifier(onnx_session(folder / "m.int8.onnx"))(test.images[:5])
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
