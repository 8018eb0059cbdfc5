"""*When* to cut: an iterative schedule, and soft filter pruning.

* :func:`prune_iteratively` — reach a target in ``steps`` equal cuts, re-scoring the current model
  before each and optionally recalibrating / fine-tuning between them.
* :func:`soft_filter_pruning` — He, Kang, Dong, Fu & Yang, "Soft Filter Pruning for Accelerating
  Deep Convolutional Neural Networks", IJCAI 2018: after every training epoch, zero the
  lowest-L2 ``ratio`` of filters per layer but keep training them (they may grow back); remove the
  zeroed ones at the end. We zero the BN γ, β of those filters too, so the final removal is exact.
"""

from __future__ import annotations

from torch import nn
from torch.utils.data import Dataset

from neurotomy.errors import PruningError
from neurotomy.recover import finetune, recalibrate_batchnorm
from neurotomy.scores import get_criterion
from neurotomy.surgery.filters import PruningResult, mask_filters, prune_filters
from neurotomy.surgery.planner import plan_cuts
from neurotomy.train import TrainConfig, fit
from neurotomy.run_state import RunState


def prune_iteratively(model: nn.Module, criterion: str, data: Dataset, *, target_macs: float,
                      steps: int = 3, finetune_epochs: int = 0, finetune_lr: float = 0.01, recalibrate: bool = True,
                      seed: int = 0, quiet: bool = False, score_images: int | None = None,
                      state: RunState | None = None, **prune_kw) -> PruningResult:
    """Cut to ``target_macs`` reduction (of the *original* MACs) in ``steps`` equal steps, each re-scored
    on the current model, with ``finetune_epochs`` epochs from ``finetune_lr`` after each step but the
    last. With ``state``, the fine-tunes between steps resume (scoring and cutting are deterministic and
    redone)."""
    if steps < 1:
        raise PruningError(f"steps must be at least 1, got {steps}")
    current, first, last = model, None, None
    for step in range(1, steps + 1):
        scores = get_criterion(criterion)(current, data, seed=seed, quiet=quiet, max_images=score_images)
        base = first.macs_before if first else None
        remaining_now = 1.0 if first is None else last.macs_after / base
        wanted = 1 - target_macs * step / steps  # fraction of the original MACs to keep
        step_target = 1 - wanted / remaining_now
        result = prune_filters(current, scores, target_macs=max(0.0, step_target), **prune_kw)
        first = first or result
        last = result
        current = result.model
        if recalibrate:
            recalibrate_batchnorm(current, data, seed=seed, quiet=quiet)
        if finetune_epochs and step < steps:
            finetune(current, data, finetune_epochs, lr=finetune_lr, seed=seed, quiet=quiet, state=state,
                     state_key=f"prune/step{step}")
    return PruningResult(current, last.cuts, last.ratio, last.scope, first.macs_before, last.macs_after,
                         first.params_before, last.params_after, last.channels)


def soft_filter_pruning(model: nn.Module, data: Dataset, ratio: float, config: TrainConfig, *,
                        input_shape: tuple[int, ...], state: RunState | None = None, **prune_kw) -> PruningResult:
    """Train ``model`` with SFP at per-layer ``ratio``, then physically remove the zeroed filters
    (``state``: resume the training epoch by epoch)."""
    l2 = get_criterion("l2")

    def zero_weakest(m: nn.Module, epoch: int) -> None:
        cuts, _, _ = plan_cuts(m, l2(m), ratio=ratio, input_shape=input_shape, **prune_kw)
        mask_filters(m, cuts, input_shape)

    fit(model, data, config, on_epoch_end=zero_weakest, description="soft filter pruning", state=state,
        state_key="prune/sfp")
    return prune_filters(model, l2(model), ratio=ratio, input_shape=input_shape, **prune_kw)
