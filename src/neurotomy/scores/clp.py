"""CLP: Zheng, Zhang, Wang & Zhao, "Data-free Backdoor Removal based on Channel Lipschitzness",
ECCV 2022.

Upper bound of channel c's Lipschitz constant (UCLC): the spectral norm of its filter with the
following BatchNorm folded in, σ_max((|γ_c|/σ_c)·W_c reshaped to C_in × k²), σ_c = √(var_c + ε).
As a pruning score, small UCLC = weak channel. The paper uses it the other way round — channels
with UCLC above mean + u·std of their layer (u = 3) are *removed* as likely backdoor carriers:
:func:`clp_outliers` returns those.
"""

from __future__ import annotations

import torch

from neurotomy.scores.base import CRITERIA, ConvUnit, WeightCriterion
from neurotomy.scores.unit_scores import UnitScores


@CRITERIA.register(axis="unit")
class ChannelLipschitz(WeightCriterion):
    name = "clp"
    paper = "Zheng et al., ECCV 2022, Channel Lipschitzness (UCLC)"

    def score_layer(self, unit: ConvUnit):
        w = unit.conv.weight.double()
        if unit.bn is not None and unit.bn.weight is not None:
            scale = unit.bn.weight.double().abs() / torch.sqrt(unit.bn.running_var.double() + unit.bn.eps)
            w = w * scale.view(-1, 1, 1, 1)
        per_channel = w.reshape(w.shape[0], w.shape[1], -1)  # C_out × C_in × k²
        return torch.linalg.matrix_norm(per_channel, ord=2)


def clp_outliers(scores: UnitScores, u: float = 3.0) -> dict[str, torch.Tensor]:
    """Indices of channels whose UCLC exceeds mean + u·std of their layer (the paper's removal set).

    Example:
        >>> import torch
        >>> s = UnitScores({"c": torch.tensor([1.0] * 20 + [50.0])}, criterion="clp")
        >>> clp_outliers(s)["c"].tolist()
        [20]
    """
    out = {}
    for name, s in scores.items():
        threshold = s.mean() + u * s.std()
        out[name] = torch.nonzero(s > threshold).flatten()
    return out
