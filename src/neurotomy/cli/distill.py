"""The distillation options a fine-tune or a training run takes (Hinton et al. 2015)."""

from __future__ import annotations

import argparse

from neurotomy import validate
from neurotomy.cli.common import RATE, Checked


def add_distill_options(p: argparse.ArgumentParser, temperature: float, alpha: float) -> None:
    """``--distill-temperature`` and ``--distill-alpha``: the KL term of distillation.
    Fine-tuning a pruned model defaults to T 2, weight 0.9, the recipe that lost least at −85 % MACs
    over 5 seeds (benchmarks/results/pruning_budget_recipes); training from scratch keeps T 4, 0.5."""
    p.add_argument("--distill-temperature", type=RATE, default=temperature,
                   help=f"softmax temperature of the teacher's and student's outputs (default {temperature:g})")
    p.add_argument("--distill-alpha", type=Checked(validate.fraction, interval="[0, 1]"), default=alpha,
                   help=f"weight of the distillation loss; the labels' loss gets 1 minus it (default {alpha:g})")
