"""PRCA and DRSA (neurotomy.scores.subspace): closed form against brute force, DRSA's guarantees on
a planted problem, the layer statistics against a hook-free computation, and heatmap completeness."""

import pytest
import torch
from captum.attr import InputXGradient

from neurotomy.errors import NeurotomyError
from neurotomy.loading import load_model
from neurotomy.models import build_model
from neurotomy.scores import UnitScores
from neurotomy.scores.subspace import (bases_of, check_orthonormal, drsa, drsa_objective, find_subspaces,
                                       observe_layer, orthonormal_complement, prca_basis, random_basis,
                                       relevance_through, score_subspaces, subspace_heatmaps)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: one torch thread per test


def unit_vectors(n: int, d: int, seed: int) -> torch.Tensor:
    v = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return v / v.norm(dim=1, keepdim=True)


@pytest.mark.parametrize("d", [4, 5, 6])
def test_prca_top_direction_beats_every_random_direction(d):
    g = torch.Generator().manual_seed(d)
    a = torch.randn(300, d, generator=g, dtype=torch.float64)
    c = a @ torch.randn(d, d, generator=g, dtype=torch.float64) + torch.randn(300, d, generator=g, dtype=torch.float64)
    cross = a.T @ c / len(a)

    def objective(v: torch.Tensor) -> torch.Tensor:  # mean relevance (vᵀa)(vᵀc) of each direction v
        return ((a @ v.T) * (c @ v.T)).mean(0)

    basis, spectrum = prca_basis(cross, 2)
    best = objective(basis[:, 0][None])[0]
    searched = objective(unit_vectors(20000, d, seed=1))
    assert best >= searched.max() - 1e-12  # the closed form is the maximum …
    assert best - searched.max() < 0.05 * best.abs()  # … and random search comes close to it
    assert torch.allclose(best, spectrum[0]) and spectrum[0] >= spectrum[1]
    # the top-2 frame beats random 2-frames: tr(UᵀMU) over orthonormal U
    frames = [random_basis(d, 2, seed=s) for s in range(2000)]
    top2 = float(objective(basis.T).sum())
    assert all(float(objective(f.T).sum()) <= top2 + 1e-12 for f in frames)


def planted(noise: float, seed: int = 1):
    """Samples relevant in exactly one of two planted 2-D subspaces, plus irrelevant noise dimensions."""
    g = torch.Generator().manual_seed(seed)
    q = random_basis(6, 6, seed=3)
    group = torch.randint(0, 2, (600,), generator=g)
    z = torch.randn(600, 2, generator=g, dtype=torch.float64)
    a = torch.zeros(600, 6, dtype=torch.float64)
    c = torch.zeros(600, 6, dtype=torch.float64)
    for k in range(2):
        rows, span = group == k, q[:, 2 * k:2 * k + 2]
        a[rows] += z[rows] @ span.T
        c[rows] += (z[rows] + 0.1 * torch.randn(int(rows.sum()), 2, generator=g, dtype=torch.float64)) @ span.T
    a += noise * torch.randn(600, 2, generator=g, dtype=torch.float64) @ q[:, 4:].T
    return a, c, [q[:, :2], q[:, 2:4]]


def projector_distance(u: torch.Tensor, v: torch.Tensor) -> float:
    return float((u @ u.T - v @ v.T).norm())


