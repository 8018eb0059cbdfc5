"""Recovering accuracy without training: refit every layer after a cut by least squares.

A structured cut changes what every later layer sees. Following He et al. (ICCV 2017, "Channel
Pruning for Accelerating Very Deep Neural Networks", §3.1: reconstruct the output from the kept
channels by linear least squares) and Luo et al. (ICCV 2017, ThiNet, §3.2: minimise the
reconstruction error on sampled positions), each conv/linear layer is refitted, **in execution
order**, so that given the *pruned* model's actual inputs it reproduces the *original* model's
response on the output channels it kept::

    min_{W,b}  (1/n) Σ_rows ‖x W + b − y‖²  +  λ ‖W − W₀‖²

``x`` is the pruned model's input patch at a sampled output position (a token, for a linear layer
on a sequence), ``y`` the original's output there (pre-BatchNorm for a conv followed by one),
``W₀`` the weights the cut left — the ridge pulls towards them rather than towards zero, so a
poorly observed direction stays what it was — and λ is relative to the mean input variance, so
one value fits every layer. Because the layers are fitted in order on the already refitted
model, each one also compensates the errors of those before it (He et al. §3.1 fit to the
original's output given the pruned input for this reason).

Residual-coupled channels: every layer whose input differs from the original's — every consumer of
a cut channel (block convs, shortcuts, the classifier: all readers of a cut residual stream) and
everything downstream — is refitted, and a layer whose own outputs were cut is fitted on its kept
outputs only. A layer whose response (after its BatchNorm) enters a residual add ``t = a + u``
is fitted so that the *sum* matches the original's: its target becomes ``a + (u − u′)`` (in
pre-BatchNorm units), ``u′`` being the pruned model's other operand — the skip stream, whose
error otherwise accumulates block after block, or, in a down-sampling block, the other branch
(the second of the two to be fitted makes up for the first). The add is a function, not a module,
so it is found by its values in one probe pass: the first module whose input equals ``a`` plus a
tensor some module takes or gives (an add whose result an in-place activation overwrites before
any module sees it, as in torchvision's ResNets, is not found: those layers are fitted on their own
response). On zoo:resnet20-fmnist this added +0.1 pt (−50 % MACs) and
+0.3 pt (−70 %) of test accuracy over fitting each branch alone (``residual=False``).

Departures from the papers: the channels come from any criterion (the cut is done already; the
papers choose them by LASSO or greedily); every layer downstream of the cut is refitted, not only
the consumer of the cut channels; the residual target above; an intercept is fitted and stored in
the layer's bias or — a bias-free conv followed by BatchNorm — folded into that BatchNorm's running
mean, whose statistics are reset to the original's (the fit targets the original's pre-BatchNorm
response, so the original's normalisation is the one that matches, and recalibrating BatchNorm
afterwards is not needed: it changed accuracy by 0 to −0.4 pt). Memory does not grow with the
number of images: only XᵀX, XᵀY and their sums are kept (float64), from ``positions`` random
positions per image drawn from a seeded generator. The original's responses are computed once for
several layers; the pruned model's inputs need one (truncated) forward pass per layer.

Example:
    >>> import copy
    >>> from neurotomy.data import load_dataset
    >>> from neurotomy.models import build_model
    >>> original = build_model("lenet5", 1, 10, 8).eval()
    >>> damaged = copy.deepcopy(original)
    >>> _ = damaged.features[0].weight.data.mul_(0.5)  # as if half of each filter were lost
    >>> result = reconstruct(original, damaged, load_dataset("digits"), images=64, quiet=True)
    >>> result.layers
    ['features.3', 'classifier.1', 'classifier.3', 'classifier.5']
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from neurotomy import validate
from neurotomy.data.batches import iterate_batches, num_batches
from neurotomy.device import model_device, to_device
from neurotomy.errors import ModelError
from neurotomy.models.anatomy import eval_mode
from neurotomy.probe import Probe
from neurotomy.progress import add_task, progress_bar

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class NormalEquations:
    """Streams the sufficient statistics of a ridge regression ``y ≈ x W + b`` — XᵀX, XᵀY, Σx,
    Σy, Σy², n — in float64, and solves it by Cholesky.

    Example:
        >>> x = torch.randn(100, 3, dtype=torch.float64)
        >>> eq = NormalEquations(3, 2)
        >>> eq.add(x, x[:, :2] * 2 + 1)
        >>> weight, bias = eq.solve(ridge=0.0)
        >>> (weight.round(decimals=6) + 0.0).tolist(), (bias.round(decimals=6) + 0.0).tolist()
        ([[2.0, 0.0], [0.0, 2.0], [0.0, 0.0]], [1.0, 1.0])
    """

    def __init__(self, inputs: int, outputs: int, device: torch.device | str = "cpu") -> None:
        dtype = torch.float32 if torch.device(device).type == "mps" else torch.float64  # MPS has no float64
        zeros = lambda *shape: torch.zeros(*shape, dtype=dtype, device=device)  # noqa: E731
        self.xx, self.xy = zeros(inputs, inputs), zeros(inputs, outputs)
        self.sx, self.sy, self.syy = zeros(inputs), zeros(outputs), zeros(outputs)
        self.n = 0
        self.images = 0  # how many images the rows came from (bookkeeping for the caller)

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Add rows ``x`` (n × inputs) with targets ``y`` (n × outputs)."""
        # the products in the data's precision (float32: ~2× faster on CPU), the running sums in float64
        self.xx += (x.T @ x).to(self.xx.dtype)
        self.xy += (x.T @ y).to(self.xy.dtype)
        self.sx += x.sum(0).to(self.sx.dtype)
        self.sy += y.sum(0).to(self.sy.dtype)
        self.syy += (y * y).sum(0).to(self.syy.dtype)
        self.n += len(x)

    def solve(self, ridge: float = 1e-3, prior: torch.Tensor | None = None,
              intercept: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(W, b)`` minimising ``(1/n) Σ ‖x W + b − y‖² + λ ‖W − prior‖²`` with
        ``λ = ridge × mean diagonal of the input covariance`` (b is not penalised; None without
        ``intercept``). Cholesky on the normal equations; ``torch.linalg.solve`` if that fails."""
        if self.n == 0:
            raise ModelError("no rows were added to the normal equations; give some images")
        gram, cross = self.xx / self.n, self.xy / self.n
        if intercept:
            mx, my = self.sx / self.n, self.sy / self.n
            gram, cross = gram - torch.outer(mx, mx), cross - torch.outer(mx, my)
        lam = ridge * float(gram.diagonal().mean().clamp_min(1e-12))
        a = gram + lam * torch.eye(len(gram), dtype=gram.dtype, device=gram.device)
        b = cross if prior is None else cross + lam * prior.to(cross)
        factor, info = torch.linalg.cholesky_ex(a)
        weight = torch.cholesky_solve(b, factor) if int(info) == 0 else torch.linalg.solve(a, b)
        bias = (my - mx @ weight) if intercept else None
        return weight, bias

    def relative_error(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> float:
        """Σ‖x W + b − y‖² / Σ‖y − ȳ‖² over the rows added, from the statistics alone."""
        weight = weight.to(self.xy)
        fitted = (weight * (self.xx @ weight)).sum() - 2 * (weight * self.xy).sum() + self.syy.sum()
        if bias is not None:
            bias = bias.to(self.sy)
            fitted = (fitted + 2 * (bias * (self.sx @ weight)).sum() - 2 * (bias * self.sy).sum()
                      + self.n * (bias * bias).sum())
        spread = self.syy.sum() - (self.sy * self.sy).sum() / max(self.n, 1)
        return float(fitted / spread.clamp_min(1e-12))


@dataclass
class Reconstruction:
    """What :func:`reconstruct` did: the layers refitted (in execution order), each one's relative
    error on the fitting rows with the weights the cut left and after the fit, the BatchNorm that
    reads each layer's output (a bias-free layer's intercept went there), where the other operand
    of the residual add each layer feeds was seen (``"module:input"`` / ``"module:output"``), the
    layers it could not refit and why, how many images it used and how long it took."""

    layers: list[str]
    error_before: dict[str, float]
    error_after: dict[str, float]
    norms: dict[str, str] = field(default_factory=dict)
    partners: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    images: int = 0
    seconds: float = 0.0

    def summary(self) -> dict:
        return {"layers": len(self.layers), "images": self.images, "seconds": self.seconds,
                "error_before": self.error_before, "error_after": self.error_after, "norms": self.norms,
                "partners": self.partners, "skipped": self.skipped}


@dataclass
class _Layer:
    """One layer to refit: its module, the original's output channels it kept, the BatchNorm that
    reads its output directly (which takes the intercept when the layer has no bias), how many
    output positions (or tokens) one image gives it, and — when its response (after that
    BatchNorm) enters a residual add — where the add's other operand is seen, with the factor that
    turns a difference there into pre-BatchNorm units."""

    name: str
    module: nn.Module
    kept: torch.Tensor
    norm: str | None
    positions: int
    partner: tuple[str, str] | None = None  # (module name, "input" or "output")
    scale: torch.Tensor | None = None


@dataclass
class _Seen:
    """A module's first call in the detection pass: its input and output tensors (identity tells
    who reads what) and copies of their values at that moment (in-place ops change the tensors)."""

    inp: torch.Tensor
    out: object
    inp_copy: torch.Tensor
    out_copy: torch.Tensor | None


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the layers of interest have run."""


