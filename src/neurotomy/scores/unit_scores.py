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
import math
import os
import zipfile
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import torch

from neurotomy.errors import NeurotomyError, ScoresError
from neurotomy.files import atomic_write
from neurotomy.models.transformer import attention_sites, mlp_sites
from neurotomy.registry import Registry
from neurotomy.validate import non_negative_int, output_file


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
        """Indices of the ``k`` highest-scoring units per layer (highest first; all of a layer's units
        when it has fewer). ``k`` is a count (0, 1, 2, …); anything else is an :class:`OptionError`."""
        k = non_negative_int(k, "k")
        return {n: s.topk(min(k, s.shape[-1]), dim=-1).indices for n, s in self._scores.items()}

    def bottom(self, k: int) -> dict[str, torch.Tensor]:
        """Indices of the ``k`` lowest-scoring units per layer (lowest first), as :meth:`top`."""
        k = non_negative_int(k, "k")
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
        """Spearman correlation per shared layer, plus ``"mean"`` over layers. A layer whose scores
        are constant in either set has no ranking, so its correlation is NaN (see :func:`spearman`);
        ``"mean"`` is over the layers where it is defined, NaN when it is nowhere.

        Example:
            >>> import torch
            >>> a = UnitScores({"c": torch.tensor([1., 2., 3.]), "flat": torch.ones(3)})
            >>> b = UnitScores({"c": torch.tensor([3., 2., 1.]), "flat": torch.tensor([1., 2., 3.])})
            >>> {k: round(v, 6) for k, v in a.rank_correlation(b).items()}
            {'c': -1.0, 'flat': nan, 'mean': -1.0}
        """
        shared = [n for n in self if n in other and self[n].shape == other[n].shape]
        if not shared:
            raise NeurotomyError("the two score sets share no layer of the same shape; score the same model")
        result = {n: spearman(self[n].flatten(), other[n].flatten()) for n in shared}
        defined = [v for v in result.values() if not math.isnan(v)]
        result["mean"] = float(np.mean(defined)) if defined else math.nan
        return result

    def check_fits(self, model: torch.nn.Module) -> "UnitScores":
        """Raise :class:`ScoresError` unless every scored layer is a conv/linear layer of ``model``
        whose unit count is the last axis of its finite scores (scores of another model, or a file
        edited by hand, would otherwise prune or split by numbers that mean nothing)."""
        modules = dict(model.named_modules())
        special_units = _unit_counts(model, self.info)
        for layer, s in self._scores.items():
            module = modules.get(layer)
            if module is None and layer not in special_units:
                raise ScoresError(f"scores name layer {layer!r}, which the model lacks; score the model you "
                                  "apply them to (`neurotomy score`)")
            units = special_units.get(layer) if special_units else getattr(
                module, "out_channels", getattr(module, "out_features", None))
            if units is None and special_units:
                raise ScoresError(f"scores of {self.info['unit']}s name {layer!r}, which is no "
                                  f"{self.info['unit']} layer of this model; score the model you apply them to")
            if units is None:
                raise ScoresError(f"scores name layer {layer!r}, a {type(module).__name__}; only conv and linear "
                                  "layers have units to score")
            expected = 2 if self.axis else 1
            if s.ndim != expected or s.shape[-1] != units:
                raise ScoresError(f"scores for {layer!r} have shape {tuple(s.shape)} but the layer has {units} units"
                                  f"{' (and a leading ' + self.axis + ' axis)' if self.axis else ''}; score the "
                                  "model you apply them to")
            if not bool(torch.isfinite(s).all()):
                raise ScoresError(f"scores for {layer!r} contain NaN or infinity; score the model again")
        return self

    # Persistence: one .npz holding the arrays and a JSON header (no pickle).
    def save(self, path: str | os.PathLike) -> Path:
        path = output_file(path, "path", suffix=".npz")
        if path.suffix != ".npz":  # as numpy would, but said: the returned path is the file written
            path = path.with_name(path.name + ".npz")
        header = json.dumps({"criterion": self.criterion, "axis": self.axis, "info": self.info,
                             "layers": list(self._scores)})
        arrays = {f"layer{i}": v.numpy() for i, v in enumerate(self._scores.values())}

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, __header__=np.array(header), **arrays)
        atomic_write(path, write)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, model: torch.nn.Module | None = None) -> "UnitScores":
        """Scores saved by :meth:`save`; with ``model``, also checked to fit it (:meth:`check_fits`).
        Every array's size in the file's own table is checked against the file before it is read."""
        path = Path(path)
        fix = "create it with `neurotomy score`"
        if path.is_dir():
            raise ScoresError(f"{path}: is a directory; give the .npz scores file")
        if not path.is_file():
            raise ScoresError(f"{path}: no such scores file; {fix}")
        try:
            _check_npz_sizes(path)
            with np.load(path, allow_pickle=False) as npz:
                header = _scores_header(str(npz["__header__"][()]) if npz["__header__"].dtype.kind == "U" else None)
                arrays = [npz[f"layer{i}"] for i in range(len(header["layers"]))]
        except ScoresError as exc:
            raise ScoresError(f"{path}: {exc}; {fix}") from None
        except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile, RecursionError) as exc:
            reason = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise ScoresError(f"{path}: not a neurotomy scores file ({reason}); {fix}") from None
        for name, array in zip(header["layers"], arrays):
            if array.dtype.kind not in "biuf" or array.ndim not in (1, 2):
                raise ScoresError(f"{path}: scores of {name!r} are {array.dtype} of shape {array.shape}; {fix}")
        scores = cls({name: torch.from_numpy(a) for name, a in zip(header["layers"], arrays)},
                     header["criterion"], header["axis"], header["info"])
        return scores if model is None else scores.check_fits(model)