def test_drsa_recovers_planted_subspaces_and_never_decreases():
    a, c, truth = planted(noise=0.3)
    fit = drsa(a, c, subspaces=2, size=2, seed=0)
    assert torch.allclose(fit.basis.T @ fit.basis, torch.eye(4, dtype=torch.float64), atol=1e-10)
    assert all(later >= earlier for earlier, later in zip(fit.history, fit.history[1:]))
    assert fit.history[-1] > fit.history[0] * 1.2  # it did climb from the random start
    # each found subspace is one planted subspace (up to order), not a mixture of both
    distances = [[projector_distance(found, planted_) for planted_ in truth] for found in fit.bases]
    assert sorted(min(row) for row in distances) == pytest.approx([0, 0], abs=0.1)
    assert {min(range(2), key=row.__getitem__) for row in distances} == {0, 1}
    # and scores at least as well as the planted answer (the objective it maximises)
    assert fit.history[-1] >= float(drsa_objective(a, c, torch.cat(truth, 1), 2)) - 1e-9
    assert fit.history[-1] == pytest.approx(float(drsa_objective(a, c, fit.basis, 2)), rel=1e-9)


def test_drsa_refuses_more_dimensions_than_the_layer_has():
    a = torch.randn(10, 4, dtype=torch.float64)
    with pytest.raises(NeurotomyError, match="need 6 dimensions; the layer has 4"):
        drsa(a, a, subspaces=3, size=2)