KEPT_FOR_A_PRUNE = "neurotomy.jobs.prune.kept_output_channels(original, result.model, result.cuts, input_shape)"
"""How a caller gets ``kept`` for a :func:`~neurotomy.surgery.filters.prune_filters` result (named in errors)."""

# the original's sampled responses are computed in one pass for as many layers as fit in this
# many bytes (the pruned model's inputs need one pass per layer: each depends on the refits before)
_TARGET_BYTES = 128 * 2 ** 20


@torch.no_grad()
def reconstruct(original: nn.Module, pruned: nn.Module, data: Dataset,
                kept: Mapping[str, Sequence[int]] | None = None, *, images: int = 2048, positions: int = 64,
                ridge: float = 1e-3, residual: bool = True, batch_size: int = 256, seed: int = 0,
                quiet: bool = False) -> Reconstruction:
    """Refit, in place and in execution order, every Conv2d (``groups=1``) and Linear of ``pruned``
    whose input differs from ``original``'s, so that it reproduces ``original``'s response on its
    kept output channels given the pruned model's actual inputs (see the module docstring).

    Layers are matched by name. ``kept[name]`` lists the original output channels a layer kept, in
    order (a layer not in ``kept`` kept all of them); ``images`` training images (the same ones for
    every layer), ``positions`` random output positions (or tokens) per image, ``ridge`` relative
    to the mean input variance. With ``residual``, a layer whose response enters a residual add
    is fitted so that the *sum* matches the original's: its target also makes up for the error the
    other operand (the skip stream, or a refitted branch) carries. ``original`` is not modified.
    The refitted model's BatchNorms hold the original's statistics (with the intercepts folded in),
    which is what the fit assumes: recalibrating them afterwards is not needed.

    After :func:`~neurotomy.surgery.filters.prune_filters`, ``kept`` comes from
    :func:`neurotomy.jobs.prune.kept_output_channels` (what ``neurotomy prune --reconstruct`` does):
    the result's ``cuts`` name only the removed channels of each cut's root layer, not what every
    coupled layer kept.

    Example:
        >>> from neurotomy.data import load_dataset
        >>> from neurotomy.jobs.prune import kept_output_channels
        >>> from neurotomy.models import build_model
        >>> from neurotomy.scores import get_criterion
        >>> from neurotomy.surgery.filters import prune_filters
        >>> original = build_model("lenet5", 1, 10, 8).eval()
        >>> result = prune_filters(original, get_criterion("l1")(original), ratio=0.5, input_shape=(1, 8, 8))
        >>> kept = kept_output_channels(original, result.model, result.cuts, (1, 8, 8))
        >>> done = reconstruct(original, result.model, load_dataset("digits"), kept, images=64, quiet=True)
        >>> done.layers[0], len(kept["features.0"]) == result.model.features[0].out_channels
        ('features.3', True)
    """
    images = validate.positive_int(images, "images")
    positions = validate.positive_int(positions, "positions")
    batch_size = validate.positive_int(batch_size, "batch_size")
    ridge = validate.non_negative_float(ridge, "ridge")
    seed = validate.seed(seed, "seed")
    start = time.perf_counter()
    with eval_mode(original), eval_mode(pruned):
        layers, skipped = _layers_to_refit(original, pruned, data, kept or {}, residual)
        result = Reconstruction([layer.name for layer in layers], {}, {},
                                {layer.name: layer.norm for layer in layers if layer.norm},
                                {layer.name: ":".join(layer.partner) for layer in layers if layer.partner}, skipped)
        chunks = _chunks(layers, min(images, len(data)), positions)
        # one order of images for every layer; positions differ from layer to layer, reproducibly
        batches = lambda: iterate_batches(data, batch_size, shuffle=True,  # noqa: E731
                                          generator=torch.Generator().manual_seed(seed), max_images=images)
        samplers = {layer.name: torch.Generator().manual_seed(seed * 1_000_003 + i) for i, layer in enumerate(layers)}
        with progress_bar(quiet) as bar:
            task = add_task(bar, "reconstruct", (len(chunks) + len(layers)) * num_batches(data, batch_size, images))
            advance = lambda: bar.advance(task)  # noqa: E731
            for chunk in chunks:
                targets = _original_targets(original, chunk, batches(), positions, samplers, advance)
                for layer in chunk:
                    eq = _equations(pruned, layer, batches(), targets.pop(layer.name), advance)
                    _refit(original, pruned, layer, eq, ridge, result)
                    result.images = eq.images
    result.seconds = time.perf_counter() - start
    return result


