import pytest

from neurotomy.errors import NeurotomyError
from neurotomy.jobs.budget import MAX_BUDGET_EPOCHS, PRESETS, finetune_epochs_for, parse_budget


def test_presets_grow_from_tiny_to_full():
    tiny, fast, full = (parse_budget(n) for n in ("tiny", "fast", "FULL"))
    assert tiny.train_images < 1000 and fast.train_images is None
    assert tiny.finetune_epochs < fast.finetune_epochs < full.finetune_epochs
    assert set(tiny.criteria) < set(full.criteria) and set(fast.criteria) < set(full.criteria)
    assert all(p.minutes is None for p in PRESETS.values())


@pytest.mark.parametrize("text", ["0", "-3", "abc", "nan", "inf", ""])
def test_bad_budgets_name_the_fix(text):
    with pytest.raises(NeurotomyError, match="tiny, fast, full or a positive number of minutes"):
        parse_budget(text)


def test_minutes_budget_fits_epochs_to_the_time_left():
    budget = parse_budget("3")
    assert budget.minutes == 3 and budget.criteria == PRESETS["fast"].criteria
    # 180 s × 0.7 = 126 s for everything up to the fine-tune; 26 s used, 20 s per epoch → 5 epochs
    assert finetune_epochs_for(budget, elapsed_s=26, epoch_s=20) == 5
    assert finetune_epochs_for(budget, elapsed_s=200, epoch_s=20) == 0
    assert finetune_epochs_for(budget, elapsed_s=0, epoch_s=0.01) == MAX_BUDGET_EPOCHS


def test_the_optional_stages_grow_with_the_budget_and_stay_small():
    tiny, fast, full = (parse_budget(n) for n in ("tiny", "fast", "full"))
    for field in ("deploy_calibration_images", "deploy_reason_images", "deploy_rise_masks", "concept_images"):
        assert getattr(tiny, field) < getattr(fast, field) <= getattr(full, field), field
    assert tiny.deploy_latency_batch < fast.deploy_latency_batch == 64  # the batch for the speed-ups
    assert parse_budget("4").concept_images == fast.concept_images  # minutes budgets use the fast sizes
