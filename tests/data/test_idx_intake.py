"""Messy IDX sets and class names fail at the door in one line (or warn in one line): a test split of
another size, labels with gaps, an empty training file, a corrupt header, repeated class names, and
errors that name what the user gave (``idx:PATH``, ``--class-names``) rather than what they did not."""

import struct
import warnings

import numpy as np
import pytest
import torch

from neurotomy.data import load_dataset
from neurotomy.data.idx import read_idx, write_idx
from neurotomy.data.sources import parse_class_names
from neurotomy.data.tensor_dataset import measure_normalization
from neurotomy.errors import DataError, NeurotomyWarning


def _write_split(directory, prefix: str, images: np.ndarray, labels) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    write_idx(directory / f"{prefix}-images-idx3-ubyte", images)
    write_idx(directory / f"{prefix}-labels-idx1-ubyte", np.asarray(labels, dtype=np.uint8))


def _idx_set(directory, train_labels, test_labels, train_size: int = 8, test_size: int = 8):
    """Random grey images of the given sides, one per label, as ``train-`` and ``t10k-`` files."""
    rng = np.random.default_rng(0)
    _write_split(directory, "train", rng.integers(0, 256, (len(train_labels), train_size, train_size), np.uint8),
                 train_labels)
    _write_split(directory, "t10k", rng.integers(0, 256, (len(test_labels), test_size, test_size), np.uint8),
                 test_labels)
    return directory


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_a_test_split_of_another_size_is_refused_unless_input_size_resizes_both(tmp_path):
    d = _idx_set(tmp_path / "sizes", [0, 1, 2] * 4, [0, 1, 2] * 2, train_size=16, test_size=20)
    with pytest.raises(DataError, match=r"the test images are 20×20 but the train images 16×16; "
                                        r"pass --input-size N \(input_size=N\) to resize both") as error:
        load_dataset(f"idx:{d}", split="test")
    _one_line(error)
    train, test = load_dataset(f"idx:{d}", input_size=12), load_dataset(f"idx:{d}", split="test", input_size=12)
    assert tuple(train[0][0].shape) == tuple(test[0][0].shape) == (1, 12, 12)
    assert test.options == {"input_size": 12} and test.normalization == train.normalization


def test_training_labels_with_gaps_warn_and_a_stray_255_label_is_refused(tmp_path):
    gaps = _idx_set(tmp_path / "gaps", [0, 1, 3, 0, 1, 3], [0, 1, 3])
    with pytest.warns(NeurotomyWarning, match=r"label 2 has no training image \(the training labels: 3 distinct, "
                                               r"0…3\); the set has 4 classes \(labels 0…3\), 1 without a training"):
        assert len(load_dataset(f"idx:{gaps}", split="test").classes) == 4
    stray = _idx_set(tmp_path / "stray", [0, 1, 2, 255, 0, 1, 2], [0, 1, 2])
    for split in ("train", "test"):  # refused before any training, whichever split is loaded first
        with pytest.raises(DataError, match=r"labels 3…254 have no training image .* the set has 256 classes "
                                            r"\(labels 0…255\), 252 without a training image: number the classes "
                                            r"0…K-1 without gaps .*labelled 255") as error:
            load_dataset(f"idx:{stray}", split=split)
        _one_line(error)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no gap, no word
        load_dataset(f"idx:{_idx_set(tmp_path / 'fine', [0, 1, 2] * 2, [0, 1, 2])}", split="test")


def test_an_idx_set_without_training_images_is_one_line_naming_the_file(tmp_path):
    d = tmp_path / "empty"
    _write_split(d, "train", np.zeros((0, 16, 16), np.uint8), [])
    _write_split(d, "t10k", np.zeros((4, 16, 16), np.uint8), [0, 1, 0, 1])
    for split in ("train", "test"):
        with pytest.raises(DataError, match="train-images-idx3-ubyte: holds no images") as error:
            load_dataset(f"idx:{d}", split=split)
        _one_line(error)
    with pytest.raises(DataError, match="no images"):
        measure_normalization([])
    with pytest.raises(DataError, match="no images"):
        measure_normalization([torch.zeros(0, 1, 4, 4)])


def test_a_header_whose_size_overflows_64_bits_is_a_corrupt_file(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 4]) + struct.pack(">4I", 65536, 65536, 65536, 65536))
    with pytest.raises(DataError, match=r"header declares shape \(65536, 65536, 65536, 65536\) "
                                        r"\(18446744073709551616 bytes\) but the file holds 0; .*corrupt"):
        read_idx(path)


def test_repeated_class_names_are_refused(tmp_path):
    with pytest.raises(DataError, match=r"^class names repeat 'cat'; give distinct names$"):
        parse_class_names("cat, cat ,dog")
    with pytest.raises(DataError, match=r"^--class-names: class names repeat 'cat'"):
        parse_class_names(["cat", "dog", "cat"], "--class-names")
    d = _idx_set(tmp_path / "names", [0, 1, 2] * 2, [0, 1, 2])
    with pytest.raises(DataError, match="class names repeat 'cat'"):
        load_dataset(f"idx:{d}", class_names="cat,cat,dog")
    (d / "classes.txt").write_text("cat\ndog\ncat\n")
    with pytest.raises(DataError, match=r"classes.txt: class names repeat 'cat'; give distinct names"):
        load_dataset(f"idx:{d}")


def test_idx_errors_name_the_path_given_not_root_and_the_cli_option(tmp_path):
    d = _idx_set(tmp_path / "words", [0, 1, 2] * 2, [0, 1, 2])
    with pytest.raises(DataError, match=r"class_names \(--class-names\) names 2 classes but the labels need 3"):
        load_dataset(f"idx:{d}", class_names="a,b")
    images = d / "train-images-idx3-ubyte"
    images.write_bytes(b"GA" + images.read_bytes()[2:])
    with pytest.raises(DataError, match="bad magic number") as error:
        load_dataset(f"idx:{d}")
    assert f"idx:{d.resolve()}" in _one_line(error) and "--root" not in str(error.value)
    assert "NEUROTOMY_DATA" not in str(error.value)
    # the fashion-mnist preset is read from --root, and still says so
    fmnist = tmp_path / "fmnist"
    _write_split(fmnist, "t10k", np.zeros((2, 28, 28), np.uint8), [0, 1])
    (fmnist / "t10k-images-idx3-ubyte").write_bytes(b"GARBAGE!")
    with pytest.raises(DataError, match=r"bad magic number\); check --root or NEUROTOMY_DATA"):
        load_dataset("fashion-mnist", root=fmnist, split="test")
