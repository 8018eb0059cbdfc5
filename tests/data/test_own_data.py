"""A user's own data through the CLI: an IDX set that is not Fashion-MNIST, an image folder and a
local torchvision copy — train, then evaluate/explain/dissect without --data (the checkpoint's own
dataset), and one line when the data does not fit the model."""

import json

import pytest

from neurotomy.checkpoint import ModelMeta, read_meta
from neurotomy.cli import main
from neurotomy.data import load_dataset
from neurotomy.errors import NeurotomyWarning
from neurotomy.loading import load_model
from tests.data.conftest import DIGIT_NAMES, digits_28, write_idx_set


@pytest.fixture(scope="module")
def own_model(digits_idx, tmp_path_factory):
    """LeNet-5 trained one epoch on the upscaled digits (idx:DIR)."""
    path = tmp_path_factory.mktemp("own") / "lenet.safetensors"
    assert main(["train", "lenet5", "--data", f"idx:{digits_idx}", "--epochs", "1", "--batch-size", "64",
                 "--out", str(path), "--quiet"]) == 0
    return path


def _stderr_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("neurotomy:")]


def test_the_checkpoint_records_the_dataset_and_its_absolute_root(own_model, digits_idx):
    meta = read_meta(own_model)
    assert meta.dataset == f"idx:{digits_idx.resolve()}" and meta.dataset_root == str(digits_idx.resolve())
    assert meta.classes == DIGIT_NAMES and meta.input_shape == (1, 28, 28) and meta.dataset_options == {}
    measured = load_dataset(f"idx:{digits_idx}").normalization
    assert meta.normalization == measured.to_dict() and measured.mean != (0.2860,)


