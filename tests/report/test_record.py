import pytest

from neurotomy.report.record import FORMATS, add_number, add_table, format_value, section


@pytest.mark.parametrize("value,fmt,shown", [
    (0.94651, "pct", "94.65 %"), (0.00004, "pct", "0.00 %"), (-0.0042, "pt", "−0.42 pt"), (0.0042, "pt", "+0.42 pt"),
    (-0.00001, "pt", "+0.00 pt"), (2.0061, "ratio", "2.01×"), (0.81234, "float3", "0.812"), (-0.5, "float3", "−0.500"),
    (3.14159, "ms", "3.14 ms"), (89656, "mb", "0.090 MB"), (1234567, "int", "1,234,567"), ("conv1", "text", "conv1"),
    (None, "ratio", "—"),
])
def test_format_value(value, fmt, shown):
    assert format_value(value, fmt) == shown


def test_records_reject_unknown_formats_and_ragged_rows():
    sec = section("s", "S")
    with pytest.raises(ValueError, match="unknown number format"):
        add_number(sec, "k", "label", 1.0, "percent")
    with pytest.raises(ValueError, match="every row needs 2 values"):
        add_table(sec, "t", [("a", "text"), ("b", "int")], [["x"]])
    with pytest.raises(ValueError, match="unknown format"):
        add_table(sec, "t", [("a", "txt")], [["x"]])
    assert set(FORMATS) >= {"pct", "pt", "ratio", "float3", "int", "text"}


def test_numpy_and_torch_scalars_become_plain_json_numbers():
    import numpy as np
    import torch

    sec = section("s", "S")
    add_number(sec, "a", "a", np.float32(0.5), "float3")
    add_table(sec, "t", [("x", "int"), ("y", "float3")], [[torch.tensor(3), float("nan")]])
    assert type(sec["numbers"][0]["value"]) is float
    assert sec["tables"][0]["rows"][0] == [3, None]  # NaN is not JSON: stored as null, shown as —
