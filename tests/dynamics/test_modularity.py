import networkx as nx
import numpy as np
import pytest
import torch

from neurotomy.dynamics.features import default_layers, stream_features
from neurotomy.dynamics.modularity import ModularityCurve, knn_graph, modularity, modularity_curve
from neurotomy.models import build_model


def networkx_q(adjacency: torch.Tensor, labels: torch.Tensor) -> float:
    graph = nx.from_numpy_array(adjacency.double().numpy())
    communities = [set(np.flatnonzero(labels.numpy() == c)) for c in labels.unique().tolist()]
    return nx.algorithms.community.modularity(graph, communities, weight="weight")


@pytest.mark.parametrize("seed", range(4))
def test_matches_networkx_on_random_graphs(seed):
    g = torch.Generator().manual_seed(seed)
    n = 30
    a = torch.rand(n, n, generator=g) * (torch.rand(n, n, generator=g) < 0.2)
    a = torch.maximum(a, a.T).fill_diagonal_(0)
    labels = torch.randint(0, 3, (n,), generator=g)
    assert modularity(a, labels) == pytest.approx(networkx_q(a, labels), abs=1e-9)


def test_knn_graph_structure():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(40, 12, generator=g)
    a = knn_graph(feats, k=3)
    assert torch.equal(a, a.T) and torch.all(a.diagonal() == 0)
    assert torch.all((a != 0).sum(1) >= 3)
    sim = torch.nn.functional.normalize(feats, dim=1) @ torch.nn.functional.normalize(feats, dim=1).T
    row = sim[5].clone()
    row[5] = -2
    assert set(torch.nonzero(a[5]).flatten().tolist()) >= set(row.topk(3).indices.tolist())


def test_matches_networkx_on_a_real_layer():
    from neurotomy.data import load_dataset
    model = build_model("resnet20", 1, 10, 8).eval()
    data = load_dataset("digits", split="test")
    feats, labels = next(stream_features(model, data, ["layer2.1"], batch_size=120))
    a = knn_graph(feats["layer2.1"], k=3)
    assert modularity(a, labels) == pytest.approx(networkx_q(a, labels), abs=1e-6)


def test_curve_on_trained_lenet_rises():
    from neurotomy.data import load_dataset
    from neurotomy.loading import load_model
    model = load_model("zoo:lenet5-digits")
    data = load_dataset("digits", split="test")
    curve = modularity_curve(model, data, per_class=30, graph_size=None, quiet=True)
    assert curve.layers == default_layers(model) and curve.n_samples == 300
    assert curve.q[-1] > curve.q[0]  # a trained net separates classes further with depth
    untrained = modularity_curve(build_model("lenet5", 1, 10, 8).eval(), data, per_class=30,
                                 graph_size=None, quiet=True)
    assert curve.q[-1] > untrained.q[-1] + 0.1  # …and much better than random weights do
    again = modularity_curve(model, data, per_class=30, graph_size=None, quiet=True)
    assert again.q == curve.q


def test_redundancy_rule():
    # mean rise (0.69 - 0.2) / 4 = 0.1225; a quarter of it is 0.0306
    curve = ModularityCurve(["stem", "b1", "b2", "b3", "b4"], [0.2, 0.5, 0.7, 0.705, 0.69], 3, 100, 50, 0.0)
    assert curve.redundant(["b1", "b2", "b3", "b4"], threshold=0.25) == ["b4", "b3"]
    assert curve.redundant(["b1", "b2", "b4"], threshold=0.25) == ["b4"]
    assert curve.redundant(["b1", "b2", "b3", "b4"], threshold=0.01) == ["b4"]
    assert curve.redundant(["b1", "b2", "b3", "b4"], count=1) == ["b4"]


class ConvReLU(torch.nn.Module):
    """conv → BN → F.relu, as GoogLeNet's BasicConv2d: no ReLU module to hook."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv, self.bn = torch.nn.Conv2d(cin, cout, 3, padding=1), torch.nn.BatchNorm2d(cout)

    def forward(self, x):
        return torch.nn.functional.relu(self.bn(self.conv(x)), inplace=True)


class CalledReLUNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(ConvReLU(1, 4), torch.nn.MaxPool2d(2), ConvReLU(4, 4))
        self.fc = torch.nn.Linear(4, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.features(x)).mean((2, 3)))  # a call at the root names no module


def test_a_plain_net_that_calls_relu_is_read_at_the_modules_that_end_in_it():
    from neurotomy.checkpoint import ModelMeta

    model = CalledReLUNet().train()
    assert default_layers(model) == ["fc:input"]  # no recorded input shape: nothing to run the model on
    model.neurotomy_meta = ModelMeta("user", {"in_channels": 1, "input_size": 8, "num_classes": 10})
    assert default_layers(model) == ["features.0", "features.2", "fc:input"] and model.training
    x = torch.randn(3, 1, 8, 8)
    feats, _ = next(stream_features(model, list(zip(x, torch.arange(3))), ["features.0"], batch_size=3))
    assert feats["features.0"].min() >= 0  # post-activation features


class Tutorial(torch.nn.Module):
    """Every activation called in the model's own forward, one of them in place: no module to hook."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4)
        self.conv2, self.drop = torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.Dropout(0.1)
        self.fc = torch.nn.Linear(4, 10)

    def forward(self, x):
        x = torch.nn.functional.relu(self.bn1(self.conv1(x)), inplace=True)
        x = self.drop(torch.nn.functional.gelu(self.conv2(x)))  # in eval the dropout returns the very tensor
        return self.fc(torch.relu(x).mean((2, 3)))  # a second activation of an activation adds no layer


def test_a_net_that_activates_in_its_own_forward_is_read_after_each_activation():
    from neurotomy.checkpoint import ModelMeta

    torch.manual_seed(0)
    model = Tutorial().train()
    model.neurotomy_meta = ModelMeta("user", {"in_channels": 1, "input_size": 8, "num_classes": 10})
    layers = default_layers(model)
    assert layers == ["bn1:activated", "conv2:activated", "fc:input"] and model.training
    x = torch.randn(6, 1, 8, 8)
    feats, _ = next(stream_features(model, list(zip(x, torch.arange(6) % 2)), layers, batch_size=6))
    with torch.no_grad():
        first = torch.relu(model.bn1(model.conv1(x)))
        torch.testing.assert_close(feats["bn1:activated"], first.flatten(1))
        torch.testing.assert_close(feats["conv2:activated"], torch.nn.functional.gelu(model.conv2(first)).flatten(1))
    images = [(torch.randn(1, 8, 8) + label, label) for label in (0, 1) for _ in range(12)]
    curve = modularity_curve(model, images, k=3, per_class=12, quiet=True)
    assert curve.layers == layers and len(curve.q) == 3