def test_evaluate_without_data_uses_the_recorded_dataset_and_says_so(own_model, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the recorded root is absolute: any working directory will do
    assert main(["evaluate", str(own_model), "--json"]) == 0
    out = capsys.readouterr()
    metrics = json.loads(out.out)
    assert metrics["classes"] == DIGIT_NAMES and metrics["n"] == 60
    said = [line for line in out.err.splitlines() if line.startswith("neurotomy:")]
    assert said == [f"neurotomy: no --data given; using the model's own dataset idx:{read_meta(own_model).dataset_root}"]
    assert main(["evaluate", str(own_model), "--json", "--quiet"]) == 0
    assert _stderr_lines(capsys) == []  # --quiet: no note


def test_explain_without_data(own_model, tmp_path, capsys):
    out = tmp_path / "maps.png"
    assert main(["explain", str(own_model), "--method", "gradient", "--n", "3", "--out", str(out), "--quiet"]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG" and _stderr_lines(capsys) == []


def test_dissect_tiny_on_own_data(own_model, digits_idx, tmp_path):
    assert main(["dissect", str(own_model), "--budget", "tiny", "--out", str(tmp_path / "d"), "--quiet"]) == 0
    report = json.loads((tmp_path / "d" / "report.json").read_text())
    assert report["dataset"] == f"idx:{digits_idx.resolve()}"
    assert read_meta(tmp_path / "d" / "pruned.safetensors").classes == DIGIT_NAMES


def test_data_unlike_the_training_data_gets_one_warning_line(own_model, tmp_path, capsys):
    images, labels = digits_28(60)
    inverted = write_idx_set(tmp_path / "inverted", 255 - images, labels, test=20)  # white digits on black → black on white
    assert main(["evaluate", str(own_model), "--data", f"idx:{inverted}", "--quiet"]) == 0
    said = _stderr_lines(capsys)
    assert len(said) == 1 and said[0].startswith("neurotomy: warning: the data differs"), said
    assert "normalisation mean (0.69" in said[0] and f"dataset idx:{inverted.resolve()}, trained on idx:" in said[0]
    assert main(["evaluate", str(own_model), "--data", "fashion-mnist", "--max-images", "50", "--quiet"]) == 0
    assert "dataset fashion-mnist, trained on idx:" in _stderr_lines(capsys)[0]


def test_class_count_mismatch_is_a_one_line_error(own_model, tmp_path, capsys):
    images, labels = digits_28(30)
    three = write_idx_set(tmp_path / "three", images, labels % 3, test=10)
    assert main(["evaluate", str(own_model), "--data", f"idx:{three}", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has 3 classes but the model has 10" in err[0], err


def test_explain_on_a_local_torchvision_copy(own_model, local_mnist, tmp_path, capsys):
    assert main(["rate-explanations", str(own_model), "--data", "torchvision:MNIST", "--root", str(local_mnist),
                 "--methods", "gradient", "--metrics", "deletion", "--n", "4", "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 4


def test_image_folder_model_explained_and_compared(rgb_folder, tmp_path, capsys):
    model = tmp_path / "colours.safetensors"
    assert main(["train", "lenet5", "--data", f"image-folder:{rgb_folder}", "--epochs", "1", "--out", str(model),
                 "--quiet"]) == 2  # 20×18 images: not square
    assert "--input-size" in capsys.readouterr().err and not model.exists()
    assert main(["train", "lenet5", "--data", f"image-folder:{rgb_folder}", "--input-size", "16", "--epochs", "1",
                 "--batch-size", "4", "--out", str(model), "--quiet"]) == 0
    meta = read_meta(model)
    assert meta.input_shape == (3, 16, 16) and meta.classes == ["blue", "red"]
    assert meta.dataset_options == {"input_size": 16} and len(meta.normalization["mean"]) == 3
    assert main(["explain", str(model), "--method", "gradcam", "--n", "2", "--out", str(tmp_path / "m.png"),
                 "--quiet"]) == 0
    # --data naming the model's own folder takes the recorded --input-size too
    assert main(["compare-reasons", str(model), str(model), "--data", f"image-folder:{rgb_folder}", "--methods",
                 "gradient", "--n", "4", "--out", str(tmp_path / "r.json"), "--quiet"]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["prediction_agreement"] == 1.0
    assert _stderr_lines(capsys) == []


def test_old_checkpoints_without_a_recorded_root_still_load():
    meta = ModelMeta.from_json('{"arch": "lenet5", "arch_args": {"in_channels": 1}, "dataset": "digits"}')
    assert meta.dataset_root is None and meta.dataset_options == {}
    shipped = load_model("zoo:lenet5-digits").neurotomy_meta  # written before the fields existed
    assert shipped.dataset == "digits" and shipped.dataset_root is None


def test_a_trained_model_is_measured_with_its_own_normalisation_and_a_balanced_cap(rgb_folder, tmp_path, capsys):
    import shutil

    model = tmp_path / "colours.safetensors"
    assert main(["train", "lenet5", "--data", f"image-folder:{rgb_folder}", "--input-size", "16", "--epochs", "2",
                 "--batch-size", "4", "--out", str(model), "--quiet"]) == 0
    capsys.readouterr()
    # the same test images beside a train/ of blue images only: other statistics, the same numbers
    blue = tmp_path / "blue"
    shutil.copytree(rgb_folder / "test", blue / "test")
    for name in ("blue", "red"):
        shutil.copytree(rgb_folder / "train" / "blue", blue / "train" / name)
    runs, said = {}, []
    for folder in (rgb_folder, blue):
        assert main(["evaluate", str(model), "--data", f"image-folder:{folder}", "--input-size", "16", "--json",
                     "--quiet"]) == 0
        out = capsys.readouterr()
        runs[folder], said = json.loads(out.out), said + out.err.splitlines()
    assert runs[blue] == runs[rgb_folder], said
    assert len(said) == 1 and said[0].startswith("neurotomy: warning: the data differs")
    assert "normalisation mean" in said[0]
    assert said[0].endswith("the images are normalised with the model's own mean and std, as it was trained")
    # --max-images: a class-balanced draw, not the first images of a class-sorted folder
    assert main(["evaluate", str(model), "--max-images", "4", "--json", "--quiet"]) == 0
    capped = json.loads(capsys.readouterr().out)
    assert capped["n"] == 4 and [sum(row) for row in capped["confusion"]] == [2, 2]


def test_a_flat_folder_trains_on_part_and_tests_on_the_rest(grey_folder, tmp_path, capsys):
    model = tmp_path / "grey.safetensors"
    with pytest.warns(NeurotomyWarning) as said:
        assert main(["train", "lenet5", "--data", f"image-folder:{grey_folder}", "--input-size", "12", "--epochs",
                     "1", "--out", str(model), "--quiet"]) == 0
    assert [str(w.message) for w in said] == [
        f"{grey_folder.resolve()} has no train/ and test/ folders: 3 of its 12 images (20% of each class, fixed seed "
        "0) are held out as its test split, the rest train"]
    assert read_meta(model).metrics["test"]["n"] == 3


def test_a_corrupt_image_is_one_line_and_status_2(rgb_folder, capsys):
    (rgb_folder / "test" / "red" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    assert main(["train", "lenet5", "--data", f"image-folder:{rgb_folder}", "--input-size", "8", "--epochs", "1",
                 "--out", str(rgb_folder / "m.safetensors"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"neurotomy: error: {rgb_folder.resolve() / 'test' / 'red' / '2.png'}: "
                                               "not a readable image (") and "remove or replace the file" in err[0]


def test_one_class_is_no_classifier(tmp_path, capsys):
    from tests.data.conftest import write_image_folder

    folder = write_image_folder(tmp_path / "one", {"only": (90,)}, 4, (8, 8), mode="L", splits=("",))
    assert main(["train", "lenet5", "--data", f"image-folder:{folder}", "--epochs", "1",
                 "--out", str(tmp_path / "m"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the data has one class (only); a classifier needs at least two" in err[0]
    assert not list(tmp_path.glob("m*"))
