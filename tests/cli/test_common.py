"""The shared options and helpers (neurotomy.cli.common)."""

import argparse
import json

import pytest

from neurotomy.cli.common import add_data, data_for, print_json
from neurotomy.errors import DataError


def test_workers_must_be_a_count(capsys):
    p = argparse.ArgumentParser()
    add_data(p)
    assert p.parse_args(["--workers", "3"]).workers == 3
    with pytest.raises(SystemExit) as exit_:
        p.parse_args(["--workers", "-1"])
    assert exit_.value.code == 2 and "expected an integer ≥ 0" in capsys.readouterr().err


def test_data_for_needs_a_dataset_name():
    args = argparse.Namespace(data=None, root=None)
    with pytest.raises(DataError, match="pass --data NAME"):
        data_for(object(), args, "test")
    assert len(data_for(object(), argparse.Namespace(data="digits", root=None), "test")) > 0


def test_print_json_indents(capsys):
    print_json({"a": [1]})
    assert json.loads(capsys.readouterr().out) == {"a": [1]}

