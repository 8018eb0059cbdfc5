"""Dataset sources (neurotomy.data.sources and its loaders) and the one dataset protocol."""

import warnings

import numpy as np
import pytest
import torch

from neurotomy.data import (DATASET_SOURCES, ImageDataset, Normalization, batch_at, dataset_specs, in_memory,
                            load_dataset)
from neurotomy.data.batches import iterate_batches
from neurotomy.data.subsets import balanced_subset
from neurotomy.data.tensor_dataset import measure_normalization
from neurotomy.errors import DataError, NeurotomyWarning
from tests.data.conftest import DIGIT_NAMES, digits_28, write_idx_set

FMNIST_MEAN, FMNIST_STD = (0.2860,), (0.3530,)


def test_sources_are_one_registry_that_declares_flip_safety():
    assert dataset_specs() == ["digits", "fashion-mnist", "idx:PATH", "image-folder:PATH", "torchvision:NAME"]
    flips = {name: DATASET_SOURCES.tags(name)["flip_safe"] for name in DATASET_SOURCES.names()}
    assert flips == {"digits": False, "fashion-mnist": True, "idx": False, "image-folder": False,
                     "torchvision": False}
    assert load_dataset("fashion-mnist", split="test").flip_safe and not load_dataset("digits").flip_safe
    with pytest.raises(DataError, match="unknown dataset 'cifar-17'.*idx:PATH"):
        load_dataset("cifar-17")
    with pytest.raises(DataError, match="digits takes no ':x'"):
        load_dataset("digits:x")
    with pytest.raises(DataError, match="digits does not take class_names.*idx:PATH, image-folder:PATH"):
        load_dataset("digits", class_names="a,b")


def test_idx_set_has_its_own_classes_and_normalisation(digits_idx):
    train, test = load_dataset(f"idx:{digits_idx}"), load_dataset(f"idx:{digits_idx}", split="test")
    assert (len(train), len(test)) == (240, 60)
    assert train.classes == test.classes == DIGIT_NAMES
    assert train.name == f"idx:{digits_idx.resolve()}" and train.root == str(digits_idx.resolve())
    assert not train.flip_safe
    # measured on the training images, used for both splits, not Fashion-MNIST's
    pixels = torch.from_numpy(digits_28(240)[0]).double() / 255
    assert train.normalization.mean[0] == pytest.approx(float(pixels.mean()), abs=1e-4)
    assert train.normalization.std[0] == pytest.approx(float(pixels.std(unbiased=False)), abs=1e-4)
    assert test.normalization == train.normalization and train.normalization.mean != FMNIST_MEAN
    named = load_dataset(f"idx:{digits_idx}", class_names="a,b,c,d,e,f,g,h,i,j")
    assert named.classes[:3] == ["a", "b", "c"] and named.options == {"class_names": list("abcdefghij")}


def test_any_source_resizes_to_an_input_size(digits_idx):
    data = load_dataset(f"idx:{digits_idx}", split="test", input_size=32)
    assert tuple(data[0][0].shape) == (1, 32, 32) and data.options == {"input_size": 32}
    assert data.normalization == load_dataset(f"idx:{digits_idx}").normalization
    digits = load_dataset("digits", split="test", input_size=12)
    assert tuple(digits.subset(torch.tensor([0]))[0][0].shape) == (1, 12, 12)
    assert digits.subset(torch.tensor([0])).options == {"input_size": 12}
    with pytest.raises(DataError, match="input size 0"):
        load_dataset("digits", input_size=0)


def test_idx_set_without_classes_txt_and_with_test_prefix(tmp_path):
    images, labels = digits_28(40)
    write_idx_set(tmp_path, images, labels % 3, test=10, test_prefix="test")
    data = load_dataset(f"idx:{tmp_path}", split="test")
    assert data.classes == ["0", "1", "2"] and len(data) == 10
    with pytest.raises(DataError, match="names 2 classes but the labels need 3"):
        load_dataset(f"idx:{tmp_path}", class_names=["x", "y"])
    (tmp_path / "classes.txt").write_text("x\ny\ny2\nz\n")
    with pytest.raises(DataError, match="classes.txt names 4 classes but the labels need 3"):
        load_dataset(f"idx:{tmp_path}")


def test_idx_errors_are_one_line(tmp_path):
    with pytest.raises(DataError, match="no such directory"):
        load_dataset(f"idx:{tmp_path / 'nope'}")
    with pytest.raises(DataError, match="no train-images-idx3-ubyte"):
        load_dataset(f"idx:{tmp_path}")
    with pytest.raises(DataError, match="idx needs a directory"):
        load_dataset("idx")


