import pytest
import torch
from torch import nn

from neurotomy.explain.metrics import MetricError, deletion_curve, gaussian_blur, insertion_curve, random_map


def test_oracle_map_deletes_faster_and_inserts_faster_than_random(linear_problem):
    model, x, w = linear_problem
    target = torch.ones(len(x), dtype=torch.long)
    # Oracle: each pixel's exact contribution to the class evidence, relative to what the metric
    # moves it to (0 for deletion, the blurred image for insertion).
    deletion_oracle = (w * x)[:, 0]
    insertion_oracle = (w * (x - gaussian_blur(x)))[:, 0]
    noise = random_map(x, seed=1)
    oracle_del = deletion_curve(model, x, deletion_oracle, target, steps=16)
    random_del = deletion_curve(model, x, noise, target, steps=16)
    oracle_ins = insertion_curve(model, x, insertion_oracle, target, steps=16)
    random_ins = insertion_curve(model, x, noise, target, steps=16)
    assert oracle_del.mean_auc < random_del.mean_auc - 0.1
    assert oracle_ins.mean_auc > random_ins.mean_auc + 0.1
    assert (oracle_del.auc < random_del.auc).float().mean() >= 0.9
    # The curves start at the untouched image and end at the fully changed one for any map.
    p = torch.softmax(model(x), 1)[:, 1]
    assert torch.allclose(oracle_del.probabilities[:, 0], p) and torch.allclose(random_del.probabilities[:, 0], p)
    assert torch.allclose(oracle_del.probabilities[:, -1], random_del.probabilities[:, -1])
    assert torch.allclose(oracle_ins.probabilities[:, -1], p, atol=1e-6)


def test_curve_matches_one_image_at_a_time(linear_problem):
    """Batching changes nothing: each image's curve equals the curve computed alone, and the AUC
    is the trapezoid rule over the fractions."""
    model, x, w = linear_problem
    maps = (w * x)[:, 0]
    batch = deletion_curve(model, x[:4], maps[:4], steps=8)
    for i in range(4):
        alone = deletion_curve(model, x[i:i + 1], maps[i:i + 1], steps=8)
        assert torch.allclose(alone.probabilities[0], batch.probabilities[i], atol=1e-6)
    p, f = batch.probabilities[0].double(), batch.fractions.double()
    by_hand = sum((f[k + 1] - f[k]) * (p[k + 1] + p[k]) / 2 for k in range(8))
    assert abs(float(batch.auc[0]) - float(by_hand)) < 1e-6
    assert batch.to_dict()["fractions"] == pytest.approx([k / 8 for k in range(9)])


@pytest.mark.parametrize("channels", [1, 3])
def test_deletion_step_removes_the_right_pixels(channels):
    """A model that reads one value of the last pixel (in the last channel): the step at which it
    vanishes is set by that pixel's rank, and deleting a pixel deletes all of its channels."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(4 * channels, 2))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[1, -1] = 5.0
        model[1].bias.zero_()
    x = torch.ones(1, channels, 2, 2)
    ranked_last = torch.tensor([[[4.0, 3.0], [2.0, 1.0]]])  # the informative pixel ranks last
    curve = deletion_curve(model, x, ranked_last, torch.tensor([1]), steps=4)
    high = torch.softmax(torch.tensor([0.0, 5.0]), 0)[1]
    assert torch.allclose(curve.probabilities[0], torch.tensor([high, high, high, high, 0.5]))


def test_model_mode_restored_and_inputs_untouched(linear_problem):
    model, x, w = linear_problem
    model.train()
    before = x.clone()
    deletion_curve(model, x, (w * x)[:, 0], steps=4)
    assert model.training and torch.equal(x, before)


def test_shape_errors(linear_problem):
    model, x, w = linear_problem
    with pytest.raises(MetricError, match="maps have shape"):
        deletion_curve(model, x, torch.zeros(len(x), 7, 8))
    with pytest.raises(MetricError, match="3 targets for a batch of 16"):
        insertion_curve(model, x, torch.zeros(len(x), 8, 8), targets=[0, 1, 1])
    with pytest.raises(MetricError, match="N×C×H×W"):
        deletion_curve(model, x[0], torch.zeros(8, 8))
    with pytest.raises(MetricError, match="target class 5 does not exist"):
        deletion_curve(model, x, torch.zeros(len(x), 8, 8), targets=[5] * len(x))
    with pytest.raises(MetricError, match="steps"):
        deletion_curve(model, x, torch.zeros(len(x), 8, 8), steps=0)
