"""Class-wise criteria against per-image computations written without hooks, on the shipped LeNet-5.

``check_class_activation`` and ``check_class_taylor`` are plain functions so that the mutation check
(:mod:`tests.mutants`) runs the same assertions against broken versions of each criterion.
"""

from functools import lru_cache

import pytest
import torch

from neurotomy.data import load_dataset
from neurotomy.errors import NeurotomyError
from neurotomy.loading import load_model
from neurotomy.scores.classwise import get_classwise_criterion
from neurotomy.scores.unit_scores import UnitScores
from tests.crosscheck import expected_value


@lru_cache(maxsize=1)
def lenet_case():
    model = load_model("zoo:lenet5-digits").eval()
    data = load_dataset("digits", split="test")
    return model, data.subset(torch.arange(120))


@pytest.fixture(scope="module")
def lenet_and_data():
    return lenet_case()


def _responses(model, x):
    """Outputs of the two convs of LeNet-5 (no BatchNorm follows them) for a batch."""
    f = model.features
    a0 = f[0](x)
    a3 = f[3](f[1:3](a0))
    return {"features.0": a0, "features.3": a3}, model.classifier(f[4:](a3))


@expected_value
def _class_activation_by_hand(model, data):
    with torch.no_grad():
        responses, logits = _responses(model, data.images)
    probs = logits.softmax(1)
    confident = (probs.argmax(1) == data.targets) & (probs.gather(1, data.targets[:, None])[:, 0] >= 0.9)
    expected = {}
    for layer, a in responses.items():
        rows = []
        for c in range(10):
            picked = a[confident & (data.targets == c)]
            rows.append(picked.relu().double().mean((0, 2, 3)) if len(picked) else torch.zeros(a.shape[1], dtype=torch.float64))
        expected[layer] = torch.stack(rows)
    counts = [int((confident & (data.targets == c)).sum()) for c in range(10)]
    return expected, counts


def check_class_activation(model, data):
    """CNNSplitter's relevance: mean post-ReLU activation over the confidently classified images of each class."""
    scores = get_classwise_criterion("class_activation")(model, data, quiet=True)
    expected, counts = _class_activation_by_hand(model, data)
    assert scores.axis == "class" and scores.info["images_per_class"] == counts
    assert sum(counts) < len(data) and sum(c > 0 for c in counts) >= 8  # the filter matters, most classes count
    for layer, table in expected.items():
        torch.testing.assert_close(scores[layer], table, rtol=1e-5, atol=1e-7)


@expected_value
def _class_taylor_by_hand(model, data):
    sums = {"features.0": torch.zeros(10, 6, dtype=torch.float64), "features.3": torch.zeros(10, 16, dtype=torch.float64)}
    counts = torch.zeros(10, dtype=torch.float64)
    for x, y in zip(data.images, data.targets):
        responses, logits = _responses(model, x[None])
        grads = torch.autograd.grad(logits[0, y], list(responses.values()))
        for (layer, a), g in zip(responses.items(), grads):
            sums[layer][y] += (a * g).mean((2, 3)).abs()[0].double()
        counts[y] += 1
    return {layer: s / counts.clamp(min=1)[:, None] for layer, s in sums.items()}


def check_class_taylor(model, data):
    """|mean over positions of A·∂y_c/∂A| averaged over the images of class c, image by image."""
    scores = get_classwise_criterion("class_taylor")(model, data, quiet=True)
    for layer, table in _class_taylor_by_hand(model, data).items():
        torch.testing.assert_close(scores[layer], table, rtol=1e-4, atol=1e-7)
    assert scores["features.3"].std(0).mean() > 0  # classes differ


def test_class_activation_matches_mean_activation_on_each_class_confident_images(lenet_and_data):
    check_class_activation(*lenet_and_data)


def test_class_taylor_matches_per_image_autograd(lenet_and_data):
    check_class_taylor(*lenet_and_data)


def test_for_class_gives_one_dimensional_scores_and_round_trips(tmp_path, lenet_and_data):
    model, data = lenet_and_data
    scores = get_classwise_criterion("class_activation")(model, data, quiet=True)
    row = scores.for_class(4)
    assert row.axis is None and torch.equal(row["features.3"], scores["features.3"][4])
    loaded = UnitScores.load(scores.save(tmp_path / "s.npz"))
    assert loaded.axis == "class" and torch.equal(loaded["features.0"], scores["features.0"])
    with pytest.raises(NeurotomyError, match="out of range"):
        scores.for_class(10)
    with pytest.raises(NeurotomyError, match="no class axis"):
        row.for_class(0)
    with pytest.raises(NeurotomyError, match="unknown class-wise criterion"):
        get_classwise_criterion("nope")
