"""Subsets of a dataset (neurotomy.data.subsets): class-balanced draws and held-out splits."""

import torch

from neurotomy.data.subsets import held_out_indices


def test_held_out_indices_take_a_seeded_fraction_of_every_class():
    targets = torch.tensor([0] * 10 + [1] * 20 + [2] * 2 + [3])
    held = held_out_indices(targets, 0.2)
    assert targets[held].bincount(minlength=4).tolist() == [2, 4, 1, 0]  # at least one, never a whole class
    assert torch.equal(held, held.sort().values) and torch.equal(held, held_out_indices(targets, 0.2))
    assert not torch.equal(held, held_out_indices(targets, 0.2, seed=1))


def test_a_class_draw_does_not_move_when_another_class_grows():
    targets = torch.tensor([0] * 10 + [1] * 10)
    grown = torch.tensor([0] * 15 + [1] * 10)  # class 0 gained five images (appended after the sorted ones)
    assert (held_out_indices(targets, 0.2)[2:] + 5).tolist() == held_out_indices(grown, 0.2)[3:].tolist()
