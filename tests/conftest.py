import os
from pathlib import Path

import pytest
import torch

from tests import crosscheck

torch.set_num_threads(2)

FULL_FMNIST = Path(os.environ.get("NEUROTOMY_FMNIST_FULL", Path(__file__).resolve().parents[2] / "shared/data/fashion-mnist"))


@pytest.fixture
def full_fmnist_root() -> Path:
    if not (FULL_FMNIST / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"full Fashion-MNIST not found at {FULL_FMNIST}")
    return FULL_FMNIST


# the tiny dissection is shared by the job test and the report tests (HTML, JSON, browser)
from tests.jobs.conftest import tiny_report, tiny_report_dir  # noqa: E402,F401


@pytest.fixture(name="one_thread")
def one_thread_fixture():
    """One torch thread for the test (tiny models run fastest, and steadiest on a busy machine,
    single-threaded — see tests/crosscheck.py); the previous setting is restored."""
    with crosscheck.one_thread():
        yield
