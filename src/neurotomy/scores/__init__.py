"""Unit-scoring criteria, one small file per family, behind one registry.

Each criterion class registers itself in :data:`CRITERIA` where it is defined, tagged by axis
(``"unit"``: one score per filter; ``"class"``: one per class and filter). Adding a criterion is one
file plus one import line below; the import order is the order ``CRITERIA.names()`` lists them in.

:func:`get_criterion` returns **per-unit criteria only**: pruning ranks filters by one score each,
and a class-wise criterion's C × filters table is not such a ranking, so asking for one there is an
error naming :func:`get_classwise_criterion` instead of a silent misuse.

Example:
    >>> sorted(CRITERIA)[:3]
    ['apoz', 'bn_scale', 'bn_stats']
    >>> CRITERIA.names(axis="class")
    ['class_activation', 'class_taylor']
"""

from __future__ import annotations

from neurotomy.scores.base import CRITERIA, Criterion, DataCriterion, WeightCriterion, conv_units, criterion_of_axis
# each criterion registers itself on import; this order is the order `neurotomy criteria` lists them in
from neurotomy.scores import random  # noqa: F401,I001
from neurotomy.scores import norms  # noqa: F401
from neurotomy.scores import batchnorm  # noqa: F401
from neurotomy.scores import fpgm  # noqa: F401
from neurotomy.scores import taylor  # noqa: F401
from neurotomy.scores import activation  # noqa: F401
from neurotomy.scores import hrank  # noqa: F401
from neurotomy.scores import chip  # noqa: F401
from neurotomy.scores import clp  # noqa: F401
from neurotomy.scores import entropy  # noqa: F401
from neurotomy.scores import pathway  # noqa: F401
from neurotomy.scores import classwise  # noqa: F401
from neurotomy.scores.classwise import get_classwise_criterion
from neurotomy.scores.clp import clp_outliers
from neurotomy.scores.unit_scores import UnitScores, spearman
from neurotomy.scores.subspace import SUBSPACE_METHODS, score_subspaces  # relevant subspaces (PRCA, DRSA)
from neurotomy.scores.transformer import (TRANSFORMER_CRITERIA, head_matrix, score_transformer,
                                          transformer_criteria_table)


def get_criterion(name: str) -> Criterion:
    """A per-unit criterion instance by name (``CRITERIA.names(axis="unit")``, see ``neurotomy criteria``).

    A class-wise name fails with a message pointing to :func:`get_classwise_criterion`.
    """
    return criterion_of_axis(name, "unit")()


def criteria_table() -> list[dict]:
    """One row per registered criterion, in registration order: ``name``, ``axis`` (unit/class),
    ``paper`` and ``needs_data`` — what ``neurotomy criteria`` lists, with the transformer criteria's
    rows (:func:`transformer_criteria_table`) after them.

    Example:
        >>> criteria_table()[0]
        {'name': 'random', 'axis': 'unit', 'paper': 'control (uniform random)', 'needs_data': False}
    """
    return [{"name": name, "axis": CRITERIA.tags(name)["axis"], "paper": cls.paper, "needs_data": cls.needs_data}
            for name, cls in CRITERIA.items()]


__all__ = ["CRITERIA", "SUBSPACE_METHODS", "TRANSFORMER_CRITERIA", "Criterion", "DataCriterion", "UnitScores",
           "WeightCriterion", "clp_outliers", "conv_units", "criteria_table", "get_classwise_criterion",
           "get_criterion", "head_matrix", "score_subspaces", "score_transformer", "spearman",
           "transformer_criteria_table"]
