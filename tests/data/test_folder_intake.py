"""What ``image-folder:PATH`` takes in from a folder as users really keep it: hidden files and folders,
symlinks, empty classes, odd sizes, corrupt files, 16-bit greys and GIFs — each read right, or one line
(a DataError or a warning) before any training starts."""

import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from neurotomy.data import load_dataset
from neurotomy.data.file_dataset import PilFiles, PilPixels
from neurotomy.errors import DataError, NeurotomyWarning
from tests.data.conftest import write_image_folder

TWO = {"a": (40,), "b": (200,)}


def _grey(path: Path, size: tuple[int, int] = (8, 8), value: int = 100) -> Path:
    """One W×H grey PNG at ``path``."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, color=value).save(path)
    return path


def _no_warnings_but(pattern: str, record: list) -> None:
    """Every neurotomy warning in ``record`` matches ``pattern``, and there is one."""
    said = [str(w.message) for w in record if issubclass(w.category, NeurotomyWarning)]
    assert len(said) == 1 and re.search(pattern, said[0]), said


def test_test_images_of_another_size_than_train_are_a_data_error(tmp_path):  # finding 2
    write_image_folder(tmp_path, TWO, 3, (16, 16), mode="L")
    _grey(tmp_path / "test" / "a" / "odd.png", (20, 20))
    with pytest.raises(DataError, match=r"test images are 20×20 \(1 of 7, e\.g\. .*odd\.png\) but the training "
                                        r"images are 16×16; pass --input-size N") as error:
        load_dataset(f"image-folder:{tmp_path}", split="test")
    assert "\n" not in str(error.value)
    assert tuple(load_dataset(f"image-folder:{tmp_path}", split="test", input_size=12)[0][0].shape) == (1, 12, 12)


def test_hidden_folders_are_not_classes(tmp_path):  # finding 3
    write_image_folder(tmp_path, TWO, 5, (8, 8), mode="L", splits=("",))
    (tmp_path / ".ipynb_checkpoints").mkdir()
    _grey(tmp_path / ".cache" / "x.png")
    _grey(tmp_path / "a" / ".thumbs" / "y.png")
    with pytest.warns(NeurotomyWarning) as record:
        train = load_dataset(f"image-folder:{tmp_path}")
    assert train.classes == ["a", "b"] and train.targets.bincount().tolist() == [4, 4]
    _no_warnings_but(r"skipped hidden folders \(names starting with '\.'\): \.cache \(1 image\), a/\.thumbs "
                     r"\(1 image\); they are not classes", record)
    with pytest.warns(NeurotomyWarning, match="held out"):
        assert load_dataset(f"image-folder:{tmp_path}", split="test").classes == ["a", "b"]


def test_16_bit_grey_pixels_scale_to_their_full_range(tmp_path):  # finding 5
    from PIL import Image

    values = np.array([[0, 1000], [30000, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "i16.png")
    Image.fromarray(values.astype(np.int32)).save(tmp_path / "i32.tif")
    Image.fromarray((values / 65535).astype(np.float32)).save(tmp_path / "f32.tif")
    files = PilFiles([str(tmp_path / name) for name in ("i16.png", "i32.tif", "f32.tif")])
    assert [files.pil(i).mode for i in range(3)] == ["I;16", "I", "F"]
    expected = torch.tensor(values / 65535, dtype=torch.float32)[None]
    for i in range(3):  # float32 in [0, 1], not 8-bit: value / 65535 up to float32 rounding
        assert torch.allclose(PilPixels(files, "L", None)(i), expected, atol=1e-6)
        rgb = PilPixels(files, "RGB", None)(i)  # among RGB images: 8-bit grey in three channels
        assert rgb.shape == (3, 2, 2) and torch.allclose(rgb, expected.expand(3, 2, 2), atol=0.5 / 255 + 1e-6)
    assert PilPixels(files, "L", 1)(0).shape == (1, 1, 1)  # resizes too


def test_a_symlink_loop_reads_each_image_once(tmp_path):  # finding 6
    write_image_folder(tmp_path, TWO, 4, (8, 8), mode="L")
    os.symlink(tmp_path / "train" / "a", tmp_path / "train" / "a" / "loop")
    with pytest.warns(NeurotomyWarning) as record:
        train = load_dataset(f"image-folder:{tmp_path}")
    assert train.targets.bincount().tolist() == [4, 4]
    assert len(set(train.pixels.source.paths)) == 8
    _no_warnings_but(r"train: skipped symlinked folders that lead to a folder already read \(a/loop → a\); each "
                     "image is read once", record)


def test_a_test_folder_without_train_is_a_data_error(tmp_path):  # finding 7
    write_image_folder(tmp_path, TWO, 3, (8, 8), mode="L", splits=("test",))
    with pytest.raises(DataError, match=r"has a test/ folder but no train/ folder; add train/ with the same class "
                                        r"folders \(or put the class folders directly in"):
        load_dataset(f"image-folder:{tmp_path}")


def test_a_class_folder_without_images_is_a_data_error(tmp_path):  # finding 8
    write_image_folder(tmp_path / "split", TWO, 3, (8, 8), mode="L")
    (tmp_path / "split" / "train" / "c").mkdir()
    (tmp_path / "split" / "test" / "c").mkdir()
    with pytest.raises(DataError, match=r"train: class folder c has no images .*; add images or remove the folder"):
        load_dataset(f"image-folder:{tmp_path / 'split'}")
    write_image_folder(tmp_path / "flat", TWO, 3, (8, 8), mode="L", splits=("",))
    (tmp_path / "flat" / "c").mkdir()
    (tmp_path / "flat" / "d").mkdir()
    with pytest.raises(DataError, match=r"flat: class folders c, d have no images .*; add images or remove the "):
        load_dataset(f"image-folder:{tmp_path / 'flat'}")
    # classes without test images: one warning says where they go, whether test/c exists (empty) or not (d)
    _grey(tmp_path / "split" / "train" / "c" / "0.png")
    _grey(tmp_path / "split" / "train" / "d" / "0.png")
    with pytest.warns(NeurotomyWarning) as record:
        load_dataset(f"image-folder:{tmp_path / 'split'}", split="test")
    _no_warnings_but(r"no test images of the training class\(es\) 'c', 'd'; the test figures say nothing about "
                     r"them — add test images of them to .*split/test/NAME/$", record)


def test_every_image_header_is_checked_before_any_work(tmp_path):  # findings 9 and 10
    write_image_folder(tmp_path / "corrupt", TWO, 3, (8, 8), mode="L")
    (tmp_path / "corrupt" / "test" / "a" / "1.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"test/a/1\.png: not a readable image \(.*\); remove or replace the file"):
        load_dataset(f"image-folder:{tmp_path / 'corrupt'}", split="test")
    big = write_image_folder(tmp_path / "big", {"a": (40,)}, 300, (8, 8), mode="L", splits=("",))
    _grey(big / "a" / "100.png", (10, 10))  # sorted 4th, outside any evenly spaced sample of 256
    with pytest.raises(DataError, match=r"big: images differ in size \(8×8: 299 images, 10×10: 1 image, e\.g\. "
                                        r".*a/100\.png\); pass --input-size N") as error:
        load_dataset(f"image-folder:{big}")
    assert "\n" not in str(error.value)
    # a file that changes after the check is still a one-line error when it is read, never a traceback
    files = PilFiles([str(_grey(tmp_path / "late.png", (10, 10)))], size=(8, 8))
    with pytest.raises(DataError, match=r"late\.png: a 10×10 image among 8×8 ones; pass --input-size N"):
        files.pil(0)


def test_hidden_files_are_skipped_with_one_warning(tmp_path):  # finding 15
    write_image_folder(tmp_path, TWO, 3, (8, 8), mode="L")
    for where in ("train/a", "train/b", "test/a"):
        (tmp_path / where / "._0.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (tmp_path / "train" / "a" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    with pytest.warns(NeurotomyWarning) as record:
        train = load_dataset(f"image-folder:{tmp_path}")
    assert len(train) == 6
    _no_warnings_but(r"train: skipped 2 hidden files with image extensions \(names starting with '\.', such as "
                     r"macOS's \._\* metadata files\)$", record)
    with pytest.warns(NeurotomyWarning, match="skipped 1 hidden file with"):
        assert len(load_dataset(f"image-folder:{tmp_path}", split="test")) == 6


def test_gif_images_are_read_and_unreadable_formats_named(tmp_path):  # finding 16
    from PIL import Image

    write_image_folder(tmp_path, TWO, 3, (8, 8), mode="L")
    for i in range(4):
        Image.new("L", (8, 8), color=90).convert("P").save(tmp_path / "train" / "a" / f"g{i}.gif")
    (tmp_path / "train" / "b" / "logo.svg").write_text("<svg/>")
    (tmp_path / "train" / "b" / "notes.txt").write_text("not an image, said nothing of")
    with pytest.warns(NeurotomyWarning) as record:
        train = load_dataset(f"image-folder:{tmp_path}")
    assert train.targets.bincount().tolist() == [7, 3] and train.pixels.source.paths[3].endswith("g0.gif")
    assert train[3][0].shape == (3, 8, 8)  # a palette image, so the folder reads as RGB, as with palette PNGs
    _no_warnings_but(r"train: left out 1 file in a format neurotomy cannot read \(\.svg\); convert it to PNG", record)


def test_flat_classes_without_a_test_image_are_named(tmp_path):  # finding 17
    write_image_folder(tmp_path, {"a": (10,)}, 1, (8, 8), mode="L", splits=("",))
    write_image_folder(tmp_path, {"b": (90,)}, 5, (8, 8), mode="L", splits=("",))
    write_image_folder(tmp_path, {"c": (200,)}, 1, (8, 8), mode="L", splits=("",))
    with pytest.warns(NeurotomyWarning) as record:
        test = load_dataset(f"image-folder:{tmp_path}", split="test")
    assert test.targets.tolist() == [1]
    said = [str(w.message) for w in record]
    assert len(said) == 2 and "held out" in said[0]
    assert "no test images of the training class(es) 'a', 'c'" in said[1]
    assert "add images to them (a class of two or more images has one held out)" in said[1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dataset(f"image-folder:{tmp_path}")
