"""Feature entropy (Zhao & Zhang, ICLR 2022): the first-loop birth against hand-computed persistence,
and the criterion against an independent union-find computation on a model whose answer is known."""

import math
from functools import lru_cache

import pytest
import torch
from torch import nn

from neurotomy.data.tensor_dataset import Normalization, TensorImageDataset
from neurotomy.scores import get_criterion
from neurotomy.scores.entropy import birth_entropy, first_loop_birth

# 3×3 maps; positions a b c / d e f / g h i. 12 grid edges, density 0.8 → the filtration has int(9.6) = 9 steps.
SQUARE = [[9.0, 8.0, 1.0],
          [7.0, 6.0, 1.0],
          [1.0, 1.0, 1.0]]
RING = [[2.0, 2.0, 2.0],
        [2.0, 0.0, 2.0],
        [2.0, 2.0, 2.0]]
PATH = [[5.0, 4.0, 3.0],
        [0.0, 0.0, 2.0],
        [0.0, 0.0, 1.0]]


def check_first_loop_birth():
    # SQUARE: edge weights min(F_p, F_q) in descending order: a–b 8, a–d 7, d–e 6, b–e 6, then 1s.
    # After a–b, a–d, d–e, the 4th edge b–e joins two positions already connected: the first loop.
    assert first_loop_birth(torch.tensor(SQUARE)) == pytest.approx(4 / 9)
    # RING: the 8 edges of the border (weight 2) arrive first; the centre is dead (its edges weigh 0
    # and never enter). The border is a tree until its 8th edge closes it.
    assert first_loop_birth(torch.tensor(RING)) == pytest.approx(8 / 9)
    # with density 0.5 the filtration stops after int(6) steps, before the ring closes: no loop
    assert first_loop_birth(torch.tensor(RING), density=0.5) == 0.0
    # PATH: the live edges a–b, b–c, c–f, f–i form a path, which never closes a loop
    assert first_loop_birth(torch.tensor(PATH)) == 0.0
    assert first_loop_birth(torch.zeros(6, 6)) == 0.0


def test_first_loop_birth_by_hand():
    check_first_loop_birth()


def test_ring_closes_a_loop_when_its_last_edge_arrives():
    m = torch.zeros(5, 5)
    m[1:4, 1:4] = 1.0
    m[2, 2] = 0.5
    # 8 ring edges of weight 1 close the first loop; 40 grid edges, density 0.8 → 32 steps
    assert first_loop_birth(m, density=0.8) == 8 / 32


def test_entropy_counts_spread():
    assert birth_entropy([0.25] * 10) == 0.0
    assert birth_entropy([0.05, 0.15, 0.25, 0.35]) == pytest.approx(math.log(4))
    assert birth_entropy([0.05, 0.05, 0.05, 0.35]) == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert birth_entropy([0.0, 0.0]) == 0.0  # no loop in any image: nothing to histogram


# ------------------------------------------------------------------ an independent implementation

def union_find_birth(feature_map: list[list[float]], density: float = 0.8) -> float:
    """First-loop birth by plain union-find over the 4-neighbour grid, edges in descending weight
    (ties in grid order: every horizontal edge row by row, then every vertical one)."""
    h, w = len(feature_map), len(feature_map[0])
    edges = [((r, c), (r, c + 1)) for r in range(h) for c in range(w - 1)]
    edges += [((r, c), (r + 1, c)) for r in range(h - 1) for c in range(w)]
    weight = [min(feature_map[p[0]][p[1]], feature_map[q[0]][q[1]]) for p, q in edges]
    order = sorted(range(len(edges)), key=lambda e: -weight[e])  # Python's sort is stable
    limit = max(1, int(density * len(edges)))
    parent: dict = {}

    def root(p):
        while parent.get(p, p) != p:
            p = parent[p]
        return p

    for step, e in enumerate([e for e in order[:limit] if weight[e] > 0], start=1):
        a, b = root(edges[e][0]), root(edges[e][1])
        if a == b:
            return step / limit
        parent[a] = b
    return 0.0


def shannon_of_births(births: list[float], bins: int = 10) -> float:
    """Entropy (nats) of the non-zero births over ``bins`` equal bins of [0, 1]."""
    counts: dict[int, int] = {}
    for b in births:
        if b > 0:
            k = min(bins - 1, math.floor(b * bins))
            counts[k] = counts.get(k, 0) + 1
    total = sum(counts.values())
    return -sum(n / total * math.log(n / total) for n in counts.values()) if total else 0.0


class TwoChannels(nn.Module):
    """Channel 0 is a constant map (the same structure for every image: entropy 0); channel 1 is the
    image itself, noise whose first loop is born at a different step in each image (entropy > 0)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([0.0, 1.0]).view(2, 1, 1, 1))
            self.conv.bias.copy_(torch.tensor([1.0, 0.0]))

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


@lru_cache(maxsize=1)
def entropy_case() -> tuple[nn.Module, TensorImageDataset]:
    g = torch.Generator().manual_seed(0)
    images = torch.randn(16, 1, 6, 6, generator=g)
    data = TensorImageDataset(images, torch.arange(16) % 2, ["a", "b"], Normalization((0.0,), (1.0,)))
    return TwoChannels().eval(), data


def check_feature_entropy(model, data):
    scores = get_criterion("feature_entropy")(model, data, quiet=True)
    maps = torch.relu(model.conv(data.images)).detach()
    expected = [-shannon_of_births([union_find_birth(maps[n, c].tolist()) for n in range(len(data))])
                for c in range(2)]
    torch.testing.assert_close(scores["conv"], torch.tensor(expected, dtype=torch.float64), atol=1e-12, rtol=0)
    # the stable channel (entropy 0) ranks above the unstable one, which is pruned first
    assert scores["conv"][0] == 0.0 and scores["conv"][1] < -0.5


def test_feature_entropy_criterion_against_union_find():
    check_feature_entropy(*entropy_case())


def test_feature_entropy_on_a_trained_model():
    from neurotomy.data import load_dataset
    from neurotomy.loading import load_model
    scores = get_criterion("feature_entropy")(load_model("zoo:lenet5-digits"), load_dataset("digits", split="test"),
                                              max_images=20, quiet=True)
    assert set(scores) == {"features.0", "features.3"} and scores["features.0"].shape == (6,)
    assert torch.all(scores["features.0"] <= 0)
    # entropies of at most log(10) bins, and units that differ: not a constant (on 8×8 maps; the
    # 4×4 maps of features.3 rarely close a loop within the filtration, so most of their entropies are 0)
    assert torch.all(scores["features.0"] >= -math.log(10)) and scores["features.0"].std() > 0.05
