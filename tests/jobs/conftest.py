"""Models with their data for the job tests: LeNet-5 and a small ViT on digits (the shared LeNet-5,
digits splits and tiny dissection themselves are in tests/conftest.py)."""

import pytest


@pytest.fixture(scope="module")
def lenet_digits(lenet, digits_train, digits_test):
    """The shipped LeNet-5 with the digits training and test sets."""
    return lenet, digits_train, digits_test


@pytest.fixture(scope="session")
def vit_digits():
    """A small ViT (patch 4 on 8 × 8 digits: 4 patch tokens + a class token, width 32, 2 blocks of 2
    heads) trained for 20 epochs (≈ 95 % test accuracy, a few seconds), with the digits splits."""
    from neurotomy.data import load_dataset
    from neurotomy.jobs.new_model import train_new_model
    from neurotomy.train import TrainConfig

    from tests.crosscheck import one_thread

    config = TrainConfig(epochs=20, lr=3e-3, optimizer="adamw", weight_decay=0.05, augment="none", quiet=True)
    with one_thread():  # a tiny model: one thread is faster, and far steadier on the busy shared machine
        model = train_new_model("vit_tiny", "digits", None, config, patch=4, dim=32, depth=2, num_heads=2,
                                mlp_hidden=32)
    return model.eval(), load_dataset("digits"), load_dataset("digits", split="test")
