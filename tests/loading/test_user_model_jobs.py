"""A user's own model file through the jobs that write files: dissect, split, patch, train (issue 20)."""

import pytest
import torch

from neurotomy import load_model
from neurotomy.cli import main


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_user_file_model_dissect_split_patch_write_their_outputs(user_net, tmp_path):
    net, common = f"{user_net}:make", ["--input-size", "8", "--data", "digits", "--quiet"]
    assert main(["dissect", net, *common, "--budget", "tiny", "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "report.html").exists()
    assert load_model(tmp_path / "report" / "pruned.safetensors").neurotomy_meta.recipe

    # class_taylor: relevance from the labels, so an untrained model has modules too
    assert main(["split", net, *common, "--classes", "3", "--criterion", "class_taylor", "--finetune-epochs", "0",
                 "--out", str(tmp_path / "modules")]) == 0
    module = load_model(tmp_path / "modules" / "class3.safetensors")
    assert module(torch.zeros(1, 1, 8, 8)).shape == (1, 2)

    assert main(["patch", net, *common, "--module", str(tmp_path / "modules" / "class3"),
                 "--out", str(tmp_path / "patched.safetensors")]) == 0
    patched = load_model(tmp_path / "patched.safetensors")
    assert patched.neurotomy_meta.arch == "patched" and patched(torch.zeros(1, 1, 8, 8)).shape == (1, 10)


def test_user_file_model_trains_and_reloads(user_net, tmp_path):
    trained = tmp_path / "trained.safetensors"
    assert main(["train", f"{user_net}:make", "--data", "digits", "--epochs", "1", "--max-images", "256",
                 "--out", str(trained), "--quiet"]) == 0
    model = load_model(trained)
    assert model.neurotomy_meta.arch == f"file:{user_net.resolve()}:make" and model.neurotomy_meta.dataset == "digits"


def test_pruned_split_and_patched_user_models_reload_exactly(user_net, tmp_path):
    from neurotomy import save_checkpoint
    from neurotomy.data import load_dataset
    from neurotomy.scores import get_criterion
    from neurotomy.scores.classwise import get_classwise_criterion
    from neurotomy.surgery.class_modules import cut_class_module
    from neurotomy.surgery.filters import prune_filters
    from neurotomy.surgery.patching import patch

    model = load_model(f"{user_net}:make", input_size=8)
    data = load_dataset("digits")
    x = torch.randn(3, 1, 8, 8)
    pruned = prune_filters(model, get_criterion("l1")(model), ratio=0.4).model.eval()
    scores = get_classwise_criterion("class_taylor")(model, data, max_images=200, quiet=True)
    module = cut_class_module(model, data, 3, scores=scores, calibration_images=100, quiet=True).model.eval()
    patched = patch(model, module, data, quiet=True)
    for name, made in (("pruned", pruned), ("module", module), ("patched", patched)):
        reloaded = load_model(save_checkpoint(made, tmp_path / name))
        with torch.no_grad():
            assert torch.allclose(reloaded(x), made(x), atol=1e-5), name
