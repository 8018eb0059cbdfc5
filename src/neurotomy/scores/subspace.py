"""Relevant subspaces of one layer — PRCA and DRSA (Chormai, Herrmann, Müller & Montavon,
"Disentangled Explanations of Neural Network Predictions by Finding Relevant Subspaces", IEEE TPAMI
2024, arXiv 2212.14855) — with PCA and random directions as controls.

The units here are *directions* of one layer's activation space, not its channels (unit kind
``"subspace"``). A conv layer's channels are the dimensions and its positions the samples; a token
layer (``N × tokens × d``) has its tokens as positions; a flat ``N × d`` output has one position. A 4-D
map is ``N × d × H × W`` unless the module that produced it works on its last axis (timm's Swin, ConvNeXt
blocks: ``N × H × W × d``), which :class:`MapLayouts` reads from the modules in the same forward pass.

**Relevance** is gradient × activation. For an image with target class t and the activation vector
a_p at each position p, the *context* is c_p = ∂y_t/∂a_p and the image's relevance is Σ_p a_pᵀc_p —
the paper's formulation R = aᵀc with the context of gradient × input instead of its LRP context
(we have no LRP rules; both give R = aᵀc, the LRP context is a modified gradient). A subspace with
orthonormal basis U_k (d × m) receives R_k = Σ_p (U_kᵀa_p)ᵀ(U_kᵀc_p); subspaces that together span
the space share the relevance exactly (Σ_k R_k = Σ_p a_pᵀc_p).

* **PRCA** (§3.1): the k orthonormal directions U maximising the mean relevance tr(UᵀMU), M the
  per-image cross-moment Σ_p a_pc_pᵀ averaged over images — the top-k eigenvectors of (M + Mᵀ)/2,
  in closed form. Its eigenvalues are the *relevance spectrum* (they sum to the total relevance).
* **DRSA** (§3.2): K subspaces of m dimensions, maximising the soft-min over subspaces of the
  soft-max over samples of each subspace's positive relevance: J(U) = M_{1/q,k}( M_{2,s}((R_{s,k})₊) ),
  M_r the power mean (r = 2 over samples; r = 1/q over subspaces, q = 2 by default). Our optimiser
  is Riemannian gradient ascent on the Stiefel manifold (tangent projection, polar retraction,
  Armijo backtracking), so every accepted step raises J; the authors take plain gradient steps
  followed by a symmetric orthogonalisation U(UᵀU)^{-1/2}, which need not. DRSA's samples are
  (image, position) pairs, ``positions`` drawn at random per image (seeded).
* **PCA** (control): the top-k eigenvectors of the activations' covariance — variance, not relevance.

**Heatmaps** (relevance flowing through subspace k back to the input): gradient × input of the
target logit with the gradient at the layer replaced by its projection U_kU_kᵀg — the backward pass
of a virtual layer a ↦ Σ_k U_kU_kᵀa inserted at the layer, as the paper inserts one for LRP. The
maps of subspaces spanning the space (plus the ``rest``, the orthogonal complement) sum to the plain
gradient × input map exactly.

Example:
    >>> from neurotomy.loading import load_model
    >>> from neurotomy.data import load_dataset
    >>> model, data = load_model("zoo:lenet5-digits"), load_dataset("digits", split="test")
    >>> s = score_subspaces(model, data, "features.3", "prca", subspaces=4, max_images=64, quiet=True)
    >>> tuple(s["features.3"].shape), s.info["unit"], len(bases_of(s)), tuple(bases_of(s)[0].shape)
    ((4,), 'subspace', 4, (16, 1))
    >>> bool(s["features.3"][0] >= s["features.3"][1])
    True
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset

from neurotomy import validate
from neurotomy.data.batches import iterate_batches, num_batches
from neurotomy.device import model_device, to_device
from neurotomy.errors import ModelError, NeurotomyError
from neurotomy.models.anatomy import eval_mode
from neurotomy.models.map_layouts import MapLayouts
from neurotomy.probe import Probe
from neurotomy.progress import add_task, progress_bar
from neurotomy.registry import Registry
from neurotomy.scores.unit_scores import UnitScores

UNIT = "subspace"
TARGETS = ("label", "predicted")  # which logit's relevance: the image's true class or the model's choice
LAYOUTS = ("channels_first", "channels_last")  # N × d × H × W (conv), or N × … × d (tokens, flat)
DEFAULT_IMAGES = 640


# --------------------------------------------------------------------------------------------------
# channel vectors of a layer output


def layout_of(output: torch.Tensor, last_axis: bool | None = None) -> str:
    """``channels_last`` for tokens or flat features; for a 4-D output ``channels_first`` (a conv's
    N × d × H × W) unless ``last_axis`` says its module computed it over the last axis (N × H × W × d, as
    :class:`MapLayouts` finds for Swin and ConvNeXt blocks) — ``None`` or False: channels-first.

    Example:
        >>> layout_of(torch.zeros(2, 4, 4, 8)), layout_of(torch.zeros(2, 4, 4, 8), True), layout_of(torch.zeros(2, 8))
        ('channels_first', 'channels_last', 'channels_last')
    """
    if output.dim() not in (2, 3, 4):
        raise ModelError(f"a layer output of shape {tuple(output.shape)} has no channel vectors; choose a conv, "
                         "token or linear layer")
    return "channels_first" if output.dim() == 4 and not last_axis else "channels_last"


def checked_layout(output: torch.Tensor, layout: str | None) -> str:
    """``layout`` checked against ``output`` (``None``: :func:`layout_of` with no module to ask)."""
    found = layout_of(output)
    if layout is None:
        return found
    validate.known_name(layout, "layout", names=LAYOUTS, kind="layout")
    return layout if output.dim() == 4 else found  # tokens and flat features have one reading


def channel_rows(output: torch.Tensor, layout: str | None = None) -> torch.Tensor:
    """``N × positions × d``: one channel vector per position (a conv's pixels, a transformer's tokens);
    a 4-D ``output`` is read as ``layout`` (default channels-first, see :func:`layout_of`).

    Example:
        >>> tuple(channel_rows(torch.zeros(2, 5, 3, 4)).shape), tuple(channel_rows(torch.zeros(2, 7)).shape)
        ((2, 12, 5), (2, 1, 7))
        >>> tuple(channel_rows(torch.zeros(2, 5, 3, 4), "channels_last").shape)
        (2, 15, 4)
    """
    layout = checked_layout(output, layout)
    if output.dim() == 4:
        return output.flatten(1, 2) if layout == "channels_last" else output.flatten(2).transpose(1, 2)
    return output if output.dim() == 3 else output[:, None]


def channels_last(output: torch.Tensor, layout: str | None = None) -> torch.Tensor:
    """The tensor with its channel axis last (axis 1 of a channels-first map moved; others as they are)."""
    return output.movedim(1, -1) if checked_layout(output, layout) == "channels_first" else output


def channels_back(moved: torch.Tensor, layout: str) -> torch.Tensor:
    """Undo :func:`channels_last` for a tensor of ``layout``."""
    return moved.movedim(-1, 1) if layout == "channels_first" else moved


def check_orthonormal(basis: torch.Tensor, channels: int | None = None, what: str = "basis") -> torch.Tensor:
    """``basis`` as float64 ``d × m`` with orthonormal columns (m ≤ d), else a :class:`NeurotomyError`."""
    basis = torch.as_tensor(basis).detach().double().cpu()
    if basis.dim() != 2 or basis.shape[1] == 0 or basis.shape[1] > basis.shape[0]:
        raise NeurotomyError(f"the {what} has shape {tuple(basis.shape)}; give a d × m matrix with 1 ≤ m ≤ d columns")
    if channels is not None and basis.shape[0] != channels:
        raise NeurotomyError(f"the {what} has {basis.shape[0]} rows but the layer has {channels} channels; find the "
                             "subspaces on this layer")
    gram = basis.T @ basis
    if not torch.allclose(gram, torch.eye(basis.shape[1], dtype=gram.dtype), atol=1e-5):
        raise NeurotomyError(f"the {what}'s columns are not orthonormal (max |UᵀU − I| = "
                             f"{float((gram - torch.eye(len(gram), dtype=gram.dtype)).abs().max()):.2g}); "
                             "orthonormalise it (torch.linalg.qr)")
    return basis


def orthonormal_complement(basis: torch.Tensor) -> torch.Tensor:
    """An orthonormal basis ``d × (d − m)`` of the directions ``basis`` (``d × m``) does not span.

    Example:
        >>> c = orthonormal_complement(torch.eye(4)[:, :1])
        >>> tuple(c.shape), float(c[0].abs().max())
        ((4, 3), 0.0)
    """
    basis = check_orthonormal(basis)
    d, m = basis.shape
    if m == d:
        return basis.new_zeros(d, 0)
    eigenvalues, vectors = torch.linalg.eigh(torch.eye(d, dtype=basis.dtype) - basis @ basis.T)
    return vectors[:, eigenvalues.argsort(descending=True)[: d - m]]


# --------------------------------------------------------------------------------------------------
# observing one layer: activations and their contexts


@dataclass
class LayerRelevance:
    """What one layer showed on data: sums over images and positions (float64) and sampled rows.

    ``cross`` = Σ a cᵀ (relevance cross-moment), ``second`` = Σ a aᵀ and ``total`` = Σ a over all
    positions of ``images`` images (``rows`` positions in all); ``activations`` and ``contexts`` are
    the sampled (image, position) rows DRSA optimises on.
    """

    layer: str
    layout: str
    images: int
    rows: int
    cross: torch.Tensor
    second: torch.Tensor
    total: torch.Tensor
    activations: torch.Tensor
    contexts: torch.Tensor
    target: str = "label"

    @property
    def channels(self) -> int:
        return self.cross.shape[0]

    @property
    def relevance_matrix(self) -> torch.Tensor:
        """(M + Mᵀ)/2 with M the mean per image of Σ_p a_pc_pᵀ: tr(UᵀMU) is the relevance U captures."""
        mean = self.cross / max(1, self.images)
        return (mean + mean.T) / 2

    @property
    def mean(self) -> torch.Tensor:
        """Mean activation vector over all positions of all images."""
        return self.total / max(1, self.rows)

    @property
    def covariance(self) -> torch.Tensor:
        mean = self.mean
        return self.second / max(1, self.rows) - torch.outer(mean, mean)

    @property
    def total_relevance(self) -> float:
        """Mean relevance per image, Σ_p a_pᵀc_p."""
        return float(torch.trace(self.cross)) / max(1, self.images)

    def relevance(self, basis: torch.Tensor) -> float:
        """Mean relevance per image that the subspace spanned by ``basis`` (d × m) receives."""
        basis = check_orthonormal(basis, self.channels)
        return float(torch.trace(basis.T @ self.relevance_matrix @ basis))

    def variance(self, basis: torch.Tensor) -> float:
        """Variance of the activations within the subspace spanned by ``basis``."""
        basis = check_orthonormal(basis, self.channels)
        return float(torch.trace(basis.T @ self.covariance @ basis))


def target_logits(logits: torch.Tensor, labels: torch.Tensor, target: str) -> torch.Tensor:
    """Each image's logit for its label (``target="label"``) or its predicted class, summed: one
    backward pass gives every image the gradient of its own logit."""
    classes = labels if target == "label" else logits.argmax(1)
    return logits.gather(1, classes.view(-1, 1).to(logits.device)).sum()


def parameter_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of the model's parameters (float32 for a model without any): what its inputs take."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def check_target(target: str) -> str:
    return validate.known_name(target, "target", names=TARGETS, kind="target")


def observe_layer(model: nn.Module, data: Dataset, layer: str, *, target: str = "label",
                  max_images: int | None = DEFAULT_IMAGES, batch_size: int = 128, positions: int = 16, seed: int = 0,
                  quiet: bool = False) -> LayerRelevance:
    """Stream ``max_images`` images of ``data`` (shuffled, seeded) through ``model`` and collect, at
    the output of module ``layer``, the activations a and their contexts c = ∂y_t/∂a.

    Example:
        >>> from neurotomy.loading import load_model
        >>> from neurotomy.data import load_dataset
        >>> stats = observe_layer(load_model("zoo:lenet5-digits"), load_dataset("digits"), "features.3",
        ...                       max_images=32, positions=4, quiet=True)
        >>> stats.channels, stats.images, tuple(stats.activations.shape)
        (16, 32, (128, 16))
    """
    check_target(target)
    batch_size = validate.positive_int(batch_size, "batch_size")
    positions = validate.positive_int(positions, "positions")
    if max_images is not None:
        max_images = validate.positive_int(max_images, "max_images")
    if layer not in dict(model.named_modules()):
        raise ModelError(f"model has no layer {layer!r}; see `neurotomy info` for layer names")
    generator = torch.Generator().manual_seed(seed)
    state: dict = {"images": 0, "rows": 0, "a": [], "c": []}
    layouts = MapLayouts()  # a Swin or ConvNeXt block's 4-D map can be N × H × W × d: ask the modules

    def on_grad(_: str, output: torch.Tensor, grad: torch.Tensor) -> None:
        layout = layout_of(output, layouts.channels_last.get(layer))
        a, c = channel_rows(output.detach(), layout).double(), channel_rows(grad.detach(), layout).double()
        for key, value in (("cross", torch.einsum("npi,npj->ij", a, c)),
                           ("second", torch.einsum("npi,npj->ij", a, a)), ("total", a.sum((0, 1)))):
            state[key] = state[key] + value.cpu() if key in state else value.cpu()
        state["layout"] = layout
        state["rows"] += a.shape[0] * a.shape[1]
        pick = torch.rand(a.shape[0], a.shape[1], generator=generator).argsort(1)[:, :positions].to(a.device)
        for key, rows in (("a", a), ("c", c)):
            state[key].append(rows.gather(1, pick[:, :, None].expand(-1, -1, a.shape[2])).flatten(0, 1).float().cpu())

    where, dtype = model_device(model), parameter_dtype(model)
    with eval_mode(model), progress_bar(quiet) as bar, layouts.watch(model), Probe(model, [layer], on_grad=on_grad):
        task = add_task(bar, f"observe {layer}", num_batches(data, batch_size, max_images))
        for images, labels in iterate_batches(data, batch_size, shuffle=True, generator=generator,
                                              max_images=max_images):
            images, labels = to_device(where, images.to(dtype), labels)
            images = images.requires_grad_(True)  # the layer's output needs a gradient even if frozen
            with torch.enable_grad():
                torch.autograd.grad(target_logits(model(images), labels, target), images)
            state["images"] += len(images)
            bar.advance(task)
    if "cross" not in state:
        raise ModelError(f"layer {layer!r} got no gradient: it does not lie between the input and the logits")
    return LayerRelevance(layer, state["layout"], state["images"], state["rows"], state["cross"], state["second"],
                          state["total"], torch.cat(state["a"]), torch.cat(state["c"]), target)


# --------------------------------------------------------------------------------------------------
# finding directions and subspaces


def prca_basis(cross: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """PRCA in closed form: the top-``k`` eigenvectors (``d × k``) of the symmetrised cross-moment
    (M + Mᵀ)/2 and their eigenvalues (the relevance each direction captures), largest first.

    Example:
        >>> basis, spectrum = prca_basis(torch.diag(torch.tensor([1.0, 3.0, -2.0])), 2)
        >>> basis.abs().argmax(0).tolist(), spectrum.tolist()
        ([1, 0], [3.0, 1.0])
    """
    cross = torch.as_tensor(cross).double()
    eigenvalues, vectors = torch.linalg.eigh((cross + cross.T) / 2)
    order = eigenvalues.argsort(descending=True)[:k]
    return vectors[:, order], eigenvalues[order]


def pca_basis(covariance: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The top-``k`` principal directions of ``covariance`` and their variances, largest first."""
    return prca_basis(covariance, k)  # the same eigenproblem on a symmetric matrix


