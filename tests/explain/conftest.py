import pytest

from neurotomy.data import load_dataset
from neurotomy.loading import load_model


@pytest.fixture(scope="module")
def resnet20():
    return load_model("zoo:resnet20-fmnist").eval()


@pytest.fixture(scope="module")
def fmnist_batch():
    """Eight real Fashion-MNIST test images (shipped subset), one of each of the first 8 classes."""
    data = load_dataset("fashion-mnist", split="test")
    picks = [int((data.targets == c).nonzero()[0]) for c in range(8)]
    return data.images[picks].float(), data.targets[picks]