def _chunks(layers: list[_Layer], images: int, positions: int) -> list[list[_Layer]]:
    """Consecutive layers whose sampled original responses together fit in ``_TARGET_BYTES``."""
    chunks: list[list[_Layer]] = []
    size = 0
    for layer in layers:
        need = images * min(positions, layer.positions) * len(layer.kept) * 4
        if not chunks or size + need > _TARGET_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(layer)
        size += need
    return chunks


def _observe(model: nn.Module, x: torch.Tensor) -> dict[str, _Seen]:
    """Every module's first call on ``x``, in the order the calls finish."""
    seen: dict[str, _Seen] = {}

    def record(name, module, inputs, output):
        if name not in seen and inputs and isinstance(inputs[0], torch.Tensor):
            out_copy = output.detach().clone() if isinstance(output, torch.Tensor) else None
            seen[name] = _Seen(inputs[0], output, inputs[0].detach().clone(), out_copy)

    with Probe(model, [n for n, _ in model.named_modules() if n], on_module=record):
        model(to_device(model_device(model), x))
    return seen


def _layers_to_refit(original: nn.Module, pruned: nn.Module, data: Dataset, kept: Mapping[str, Sequence[int]],
                     residual: bool) -> tuple[list[_Layer], dict[str, str]]:
    """The pruned model's conv/linear layers, in the order a forward pass runs them, whose input
    differs from the original's on a few images; with the BatchNorm reading each one's output and
    the residual add it enters, if any."""
    x, _ = next(iter(iterate_batches(data, 4, max_images=4)))  # a few images tell which inputs changed, and the adds
    seen, reference = _observe(pruned, x), _observe(original, x)
    modules, ours = dict(pruned.named_modules()), dict(original.named_modules())
    readers = {id(s.inp): n for n, s in reversed(seen.items())}  # the first module reading each tensor
    layers, skipped = [], {}
    for name, s in seen.items():
        module = modules[name]
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        why = _cannot_refit(module, ours.get(name), name in reference)
        if why:
            skipped[name] = why
            continue
        ref = reference[name].inp_copy
        if s.inp_copy.shape == ref.shape and torch.allclose(s.inp_copy, ref.to(s.inp_copy), rtol=1e-5, atol=1e-6):
            continue  # the cut has not reached this layer: nothing to compensate
        norm = readers.get(id(s.out))
        norm = norm if isinstance(modules.get(norm), _BN) and isinstance(ours.get(norm), _BN) else None
        out = s.out_copy
        count = out[0, 0].numel() if isinstance(module, nn.Conv2d) else out[0].numel() // out.shape[-1]
        layer = _Layer(name, module, _kept_channels(name, module, ours[name], kept), norm, count)
        partner = _add_partner(seen, norm or name) if residual else None
        if partner is not None and partner[0] in reference:
            layer.partner, layer.scale = partner, _pre_norm_scale(ours.get(norm), layer.kept)
        layers.append(layer)
    return layers, skipped


