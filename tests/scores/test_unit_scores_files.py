"""Scores files (``.npz``): corrupt archives, arrays whose header lies about their size, headers of the
wrong shape, and scores that do not fit the model they are applied to — each a one-line ScoresError,
none allocating from a number the file cannot back."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
import torch

from neurotomy.errors import ScoresError
from neurotomy.models import build_model
from neurotomy.scores import UnitScores, get_criterion
from neurotomy.surgery.filters import prune_filters

SHAPE = (1, 8, 8)


@pytest.fixture
def lenet():
    return build_model("lenet5", 1, 10, 8).eval()


@pytest.fixture
def saved(tmp_path, lenet):
    return get_criterion("l1")(lenet).save(tmp_path / "s.npz")


def one_line(exc_info, needle: str) -> None:
    message = str(exc_info.value)
    assert "\n" not in message and needle in message, message


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def archive(path, members: dict[str, bytes], compress=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compress) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def header_npy(header: dict) -> bytes:
    return npy_bytes(np.array(json.dumps(header)))


def test_round_trip_and_fit(saved, lenet):
    scores = UnitScores.load(saved, model=lenet)
    assert list(scores) == ["features.0", "features.3"] and scores.criterion == "l1"


@pytest.mark.parametrize("content, needle", [
    (b"", "not a neurotomy scores file"),
    (b"PK\x03\x04 truncated", "not a neurotomy scores file"),
    (b"hello", "not a neurotomy scores file"),
])
def test_not_an_archive(tmp_path, content, needle):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(ScoresError) as err:
        UnitScores.load(path)
    one_line(err, needle)


def test_truncated_archive(saved, tmp_path):
    data = saved.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 10):
        path = tmp_path / f"cut{cut}.npz"
        path.write_bytes(data[:cut])
        with pytest.raises(ScoresError) as err:
            UnitScores.load(path)
        one_line(err, str(path))


def test_an_array_header_that_claims_more_than_the_file_holds(tmp_path):
    """A .npy header claiming 10¹² floats: numpy would allocate 8 TB before reading."""
    header = np.lib.format.header_data_from_array_1_0(np.zeros(4))
    header["shape"] = (10**12,)
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    lying = buffer.getvalue() + np.zeros(4).tobytes()
    path = archive(tmp_path / "lie.npz", {"__header__.npy": header_npy({"layers": ["c"], "axis": None,
                                                                        "criterion": "l1", "info": {}}),
                                           "layer0.npy": lying})
    with pytest.raises(ScoresError) as err:
        UnitScores.load(path)
    one_line(err, "claims shape")


def test_a_member_that_claims_more_bytes_than_the_archive(tmp_path, saved):
    data = bytearray(saved.read_bytes())
    # the central directory's uncompressed size of the first member: claim 2 GB
    with zipfile.ZipFile(saved) as z:
        info = z.infolist()[0]
    central = data.rfind(b"PK\x01\x02")
    first = data.find(b"PK\x01\x02")
    assert first >= 0 and central >= first
    data[first + 24:first + 28] = (2**31).to_bytes(4, "little")
    path = tmp_path / "big.npz"
    path.write_bytes(bytes(data))
    with pytest.raises(ScoresError) as err:
        UnitScores.load(path)
    assert info.filename
    one_line(err, str(path))


@pytest.mark.parametrize("header, needle", [
    ([1, 2], "not a JSON object"),
    ({"layers": "c", "axis": None}, "layer list"),
    ({"layers": ["c", "c"], "axis": None}, "layer list"),
    ({"layers": ["c"], "axis": "sideways"}, "malformed"),
])
def test_headers_of_the_wrong_shape(tmp_path, header, needle):
    path = archive(tmp_path / "h.npz", {"__header__.npy": header_npy(header), "layer0.npy": npy_bytes(np.ones(3))})
    with pytest.raises(ScoresError) as err:
        UnitScores.load(path)
    one_line(err, needle)


def test_deeply_nested_or_missing_header(tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    path = archive(tmp_path / "deep.npz", {"__header__.npy": npy_bytes(np.array(deep))})
    with pytest.raises(ScoresError) as err:
        UnitScores.load(path)
    one_line(err, "not a neurotomy scores file")
    path = archive(tmp_path / "none.npz", {"layer0.npy": npy_bytes(np.ones(3))})
    with pytest.raises(ScoresError) as err:
        UnitScores.load(path)
    one_line(err, "not a neurotomy scores file")


def test_arrays_of_text_or_objects(tmp_path):
    header = header_npy({"layers": ["c"], "axis": None, "criterion": "l1", "info": {}})
    path = archive(tmp_path / "text.npz", {"__header__.npy": header, "layer0.npy": npy_bytes(np.array(["a", "b"]))})
    with pytest.raises(ScoresError) as err:
        UnitScores.load(path)
    one_line(err, "scores of 'c' are")
    obj = io.BytesIO()
    np.lib.format.write_array(obj, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    path = archive(tmp_path / "obj.npz", {"__header__.npy": header, "layer0.npy": obj.getvalue()})
    with pytest.raises(ScoresError) as err:
        UnitScores.load(path)
    one_line(err, "Python objects")


def test_a_missing_path_or_a_directory(tmp_path):
    with pytest.raises(ScoresError, match="no such scores file"):
        UnitScores.load(tmp_path / "absent.npz")
    with pytest.raises(ScoresError, match="is a directory"):
        UnitScores.load(tmp_path)


# --------------------------------------------------------------------------------------------------
# scores that do not fit the model they are applied to


def test_scores_of_another_model(tmp_path, lenet):
    resnet = build_model("resnet20", 1, 10, 8).eval()
    path = get_criterion("l1")(resnet).save(tmp_path / "resnet.npz")
    with pytest.raises(ScoresError) as err:
        UnitScores.load(path, model=lenet)
    one_line(err, "which the model lacks")
    with pytest.raises(ScoresError, match="which the model lacks"):
        prune_filters(lenet, UnitScores.load(path), ratio=0.5, input_shape=SHAPE)


@pytest.mark.parametrize("scores, needle", [
    ({"features.0": torch.ones(5)}, "have shape (5,) but the layer has 6 units"),
    ({"features.0": torch.ones(2, 6)}, "have shape (2, 6)"),
    ({"features.1": torch.ones(6)}, "a ReLU"),
    ({"features.0": torch.tensor([1.0, float("nan"), 1, 1, 1, 1])}, "NaN or infinity"),
])
def test_wrong_layers_or_shapes_for_the_model(tmp_path, lenet, scores, needle):
    path = UnitScores(scores, "l1").save(tmp_path / "s.npz")
    with pytest.raises(ScoresError) as err:
        prune_filters(lenet, UnitScores.load(path), ratio=0.5, input_shape=SHAPE)
    one_line(err, needle)
    before = {k: v.clone() for k, v in lenet.state_dict().items()}
    assert all(torch.equal(v, lenet.state_dict()[k]) for k, v in before.items())


def test_save_refuses_a_place_it_cannot_write(tmp_path, lenet):
    (tmp_path / "file").write_text("x")
    with pytest.raises(Exception, match="is a file, not a directory"):
        get_criterion("l1")(lenet).save(tmp_path / "file" / "s.npz")
    assert not list(tmp_path.glob(".*tmp"))


def test_save_appends_npz_to_a_name_without_it_and_returns_the_file_written(tmp_path, lenet):
    written = get_criterion("l1")(lenet).save(tmp_path / "scores.txt")
    assert written == tmp_path / "scores.txt.npz" and written.is_file()
    assert not (tmp_path / "scores.txt").exists()
    assert list(UnitScores.load(written)) == ["features.0", "features.3"]
