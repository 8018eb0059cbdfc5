import pytest
import torch
from safetensors.torch import load_file

from neurotomy.checkpoint import read_meta, save_checkpoint
from neurotomy.loading import load_checkpoint
from neurotomy.errors import NeurotomyError
from neurotomy.jobs.split import split
from neurotomy.surgery.patching import agrees_about_class, patch


@pytest.fixture(scope="module")
def model_module_data(lenet, digits_train, digits_test):
    model, train, test = lenet, digits_train, digits_test
    module = split(model, train, 3, calibration_images=200, finetune_epochs=1, finetune_images=300, quiet=True)
    return model, module.model, train, test


@torch.no_grad()
def test_patched_prediction_follows_the_documented_rule(model_module_data):
    model, module, train, test = model_module_data
    patched = patch(model, module, train)
    # the rule computed independently: min-max over the calibration set, replace p_3, argmax
    calibration = module(train.images).softmax(1)[:, 1]
    low, high = calibration.min(), calibration.max()
    probs = model(test.images).softmax(1)
    rescaled = ((module(test.images).softmax(1)[:, 1] - low) / (high - low)).clamp(0, 1)
    expected = probs.clone()
    expected[:, 3] = rescaled
    out = patched(test.images)
    torch.testing.assert_close(out.exp(), expected.clamp(min=1e-12), rtol=1e-5, atol=1e-6)
    assert torch.equal(out.argmax(1), expected.argmax(1))


@torch.no_grad()
def test_own_module_keeps_the_models_predictions_where_both_agree(model_module_data):
    model, module, train, test = model_module_data
    patched = patch(model, module, train)
    weak_probs = model(test.images).softmax(1)
    agree = agrees_about_class(weak_probs, patched.module_probability(test.images), 3)
    before, after = weak_probs.argmax(1), patched(test.images).argmax(1)
    assert agree.double().mean() > 0.9 and (before[agree] == 3).sum() > 20  # both kinds of agreement occur
    assert torch.equal(after[agree], before[agree])
    # where they disagree, only decisions involving class 3 move
    moved = after != before
    assert ((after[moved] == 3) | (before[moved] == 3)).all()


def test_patched_model_saves_and_loads_without_pickle(model_module_data, tmp_path):
    model, module, train, test = model_module_data
    patched = patch(model, module, train)
    path = save_checkpoint(patched, patched.neurotomy_meta, tmp_path / "patched")
    meta = read_meta(path)
    assert meta.arch == "patched" and meta.arch_args["target_class"] == 3
    assert {k.split(".")[0] for k in load_file(str(path))} == {"weak", "module", "low", "high"}
    loaded = load_checkpoint(path)
    with torch.no_grad():
        assert torch.equal(loaded(test.images), patched(test.images))
    assert loaded.target_class == 3


def test_patch_rejects_a_module_for_a_class_the_weak_model_lacks(model_module_data):
    model, module, train, _ = model_module_data
    with pytest.raises(NeurotomyError, match="weak model has classes"):
        patch(model, module, train, target_class=12)


def test_patch_rejects_a_weak_model_for_other_inputs(model_module_data):
    """A weak model that takes 3-channel (or other-sized) images and a 1-channel module make a model
    that runs on no input: refused before patching, in one line naming both parts."""
    from neurotomy.errors import ModelError
    from neurotomy.models import build_model

    model, module, train, _ = model_module_data
    channels, size = model.neurotomy_meta.input_shape[:2]
    with pytest.raises(ModelError, match=f"weak model takes 3-channel images but the module takes {channels}-channel"):
        patch(build_model("lenet5", 3, 10, size), module, train)
    with pytest.raises(ModelError, match=f"weak model takes {2 * size}×{2 * size} images but the module takes "
                                         f"{size}×{size} ones; patch with a module cut from a model made for the same"):
        patch(build_model("lenet5", channels, 10, 2 * size), module, train)
    weak = build_model("lenet5", 3, 10, size)
    del weak.neurotomy_meta  # a bare nn.Module: its first convolution tells its channels
    with pytest.raises(ModelError, match="weak model takes 3-channel images"):
        patch(weak, module, train)