def _add_partner(seen: dict[str, _Seen], source: str) -> tuple[str, str] | None:
    """Where the other operand of a residual add reading ``source``'s output is seen: the first
    module after it whose input — or whose own output (a block ending in the add) — is that output
    plus a tensor some module takes or gives (an add is a function, not a module, so it is found
    by its values). None when there is no such add."""
    a = seen[source].out_copy
    if a is None:
        return None
    scale = float(a.abs().max()) or 1.0
    makers: dict[int, str] = {}  # the first module to give each tensor
    for name, s in seen.items():
        makers.setdefault(id(s.out), name)
    names = list(seen)
    for name in names[names.index(source) + 1:]:
        s = seen[name]
        maker = makers.get(id(s.inp))
        sums = []
        if maker is None or not torch.equal(seen[maker].out_copy, s.inp_copy):  # made by a function (or in place)
            sums.append(s.inp_copy)
        if s.out_copy is not None and makers[id(s.out)] == name:  # made by this module's own code
            sums.append(s.out_copy)
        for total in sums:
            if total.shape != a.shape or float((total - a).abs().max()) <= 1e-6 * scale:
                continue
            found = _seen_as(seen, total - a, scale, exclude=(name, source))
            if found is not None:
                return found
    return None


def _seen_as(seen: dict[str, _Seen], value: torch.Tensor, scale: float,
             exclude: tuple[str, ...]) -> tuple[str, str] | None:
    """The earliest (module, "output" / "input") where ``value`` is seen."""
    for name, s in seen.items():
        for kind, candidate in (("output", s.out_copy), ("input", s.inp_copy)):
            if name not in exclude and candidate is not None and candidate.shape == value.shape \
                    and torch.allclose(candidate, value, rtol=1e-4, atol=1e-5 * scale):
                return name, kind
    return None


