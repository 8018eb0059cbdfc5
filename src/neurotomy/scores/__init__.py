"""Unit-scoring criteria, one small file per family, behind one registry.

Example:
    >>> sorted(CRITERIA)[:3]
    ['apoz', 'bn_scale', 'bn_stats']
"""

from __future__ import annotations

from neurotomy.errors import NeurotomyError
from neurotomy.scores.activation import APoZ, MeanActivation
from neurotomy.scores.base import Criterion, DataCriterion, WeightCriterion, conv_units
from neurotomy.scores.batchnorm import BNScale, BNStatistics
from neurotomy.scores.chip import CHIP
from neurotomy.scores.clp import ChannelLipschitz, clp_outliers
from neurotomy.scores.fpgm import FPGM
from neurotomy.scores.hrank import HRank
from neurotomy.scores.norms import L1Norm, L2Norm
from neurotomy.scores.pathway import PathwayRelevance
from neurotomy.scores.random import RandomCriterion
from neurotomy.scores.taylor import TaylorFirstOrder
from neurotomy.scores.unit_scores import UnitScores, spearman
from neurotomy.scores.entropy import FeatureEntropy  # noqa: E402  (lives with the layer analyses)

CRITERIA: dict[str, type[Criterion]] = {c.name: c for c in (
    RandomCriterion, L1Norm, L2Norm, BNScale, BNStatistics, FPGM, TaylorFirstOrder, MeanActivation,
    APoZ, HRank, CHIP, ChannelLipschitz, FeatureEntropy, PathwayRelevance)}


def get_criterion(name: str) -> Criterion:
    """A criterion instance by name (see ``neurotomy criteria``)."""
    if name not in CRITERIA:
        raise NeurotomyError(f"unknown criterion {name!r}; use one of {', '.join(sorted(CRITERIA))}")
    return CRITERIA[name]()


__all__ = ["CRITERIA", "Criterion", "DataCriterion", "UnitScores", "WeightCriterion", "clp_outliers",
           "conv_units", "get_criterion", "spearman"]
