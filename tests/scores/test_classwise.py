import pytest
import torch

from neurotomy.data import load_dataset
from neurotomy.errors import NeurotomyError
from neurotomy.loading import load_model
from neurotomy.scores import get_criterion
from neurotomy.scores.classwise import ClassActivation, ClassTaylor, get_classwise_criterion
from neurotomy.scores.unit_scores import UnitScores


@pytest.fixture(scope="module")
def lenet_and_data():
    model = load_model("zoo:lenet5-digits")
    data = load_dataset("digits", split="test")
    return model, data.subset(torch.arange(120))


def test_class_activation_matches_mean_activation_on_each_class_confident_images(lenet_and_data):
    model, data = lenet_and_data
    scores = ClassActivation(confidence=0.9)(model, data, quiet=True)
    assert scores.axis == "class" and scores["features.0"].shape == (10, 6)
    with torch.no_grad():
        probs = model(data.images).softmax(1)
    confident = (probs.argmax(1) == data.targets) & (probs.max(1).values >= 0.9)
    reference = get_criterion("mean_activation")
    checked = 0
    for c in range(10):
        rows = torch.nonzero(confident & (data.targets == c))[:, 0]
        if len(rows) == 0:
            assert scores["features.3"][c].abs().sum() == 0
            continue
        naive = reference(model, data.subset(rows), quiet=True)
        for layer in ("features.0", "features.3"):
            torch.testing.assert_close(scores[layer][c], naive[layer], rtol=1e-5, atol=1e-7)
        checked += 1
    assert checked >= 8
    assert scores.info["images_per_class"] == [int((confident & (data.targets == c)).sum()) for c in range(10)]


def test_class_taylor_matches_per_image_autograd(lenet_and_data):
    model, data = lenet_and_data
    scores = ClassTaylor()(model, data, quiet=True)
    f, head = model.features, model.classifier
    sums = {"features.0": torch.zeros(10, 6, dtype=torch.float64), "features.3": torch.zeros(10, 16, dtype=torch.float64)}
    counts = torch.zeros(10, dtype=torch.float64)
    for x, y in zip(data.images, data.targets):
        a0 = f[0](x[None])
        a3 = f[3](f[1:3](a0))
        logit = head(f[4:](a3))[0, y]
        g0, g3 = torch.autograd.grad(logit, [a0, a3])
        sums["features.0"][y] += (a0 * g0).mean((2, 3)).abs()[0].double()
        sums["features.3"][y] += (a3 * g3).mean((2, 3)).abs()[0].double()
        counts[y] += 1
    for layer, s in sums.items():
        torch.testing.assert_close(scores[layer], s / counts.clamp(min=1)[:, None], rtol=1e-4, atol=1e-7)
    assert scores["features.3"].std(0).mean() > 0  # classes differ


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
