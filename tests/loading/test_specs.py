"""MODEL in every form (neurotomy.loading.specs) and its one-line errors."""

import pytest
import torch
from torch import nn

from neurotomy import load_model, save_checkpoint
from neurotomy.errors import CheckpointError, ModelError, NeurotomyError
from neurotomy.loading import check_model_spec, model_spec_kind


def test_spec_kinds(user_net):
    assert model_spec_kind("zoo:lenet5-digits") == "zoo"
    assert model_spec_kind("torchvision:resnet18") == "torchvision"
    assert model_spec_kind("timm:resnet18") == "timm"
    assert model_spec_kind(f"{user_net}:make") == "file"
    assert model_spec_kind("lenet5") == "architecture"
    assert model_spec_kind("some/model.safetensors") == "checkpoint"
    with pytest.raises(ModelError, match="name the factory"):
        model_spec_kind(str(user_net))
    with pytest.raises(ModelError, match="is not a model"):
        model_spec_kind("nonsense")


def test_file_factory_builds_with_accepted_options(user_net):
    model = load_model(f"{user_net}:make", num_classes=5, input_size=12)
    meta = model.neurotomy_meta
    assert meta.arch == f"file:{user_net.resolve()}:make"
    assert meta.arch_args["factory_kwargs"] == {"num_classes": 5}  # make() takes no in_channels
    assert meta.input_shape == (1, 12, 12) and model.head.out_features == 5 and not model.training


def test_file_model_needs_an_input_size(user_net):
    with pytest.raises(ModelError, match="--input-size"):
        load_model(f"{user_net}:make")


@pytest.mark.parametrize("spec,message", [
    ("missing.py:make", "no such model file"),
    ("{net}:nothing", "defines no 'nothing'; callables defined there: UserNet, make, not_a_model"),
    ("{net}:CONSTANT", "is a int, not a callable"),
    ("{net}:not_a_model", "returned a int, not an nn.Module"),
])
def test_file_factory_errors(user_net, tmp_path, monkeypatch, spec, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError, match=message.replace("(", r"\(")):
        load_model(spec.format(net=user_net), input_size=8)


def test_check_model_spec_reads_nothing(user_net, tmp_path):
    assert check_model_spec(f"{user_net}:anything") == f"{user_net}:anything"  # the factory is checked at load
    with pytest.raises(ModelError, match="no such model file"):
        check_model_spec(f"{tmp_path}/gone.py:make")
    with pytest.raises(ModelError, match="no such checkpoint"):
        check_model_spec(str(tmp_path / "gone.safetensors"))


def test_unknown_torchvision_and_timm_names():
    with pytest.raises(ModelError, match="torchvision has no model 'resnet181'.*did you mean"):
        load_model("torchvision:resnet181")
    pytest.importorskip("timm")
    with pytest.raises(ModelError, match="timm has no model 'resnet181'"):
        load_model("timm:resnet181")


def test_pretrained_weights_missing_from_the_cache_say_where(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(ModelError, match=r"no pretrained weights for torchvision:resnet18 in the local cache"):
        load_model("torchvision:resnet18", pretrained=True)
    with pytest.raises(ModelError, match="--pretrained applies to torchvision"):
        load_model("zoo:lenet5-digits", pretrained=True)


def test_weights_safetensors_and_pt(user_net, tmp_path):
    source = load_model(f"{user_net}:make", input_size=8)
    torch.save(source.state_dict(), tmp_path / "w.pt")
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "w.safetensors"))
    x = torch.randn(2, 1, 8, 8)
    for weights in ("w.pt", "w.safetensors"):
        model = load_model(f"{user_net}:make", input_size=8, weights=tmp_path / weights)
        assert torch.equal(model(x), source.eval()(x))
    torch.save({"state_dict": source.state_dict(), "epoch": 3}, tmp_path / "nested.pth")
    assert load_model(f"{user_net}:make", input_size=8, weights=tmp_path / "nested.pth") is not None


def test_weights_that_do_not_fit_name_the_key_and_shapes(user_net, tmp_path):
    torch.save(load_model(f"{user_net}:make", input_size=8, num_classes=3).state_dict(), tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match=r"head.weight is 3×56 in the file but 10×56 in the model"):
        load_model(f"{user_net}:make", input_size=8, weights=tmp_path / "w.pt")


