"""JSON files neurotomy writes are standard JSON: a strict reader (a browser's JSON.parse) reads them."""

import json

import pytest

from neurotomy.files import write_json


def _strict(text: str):
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")
    return json.loads(text, parse_constant=refuse)


def test_undefined_numbers_are_written_as_null(tmp_path):
    path = write_json(tmp_path / "r.json", {"spearman": [0.25, float("nan")], "bounds": (float("-inf"), 1.0)})
    assert _strict(path.read_text()) == {"spearman": [0.25, None], "bounds": [None, 1.0]}


def test_an_object_json_cannot_write_leaves_no_file(tmp_path):
    with pytest.raises(TypeError):
        write_json(tmp_path / "r.json", {"model": object()})
    assert list(tmp_path.iterdir()) == []
