"""`neurotomy concepts` (neurotomy.cli.concepts)."""

import json

import pytest

from neurotomy.cli import main
from neurotomy.cli.concepts import channel_list
from neurotomy.errors import OptionError
from tests.crosscheck import one_thread


@pytest.fixture(autouse=True)
def single_thread():
    with one_thread():
        yield


def test_concepts_command(tmp_path, capsys):
    out = tmp_path / "concepts"
    assert main(["concepts", "zoo:lenet5-digits", "--layer", "features.4", "--channels", "0,5", "--out", str(out),
                 "--n-reference", "3", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "channel 0: 3 reference images" in printed and "channel 5:" in printed
    record = json.loads((out / "concepts.json").read_text())
    assert list(record["channels"]) == ["0", "5"] and record["layer"] == "features.4" and record["images"] == 360
    assert (out / "concepts.png").stat().st_size > 1000


@pytest.mark.parametrize("argv, message", [
    (["--layer", "features.4", "--channels", "0,99"], "channel 99 does not exist: layer 'features.4' has 16"),
    (["--layer", "features.9", "--channels", "0"], "no layer 'features.9'"),
    (["--channels", "1,1"], "listed twice"),
    (["--channels", "a,,b"], "expected channel indices"),
])
def test_bad_options_are_one_line_errors(tmp_path, capsys, argv, message):
    assert main(["concepts", "zoo:lenet5-digits", "--out", str(tmp_path / "out"), "--quiet", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_channel_list():
    assert channel_list("3, 0") == [3, 0]
    with pytest.raises(OptionError):
        channel_list("-1")
