import pytest
import torch
from torch import nn

from neurotomy.errors import NeurotomyError
from neurotomy.scores.class_subsets import (class_feature_scores, frequency_scores, penultimate_features,
                                            smallest_class_subsets, top_k_mask)


def _naive_frequency(features, targets, k, num_classes):
    counts = [[0.0] * features.shape[1] for _ in range(num_classes)]
    sizes = [0] * num_classes
    for f, y in zip(features.tolist(), targets.tolist()):
        total = sum(f)
        normalised = [v / total for v in f]
        order = sorted(range(len(f)), key=lambda j: (-normalised[j], j))
        for j in order[:k]:
            counts[y][j] += 1
        sizes[y] += 1
    return torch.tensor([[c / max(1, s) for c in row] for row, s in zip(counts, sizes)], dtype=torch.float64)


def test_frequency_rule_matches_a_naive_loop():
    g = torch.Generator().manual_seed(1)
    features = torch.rand(300, 12, generator=g) ** 3
    targets = torch.randint(0, 4, (300,), generator=g)
    for k in (1, 3, 5):
        torch.testing.assert_close(frequency_scores(features, targets, k, 4), _naive_frequency(features, targets, k, 4))


def _known_feature_problem(classes=4, width=8, n=800, seed=0):
    """Class c's logit is f[2c] + f[2c+1]; images of class c are bright on those two features."""
    g = torch.Generator().manual_seed(seed)
    head = nn.Linear(width, classes)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        for c in range(classes):
            head.weight[c, 2 * c] = head.weight[c, 2 * c + 1] = 1.0
    labels = torch.randint(0, classes, (n,), generator=g)
    features = torch.rand(n, width, generator=g)
    for c in range(classes):
        features[labels == c, 2 * c:2 * c + 2] += 0.6 * torch.rand(int((labels == c).sum()), 2, generator=g)
    targets = head(features).argmax(1).detach()  # the decisions are exactly the head's
    return head, features, targets


@pytest.mark.parametrize("criterion", ["frequency", "contribution", "weight"])
def test_subsets_find_the_known_features(criterion):
    head, features, targets = _known_feature_problem()
    scores = class_feature_scores(features, targets, head, criterion, k=2)
    result = smallest_class_subsets(features, targets, head, scores, retention=1.0)
    assert result.width == 8 and result.sizes == [2, 2, 2, 2]
    assert [sorted(s) for s in result.subsets] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert result.precision_subset == result.precision_full and result.recall_subset == result.recall_full


def test_subsets_are_the_full_layer_at_full_retention_when_every_feature_counts():
    g = torch.Generator().manual_seed(3)
    head = nn.Linear(8, 4)
    with torch.no_grad():
        head.weight.copy_(torch.randn(4, 8, generator=g))
        head.bias.zero_()
    features = torch.randn(2000, 8, generator=g)
    targets = head(features).argmax(1).detach()  # the full layer is right on every image
    scores = class_feature_scores(features, targets, head, "contribution")
    assert smallest_class_subsets(features, targets, head, scores, retention=1.0).sizes == [8, 8, 8, 8]
    looser = smallest_class_subsets(features, targets, head, scores, retention=0.5)
    assert all(s < 8 for s in looser.sizes)


def test_subset_errors():
    head, features, targets = _known_feature_problem()
    scores = class_feature_scores(features, targets, head, "weight")
    with pytest.raises(NeurotomyError, match="retention"):
        smallest_class_subsets(features, targets, head, scores, retention=0)
    with pytest.raises(NeurotomyError, match="unknown feature criterion"):
        class_feature_scores(features, targets, head, "magic")
    with pytest.raises(NeurotomyError, match="shape"):
        smallest_class_subsets(features, targets, head, torch.zeros(3, 8))


def test_top_k_mask_and_penultimate_features():
    from neurotomy.data import load_dataset
    from neurotomy.loading import load_model

    mask = top_k_mask(torch.tensor([[0.1, 0.9, 0.5], [0.3, 0.2, 0.1]]), [2, 1])
    assert mask.tolist() == [[False, True, True], [True, False, False]]
    model = load_model("zoo:lenet5-digits")
    data = load_dataset("digits", split="test")
    got = penultimate_features(model, data, max_images=50, quiet=True)
    assert got.features.shape == (50, 84) and got.layer == "classifier.5"
    torch.testing.assert_close(model.classifier[5](got.features), got.logits)