def test_image_folder_rgb_resized_with_its_own_normalisation(rgb_folder):
    assert tuple(load_dataset(f"image-folder:{rgb_folder}")[0][0].shape) == (3, 18, 20)  # as stored
    data = load_dataset(f"image-folder:{rgb_folder}", input_size=16)
    assert data.classes == ["blue", "red"] and data.targets.dtype == torch.long
    assert tuple(data[0][0].shape) == (3, 16, 16) and data.name == f"image-folder:{rgb_folder.resolve()}"
    assert data.options == {"input_size": 16} and not data.flip_safe
    images, labels = next(iterate_batches(data, len(data)))
    assert labels.tolist() == data.targets.tolist()
    # normalised with the training folder's own statistics: about zero mean, unit std per channel
    assert images.mean((0, 2, 3)).abs().max() < 0.05 and (images.std((0, 2, 3)) - 1).abs().max() < 0.1
    mean = data.normalization.mean
    assert mean[0] == pytest.approx(mean[2], abs=0.02) and mean[0] > mean[1] + 0.2  # half red, half blue


def test_image_folder_grey_is_one_channel(grey_folder):
    with pytest.warns(NeurotomyWarning):
        data = load_dataset(f"image-folder:{grey_folder}", split="test")
    assert tuple(data[0][0].shape) == (1, 12, 12) and data.classes == ["dark", "light", "mid"]


def test_a_flat_image_folder_holds_out_a_seeded_balanced_test_split(grey_folder):
    with pytest.warns(NeurotomyWarning, match=r"grey has no train/ and test/ folders: 3 of its 12 images \(20% of "
                                               r"each class, fixed seed 0\) are held out as its test split"):
        test = load_dataset(f"image-folder:{grey_folder}", split="test")
        again = load_dataset(f"image-folder:{grey_folder}", split="test")
    train = load_dataset(f"image-folder:{grey_folder}")
    assert test.targets.bincount().tolist() == [1, 1, 1] and train.targets.bincount().tolist() == [3, 3, 3]
    assert not set(test.pixels.source.paths) & set(train.pixels.source.paths)  # never the training images
    assert test.pixels.source.paths == again.pixels.source.paths  # the same split every time
    # the normalisation is measured on the training part only (on all 12 images the std would be 0.0007 larger)
    pixels = batch_at(train, range(len(train)))[0] * train.normalization.std[0] + train.normalization.mean[0]
    measured = measure_normalization([pixels])
    assert measured.mean == pytest.approx(train.normalization.mean, abs=2e-4)
    assert measured.std == pytest.approx(train.normalization.std, abs=2e-4)


def test_image_folder_test_split_keeps_the_training_class_numbers(rgb_folder):
    for png in (rgb_folder / "test" / "blue").iterdir():
        png.unlink()
    (rgb_folder / "test" / "blue").rmdir()
    test = load_dataset(f"image-folder:{rgb_folder}", split="test", input_size=8)
    assert test.classes == ["blue", "red"] and set(test.targets.tolist()) == {1}


def test_image_folder_of_mixed_sizes_asks_for_input_size(tmp_path):
    from tests.data.conftest import write_image_folder

    write_image_folder(tmp_path, {"a": (10, 10, 10)}, 2, (10, 10), splits=("",))
    write_image_folder(tmp_path, {"b": (90, 90, 90)}, 2, (14, 12), splits=("",), seed=1)
    with pytest.raises(DataError, match="images differ in size.*--input-size N"):
        load_dataset(f"image-folder:{tmp_path}")
    assert tuple(load_dataset(f"image-folder:{tmp_path}", input_size=9)[1][0].shape) == (3, 9, 9)


def test_torchvision_reads_a_local_copy_and_never_downloads(local_mnist, tmp_path):
    data = load_dataset("torchvision:MNIST", root=local_mnist, split="test")
    assert len(data) == 20 and tuple(data[0][0].shape) == (1, 28, 28) and data.classes[0] == "0 - zero"
    assert data.targets.dtype == torch.long and data.root == str(local_mnist.resolve()) and not data.flip_safe
    assert data.normalization == load_dataset("torchvision:MNIST", root=local_mnist).normalization
    assert data.normalization.mean != FMNIST_MEAN
    with pytest.raises(DataError, match="no usable local copy.*never downloads") as error:
        load_dataset("torchvision:MNIST", root=tmp_path / "empty")
    assert "\n" not in str(error.value)
    with pytest.raises(DataError, match="torchvision has no dataset 'Nope'"):
        load_dataset("torchvision:Nope", root=tmp_path)


def test_every_source_keeps_the_protocol(digits_idx, rgb_folder, local_mnist):
    datasets = [load_dataset("digits", split="test"), load_dataset("fashion-mnist", split="test"),
                load_dataset(f"idx:{digits_idx}", split="test"),
                load_dataset(f"image-folder:{rgb_folder}", split="test", input_size=8),
                load_dataset("torchvision:MNIST", root=local_mnist, split="test")]
    for data in datasets:
        assert isinstance(data, ImageDataset), data.name
        assert data.targets.dtype == torch.long and len(data.targets) == len(data)
        assert all(isinstance(c, str) for c in data.classes) and int(data.targets.max()) < len(data.classes)
        assert len(data.normalization.mean) == data[0][0].shape[0]
        image, label = data[1]
        assert image.dtype == torch.float32 and int(label) == int(data.targets[1])
        picks = torch.tensor([2, 0])
        images, labels = batch_at(data, picks)
        assert torch.equal(images[1], data[0][0]) and labels.tolist() == data.targets[picks].tolist()
        part = data.subset(picks)
        assert isinstance(part, ImageDataset) and part.targets.tolist() == labels.tolist()
        assert len(balanced_subset(data, 4)) <= 4 + len(data.classes)
        assert in_memory(part).targets.tolist() == labels.tolist()