_MAX_DEFLATE_RATIO = 1100  # deflate never expands data more than ~1032 times


def _check_npz_sizes(path: Path) -> None:
    """Every member of the archive fits the file, and every array's declared shape fits its member,
    before NumPy allocates anything from those numbers."""
    size = path.stat().st_size
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            stored = info.compress_size <= size and (
                info.file_size == info.compress_size if info.compress_type == zipfile.ZIP_STORED
                else info.file_size <= _MAX_DEFLATE_RATIO * max(1, info.compress_size))
            if not stored:
                raise ScoresError(f"member {info.filename!r} claims {info.file_size} bytes, more than the file holds")
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(member)
                if dtype.hasobject:
                    raise ScoresError(f"member {info.filename!r} holds Python objects, which are never loaded")
                if any(d < 0 for d in shape) or math.prod(shape) * dtype.itemsize > info.file_size:
                    raise ScoresError(f"member {info.filename!r} claims shape {shape}, more than its "
                                      f"{info.file_size} bytes hold")


def _scores_header(text: str | None) -> dict:
    """The JSON header, with the fields :meth:`UnitScores.load` relies on checked."""
    header = json.loads(text) if text is not None else None
    if not isinstance(header, dict):
        raise ScoresError("its header is not a JSON object")
    layers, axis = header.get("layers"), header.get("axis")
    if not isinstance(layers, list) or not all(isinstance(n, str) for n in layers) or len(set(layers)) != len(layers):
        raise ScoresError("its header's layer list is not a list of distinct names")
    if axis not in (None, "class", "input") or not isinstance(header.get("criterion", ""), str) \
            or not isinstance(header.get("info", {}), dict):
        raise ScoresError("its header's criterion, axis or info is malformed")
    return {"layers": layers, "axis": axis, "criterion": header.get("criterion", ""), "info": header.get("info", {})}


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
    """Spearman rank correlation (Pearson correlation of average ranks); NaN when either is
    constant (it ranks nothing, so no correlation is defined — as SciPy's ``spearmanr`` says).

    Example:
        >>> round(spearman(torch.tensor([1., 2., 3.]), torch.tensor([1., 3., 2.])), 6), spearman(torch.ones(3), torch.ones(3))
        (0.5, nan)
    """
    ra, rb = _ranks(a.double()), _ranks(b.double())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(ra.norm() * rb.norm())
    return float((ra * rb).sum() / denom) if denom > 0 else math.nan


def _unit_counts(model: torch.nn.Module, info: dict) -> dict[str, int]:
    """Unit counts of the scored layers for scores whose units are not a layer's output channels:
    a transformer's heads, neurons or embedding channels (keyed as :mod:`neurotomy.scores.transformer`
    keys them) and subspaces (one score per stored basis, each basis as wide as the layer); empty for
    channel scores."""
    unit = info.get("unit")
    if unit == "subspace":
        module = dict(model.named_modules()).get(info.get("layer", ""))
        width = getattr(module, "out_channels", getattr(module, "out_features", None))
        basis = info.get("basis") or []
        if module is None or (width is not None and any(len(b) != width for b in basis)):
            return {}  # the layer check below names what is wrong
        return {info["layer"]: len(basis)}
    if unit == "head":
        return {site.name: site.num_heads for site in attention_sites(model)}
    if unit == "neuron":
        return {site.fc1_name: site.hidden for site in mlp_sites(model)}
    if unit == "embedding":
        sites = attention_sites(model)
        return {"embedding": sites[0].proj.out_features} if sites else {}
    return {}
