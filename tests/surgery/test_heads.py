import pytest
import torch
from torch import nn

from neurotomy.errors import NeurotomyError
from neurotomy.loading import load_model
from neurotomy.surgery.heads import SubspaceHead, decompose_head, head_accuracy, head_cost
from neurotomy.train import finetune_head


def test_full_mask_is_the_linear_layer_and_cost_counts_kept_weights():
    torch.manual_seed(0)
    linear = nn.Linear(6, 3)
    x = torch.randn(5, 6)
    full = SubspaceHead.from_linear(linear, torch.ones(3, 6, dtype=torch.bool))
    torch.testing.assert_close(full(x), linear(x))
    mask = torch.zeros(3, 6, dtype=torch.bool)
    mask[0, :2] = mask[1, 2:3] = mask[2, 3:] = True
    sparse = SubspaceHead.from_linear(linear, mask)
    expected = torch.stack([x[:, :2] @ linear.weight[0, :2], x[:, 2:3] @ linear.weight[1, 2:3],
                            x[:, 3:] @ linear.weight[2, 3:]], 1) + linear.bias
    torch.testing.assert_close(sparse(x), expected)
    assert sparse.macs == 6 and head_cost(linear)["macs"] == 18
    with pytest.raises(NeurotomyError, match="mask"):
        SubspaceHead.from_linear(linear, torch.ones(2, 6, dtype=torch.bool))


def test_finetune_recovers_accuracy_and_never_revives_dropped_weights():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(1500, 8, generator=g)
    teacher = nn.Linear(8, 4)
    with torch.no_grad():
        teacher.weight.copy_(torch.randn(4, 8, generator=g))
    targets = teacher(features).argmax(1).detach()
    mask = torch.zeros(4, 8, dtype=torch.bool)
    mask[:, :4] = True  # each class may read half of the features
    head = SubspaceHead(torch.zeros(4, 8), torch.zeros(4), mask)
    before = head_accuracy(head, features, targets)
    history = finetune_head(head, features, targets, epochs=5, lr=0.05, quiet=True)
    assert head_accuracy(head, features, targets) > before + 0.2
    assert history[-1]["loss"] < history[0]["loss"]
    assert (head.weight.detach()[~mask] == 0).all()  # no gradient ever reaches a dropped weight


def test_decompose_head_replaces_only_the_classifier():
    model = load_model("zoo:lenet5-digits")
    x = torch.randn(4, 1, 8, 8)
    same = decompose_head(model, "classifier.5", torch.ones(10, 84, dtype=torch.bool))
    with torch.no_grad():
        torch.testing.assert_close(same(x), model(x))
    assert isinstance(same.classifier[5], SubspaceHead) and isinstance(model.classifier[5], nn.Linear)
    with pytest.raises(NeurotomyError, match="not a Linear"):
        decompose_head(model, "features.0", torch.ones(6, 1, dtype=torch.bool))
