"""Corrupt checkpoints of every kind: truncated anywhere, a header that lies (shapes, dtypes,
offsets, sizes, recipe), text that is not UTF-8 or nests too deeply, a 4 GB header length. Each is a
one-line CheckpointError, and nothing is allocated from a number in the file before it is checked
against the file (the architecture is first built on the meta device and compared with the table)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

import neurotomy.loading.checkpoints as checkpoints
from neurotomy.checkpoint import ModelMeta, read_meta, read_tensor_table, save_checkpoint
from neurotomy.cli import main
from neurotomy.errors import CheckpointError
from neurotomy.loading import load_checkpoint
from neurotomy.models import build_model

ARGS = {"in_channels": 1, "num_classes": 10, "input_size": 8}


@pytest.fixture
def good(tmp_path):
    """A small LeNet checkpoint (8×8 inputs); the tests edit copies of it."""
    model = build_model("lenet5", **ARGS)
    meta = ModelMeta("lenet5", dict(ARGS), recipe=[])
    path = save_checkpoint(model, meta, tmp_path / "good.safetensors")
    return path


def parts(path):
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + length]), data[8 + length:]


def write(path, header: dict | bytes, body: bytes, length: int | None = None):
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + body)
    return path


def lie(good, tmp_path, change) -> Path:
    """A copy of ``good`` whose header ``change(header)`` edited (in place)."""
    header, body = parts(good)
    change(header)
    return write(tmp_path / "lie.safetensors", header, body)


def meta_of(header) -> dict:
    return json.loads(header["__metadata__"]["neurotomy"])


def set_meta(header, **fields) -> None:
    meta = meta_of(header)
    meta.update(fields)
    header["__metadata__"]["neurotomy"] = json.dumps(meta)


def one_line_error(path, needle: str) -> str:
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert "\n" not in message and needle in message, message
    return message


# --------------------------------------------------------------------------------------------------
# truncated


def test_truncated_at_every_region(good, tmp_path):
    data = good.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    cuts = {"empty": 0, "inside the length": 5, "length only": 8, "one header byte": 9,
            "inside the header": 8 + length // 2, "header, no data": 8 + length,
            "inside the tensor data": 8 + length + (len(data) - 8 - length) // 2, "last byte": len(data) - 1}
    for region, cut in cuts.items():
        path = tmp_path / f"cut{cut}.safetensors"
        path.write_bytes(data[:cut])
        message = one_line_error(path, "truncated")
        assert str(path) in message, region


def test_a_four_gigabyte_header_length_is_checked_against_the_file(good, tmp_path):
    header, body = parts(good)
    path = write(tmp_path / "huge.safetensors", header, body, length=4 * 2**30)
    one_line_error(path, "claims 4294967296 bytes")
    path = write(tmp_path / "huge.safetensors", b"{" + b" " * 200, b"", length=2**63)
    one_line_error(path, "claims")


# --------------------------------------------------------------------------------------------------
# a header that is not text, not JSON, or nests forever


def test_header_that_is_not_utf8_json_or_an_object(good, tmp_path):
    _, body = parts(good)
    one_line_error(write(tmp_path / "a.safetensors", b'{"\xff\xfe": 1}', body), "not UTF-8")
    one_line_error(write(tmp_path / "b.safetensors", b'{"a": ', body), "not valid JSON")
    nested = b'{"a": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    one_line_error(write(tmp_path / "c.safetensors", nested, body), "nests too deeply")


def test_metadata_missing_or_malformed(good, tmp_path):
    one_line_error(lie(good, tmp_path, lambda h: h.pop("__metadata__")), "no neurotomy metadata")
    one_line_error(lie(good, tmp_path, lambda h: h["__metadata__"].update(neurotomy="[1, 2]")), "not a valid record")
    nested = '{"arch": ' + "[" * 100_000 + "]" * 100_000 + "}"
    one_line_error(lie(good, tmp_path, lambda h: h["__metadata__"].update(neurotomy=nested)), "not a valid record")
    one_line_error(lie(good, tmp_path, lambda h: set_meta(h, arch_args=[1])), "not a JSON object")
    one_line_error(lie(good, tmp_path, lambda h: set_meta(h, recipe="cut")), "not a list of steps")
    one_line_error(lie(good, tmp_path, lambda h: set_meta(h, format_version="1")), "format version")


# --------------------------------------------------------------------------------------------------
# a tensor table that lies


@pytest.mark.parametrize("change, needle", [
    (lambda e: e.update(shape=[10**12, 10**12]), "needs"),
    (lambda e: e.update(shape=[-1]), "impossible shape"),
    (lambda e: e.update(shape="big"), "impossible shape"),
    (lambda e: e.update(dtype="Q7"), "never holds"),
    (lambda e: e.update(dtype="F64"), "needs"),  # twice the bytes its span holds
    (lambda e: e.update(data_offsets=[0, 10**15]), "claims bytes"),
    (lambda e: e.update(data_offsets=[5, 3]), "claims bytes"),
    (lambda e: e.update(data_offsets="x"), "malformed data offsets"),
])
def test_a_tensor_entry_that_lies(good, tmp_path, change, needle):
    def edit(header):
        change(header["features.0.weight"])
    one_line_error(lie(good, tmp_path, edit), needle)


def test_offsets_that_overlap_or_leave_gaps(good, tmp_path):
    def overlap(header):
        b, e = header["features.0.bias"]["data_offsets"]
        header["features.0.bias"]["data_offsets"] = [b - 4, e - 4]
    one_line_error(lie(good, tmp_path, overlap), "overlap or leave gaps")


def test_a_dtype_of_another_kind_does_not_load_silently(good, tmp_path):
    one_line_error(lie(good, tmp_path, lambda h: h["features.0.weight"].update(dtype="I32")), "torch.int32 in the file")


def test_tensors_the_model_lacks_or_misses(good, tmp_path):
    def rename(header):
        header["features.0.extra"] = header.pop("features.0.bias")
    one_line_error(lie(good, tmp_path, rename), "do not fit")


# --------------------------------------------------------------------------------------------------
# architecture arguments and recipes that lie


def test_sizes_beyond_reason_fail_before_any_build(good, tmp_path, monkeypatch):
    one_line_error(lie(good, tmp_path, lambda h: set_meta(h, arch_args={**ARGS, "in_channels": 10**9})),
                   "not a plausible size")
    one_line_error(lie(good, tmp_path, lambda h: set_meta(h, arch_args={**ARGS, "input_size": 10**5})),
                   "larger than any model")
    one_line_error(lie(good, tmp_path, lambda h: set_meta(h, arch_args={**ARGS, "num_classes": True})),
                   "not a plausible size")


def test_a_width_that_lies_is_caught_on_the_meta_device(good, tmp_path, monkeypatch):
    """A lenet5 with 2²⁰ input channels would allocate 600 MB for its first filter: the architecture
    is built on the meta device, compared with the file, and never built for real."""
    devices = []
    real = checkpoints.build_from_meta

    def spy(meta):
        devices.append(torch.get_default_device().type)
        return real(meta)
    monkeypatch.setattr(checkpoints, "build_from_meta", spy)
    path = lie(good, tmp_path, lambda h: set_meta(h, arch_args={**ARGS, "in_channels": 2**20}))
    one_line_error(path, "do not fit")
    assert devices == ["meta"]


@pytest.mark.parametrize("step, needle", [
    ({"op": "prune_out_channels", "layer": "features.9", "idxs": [0]}, "lacks"),
    ({"op": "prune_out_channels", "layer": "features.0", "idxs": [6]}, "removes channels"),
    ({"op": "prune_out_channels", "layer": "features.0", "idxs": [-1]}, "removes channels"),
    ({"op": "prune_out_channels", "layer": "features.0", "idxs": [0, 1, 2, 3, 4, 5]}, "removes channels"),
    ({"op": "prune_out_channels", "layer": "features.0", "idxs": [1, 1]}, "not distinct"),
    ({"op": "prune_out_channels", "layer": "features.0", "idxs": "all"}, "not distinct"),
    ({"op": "grow", "layer": "features.0"}, "unknown surgery step"),
    ("cut everything", "not a list of steps"),
])
def test_a_recipe_that_names_missing_layers_or_impossible_widths(good, tmp_path, step, needle):
    one_line_error(lie(good, tmp_path, lambda h: set_meta(h, recipe=[step])), needle)


def test_the_good_file_still_loads_and_its_table_matches(good):
    table = read_tensor_table(good)
    model = load_checkpoint(good)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {k: e.shape for k, e in table.items()}
    assert read_meta(good).arch == "lenet5"


def test_the_cli_says_it_in_one_line(good, tmp_path, capsys):
    header, body = parts(good)
    path = write(tmp_path / "bad.safetensors", header, body[: len(body) // 2])
    assert main(["evaluate", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("neurotomy: error:") and "truncated" in err[0]
