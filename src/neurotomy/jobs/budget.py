"""How much work ``neurotomy dissect`` does: a named preset or a budget in minutes.

* ``tiny`` — a few hundred images, no fine-tune, no latency measurement: a smoke run (the tests
  use it; "faster by" shows as not measured).
* ``fast`` — the default and the demo: the shipped data sizes, one fine-tune epoch.
* ``full`` — more criteria, larger probe sets, three fine-tune epochs.
* a number of minutes, e.g. ``--budget 4`` — the ``fast`` settings, with as many fine-tune epochs
  (0 to 10) as the measured cost of one epoch lets fit in the time left (see
  :func:`finetune_epochs_for`).

Example:
    >>> parse_budget("tiny").finetune_epochs, parse_budget("fast").finetune_epochs
    (0, 1)
    >>> b = parse_budget("2.5"); b.name, b.minutes
    ('2.5 min', 2.5)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from neurotomy.errors import NeurotomyError


@dataclass(frozen=True)
class DissectBudget:
    """Sizes of every stage. ``None`` image counts mean the whole split."""

    name: str
    train_images: int | None          # images used to score, recalibrate and fine-tune
    test_images: int | None           # images used to evaluate and explain
    criteria: tuple[str, ...]         # criteria whose rank agreement is reported
    score_images: int | None          # calibration images for data-driven criteria
    finetune_epochs: int
    recalibrate_images: int
    latency_batches: tuple[int, ...]
    modularity_per_class: int         # probe samples per class for the modularity curves
    cka_samples: int
    explain_images: int               # images explained by both models
    subset_images: int | None         # training images for the class feature subsets
    minutes: float | None = None
    # the deployment section (original → pruned → pruned + int8 in onnxruntime), kept cheap:
    deploy_calibration_images: int = 128  # training images the int8 quantizer calibrates on
    deploy_latency_batch: int = 64        # latency is timed at batch 1 and at this batch
    deploy_reason_images: int = 8         # images whose occlusion/RISE maps compare the deployed models
    deploy_rise_masks: int = 500          # RISE masks per map (the method's default is 1000): every format
                                          # sees the same masks, so their noise is common to the compared maps
    concept_images: int = 640             # images observed (and evaluated) for the directions and concepts

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, DissectBudget] = {
    "tiny": DissectBudget("tiny", train_images=300, test_images=300,
                          criteria=("l1", "fpgm", "bn_scale", "apoz"), score_images=128,
                          finetune_epochs=0, recalibrate_images=256, latency_batches=(),
                          modularity_per_class=10, cka_samples=100, explain_images=16, subset_images=300,
                          deploy_calibration_images=32, deploy_latency_batch=16, deploy_reason_images=3,
                          deploy_rise_masks=100, concept_images=128),
    "fast": DissectBudget("fast", train_images=None, test_images=None,
                          criteria=("l1", "fpgm", "bn_scale", "taylor", "apoz", "hrank"), score_images=None,
                          finetune_epochs=1, recalibrate_images=4096, latency_batches=(1, 64),
                          modularity_per_class=100, cka_samples=500, explain_images=40, subset_images=2000),
    "full": DissectBudget("full", train_images=None, test_images=None,
                          criteria=("l1", "l2", "fpgm", "bn_scale", "bn_stats", "taylor", "mean_activation",
                                    "apoz", "hrank", "chip"), score_images=None,
                          finetune_epochs=3, recalibrate_images=4096, latency_batches=(1, 64),
                          modularity_per_class=200, cka_samples=1000, explain_images=200, subset_images=None,
                          deploy_calibration_images=256, deploy_reason_images=20, deploy_rise_masks=1000,
                          concept_images=1280),
}

MAX_BUDGET_EPOCHS = 10


def parse_budget(text: str | int | float) -> DissectBudget:
    """``tiny``, ``fast``, ``full`` or a positive number of minutes."""
    key = str(text).strip().lower()
    if key in PRESETS:
        return PRESETS[key]
    try:
        minutes = float(key)
    except ValueError:
        minutes = float("nan")
    if not math.isfinite(minutes) or minutes <= 0:
        raise NeurotomyError(f"--budget {text!r}: use tiny, fast, full or a positive number of minutes (e.g. 4)")
    return replace(PRESETS["fast"], name=f"{minutes:g} min", minutes=minutes)


def finetune_epochs_for(budget: DissectBudget, elapsed_s: float, epoch_s: float,
                        reserve_fraction: float = 0.3) -> int:
    """Fine-tune epochs that fit a minutes budget: the time left after what already ran, less a
    reserve (``reserve_fraction`` of the budget) for the stages after the fine-tune, divided by the
    measured cost of one epoch. Presets keep their own epoch count.

    Example:
        >>> finetune_epochs_for(parse_budget("2"), elapsed_s=20, epoch_s=15)   # (120 - 20 - 36) / 15
        4
        >>> finetune_epochs_for(parse_budget("fast"), elapsed_s=999, epoch_s=1)
        1
    """
    if budget.minutes is None:
        return budget.finetune_epochs
    left = round(budget.minutes * 60 * (1 - reserve_fraction) - elapsed_s, 6)  # 180 × 0.7 is 125.99999…
    return max(0, min(MAX_BUDGET_EPOCHS, int(left // max(epoch_s, 1e-9))))
