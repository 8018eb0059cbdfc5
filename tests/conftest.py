import json
import os
from pathlib import Path

import pytest
import torch

from tests import crosscheck

torch.set_num_threads(2)

USER_NET_SOURCE = Path(__file__).resolve().parent / "user_net.py"
FULL_FMNIST = Path(os.environ.get("NEUROTOMY_FMNIST_FULL", Path(__file__).resolve().parents[2] / "shared/data/fashion-mnist"))


@pytest.fixture
def full_fmnist_root() -> Path:
    if not (FULL_FMNIST / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"full Fashion-MNIST not found at {FULL_FMNIST}")
    return FULL_FMNIST


# Fixtures used in more than one test folder are defined here, once: a fixture imported into a second
# conftest is a second fixture to pytest, and a session-scoped one would then be built twice.

@pytest.fixture(scope="session")
def tiny_report_dir(tmp_path_factory):
    """One tiny dissection (LeNet-5 on digits, the ``tiny`` budget: a few hundred images, no
    fine-tune) shared by the job tests and the report tests, so HTML, JSON and browser read the same files."""
    from neurotomy.data import load_dataset
    from neurotomy.loading import load_model
    from neurotomy.jobs.dissect import dissect
    from neurotomy.jobs.dissect_stages import deployment_available

    out = tmp_path_factory.mktemp("dissect")
    # the tiny budget deploys only when asked: asked here, so the report tests read every section
    dissect(load_model("zoo:lenet5-digits"), load_dataset("digits"), load_dataset("digits", split="test"),
            out_dir=out, budget="tiny", seed=0, quiet=True, model_name="zoo:lenet5-digits",
            deploy=deployment_available())
    return out


@pytest.fixture(scope="session")
def tiny_report(tiny_report_dir):
    return json.loads((tiny_report_dir / "report.json").read_text())


# The shipped LeNet-5 and the digits splits, loaded once per test module (milliseconds): a module's tests
# share them, so a test that changes one in place takes a copy.deepcopy first; no module reaches another's.

@pytest.fixture(scope="module")
def lenet():
    """The shipped LeNet-5 trained on digits (``zoo:lenet5-digits``), in eval mode."""
    from neurotomy.loading import load_model

    return load_model("zoo:lenet5-digits").eval()


@pytest.fixture(scope="module")
def digits_train():
    """The digits training split (1437 images, 1 × 8 × 8)."""
    from neurotomy.data import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="module")
def digits_test():
    """The digits test split (360 images, 1 × 8 × 8)."""
    from neurotomy.data import load_dataset

    return load_dataset("digits", split="test")


@pytest.fixture
def user_net(tmp_path):
    """Path of a fresh copy of the user-model file tests/user_net.py (tests edit and delete it)."""
    path = tmp_path / "user_net.py"
    path.write_text(USER_NET_SOURCE.read_text())
    return path


@pytest.fixture(name="one_thread")
def one_thread_fixture():
    """One torch thread for the test (tiny models run fastest, and steadiest on a busy machine,
    single-threaded — see tests/crosscheck.py); the previous setting is restored."""
    with crosscheck.one_thread():
        yield
