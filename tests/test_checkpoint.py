import pickle

import pytest
import torch

from neurotomy.checkpoint import ModelMeta, read_meta, save_checkpoint
from neurotomy.loading import load_checkpoint
from neurotomy.errors import CheckpointError
from neurotomy.models import build_model
from neurotomy.loading import load_model

ARGS = {"in_channels": 1, "num_classes": 10, "input_size": 28}


@pytest.mark.parametrize("arch", ["resnet20", "mobilenetv2", "vgg11_bn"])
def test_round_trip_identical_outputs(tmp_path, arch):
    torch.manual_seed(0)
    model = build_model(arch, **ARGS).eval()
    for m in model.modules():  # non-trivial BN statistics so the test would catch a lost buffer
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    meta = ModelMeta(arch=arch, arch_args=ARGS, dataset="fashion-mnist", seed=3,
                     normalization={"mean": [0.286], "std": [0.353]})
    path = save_checkpoint(model, meta, tmp_path / "m")
    assert path.name == "m.safetensors"
    loaded = load_checkpoint(path)
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(loaded(x), model(x))
    assert not loaded.training
    assert loaded.neurotomy_meta.normalization == {"mean": [0.286], "std": [0.353]}
    assert loaded.neurotomy_meta.versions["torch"] == torch.__version__
    assert not list(tmp_path.glob(".*tmp"))


def test_pickle_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(build_model("lenet5", **ARGS).state_dict(), path)
    with pytest.raises(CheckpointError, match="pickle.*never loads"):
        load_model(path)
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError, match="pickle"):
        load_model(raw)


def test_corrupt_and_missing(tmp_path):
    path = save_checkpoint(build_model("lenet5", **ARGS), ModelMeta("lenet5", ARGS), tmp_path / "m.safetensors")
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path / "cut.safetensors")
    (tmp_path / "tiny.safetensors").write_bytes(b"abc")
    with pytest.raises(CheckpointError, match="truncated"):
        read_meta(tmp_path / "tiny.safetensors")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "absent.safetensors")


def test_weights_that_do_not_fit(tmp_path):
    path = save_checkpoint(build_model("lenet5", **ARGS), ModelMeta("resnet20", ARGS), tmp_path / "m")
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(path)


def test_failed_write_leaves_previous_file(tmp_path, monkeypatch):
    model = build_model("lenet5", **ARGS)
    path = save_checkpoint(model, ModelMeta("lenet5", ARGS), tmp_path / "m")
    before = path.read_bytes()
    import neurotomy.checkpoint as ck

    def broken(tensors, filename, metadata):
        open(filename, "wb").write(b"partial")
        raise OSError("disk full")
    monkeypatch.setattr(ck, "save_file", broken)
    with pytest.raises(OSError):
        save_checkpoint(model, ModelMeta("lenet5", ARGS), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_header_length_that_looks_like_pickle_opcode(tmp_path):
    """A header of length 0x..80 starts with byte 0x80, the pickle protocol opcode."""
    model = build_model("lenet5", **ARGS)
    for pad in range(256):
        meta = ModelMeta("lenet5", ARGS, dataset="x" * pad)
        path = save_checkpoint(model, meta, tmp_path / "m")
        if path.read_bytes()[0] == 0x80:
            assert load_checkpoint(path).neurotomy_meta.dataset == "x" * pad
            return
    pytest.fail("no header length with low byte 0x80 was produced")


def test_tied_views_and_strided_tensors_are_saved_as_their_values(tmp_path):
    # safetensors refuses shared or strided storage; those (only) are cloned on the way out, and the
    # model's own tensors are never changed or left pointing elsewhere
    from safetensors.torch import load_file
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    model[1].weight = model[0].weight  # tied
    model.register_buffer("strided", torch.arange(12.0).view(3, 4).t())  # a transposed view
    model.register_buffer("part", model.strided[:2])  # shares the strided buffer's storage
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    path = save_checkpoint(model, ModelMeta(arch="unknown", arch_args={}), tmp_path / "m")
    saved = load_file(str(path))
    assert set(saved) == set(expected)
    assert all(torch.equal(saved[k], v) for k, v in expected.items())
    assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.items())
    assert model[1].weight is model[0].weight