def test_layer_statistics_match_a_hook_free_computation(lenet, digits_test):
    stats = observe_layer(lenet, digits_test, "features.3", max_images=40, batch_size=16, positions=4, quiet=True)
    # the same images (the shuffle is seeded) through the model split at the layer: a is a leaf
    order = torch.randperm(len(digits_test), generator=torch.Generator().manual_seed(0))[:40]
    images, labels = digits_test.images[order].float(), digits_test.targets[order]
    a = lenet.features[:4](images).detach().requires_grad_(True)
    logits = lenet.classifier(lenet.features[4:](a))
    (grad,) = torch.autograd.grad(logits.gather(1, labels[:, None]).sum(), a)
    rows_a, rows_c = a.detach().double().flatten(2).transpose(1, 2), grad.double().flatten(2).transpose(1, 2)
    cross = torch.einsum("npi,npj->ij", rows_a, rows_c)
    assert stats.images == 40 and stats.rows == 40 * 16 and stats.activations.shape == (160, 16)
    torch.testing.assert_close(stats.cross, cross, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(stats.mean, rows_a.flatten(0, 1).mean(0), rtol=1e-5, atol=1e-6)
    assert stats.total_relevance == pytest.approx(float((rows_a * rows_c).sum()) / 40, rel=1e-4)
    assert all(p.grad is None for p in lenet.parameters())


def test_subspaces_spanning_the_layer_share_its_relevance(lenet, digits_test):
    stats = observe_layer(lenet, digits_test, "features.3", max_images=64, quiet=True)
    for method in ("prca", "drsa", "pca", "random"):
        bases = find_subspaces(stats, method, subspaces=4, size=4, seed=0, **({"steps": 30} if method == "drsa" else {}))
        joint = torch.cat(bases, 1)
        assert torch.allclose(joint.T @ joint, torch.eye(16, dtype=torch.float64), atol=1e-8), method
        shares = sum(stats.relevance(b) for b in bases)
        assert shares == pytest.approx(stats.total_relevance, rel=1e-9, abs=1e-9), method
    # PRCA's top-k captures at least as much relevance as any other method's k directions (on its data)
    prca = stats.relevance(torch.cat(find_subspaces(stats, "prca", 4), 1))
    assert all(prca >= stats.relevance(torch.cat(find_subspaces(stats, m, 4), 1)) - 1e-9 for m in ("pca", "random"))


def test_subspace_scores_are_unit_scores_that_save_and_load(lenet, digits_test, tmp_path):
    scores = score_subspaces(lenet, digits_test, "features.3", "prca", subspaces=3, max_images=32, quiet=True)
    assert isinstance(scores, UnitScores) and scores.info["unit"] == "subspace" and list(scores) == ["features.3"]
    relevance = scores["features.3"]
    assert relevance[0] >= relevance[1] >= relevance[2]
    assert sum(scores.info["relevance_share"]) == pytest.approx(float(relevance.sum()) / scores.info["total_relevance"])
    loaded = UnitScores.load(scores.save(tmp_path / "s.npz"), model=lenet)  # checked against the model
    assert [b.shape for b in bases_of(loaded)] == [(16, 1)] * 3
    from neurotomy.errors import ScoresError
    narrower = UnitScores(dict(scores), scores.criterion, info={**scores.info, "basis": [[[1.0]] * 15] * 3})
    with pytest.raises(ScoresError, match="features.3"):
        narrower.check_fits(lenet)
    torch.testing.assert_close(bases_of(loaded)[0], bases_of(scores)[0])
    with pytest.raises(NeurotomyError, match="not subspace scores"):
        bases_of(UnitScores({"c": torch.ones(2)}, "l1"))
    with pytest.raises(NeurotomyError, match="need 20 dimensions; layer 'features.3' has 16"):
        score_subspaces(lenet, digits_test, "features.3", "prca", subspaces=5, size=4, max_images=8, quiet=True)


def test_heatmaps_of_subspaces_sum_to_gradient_times_input(lenet, digits_test):
    model = load_model("zoo:lenet5-digits").double().eval()
    x, y = digits_test.images[:5].double(), digits_test.targets[:5]
    bases = list(random_basis(16, 6, seed=2).split(3, dim=1))
    maps = subspace_heatmaps(model, x, y, "features.3", bases)
    assert maps.shape == (5, 3, 1, 8, 8)
    plain = InputXGradient(model).attribute(x.clone().requires_grad_(True), target=y)
    torch.testing.assert_close(maps.sum(1), plain, rtol=0, atol=1e-12)
    # an identity filter is the plain map; a zero filter leaves nothing
    torch.testing.assert_close(relevance_through(model, x, y, "features.3", lambda g: g), plain, rtol=0, atol=1e-12)
    assert relevance_through(model, x, y, "features.3", torch.zeros_like).abs().max() == 0


def test_heatmaps_on_a_resnet_block_at_8_pixels():
    model = build_model("resnet20", 1, 10, 8).eval()
    x, y = torch.randn(2, 1, 8, 8), torch.tensor([1, 2])
    maps = subspace_heatmaps(model, x, y, "layer3.2", [torch.eye(64, dtype=torch.float64)[:, :8]], rest=True)
    plain = InputXGradient(model).attribute(x.clone().requires_grad_(True), target=y)
    torch.testing.assert_close(maps.sum(1), plain, rtol=1e-4, atol=1e-6)


def test_orthonormal_helpers():
    basis = random_basis(5, 2, seed=0)
    rest = orthonormal_complement(basis)
    joint = torch.cat([basis, rest], 1)
    assert rest.shape == (5, 3) and torch.allclose(joint.T @ joint, torch.eye(5, dtype=torch.float64), atol=1e-10)
    with pytest.raises(NeurotomyError, match="not orthonormal"):
        check_orthonormal(torch.ones(3, 2))
    with pytest.raises(NeurotomyError, match="has 4 rows but the layer has 3 channels"):
        check_orthonormal(torch.eye(4)[:, :2], channels=3)


def test_token_layers_take_tokens_as_positions(digits_test):
    vit = build_model("vit_tiny", 1, 10, 8, patch=2, dim=16, depth=2, num_heads=2, mlp_hidden=24).double().eval()
    stats = observe_layer(vit, digits_test, "blocks.0", max_images=8, positions=4, quiet=True)
    assert (stats.layout, stats.channels, stats.rows, stats.images) == ("channels_last", 16, 8 * 17, 8)
    x, y = digits_test.images[:3].double(), digits_test.targets[:3]
    maps = subspace_heatmaps(vit, x, y, "blocks.0", list(random_basis(16, 8, seed=0).split(4, dim=1)))
    plain = InputXGradient(vit).attribute(x.clone().requires_grad_(True), target=y).detach()
    torch.testing.assert_close(maps.sum(1), plain, rtol=0, atol=1e-12)
