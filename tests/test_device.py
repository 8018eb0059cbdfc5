"""``--device`` and ``device=``: resolution, the one-line error for a device the machine lacks, the
CPU path of the CLI and the API, and (on a machine with CUDA) fit/evaluate/attribute on the GPU."""

from __future__ import annotations

import pytest
import torch

from neurotomy.cli import main
from neurotomy.device import model_device, on_cpu, place, resolve_device
from neurotomy.errors import DeviceError, NeurotomyError

MODEL = "zoo:lenet5-digits"
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_auto_is_cuda_then_mps_then_cpu(monkeypatch):
    import neurotomy.device as device

    assert resolve_device("auto") == resolve_device(None)
    monkeypatch.setattr(device, "cuda_available", lambda: False)
    monkeypatch.setattr(device, "mps_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(device, "mps_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(device, "cuda_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_explicit_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    for bad in ("", "gpu", "cuda:x", "cpu:0", "tpu", 3):
        with pytest.raises(DeviceError):
            resolve_device(bad)
    assert issubclass(DeviceError, NeurotomyError)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_device_error():
    with pytest.raises(DeviceError, match="CUDA is not available"):
        resolve_device("cuda")


def test_place_and_model_device():
    net = torch.nn.Linear(2, 2)
    assert place(net, None) is net and model_device(net) == torch.device("cpu")
    assert place(net, "cpu") is net
    assert model_device(torch.nn.ReLU()) == torch.device("cpu")
    assert on_cpu(net) is net


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("command", [["evaluate", MODEL], ["score", MODEL, "--criterion", "l1", "--out", "{tmp}/s.json"],
                                     ["train", "lenet5", "--data", "digits", "--out", "{tmp}/m"]])
def test_cli_cuda_without_cuda_is_one_line_exit_2(command, tmp_path, capsys):
    argv = [w.replace("{tmp}", str(tmp_path)) for w in command] + ["--device", "cuda", "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("neurotomy: error: argument --device:")
    assert "CUDA is not available" in err[0]
    assert not list(tmp_path.iterdir())  # nothing written


def test_cli_device_cpu(tmp_path, capsys):
    assert main(["evaluate", MODEL, "--device", "cpu", "--max-images", "64", "--quiet", "--json"]) == 0
    assert main(["score", MODEL, "--criterion", "l1", "--device", "cpu", "--max-images", "64", "--quiet",
                 "--out", str(tmp_path / "s.npz")]) == 0
    assert (tmp_path / "s.npz").exists()


def test_api_device_cpu():
    from neurotomy.data import load_dataset
    from neurotomy.loading import load_model
    from neurotomy.train import evaluate

    model = load_model(MODEL)
    metrics = evaluate(model, load_dataset("digits", split="test"), max_images=64, quiet=True, device="cpu")
    assert metrics["n"] == 64 and model_device(model).type == "cpu"


@needs_cuda
def test_fit_evaluate_attribute_on_cuda():
    from neurotomy.data import load_dataset
    from neurotomy.explain import attribute
    from neurotomy.models import build_model
    from neurotomy.train import TrainConfig, evaluate, fit

    train, test = load_dataset("digits", split="train"), load_dataset("digits", split="test")
    model = build_model("lenet5", 1, 10, 8)
    history = fit(model, train, TrainConfig(epochs=1, max_images=256, quiet=True), device="cuda")
    assert model_device(model).type == "cuda" and len(history) == 1
    metrics = evaluate(model, test, max_images=128, quiet=True)  # follows the model's device
    assert metrics["n"] == 128
    images = torch.stack([test[i][0] for i in range(4)])
    maps = attribute(model, images, method="gradient")
    assert maps.shape == (4, 8, 8) and maps.device.type == "cpu"  # maps come back where the inputs were
    assert attribute(model, images.cuda(), method="gradient").device.type == "cuda"
    cpu = evaluate(model.cpu(), test, max_images=128, quiet=True)
    assert abs(cpu["accuracy"] - metrics["accuracy"]) <= 1 / 128 + 1e-9


def test_dissect_report_states_its_device():
    from neurotomy.jobs.dissect import machine

    stated = machine(torch.nn.Linear(2, 2))
    assert stated["device"] == "cpu" and stated["latency_device"] == "cpu"