def _pre_norm_scale(norm: nn.Module | None, kept: torch.Tensor) -> torch.Tensor | None:
    """Per kept channel, what a unit after ``norm`` (eval mode) is worth before it: √(var + ε) / γ;
    None without a norm (the response is the layer's own output). A channel with γ ≈ 0 gets 0:
    nothing after the norm can be made up through it."""
    if norm is None:
        return None
    std = (norm.running_var.index_select(0, kept.to(norm.running_var.device)) + norm.eps).sqrt()
    if not norm.affine:
        return std
    gamma = norm.weight.detach().index_select(0, kept.to(std.device))
    safe = gamma.abs() > 1e-6 * float(norm.weight.detach().abs().max().clamp_min(1e-12))
    return torch.where(safe, std / torch.where(safe, gamma, torch.ones_like(gamma)), torch.zeros_like(std))


def _cannot_refit(module: nn.Module, twin: nn.Module | None, ran: bool) -> str | None:
    if twin is None or not ran:
        return "not in the original model"
    if isinstance(module, nn.Conv2d) and (module.groups != 1 or module.padding_mode != "zeros"):
        return "grouped or non-zero-padded convolution (its channels do not mix; left as cut)"
    if type(module) is not type(twin):
        return f"a {type(twin).__name__} in the original"
    return None


