import torch

from neurotomy.scores.entropy import FeatureEntropy, birth_entropy, first_loop_birth


def test_ring_closes_a_loop_when_its_last_edge_arrives():
    m = torch.zeros(5, 5)
    m[1:4, 1:4] = 1.0
    m[2, 2] = 0.5
    # 8 ring edges of weight 1 close the first loop; 40 grid edges, density 0.8 → 32 steps
    assert first_loop_birth(m, density=0.8) == 8 / 32


def test_dead_map_has_no_loop_and_entropy_counts_spread():
    assert first_loop_birth(torch.zeros(6, 6)) == 0.0
    assert birth_entropy([0.25] * 10) == 0.0
    assert birth_entropy([0.05, 0.15, 0.25, 0.35]) > birth_entropy([0.05, 0.05, 0.05, 0.35])


def test_feature_entropy_is_a_criterion():
    from neurotomy.data import load_dataset
    from neurotomy.loading import load_model
    scores = FeatureEntropy()(load_model("zoo:lenet5-digits"), load_dataset("digits", split="test"),
                              max_images=20, quiet=True)
    assert set(scores) == {"features.0", "features.3"} and scores["features.0"].shape == (6,)
    assert torch.all(scores["features.0"] <= 0)
