import pytest

from neurotomy.data import load_dataset
from neurotomy.loading import load_model
from tests.crosscheck import one_thread


@pytest.fixture(autouse=True)
def single_thread():
    """Explanations of a few small images: one torch thread (see tests/crosscheck.py)."""
    with one_thread():
        yield


@pytest.fixture(scope="module")
def resnet20():
    return load_model("zoo:resnet20-fmnist").eval()


@pytest.fixture(scope="module")
def fmnist_batch():
    """Eight real Fashion-MNIST test images (shipped subset), one of each of the first 8 classes."""
    data = load_dataset("fashion-mnist", split="test")
    picks = [int((data.targets == c).nonzero()[0]) for c in range(8)]
    return data.images[picks].float(), data.targets[picks]
