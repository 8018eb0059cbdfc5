"""``UnitScores``: per named layer, a tensor of scores over its units.

The last axis indexes units (output channels of a conv, neurons of a linear layer); an optional
leading axis indexes classes or inputs when a score is per-class or per-input. Every criterion
produces one and every action (pruning, splitting, explaining) consumes one — that is the seam
that lets any criterion drive any action.

Example:
    >>> import torch
    >>> s = UnitScores({"conv1": torch.tensor([0.1, 3.0, 2.0])}, criterion="l1")
    >>> s.bottom(1)["conv1"].tolist(), s.top(2)["conv1"].tolist()
    ([0], [1, 2])
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import torch

from neurotomy.errors import NeurotomyError
from neurotomy.files import atomic_write
from neurotomy.registry import Registry


class UnitScores(Mapping[str, torch.Tensor]):
    """Immutable-ish mapping layer name → score tensor, plus the criterion that made it."""

    def __init__(self, scores: Mapping[str, torch.Tensor], criterion: str = "", axis: str | None = None,
                 info: dict | None = None) -> None:
        self._scores = {k: torch.as_tensor(v).detach().double().cpu() for k, v in scores.items()}
        self.criterion = criterion
        self.axis = axis  # None, "class" or "input": meaning of a leading axis, if any
        self.info = dict(info or {})

    # Mapping protocol
    def __getitem__(self, layer: str) -> torch.Tensor:
        return self._scores[layer]

    def __iter__(self) -> Iterator[str]:
        return iter(self._scores)

    def __len__(self) -> int:
        return len(self._scores)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}:{tuple(v.shape)}" for k, v in list(self._scores.items())[:4])
        return f"UnitScores({self.criterion!r}, {len(self)} layers: {sizes}{'…' if len(self) > 4 else ''})"

    # Selections
    def top(self, k: int) -> dict[str, torch.Tensor]:
        """Indices of the ``k`` highest-scoring units per layer (highest first)."""
        return {n: s.topk(min(k, s.shape[-1]), dim=-1).indices for n, s in self._scores.items()}

    def bottom(self, k: int) -> dict[str, torch.Tensor]:
        """Indices of the ``k`` lowest-scoring units per layer (lowest first)."""
        return {n: s.topk(min(k, s.shape[-1]), dim=-1, largest=False).indices for n, s in self._scores.items()}

    def for_class(self, index: int) -> "UnitScores":
        """The 1-D scores of one entry of the leading class axis (what pruning and splitting take).

        Example:
            >>> import torch
            >>> s = UnitScores({"c": torch.tensor([[1., 2.], [5., 0.]])}, "taylor_class", axis="class")
            >>> s.for_class(1)["c"].tolist()
            [5.0, 0.0]
        """
        if self.axis != "class":
            raise NeurotomyError(f"scores of {self.criterion!r} have no class axis; use a class-wise "
                                 "criterion (see neurotomy.scores.classwise)")
        classes = next(iter(self._scores.values())).shape[0] if self._scores else 0
        if not 0 <= index < classes:
            raise NeurotomyError(f"class index {index} is out of range; these scores cover classes 0…{classes - 1}")
        return UnitScores({n: s[index] for n, s in self._scores.items()}, self.criterion, None,
                          {**self.info, "class_index": index})

    def normalized(self, how: str = "mean") -> "UnitScores":
        """Per-layer rescaling so layers can be compared: ``mean`` (divide by the layer mean, the
        torch-pruning convention), ``max``, ``l2``, ``minmax`` or ``rank`` (0…1 by rank)."""
        rescale = NORMALISATIONS.get(how)
        out = {name: rescale(s) for name, s in self._scores.items()}
        return UnitScores(out, self.criterion, self.axis, {**self.info, "normalized": how})

    def rank_correlation(self, other: "UnitScores") -> dict[str, float]:
        """Spearman correlation per shared layer, plus ``"mean"`` over layers.

        Example:
            >>> import torch
            >>> a = UnitScores({"c": torch.tensor([1., 2., 3.])}); b = UnitScores({"c": torch.tensor([3., 2., 1.])})
            >>> {k: round(v, 6) for k, v in a.rank_correlation(b).items()}
            {'c': -1.0, 'mean': -1.0}
        """
        shared = [n for n in self if n in other and self[n].shape == other[n].shape]
        if not shared:
            raise NeurotomyError("the two score sets share no layer of the same shape; score the same model")
        result = {n: spearman(self[n].flatten(), other[n].flatten()) for n in shared}
        result["mean"] = float(np.mean(list(result.values())))
        return result

    # Persistence: one .npz holding the arrays and a JSON header (no pickle).
    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        header = json.dumps({"criterion": self.criterion, "axis": self.axis, "info": self.info,
                             "layers": list(self._scores)})
        arrays = {f"layer{i}": v.numpy() for i, v in enumerate(self._scores.values())}

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, __header__=np.array(header), **arrays)
        atomic_write(path, write)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "UnitScores":
        try:
            with np.load(path, allow_pickle=False) as npz:
                header = json.loads(str(npz["__header__"]))
                scores = {name: torch.from_numpy(npz[f"layer{i}"]) for i, name in enumerate(header["layers"])}
        except FileNotFoundError:
            raise NeurotomyError(f"{path}: no such scores file; create it with `neurotomy score`") from None
        except (ValueError, KeyError, OSError) as exc:
            raise NeurotomyError(f"{path}: not a neurotomy scores file ({exc}); create it with `neurotomy score`") from None
        return cls(scores, header["criterion"], header["axis"], header["info"])


NORMALISATIONS: Registry = Registry("normalisation")
"""Per-layer rescalings of a score tensor along its last (unit) axis, by name."""


@NORMALISATIONS.register("mean")
def divide_by_mean(s: torch.Tensor) -> torch.Tensor:
    return s / s.abs().mean(-1, keepdim=True).clamp(min=1e-12)


@NORMALISATIONS.register("max")
def divide_by_max(s: torch.Tensor) -> torch.Tensor:
    return s / s.abs().amax(-1, keepdim=True).clamp(min=1e-12)


@NORMALISATIONS.register("l2")
def divide_by_l2(s: torch.Tensor) -> torch.Tensor:
    return s / s.norm(dim=-1, keepdim=True).clamp(min=1e-12)


@NORMALISATIONS.register("minmax")
def minmax(s: torch.Tensor) -> torch.Tensor:
    lo, hi = s.amin(-1, keepdim=True), s.amax(-1, keepdim=True)
    return (s - lo) / (hi - lo).clamp(min=1e-12)


@NORMALISATIONS.register("rank")
def rank_fraction(s: torch.Tensor) -> torch.Tensor:
    return _ranks(s) / max(1, s.shape[-1] - 1)


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Average ranks (ties share their mean rank) along the last axis, 0-based."""
    from scipy.stats import rankdata

    return torch.from_numpy(rankdata(x.numpy(), axis=-1) - 1.0)


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation (Pearson correlation of average ranks)."""
    ra, rb = _ranks(a.double()), _ranks(b.double())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(ra.norm() * rb.norm())
    return float((ra * rb).sum() / denom) if denom > 0 else 0.0