def random_basis(d: int, k: int, seed: int = 0) -> torch.Tensor:
    """``k`` random orthonormal directions in ``d`` dimensions (QR of a seeded Gaussian matrix)."""
    gaussian = torch.randn(d, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    return q * torch.sign(torch.diagonal(r))  # the sign fix makes the draw Haar-uniform


def drsa_objective(activations: torch.Tensor, contexts: torch.Tensor, basis: torch.Tensor, subspaces: int,
                   order: float = 2.0, eps: float = 1e-12) -> torch.Tensor:
    """DRSA's objective (§3.2): soft-min over the ``subspaces`` of the soft-max (power mean 2) over
    samples of each subspace's positive relevance (U_kᵀa)ᵀ(U_kᵀc); soft-min = power mean 1/``order``.
    ``eps`` keeps the square root differentiable where a subspace has no positive relevance."""
    n, size = activations.shape[0], basis.shape[1] // subspaces
    relevance = ((activations @ basis) * (contexts @ basis)).view(n, subspaces, size).sum(2)
    pooled = (relevance.clamp(min=0).pow(2).mean(0) + eps).sqrt()
    return pooled.pow(1.0 / order).mean().pow(order)


@dataclass
class DRSAFit:
    """DRSA's result: the basis ``d × (K·m)`` (subspace k = columns k·m … (k+1)·m − 1), the objective
    after every accepted step of the best restart, and how many steps it took."""

    basis: torch.Tensor
    subspaces: int
    history: list[float] = field(default_factory=list)

    @property
    def bases(self) -> list[torch.Tensor]:
        return list(self.basis.split(self.basis.shape[1] // self.subspaces, dim=1))


def _polar(matrix: torch.Tensor) -> torch.Tensor:
    """The nearest matrix with orthonormal columns (the polar factor): the Stiefel retraction."""
    u, _, vh = torch.linalg.svd(matrix, full_matrices=False)
    return u @ vh


def _ascend(objective: Callable[[torch.Tensor], torch.Tensor], basis: torch.Tensor, steps: int,
            tolerance: float) -> list[float]:
    """Riemannian gradient ascent from ``basis`` (updated in place); returns J after every accepted step."""
    history, step = [float(objective(basis))], None
    for _ in range(steps):
        point = basis.detach().requires_grad_(True)
        value = objective(point)
        (gradient,) = torch.autograd.grad(value, point)
        value = float(value.detach())
        # the Riemannian gradient (embedded metric): remove the part that leaves the tangent space
        tangent = gradient - basis @ ((basis.T @ gradient + gradient.T @ basis) / 2)
        norm = float(tangent.norm())
        if norm < 1e-12:
            break
        step = 0.5 / norm if step is None else step
        with torch.no_grad():
            while step * norm > 1e-10:  # Armijo backtracking: accept only a sufficient increase
                candidate = _polar(basis + step * tangent)
                new = float(objective(candidate))
                if new >= value + 1e-4 * step * norm ** 2:
                    break
                step /= 2
            else:
                break
        basis.copy_(candidate)
        history.append(new)
        step *= 2
        if new - value <= tolerance * abs(value):
            break
    return history


def drsa(activations: torch.Tensor, contexts: torch.Tensor, subspaces: int, size: int, *, order: float = 2.0,
         steps: int = 300, restarts: int = 3, tolerance: float = 1e-7, seed: int = 0) -> DRSAFit:
    """DRSA: ``subspaces`` orthogonal subspaces of ``size`` dimensions maximising
    :func:`drsa_objective` on the sample rows ``activations`` and ``contexts`` (``S × d``); the best
    of ``restarts`` random orthonormal starts (seeded). The objective never decreases along
    ``history`` (Armijo backtracking on the Stiefel manifold, see the module docstring).

    Example:
        >>> a = torch.randn(200, 4, generator=torch.Generator().manual_seed(0)); c = a.clone()
        >>> fit = drsa(a, c, subspaces=2, size=2, steps=20)
        >>> tuple(fit.basis.shape), bool(torch.allclose(fit.basis.T @ fit.basis, torch.eye(4, dtype=torch.float64)))
        ((4, 4), True)
    """
    subspaces, size = validate.positive_int(subspaces, "subspaces"), validate.positive_int(size, "size")
    activations, contexts = torch.as_tensor(activations).double(), torch.as_tensor(contexts).double()
    if activations.dim() != 2 or activations.shape != contexts.shape or len(activations) == 0:
        raise NeurotomyError(f"DRSA needs activations and contexts of the same shape S × d, got "
                             f"{tuple(activations.shape)} and {tuple(contexts.shape)}")
    d = activations.shape[1]
    if subspaces * size > d:
        raise NeurotomyError(f"{subspaces} subspaces of {size} dimensions need {subspaces * size} dimensions; the "
                             f"layer has {d}: ask for fewer or smaller subspaces")
    # unit RMS rows: step sizes and eps do not depend on the layer's scale; J is scaled back below
    scale_a = float(activations.pow(2).sum(1).mean().sqrt()) or 1.0
    scale_c = float(contexts.pow(2).sum(1).mean().sqrt()) or 1.0
    a, c = activations / scale_a, contexts / scale_c

    def objective(basis: torch.Tensor) -> torch.Tensor:
        return drsa_objective(a, c, basis, subspaces, order)

    best: DRSAFit | None = None
    for restart in range(validate.positive_int(restarts, "restarts")):
        basis = random_basis(d, subspaces * size, seed=seed * 1009 + restart)
        history = [v * scale_a * scale_c for v in _ascend(objective, basis, steps, tolerance)]
        if best is None or history[-1] > best.history[-1]:
            best = DRSAFit(basis.detach(), subspaces, history)
    return best


SUBSPACE_METHODS: Registry = Registry("subspace method", hint="(prca, drsa; pca and random are controls)")
"""How to find subspaces of one layer, by name: ``fn(stats, subspaces, size, seed, **options)`` →
a list of ``subspaces`` orthonormal bases ``d × size``, in the method's order (most relevant or most
varied first)."""


def _directions(basis: torch.Tensor, subspaces: int, size: int) -> list[torch.Tensor]:
    return list(basis[:, : subspaces * size].split(size, dim=1))


@SUBSPACE_METHODS.register("prca", paper="Chormai et al., TPAMI 2024, PRCA (closed form, gradient × activation)")
def prca_subspaces(stats: LayerRelevance, subspaces: int, size: int = 1, seed: int = 0) -> list[torch.Tensor]:
    """Consecutive groups of ``size`` PRCA directions, most relevant first."""
    return _directions(prca_basis(stats.cross, subspaces * size)[0], subspaces, size)


@SUBSPACE_METHODS.register("drsa", paper="Chormai et al., TPAMI 2024, DRSA (Stiefel ascent, gradient × activation)")
def drsa_subspaces(stats: LayerRelevance, subspaces: int, size: int = 1, seed: int = 0,
                   **options) -> list[torch.Tensor]:
    """DRSA's subspaces, ordered by the relevance each receives (largest first)."""
    bases = drsa(stats.activations, stats.contexts, subspaces, size, seed=seed, **options).bases
    return sorted(bases, key=stats.relevance, reverse=True)


@SUBSPACE_METHODS.register("pca", paper="control: principal components of the activations (variance)")
def pca_subspaces(stats: LayerRelevance, subspaces: int, size: int = 1, seed: int = 0) -> list[torch.Tensor]:
    return _directions(pca_basis(stats.covariance, subspaces * size)[0], subspaces, size)


@SUBSPACE_METHODS.register("random", paper="control: random orthonormal directions")
def random_subspaces(stats: LayerRelevance, subspaces: int, size: int = 1, seed: int = 0) -> list[torch.Tensor]:
    return _directions(random_basis(stats.channels, subspaces * size, seed), subspaces, size)


def find_subspaces(stats: LayerRelevance, method: str = "prca", subspaces: int = 8, size: int = 1, seed: int = 0,
                   **options) -> list[torch.Tensor]:
    """``subspaces`` orthonormal bases ``d × size`` of ``stats``'s layer by ``method``
    (:data:`SUBSPACE_METHODS`); together they never need more than the layer's ``d`` dimensions."""
    subspaces, size = validate.positive_int(subspaces, "subspaces"), validate.positive_int(size, "size")
    if subspaces * size > stats.channels:
        raise NeurotomyError(f"{subspaces} subspaces of {size} dimensions need {subspaces * size} dimensions; layer "
                             f"{stats.layer!r} has {stats.channels}: ask for fewer or smaller subspaces")
    return SUBSPACE_METHODS.get(method)(stats, subspaces, size, seed=seed, **options)


# --------------------------------------------------------------------------------------------------
# scores over the unit kind "subspace"


def subspace_scores(stats: LayerRelevance, bases: Sequence[torch.Tensor], method: str = "",
                    info: dict | None = None) -> UnitScores:
    """:class:`UnitScores` of the unit kind ``"subspace"``: ``{layer: mean relevance per image of each
    subspace}``, the bases (``info["basis"]``: one ``d × m`` nested list per subspace), the mean
    activation (``info["mean"]``), each subspace's ``variance`` and ``relevance_share`` of the total.
    Read the bases back with :func:`bases_of`."""
    bases = [check_orthonormal(b, stats.channels) for b in bases]
    relevance = torch.tensor([stats.relevance(b) for b in bases], dtype=torch.float64)
    total = stats.total_relevance
    return UnitScores({stats.layer: relevance}, criterion=method, info={
        "unit": UNIT, "layer": stats.layer, "layout": stats.layout, "target": stats.target, "images": stats.images,
        "basis": [b.tolist() for b in bases], "mean": stats.mean.tolist(),
        "variance": [stats.variance(b) for b in bases], "total_relevance": total,
        "relevance_share": [float(r) / total if total else 0.0 for r in relevance], **(info or {})})


def bases_of(scores: UnitScores) -> list[torch.Tensor]:
    """The subspace bases (float64 ``d × m`` each) stored in subspace scores."""
    if scores.info.get("unit") != UNIT or "basis" not in scores.info:
        raise NeurotomyError(f"scores of {scores.criterion!r} are not subspace scores; make them with score_subspaces")
    return [torch.tensor(b, dtype=torch.float64) for b in scores.info["basis"]]


def score_subspaces(model: nn.Module, data: Dataset, layer: str, method: str = "prca", *, subspaces: int = 8,
                    size: int = 1, target: str = "label", max_images: int | None = DEFAULT_IMAGES,
                    batch_size: int = 128, positions: int = 16, seed: int = 0, quiet: bool = False,
                    **options) -> UnitScores:
    """Observe ``layer`` on ``data`` (:func:`observe_layer`), find ``subspaces`` subspaces of ``size``
    dimensions by ``method`` and score each by the relevance it receives (:func:`subspace_scores`).
    ``options`` go to the method (DRSA: ``order``, ``steps``, ``restarts``)."""
    SUBSPACE_METHODS.get(method)
    start = time.perf_counter()
    stats = observe_layer(model, data, layer, target=target, max_images=max_images, batch_size=batch_size,
                          positions=positions, seed=seed, quiet=quiet)
    bases = find_subspaces(stats, method, subspaces, size, seed=seed, **options)
    return subspace_scores(stats, bases, method, {"paper": SUBSPACE_METHODS.tags(method)["paper"],
                                                  "seconds": time.perf_counter() - start})


# --------------------------------------------------------------------------------------------------
# heatmaps: relevance flowing through part of a layer back to the input


def input_leaf(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """A fresh leaf copy of ``inputs`` on the model's device that requires grad: differentiating
    w.r.t. it (not the parameters) leaves every parameter's ``.grad`` untouched."""
    dtype = inputs.dtype if inputs.is_floating_point() else torch.float32
    return inputs.detach().to(device=model_device(model), dtype=dtype).requires_grad_(True)


def relevance_through(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, layer: str,
                      transform: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Gradient × input (``N × C × H × W``) of each image's ``targets`` logit, with the gradient at
    the output of ``layer`` replaced by ``transform(gradient)`` (its channel axis last) on the way
    down. A linear ``transform`` makes the maps add up: transforms summing to the identity give maps
    summing to the plain gradient × input."""
    x = input_leaf(model, inputs)
    seen = []
    layouts = MapLayouts()

    def on_grad(_: str, output: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        seen.append(True)
        layout = layout_of(output, layouts.channels_last.get(layer))
        return channels_back(transform(channels_last(grad, layout)), layout).to(grad.dtype)

    with eval_mode(model), layouts.watch(model), Probe(model, [layer], on_grad=on_grad), torch.enable_grad():
        logits = model(x)
        (gradient,) = torch.autograd.grad(logits.gather(1, targets.view(-1, 1).to(logits.device)).sum(), x)
    if not seen:
        raise ModelError(f"layer {layer!r} got no gradient: it does not lie between the input and the logits")
    return (x * gradient).detach().to(inputs.device)


def subspace_heatmaps(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, layer: str,
                      bases: Sequence[torch.Tensor], *, rest: bool = True) -> torch.Tensor:
    """Per image and subspace, the input relevance flowing through that subspace of ``layer``
    (``N × K × C × H × W``; with ``rest`` one more map for the orthogonal complement of all ``bases``,
    so the K + 1 maps sum to the plain gradient × input). ``bases`` must be mutually orthogonal.

    Example:
        >>> from neurotomy.loading import load_model
        >>> model, x = load_model("zoo:lenet5-digits"), torch.randn(2, 1, 8, 8)
        >>> maps = subspace_heatmaps(model, x, torch.tensor([0, 1]), "features.3", [torch.eye(16)[:, :4].double()])
        >>> tuple(maps.shape)
        (2, 2, 1, 8, 8)
    """
    basis = check_orthonormal(torch.cat([torch.as_tensor(b).double() for b in bases], 1), what="joint basis")
    projectors = [b @ b.T for b in (torch.as_tensor(b).double() for b in bases)]
    if rest:
        projectors.append(torch.eye(basis.shape[0], dtype=torch.float64) - basis @ basis.T)
    maps = []
    for projector in projectors:
        def transform(grad: torch.Tensor, p: torch.Tensor = projector) -> torch.Tensor:
            if grad.shape[-1] != p.shape[0]:
                raise NeurotomyError(f"the subspaces have {p.shape[0]} dimensions but layer {layer!r} has "
                                     f"{grad.shape[-1]} channels; find them on this layer")
            return grad @ p.to(device=grad.device, dtype=grad.dtype)
        maps.append(relevance_through(model, inputs, targets, layer, transform))
    return torch.stack(maps, 1)


__all__ = ["DEFAULT_IMAGES", "DRSAFit", "LAYOUTS", "LayerRelevance",
           "SUBSPACE_METHODS", "TARGETS", "UNIT", "bases_of", "channel_rows", "channels_back", "channels_last",
           "check_orthonormal", "checked_layout", "drsa", "drsa_objective",
           "find_subspaces", "input_leaf", "layout_of", "observe_layer", "orthonormal_complement", "parameter_dtype",
           "pca_basis", "prca_basis", "random_basis", "relevance_through", "score_subspaces", "subspace_heatmaps",
           "subspace_scores", "target_logits"]
