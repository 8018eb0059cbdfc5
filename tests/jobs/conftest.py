"""One tiny dissection shared by the report tests (LeNet-5 on digits, the ``tiny`` budget: a few
hundred images, no fine-tune), so the HTML, JSON and browser tests read the same files."""

import json

import pytest


@pytest.fixture(scope="session")
def tiny_report_dir(tmp_path_factory):
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


@pytest.fixture(scope="module")
def lenet_digits():
    """The shipped LeNet-5 with the digits training and test sets."""
    from neurotomy.data import load_dataset
    from neurotomy.loading import load_model

    return load_model("zoo:lenet5-digits"), load_dataset("digits"), load_dataset("digits", split="test")


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
