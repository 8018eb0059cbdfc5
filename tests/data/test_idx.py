import gzip

import numpy as np
import pytest

from neurotomy.data import load_dataset
from neurotomy.data.idx import read_idx, write_idx
from neurotomy.errors import DataError


@pytest.mark.parametrize("name", ["a-idx3-ubyte.gz", "a-idx3-ubyte"])
def test_round_trip_compressed_and_plain(tmp_path, name):
    array = np.random.default_rng(0).integers(0, 256, size=(7, 5, 3), dtype=np.uint8)
    write_idx(tmp_path / name, array)
    assert np.array_equal(read_idx(tmp_path / name), array)
    assert not list(tmp_path.glob("*.tmp"))


def test_truncated_file_names_file(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    write_idx(path, np.zeros((4, 2, 2), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(DataError, match="x-idx3-ubyte.*truncated"):
        read_idx(path)


def test_bad_magic(tmp_path):
    path = tmp_path / "junk"
    path.write_bytes(b"hello world")
    with pytest.raises(DataError, match="bad magic"):
        read_idx(path)


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + b"\x00" * 20)[:15])
    with pytest.raises(DataError, match="corrupt or truncated gzip"):
        read_idx(path)


def _write_fmnist(root, n_images, n_labels, split="t10k"):
    write_idx(root / f"{split}-images-idx3-ubyte.gz", np.zeros((n_images, 28, 28), dtype=np.uint8))
    write_idx(root / f"{split}-labels-idx1-ubyte.gz", np.zeros(n_labels, dtype=np.uint8))


def test_mismatched_images_and_labels(tmp_path):
    _write_fmnist(tmp_path, 5, 4)
    with pytest.raises(DataError, match="do not belong together"):
        load_dataset("fashion-mnist", root=tmp_path, split="test")


def test_uncompressed_fmnist_is_accepted(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.full((3, 28, 28), 255, dtype=np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([0, 1, 9], dtype=np.uint8))
    ds = load_dataset("fashion-mnist", root=tmp_path, split="test")
    assert len(ds) == 3 and ds.targets.tolist() == [0, 1, 9]
    assert ds.images.max() == pytest.approx((1 - 0.2860) / 0.3530, rel=1e-4)


def test_missing_root_and_unknown_name(tmp_path):
    with pytest.raises(DataError, match="no such directory"):
        load_dataset("fashion-mnist", root=tmp_path / "nope")
    with pytest.raises(DataError, match="not found.*--root"):
        load_dataset("fashion-mnist", root=tmp_path)
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("cifar-17")


def test_shipped_subset_is_balanced():
    train = load_dataset("fashion-mnist", split="train")
    test = load_dataset("fashion-mnist", split="test")
    assert train.targets.bincount().tolist() == [500] * 10
    assert test.targets.bincount().tolist() == [200] * 10
    assert train.classes[0] == "T-shirt/top" and train.normalization.mean == (0.2860,)


def test_digits_split_is_fixed():
    a, b = load_dataset("digits", split="test"), load_dataset("digits", split="test")
    assert len(a) == 360 and len(load_dataset("digits")) == 1437
    assert (a.images == b.images).all()


def test_env_var_root(tmp_path, monkeypatch):
    _write_fmnist(tmp_path, 2, 2)
    monkeypatch.setenv("NEUROTOMY_DATA", str(tmp_path))
    assert len(load_dataset("fashion-mnist", split="test")) == 2