class Pickled:
    pass


def test_pickle_weights_are_refused(user_net, tmp_path):
    torch.save({"stem.weight": Pickled()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"weights_only=True\) refuses it"):
        load_model(f"{user_net}:make", input_size=8, weights=tmp_path / "evil.pt")


def test_a_pickled_whole_model_says_what_the_unpickler_refused_without_terminal_codes(user_net, tmp_path):
    torch.save(nn.Linear(2, 2), tmp_path / "whole.pt")  # torch's message puts part of it in bold (ANSI codes)
    with pytest.raises(CheckpointError) as caught:
        load_model(f"{user_net}:make", input_size=8, weights=tmp_path / "whole.pt")
    message = str(caught.value)
    assert "\x1b" not in message and "\n" not in message
    assert "refuses it (Unsupported global: GLOBAL torch.nn.modules.linear.Linear" in message


def test_a_text_file_as_weights_is_not_called_pickled(user_net, tmp_path):
    (tmp_path / "notes.pt").write_text("import torch\nprint('not weights')\n")
    with pytest.raises(CheckpointError, match="notes.pt: not a weights file neurotomy can read") as caught:
        load_model(f"{user_net}:make", input_size=8, weights=tmp_path / "notes.pt")
    assert "pickled" not in str(caught.value)


def test_a_bare_state_dict_as_model_says_to_load_it_with_weights(user_net, tmp_path):
    from safetensors.torch import save_file

    save_file(load_model(f"{user_net}:make", input_size=8).state_dict(), str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="not written by neurotomy .*load it with --weights onto MODEL"):
        load_model(tmp_path / "plain.safetensors")


def test_changed_factory_file_warns_on_load(user_net, tmp_path):
    model = load_model(f"{user_net}:make", input_size=8)
    path = save_checkpoint(model, tmp_path / "m")
    user_net.write_text(user_net.read_text() + "\n# edited\n")
    with pytest.warns(UserWarning, match="changed since the checkpoint was saved"):
        reloaded = load_model(path)
    x = torch.randn(1, 1, 8, 8)
    assert torch.allclose(reloaded(x), model(x))
    user_net.unlink()
    with pytest.raises(NeurotomyError, match="architecture file .* is gone"):
        load_model(path)


def test_save_without_meta_describes_torchvision_and_file_classes(user_net, tmp_path):
    import torchvision

    model = torchvision.models.mnasnet0_5(num_classes=4).eval()  # MNASNet checks its state-dict version
    loaded = load_model(save_checkpoint(model, tmp_path / "tv"))
    assert loaded.neurotomy_meta.arch == "torchvision:mnasnet0_5"
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(loaded(x), model(x))
    with pytest.raises(CheckpointError, match="cannot tell how to rebuild this Sequential"):
        save_checkpoint(nn.Sequential(nn.Linear(2, 2)), tmp_path / "seq")


def test_timm_pretrained_missing_from_the_cache_says_so(monkeypatch, tmp_path):
    pytest.importorskip("timm")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    import huggingface_hub.constants as constants
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelError, match="no pretrained weights for timm:resnet18 in the local cache"):
        load_model("timm:resnet18", pretrained=True)


def test_save_checkpoint_old_and_new_signatures(user_net, tmp_path):
    from neurotomy.checkpoint import read_meta

    model = load_model(f"{user_net}:make", input_size=8)
    for path in (save_checkpoint(model, tmp_path / "a"), save_checkpoint(model, None, tmp_path / "b"),
                 save_checkpoint(model, model.neurotomy_meta, tmp_path / "c")):
        meta = read_meta(path)
        assert meta.arch.startswith("file:") and len(meta.arch_args["sha256"]) == 64


