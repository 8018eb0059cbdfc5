"""One tiny dissection shared by the report tests (LeNet-5 on digits, the ``tiny`` budget: a few
hundred images, no fine-tune), so the HTML, JSON and browser tests read the same files."""

import json

import pytest


@pytest.fixture(scope="session")
def tiny_report_dir(tmp_path_factory):
    from neurotomy.data import load_dataset
    from neurotomy.loading import load_model
    from neurotomy.jobs.dissect import dissect

    out = tmp_path_factory.mktemp("dissect")
    dissect(load_model("zoo:lenet5-digits"), load_dataset("digits"), load_dataset("digits", split="test"),
            out_dir=out, budget="tiny", seed=0, quiet=True, model_name="zoo:lenet5-digits")
    return out


@pytest.fixture(scope="session")
def tiny_report(tiny_report_dir):
    return json.loads((tiny_report_dir / "report.json").read_text())


@pytest.fixture(scope="module")
def lenet_digits():
    """The shipped LeNet-5 with the digits training and test sets."""
    from neurotomy.data import load_dataset
    from neurotomy.loading import load_model

    return load_model("zoo:lenet5-digits"), load_dataset("digits"), load_dataset("digits", split="test")