def _kept_channels(name: str, module: nn.Module, twin: nn.Module, kept: Mapping[str, Sequence[int]]) -> torch.Tensor:
    total, outputs = twin.weight.shape[0], module.weight.shape[0]
    if name not in kept:  # a layer not in kept kept all its outputs, so it must still have them all
        if outputs != total:
            raise ModelError(f"layer {name!r} has {outputs} of the original's {total} outputs and no kept channels "
                             f"were given for it; pass kept (for a prune_filters result: {KEPT_FOR_A_PRUNE})")
        return torch.arange(total)
    idxs = torch.as_tensor(list(kept[name]), dtype=torch.long)
    if len(idxs) != outputs or (len(idxs) and (idxs.min() < 0 or idxs.max() >= total)):
        raise ModelError(f"layer {name!r} has {outputs} outputs but kept[{name!r}] gives {len(idxs)} indices into the "
                         f"original's {total}; pass the kept channels of this cut (for a prune_filters result: "
                         f"{KEPT_FOR_A_PRUNE})")
    return idxs


def _run_until(model: nn.Module, wanted: list[tuple[str, str]], x: torch.Tensor) -> dict[tuple[str, str], torch.Tensor]:
    """The tensors ``(module name, "input" or "output")`` on ``x``; the forward pass stops as soon
    as the last of them is seen."""
    got: dict[tuple[str, str], torch.Tensor] = {}
    wanted = list(dict.fromkeys(wanted))

    def grab(name, module, inputs, output):
        for key in ((name, "input"), (name, "output")):
            if key in wanted and key not in got:
                got[key] = inputs[0] if key[1] == "input" else output
        if len(got) == len(wanted):
            raise _Stop

    with Probe(model, {name for name, _ in wanted}, on_module=grab):
        try:
            model(to_device(model_device(model), x))
        except _Stop:
            pass
    return got


def _operand(layer: _Layer, tensor: torch.Tensor, picks: torch.Tensor) -> torch.Tensor:
    """The add's other operand at the sampled positions, in the layer's pre-BatchNorm units."""
    rows = _targets(layer.module, tensor, picks)
    return rows if layer.scale is None else rows * layer.scale.to(rows)


def _original_targets(original: nn.Module, chunk: list[_Layer], batches, positions: int,
                      samplers: dict[str, torch.Generator], advance) -> dict[str, list[tuple]]:
    """For each layer of ``chunk`` and each batch: the sampled positions and the original's
    responses there on the kept channels, one row per (image, position) — plus, for a layer
    feeding a residual add, the original's other operand (the pruned one is subtracted later:
    the layer then makes up for the difference)."""
    wanted = [(layer.name, "output") for layer in chunk] + [layer.partner for layer in chunk if layer.partner]
    targets: dict[str, list] = {layer.name: [] for layer in chunk}
    for x, _ in batches:
        got = _run_until(original, wanted, x)
        for layer in chunk:
            axis = 1 if isinstance(layer.module, nn.Conv2d) else -1
            out = got[(layer.name, "output")]
            picks = _sample(len(x), layer.positions, positions, samplers[layer.name]).to(out.device)
            rows = _targets(layer.module, out.index_select(axis, layer.kept.to(out.device)), picks)
            if layer.partner:
                other = got[layer.partner]
                rows = rows + _operand(layer, other.index_select(axis, layer.kept.to(other.device)), picks)
            targets[layer.name].append((picks, rows))
        advance()
    return targets