def test_instance_of_a_class_from_a_file_saves_without_metadata(user_net, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(user_net.parent))
    import importlib

    module = importlib.import_module("user_net")
    model = module.UserNet(num_classes=10).eval()  # built by hand: no neurotomy_meta, no input size
    loaded = load_model(save_checkpoint(model, tmp_path / "m", input_size=8))
    assert loaded.neurotomy_meta.arch == f"file:{user_net.resolve()}:UserNet"
    assert loaded.neurotomy_meta.input_shape == (1, 8, 8)
    x = torch.randn(1, 1, 8, 8)
    assert torch.equal(loaded(x), model(x))


def test_register_model_for_python_users(monkeypatch, tmp_path):
    import neurotomy
    from neurotomy.models import ARCHITECTURES

    # monkeypatch remembers "tiny-mlp" as absent and removes it again after the test
    monkeypatch.setitem(ARCHITECTURES._entries, "tiny-mlp", None)
    monkeypatch.setitem(ARCHITECTURES._tags, "tiny-mlp", {})
    del ARCHITECTURES._entries["tiny-mlp"]

    @neurotomy.register_model("tiny-mlp")
    def tiny_mlp(in_channels=1, num_classes=10, input_size=8, hidden=16):
        return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * input_size ** 2, hidden), nn.ReLU(),
                             nn.Linear(hidden, num_classes))

    model = neurotomy.build_model("tiny-mlp", 1, 3, 4, hidden=5)
    loaded = load_model(save_checkpoint(model, tmp_path / "m"))
    x = torch.ones(1, 1, 4, 4)
    assert loaded[1].out_features == 5 and torch.equal(loaded(x), model.eval()(x))


def test_script_model_without_input_size_is_never_saved_with_a_guess(user_net, tmp_path, monkeypatch):
    """A model built in a script records no input size: saving it says to give one (input_size=),
    never writes 28 px for a 16 px model; a size given that contradicts a recorded one is refused."""
    import importlib
    import sys

    monkeypatch.syspath_prepend(str(user_net.parent))
    monkeypatch.delitem(sys.modules, "user_net", raising=False)  # this test's copy, not another test's

    from neurotomy.checkpoint import read_meta

    model = importlib.import_module("user_net").UserNet(num_classes=10).eval()
    with pytest.raises(CheckpointError, match=r"cannot tell the input size of this UserNet .*"
                                              r"pass save_checkpoint\(model, path, input_size=N\)"):
        save_checkpoint(model, tmp_path / "m")
    assert not list(tmp_path.glob("m*"))  # nothing written
    assert read_meta(save_checkpoint(model, tmp_path / "m", input_size=16)).input_shape == (1, 16, 16)
    with pytest.raises(CheckpointError, match="records input channels 1, not 3; drop in_channels="):
        save_checkpoint(model, tmp_path / "m", in_channels=3, input_size=16)
    built = load_model(f"{user_net}:make", input_size=8)
    with pytest.raises(CheckpointError, match="records input size 8, not 16"):
        save_checkpoint(built, tmp_path / "b", input_size=16)


def test_checkpoint_without_input_size_takes_it_from_load_model_and_the_cli(user_net, tmp_path, capsys):
    """A header that records no input size (written before the check, or with a hand-made meta) is
    loaded with the size given (load_model(..., input_size=N), --input-size N), else one line."""
    import dataclasses
    import json

    from neurotomy.cli import main

    model = load_model(f"{user_net}:make", input_size=8)
    meta = model.neurotomy_meta
    sizeless = dataclasses.replace(meta, arch_args={k: v for k, v in meta.arch_args.items() if k != "input_size"})
    path = save_checkpoint(model, sizeless, tmp_path / "old")  # an explicit meta is written as given
    with pytest.raises(CheckpointError, match=r"records no input size; load it with load_model\(path, input_size=N\)"):
        load_model(path)
    loaded = load_model(path, input_size=8)
    x = torch.randn(2, 1, 8, 8)
    assert loaded.neurotomy_meta.input_shape == (1, 8, 8) and torch.equal(loaded(x), model(x))
    assert load_model(save_checkpoint(loaded, tmp_path / "new")).neurotomy_meta.input_shape == (1, 8, 8)
    assert main(["info", str(path), "--json"]) == 2
    assert "records no input size" in capsys.readouterr().err
    assert main(["info", str(path), "--input-size", "8", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total_params"] > 0