def test_batch_at_refuses_nothing_to_read():
    with pytest.raises(ValueError):
        batch_at(load_dataset("digits", split="test"), np.array([], dtype=np.int64))


def test_test_class_folders_missing_from_train_are_named_in_one_warning(rgb_folder):
    from tests.data.conftest import write_image_folder

    write_image_folder(rgb_folder, {"green": (40, 200, 40)}, 3, (20, 18), splits=("test",))
    write_image_folder(rgb_folder, {"zzz_new": (9, 9, 9)}, 1, (20, 18), splits=("test",))
    (rgb_folder / "test" / "empty").mkdir()
    with pytest.warns(NeurotomyWarning, match=r"test class folders not in .*train are left out: 'green' \(3 images\), "
                                               r"'zzz_new' \(1 image\); give them training folders") as said:
        test = load_dataset(f"image-folder:{rgb_folder}", split="test", input_size=8)
    assert len(said) == 1 and "empty" not in str(said[0].message)
    assert test.classes == ["blue", "red"] and len(test) == 10


def test_a_corrupt_image_is_a_data_error_naming_the_file(rgb_folder):
    broken = rgb_folder / "train" / "red" / "broken.png"
    broken.write_bytes((rgb_folder / "train" / "red" / "0.png").read_bytes()[:60])  # a truncated PNG
    with pytest.raises(DataError, match=r"broken.png: not a readable image \(.*\); remove or replace the file"):
        load_dataset(f"image-folder:{rgb_folder}", input_size=8)


def test_a_file_that_breaks_after_loading_is_named_from_a_worker_process_too(rgb_folder):
    test = load_dataset(f"image-folder:{rgb_folder}", split="test", input_size=8)
    (rgb_folder / "test" / "red" / "3.png").write_bytes(b"not a png")
    for workers in (0, 1):
        with pytest.raises(DataError) as error:
            list(iterate_batches(test, 4, workers=workers))
        assert str(error.value).startswith(f"{rgb_folder / 'test' / 'red' / '3.png'}: not a readable image (")
        assert "\n" not in str(error.value) and str(error.value).endswith("remove or replace the file")


def test_a_torchvision_dataset_that_reads_no_files_is_a_one_line_error(tmp_path):
    with pytest.raises(DataError, match=r"torchvision:FakeData reads no files .*such as torchvision:CIFAR10"):
        load_dataset("torchvision:FakeData", root=tmp_path)


def test_idx_test_labels_missing_from_training_are_named_in_one_warning(tmp_path):
    images, labels = digits_28(40)
    labels = labels % 3
    labels[-2:] = 7  # two test images of a class no training image has
    write_idx_set(tmp_path, images, labels, test=10)
    with pytest.warns(NeurotomyWarning, match=r"test labels 7 never occur in the training labels \(3 distinct, 0…2\); "
                                               r"the set has 8 classes \(labels 0…7\), 5 without a training image"):
        test = load_dataset(f"idx:{tmp_path}", split="test")
    assert len(test.classes) == 8
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the training split and a set whose test labels all train say nothing
        load_dataset(f"idx:{tmp_path}")
        write_idx_set(tmp_path / "fine", images, labels % 3, test=10)
        load_dataset(f"idx:{tmp_path / 'fine'}", split="test")


def test_in_memory_data_takes_another_normalisation(digits_idx):
    data = load_dataset(f"idx:{digits_idx}", split="test")
    other = Normalization((0.5,), (0.25,))
    moved = data.with_normalization(other)
    assert moved.normalization == other and moved.classes == data.classes and len(moved) == len(data)
    raw = data.images * data.normalization.std[0] + data.normalization.mean[0]
    assert torch.allclose(moved.images, (raw - 0.5) / 0.25, atol=1e-5)
    assert data.with_normalization(data.normalization) is data


def test_training_classes_without_test_images_are_named_in_one_warning(rgb_folder):
    import shutil

    shutil.rmtree(rgb_folder / "test" / "red")
    with pytest.warns(NeurotomyWarning, match=r"no test images of the training class\(es\) 'red'; the test figures"):
        test = load_dataset(f"image-folder:{rgb_folder}", split="test", input_size=8)
    assert test.classes == ["blue", "red"] and set(test.targets.tolist()) == {0}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dataset(f"image-folder:{rgb_folder}", split="train", input_size=8)
