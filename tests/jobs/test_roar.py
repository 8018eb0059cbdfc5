"""The ROAR job: remove the top pixels of every image, retrain, measure (Hooker et al. 2019)."""

import json

import pytest
import torch

from neurotomy.explain.metrics import MetricError
from neurotomy.jobs.roar import roar
from neurotomy.models import build_model
from neurotomy.train import TrainConfig
from tests.toy_data import PATCH, patch_dataset



def oracle(model, inputs, targets):
    maps = torch.zeros(inputs.shape[0], 8, 8)
    maps[:, PATCH[0], PATCH[1]] = 1.0
    return maps


CONFIG = TrainConfig(epochs=4, lr=0.05, batch_size=32, augment="none")


def test_removing_the_oracle_pixels_hurts_more_than_random():
    train, test = patch_dataset(400, 0), patch_dataset(200, 1)
    original = build_model("lenet5", 1, 2, 8).eval()
    seen = []
    record = roar(original, train, test, {"oracle": oracle}, thresholds=(0.3,), train_config=CONFIG,
                  quiet=True, on_result=seen.append)
    assert record["baseline_accuracy"] > 0.9
    assert record["accuracy"]["oracle"][0] < 0.65  # the label is gone: close to chance
    assert record["accuracy"]["random"][0] > record["accuracy"]["oracle"][0] + 0.2
    assert set(record["accuracy"]) == {"oracle", "random", "sobel"}
    assert record["n_train"] == 400 and record["n_test"] == 200 and record["arch"] == "lenet5"
    assert len(seen) == 4 and seen[-1] == record  # partial results after every retraining
    assert seen[0]["accuracy"]["oracle"] == []
    json.dumps(record)


def test_maps_come_from_the_original_model_and_the_run_is_seeded():
    train, test = patch_dataset(64, 0), patch_dataset(32, 1)
    original = build_model("lenet5", 1, 2, 8)
    original.train()
    weights = {k: v.clone() for k, v in original.state_dict().items()}
    calls = []

    def spy(model, inputs, targets):
        calls.append((model.training, all(torch.equal(weights[k], v) for k, v in model.state_dict().items()),
                      targets.clone()))
        return oracle(model, inputs, targets)

    config = TrainConfig(epochs=1, lr=0.05, batch_size=32, augment="none")
    first = roar(original, train, test, {"spy": spy}, thresholds=(0.5,), train_config=config, controls=False,
                 batch_size=40, quiet=True, seed=3)
    assert original.training  # the caller's model keeps its mode
    assert all(not training and same for training, same, _ in calls)
    assert torch.equal(torch.cat([t for *_, t in calls]), torch.cat([train.targets, test.targets]))
    again = roar(original, train, test, {"spy": spy}, thresholds=(0.5,), train_config=config, controls=False,
                 batch_size=40, quiet=True, seed=3)
    assert first["accuracy"] == again["accuracy"] and first["train_config"]["seed"] == 3


def test_bad_requests():
    data = patch_dataset(8, 0)
    model = build_model("lenet5", 1, 2, 8)
    with pytest.raises(MetricError, match="threshold=1.2"):
        roar(model, data, data, {"oracle": oracle}, thresholds=(1.2,), quiet=True)
    with pytest.raises(MetricError, match="no explainers"):
        roar(model, data, data, {}, controls=False, quiet=True)
    with pytest.raises(MetricError, match="unknown ROAR target"):
        roar(model, data, data, {"oracle": oracle}, targets="truth", thresholds=(0.5,), train_config=CONFIG,
             quiet=True)
