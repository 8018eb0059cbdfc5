import pytest

from tests.crosscheck import one_thread


@pytest.fixture(autouse=True)
def single_thread():
    """The criteria's cross-checks run on tiny models: one torch thread (see tests/crosscheck.py)."""
    with one_thread():
        yield