def _equations(pruned: nn.Module, layer: _Layer, batches, targets: list[tuple[torch.Tensor, torch.Tensor]],
               advance) -> NormalEquations:
    """One layer's normal equations: the pruned model's inputs at the positions the targets were
    sampled at, against those targets (less the pruned model's own add operand, if any)."""
    module = layer.module
    eq = NormalEquations(module.weight[0].numel(), len(layer.kept), model_device(pruned))
    wanted = [(layer.name, "input")] + ([layer.partner] if layer.partner else [])
    for (x, _), (picks, target) in zip(batches, targets, strict=True):
        got = _run_until(pruned, wanted, x)
        inp = got[(layer.name, "input")]
        picks = picks.to(inp.device)
        rows = _rows(module, inp, picks)
        if layer.partner:
            target = target.to(rows) - _operand(layer, got[layer.partner], picks).to(rows)
        eq.add(rows, target.to(rows))
        eq.images += len(x)
        advance()
    return eq


def _sample(batch: int, count: int, positions: int, sampler: torch.Generator) -> torch.Tensor:
    """``positions`` distinct indices in ``range(count)`` per image (all of them when fewer)."""
    if count <= positions:
        return torch.arange(count).expand(batch, count)
    return torch.rand(batch, count, generator=sampler).argsort(1)[:, :positions]


def _rows(module: nn.Module, inp: torch.Tensor, picks: torch.Tensor) -> torch.Tensor:
    """The regression rows at the sampled output positions ``picks`` (batch × positions): input
    patches of a conv, input vectors (tokens) of a linear layer."""
    if isinstance(module, nn.Linear):
        tokens = inp.reshape(inp.shape[0], -1, inp.shape[-1])  # (batch, tokens, features)
        rows = tokens.gather(1, picks.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
        return rows.reshape(-1, tokens.shape[-1])
    batch, channels = inp.shape[:2]
    (kh, kw), (sh, sw), (dh, dw) = module.kernel_size, module.stride, module.dilation
    padded = F.pad(inp, _padding(module))
    width = (padded.shape[-1] - dw * (kw - 1) - 1) // sw + 1  # the conv's output width
    # flat index of every kernel tap of every sampled position: one gather, no unfolded copy of the map
    rows_at = (picks // width).unsqueeze(-1) * sh + torch.arange(kh, device=inp.device) * dh  # (batch, P, kh)
    cols_at = (picks % width).unsqueeze(-1) * sw + torch.arange(kw, device=inp.device) * dw  # (batch, P, kw)
    taps = (rows_at.unsqueeze(-1) * padded.shape[-1] + cols_at.unsqueeze(-2)).reshape(batch, 1, -1)
    patches = padded.flatten(2).gather(2, taps.expand(-1, channels, -1))  # (batch, C, P·kh·kw)
    patches = patches.reshape(batch, channels, picks.shape[1], kh * kw).transpose(1, 2)  # (batch, P, C, kh·kw)
    return patches.reshape(-1, channels * kh * kw)


def _padding(conv: nn.Conv2d) -> tuple[int, int, int, int]:
    """``F.pad`` widths (left, right, top, bottom) that reproduce the conv's own zero padding."""
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            return (0, 0, 0, 0)
        total = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size)]  # "same": extra on the far side
        return (total[1] // 2, total[1] - total[1] // 2, total[0] // 2, total[0] - total[0] // 2)
    ph, pw = conv.padding
    return (pw, pw, ph, ph)


def _targets(module: nn.Module, target: torch.Tensor, picks: torch.Tensor) -> torch.Tensor:
    """The original's outputs at the sampled positions, one row per (image, position)."""
    if isinstance(module, nn.Linear):
        tokens = target.reshape(target.shape[0], -1, target.shape[-1])
        return tokens.gather(1, picks.unsqueeze(-1).expand(-1, -1, tokens.shape[-1])).reshape(-1, tokens.shape[-1])
    flat = target.flatten(2)  # (batch, channels, positions)
    return flat.gather(2, picks.unsqueeze(1).expand(-1, flat.shape[1], -1)).transpose(1, 2).reshape(-1, flat.shape[1])


def _refit(original: nn.Module, pruned: nn.Module, layer: _Layer, eq: NormalEquations, ridge: float,
           result: Reconstruction) -> None:
    """Solve one layer's equations and write the weights (and intercept) into ``pruned``."""
    module = layer.module
    current = module.weight.reshape(module.weight.shape[0], -1).T
    norm = pruned.get_submodule(layer.norm) if layer.norm else None
    twin_norm = dict(original.named_modules()).get(layer.norm) if layer.norm else None
    folds = module.bias is None and isinstance(norm, _BN) and norm.track_running_stats and isinstance(twin_norm, _BN)
    intercept = module.bias is not None or folds
    result.error_before[layer.name] = eq.relative_error(current, module.bias)
    weight, bias = eq.solve(ridge, prior=current, intercept=intercept)
    result.error_after[layer.name] = eq.relative_error(weight, bias)
    module.weight.copy_(weight.T.reshape(module.weight.shape).to(module.weight))
    if module.bias is not None:
        module.bias.copy_(bias.to(module.bias))
    elif folds:
        # BN(z + b) with the original's statistics is BN(z) with the running mean shifted by b
        kept = layer.kept.to(norm.running_mean.device)
        norm.running_mean.copy_(twin_norm.running_mean.index_select(0, kept) - bias.to(norm.running_mean))
        norm.running_var.copy_(twin_norm.running_var.index_select(0, kept))


def layer_errors(original: nn.Module, model: nn.Module, data: Dataset, layers: Sequence[str],
                 kept: Mapping[str, Sequence[int]] | None = None, images: int = 256,
                 batch_size: int = 128) -> dict[str, float]:
    """Each named layer's relative error ``Σ‖ŷ − y‖² / Σ‖y − ȳ‖²`` against ``original``'s output
    on the kept channels (``kept`` as in :func:`reconstruct`), over the first ``images`` images,
    both models running whole. Name the BatchNorm after a refitted bias-free conv to compare what
    the fit targets (the conv's intercept lives in that BatchNorm's running mean).

    Example:
        >>> from neurotomy.data import load_dataset
        >>> from neurotomy.models import build_model
        >>> m = build_model("lenet5", 1, 10, 8).eval()
        >>> layer_errors(m, m, load_dataset("digits"), ["features.0"], images=16)
        {'features.0': 0.0}
    """
    kept = kept or {}
    totals = {name: [0.0, 0.0, 0] for name in layers}  # Σ(ŷ − y)², Σy², rows
    sums: dict[str, torch.Tensor] = {}  # Σ_rows y per channel
    with torch.no_grad(), eval_mode(original), eval_mode(model):
        for x, _ in iterate_batches(data, batch_size, max_images=images):
            ours = _outputs(model, layers, x)
            theirs = _outputs(original, layers, x)
            for name in layers:
                y, y_hat = _as_rows(theirs[name], name, kept), _as_rows(ours[name], None, {})
                total = totals[name]
                total[0] += float(((y_hat.to(y) - y) ** 2).sum())
                total[1] += float((y ** 2).sum())
                total[2] += len(y)
                sums[name] = sums.get(name, 0) + y.sum(0)
    result = {}
    for name, (error, square, rows) in totals.items():
        spread = square - float((sums[name] ** 2).sum()) / max(rows, 1)
        result[name] = error / max(spread, 1e-12)
    return result


def _outputs(model: nn.Module, layers: Sequence[str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    got: dict[str, torch.Tensor] = {}
    with Probe(model, layers, on_output=lambda name, out: got.setdefault(name, out.detach().clone())):
        model(to_device(model_device(model), x))
    return got


def _as_rows(output: torch.Tensor, name: str | None, kept: Mapping[str, Sequence[int]]) -> torch.Tensor:
    """A layer's output as float64 rows (image × position) by channels (the last axis of a
    sequence or vector, axis 1 of a feature map), on the kept channels of ``name``."""
    rows = output.movedim(1, -1) if output.dim() > 2 and output.dim() != 3 else output
    rows = rows.reshape(-1, rows.shape[-1]).double()
    if name in kept:
        rows = rows.index_select(1, torch.as_tensor(list(kept[name]), device=rows.device))
    return rows


__all__ = ["NormalEquations", "Reconstruction", "layer_errors", "reconstruct"]
