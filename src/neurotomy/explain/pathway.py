"""Pathway gradient — input-specific pruning (Khakzar et al., "Neural Response Interpretation
through the Lens of Critical Pathways", CVPR 2021; arXiv 1911.11081).

For one input, score every output element of every activation module — ReLU in the paper; any
element-wise activation here (GELU, SiLU, Hardswish, LeakyReLU, …, see :func:`is_activation`) —
(channel × position; a module called twice is two layers) by its contribution to the explained logit, s = |a · ∂y_c/∂a| (NeuronMCT), or
the integrated variant s = |a · mean_α ∂y_c/∂(αa)| with one layer's activations scaled by
α ∈ {0, 0.1, …, 1}. Keep the top (1 − p) of all units of all layers together, zero the rest through
multiplicative masks on the activation outputs (weights untouched, no retraining), and return the plain
input gradient of y_c through the masked network — the gradient along the input's critical pathway.

**Activations called as functions** (``F.relu``, ``torch.relu``, ``x.relu()``: torchvision's
GoogLeNet and Inception, DenseNet's last ReLU, many hand-written models) are units too: the calls
of :data:`~neurotomy.models.activations.ACTIVATION_FUNCTIONS` made outside activation modules, seen
through a :class:`~neurotomy.probe.FunctionProbe`, in call order with the modules' — the same units
a module would give.

**GELU and other smooth activations** (a transformer's MLP neurons). A ReLU unit is *active* when
its output is positive: only then does it pass a gradient, so an inactive unit has relevance 0 and
the pathway is a subset of the active units. A GELU is never switched off by its input (for x < 0 its
output is small and negative, down to −0.17, and its slope is non-zero almost everywhere), so every unit takes
part with relevance |a · ∂y_c/∂a|, and "active for this input" means *kept*: among the top (1 − p)
by that relevance. Masking sets a unit's output to 0 — for an MLP neuron, the same as removing it
(``fc2`` receives nothing from it). In a transformer (a model with attention layers, see
:func:`neurotomy.models.transformer.attention_sites`) activations are ``N × tokens × neurons``,
channels last: ``granularity="neuron"`` keeps one neuron at one token, ``"channel"`` one neuron over
all tokens.

The same per-input relevance, summed over positions at each conv filter's response, gives
per-input *channel* scores as :class:`~neurotomy.scores.UnitScores` (``axis="input"``): a criterion
that can drive pruning like any other (``neurotomy prune --criterion pathway``).

Example:
    >>> from neurotomy.models import build_model
    >>> model = build_model("lenet5", 1, 10, 28).eval()
    >>> x = torch.randn(2, 1, 28, 28)
    >>> masks = pathway_masks(model, x, torch.tensor([3, 4]), prune_fraction=0.85)
    >>> total = sum(m[0].numel() for m in masks); kept = sum(int(m[0].sum()) for m in masks)
    >>> kept == round(0.15 * total)
    True
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from neurotomy.explain.common import ExplainError, class_scores, forward
from neurotomy.explain.methods import register_method
from neurotomy.models.activations import ACTIVATION_FUNCTIONS
from neurotomy.models.anatomy import eval_mode, model_input_shape
from neurotomy.models.transformer import is_transformer
from neurotomy.probe import FunctionProbe, Probe
from neurotomy.registry import Registry
from neurotomy.scores.base import conv_units
from neurotomy.scores.unit_scores import UnitScores

# Element-wise activations whose outputs are a pathway's units. The paper masks ReLU outputs; any
# point-wise nonlinearity has units in the same sense (one per channel × position). Gates are
# not units: a Sigmoid/Hardsigmoid scaling a squeeze-excitation branch, a Softmax over classes.
ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
               nn.Mish, nn.Hardswish, nn.Hardtanh, nn.Softplus, nn.Tanh, nn.Threshold)
GATES = {"Sigmoid", "Hardsigmoid", "HardSigmoid", "HardSigmoidMe", "LogSigmoid", "Softmax", "Softmin",
         "LogSoftmax", "Softmax2d", "GLU", "MultiheadAttention"}

GRANULARITIES: Registry = Registry("granularity", error=ExplainError)
"""What a pathway keeps or masks: a per-unit relevance ``N × C × H × W`` (or ``N × F``) → the
relevance of each kept-or-masked element."""


@GRANULARITIES.register("neuron")
def neuron_units(relevance: torch.Tensor) -> torch.Tensor:
    """Every element (channel × position) is a unit."""
    return relevance


@GRANULARITIES.register("channel")
def channel_units(relevance: torch.Tensor) -> torch.Tensor:
    """Whole channels: relevance summed over positions."""
    return relevance.flatten(2).sum(2) if relevance.dim() > 2 else relevance


def is_activation(module: nn.Module) -> bool:
    """An element-wise activation module: one of torch's (:data:`ELEMENTWISE`, subclasses
    included) or any leaf class from an ``…activation…`` module (timm's ``layers.activations``),
    gates (:data:`GATES`) excepted."""
    cls = type(module)
    if cls.__name__ in GATES or any(True for _ in module.children()):
        return False
    return isinstance(module, ELEMENTWISE) or "activation" in cls.__module__.rpartition(".")[2]


def activation_layers(model: nn.Module) -> list[str]:
    """Names of the element-wise activation modules — the units of a pathway; none is an error
    that says which modules the model has (see :func:`activation_calls` for models that call them)."""
    names = [n for n, m in model.named_modules() if is_activation(m)]
    if not names:
        raise ExplainError(f"the model has no activation module (nn.ReLU, nn.GELU, nn.SiLU, nn.Hardswish, …) — "
                           f"its layers: {_layer_kinds(model)}")
    return names


relu_layers = activation_layers  # the name of the paper's case


def _layer_kinds(model: nn.Module) -> str:
    kinds: dict[str, int] = {}
    for _, m in model.named_modules():
        if not any(True for _ in m.children()):
            kinds[type(m).__name__] = kinds.get(type(m).__name__, 0) + 1
    return ", ".join(f"{k} ×{v}" for k, v in kinds.items()) or "none"


def activation_calls(model: nn.Module, inputs: torch.Tensor) -> int:
    """How many activation calls one forward pass of ``inputs`` makes — the pathway's layers: calls
    of activation modules and of :data:`~neurotomy.models.activations.ACTIVATION_FUNCTIONS` outside
    them.

    >>> activation_calls(nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2)), torch.zeros(1, 3))
    1
    """
    with torch.no_grad(), eval_mode(model), _ReluCalls(model) as calls:
        forward(model, inputs)
    return len(calls.outputs)


def missing_activations(model: nn.Module) -> str | None:
    """Why the pathway method cannot explain ``model`` — it has no activation module and a forward
    pass on 2 blank images of its recorded input shape calls no activation function — or ``None``
    (also when there is no recorded shape to try: the explanation then says so itself)."""
    if any(is_activation(m) for m in model.modules()):
        return None
    shape = model_input_shape(model)
    if shape is None:
        return None
    try:
        found = activation_calls(model, torch.zeros(2, *shape))
    except ExplainError:
        return None  # it does not even run: the explanation's own error says why
    return None if found else "the model has no activation module and calls no activation function to mask"


class _ReluCalls:
    """Hooks on every activation, indexed by call order so a reused module counts twice: on the
    activation modules, and on calls of
    :data:`~neurotomy.models.activations.ACTIVATION_FUNCTIONS` made outside them.

    ``transform(call, output)`` may return a replacement output (a mask, a scaling); every
    output that flows on is recorded in ``outputs``.
    """

    def __init__(self, model: nn.Module, transform=None) -> None:
        self.model, self.transform = model, transform
        self.outputs: list[torch.Tensor] = []

    def __enter__(self) -> "_ReluCalls":
        def on_output(name: str, out: torch.Tensor) -> torch.Tensor:
            call = len(self.outputs)
            if self.transform is not None:
                out = self.transform(call, out)
            else:
                out = out.clone()  # the tensor we differentiate must not be changed in place later
            self.outputs.append(out)
            return out

        modules = {n: m for n, m in self.model.named_modules() if is_activation(m)}
        self.stack = contextlib.ExitStack()
        with self.stack:  # both or neither: the modules' hooks, and the calls made outside those modules
            self.stack.enter_context(Probe(self.model, modules, on_output=on_output))
            self.stack.enter_context(FunctionProbe(ACTIVATION_FUNCTIONS, on_output, outside=modules.values()))
            self.stack = self.stack.pop_all()
        return self

    def __exit__(self, *exc) -> None:
        self.stack.__exit__(*exc)

    def activations(self) -> list[torch.Tensor]:
        """The outputs a forward pass met; none is an :class:`ExplainError` naming what the model has."""
        if not self.outputs:
            raise ExplainError(f"the pathway method masks activations and this model has none: no activation "
                               f"module (its layers: {_layer_kinds(self.model)}) and no activation function "
                               "(F.relu, F.gelu, …) called in its forward pass; explain it with gradient or gradcam")
        return list(self.outputs)


def neuron_relevance(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                     integrated: bool = False, alphas: int = 11) -> list[torch.Tensor]:
    """Per activation call, ``N × C × H × W`` (or ``N × F``) relevances s = |a · ∂y_c/∂a|."""
    with torch.enable_grad(), _ReluCalls(model) as calls:
        logits = forward(model, inputs)
        acts = calls.activations()
        grads = torch.autograd.grad(class_scores(logits, targets).sum(), acts, allow_unused=True)
    grads = [torch.zeros_like(a) if g is None else g for a, g in zip(acts, grads)]
    if not integrated:
        return [(a * g).abs().detach() for a, g in zip(acts, grads)]
    return [(a.detach() * _integrated_gradient(model, inputs, targets, call, alphas)).abs()
            for call, a in enumerate(acts)]


def _integrated_gradient(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, layer_call: int,
                         alphas: int) -> torch.Tensor:
    """mean over α ∈ {0, 1/(alphas−1), …, 1} of ∂y_c/∂(α·a) for one activation call, all α in one batch."""
    n = inputs.shape[0]
    scale = torch.linspace(0, 1, alphas, device=inputs.device).repeat_interleave(n)  # α-major: block k is α_k for every image

    def scale_layer(call: int, out: torch.Tensor) -> torch.Tensor:
        if call != layer_call:
            return out
        return out * scale.view(-1, *([1] * (out.dim() - 1))).to(out)

    with torch.enable_grad(), _ReluCalls(model, scale_layer) as calls:
        logits = forward(model, inputs.repeat(alphas, *([1] * (inputs.dim() - 1))))
        scaled = calls.outputs[layer_call]
        grad, = torch.autograd.grad(class_scores(logits, targets.repeat(alphas)).sum(), scaled)
    return grad.view(alphas, n, *grad.shape[1:]).mean(0)


def top_units_by_index(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Per row of ``scores`` (N × U), a boolean mask of exactly ``keep`` units: the largest scores,
    ties at the threshold broken by index (lowest first).

    ``topk`` breaks ties (dead units, relevance 0) in no documented order, and a stable sort of
    every unit costs 5× a ``topk`` on ResNet-20's 144k units per image; this selects the threshold
    with ``kthvalue`` and ranks only the tied units, in linear time.

    Example:
        >>> top_units_by_index(torch.tensor([[0.0, 2.0, 0.0, 0.0, 1.0]]), 3).int().tolist()
        [[1, 1, 0, 0, 1]]
    """
    units = scores.shape[1]
    if keep <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    if keep >= units:
        return torch.ones_like(scores, dtype=torch.bool)
    threshold = scores.kthvalue(units - keep + 1, dim=1, keepdim=True).values  # the keep-th largest
    above = scores > threshold
    tied = scores == threshold
    still_needed = keep - above.sum(1, keepdim=True)
    return above | (tied & (tied.cumsum(1) <= still_needed))


def pathway_masks(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, prune_fraction: float = 0.85,
                  integrated: bool = False, granularity: str = "neuron") -> list[torch.Tensor]:
    """Binary masks, one per activation call, keeping each input's top ``1 − prune_fraction`` units
    network-wide (exactly ``round((1 − p) · units)`` of them; ties broken by index).

    ``granularity="channel"`` scores and keeps whole channels (relevance summed over positions; for a
    transformer's ``N × tokens × neurons`` activations, a neuron over all tokens, mask ``N × 1 × neurons``).
    """
    if not 0.0 <= prune_fraction < 1.0:
        raise ExplainError(f"prune_fraction {prune_fraction} is outside [0, 1); it is the share of units "
                           "masked, e.g. 0.85")
    pool = GRANULARITIES.get(granularity)
    # a transformer's activations are N × tokens × neurons: pool with the neurons as channels (axis 1)
    tokens = is_transformer(model)
    raw = neuron_relevance(model, inputs, targets, integrated)
    relevance = [pool(r.transpose(1, 2) if tokens and r.dim() == 3 else r) for r in raw]
    n = inputs.shape[0]
    flat = torch.cat([r.reshape(n, -1) for r in relevance], 1)
    keep = round((1.0 - prune_fraction) * flat.shape[1])
    mask = top_units_by_index(flat, keep).to(flat.dtype)
    masks, start = [], 0
    for r, original in zip(relevance, raw):
        size = r[0].numel()
        m = mask[:, start:start + size].view_as(r)
        if tokens and original.dim() == 3:  # back to N × tokens × neurons (a channel mask: N × 1 × neurons)
            m = m.transpose(1, 2) if m.dim() == 3 else m[:, None, :]
        masks.append(m)
        start += size
    return masks


@register_method("pathway", family="pathway", signed=True, input_attribution=True, unfit=missing_activations,
                 paper="Khakzar et al., CVPR 2021 (critical-pathway gradient)")
def pathway_gradient(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *,
                     prune_fraction: float = 0.85, integrated: bool = False,
                     granularity: str = "neuron") -> torch.Tensor:
    """The input gradient of y_c through the network with each input's non-critical units masked
    (``N × C × H × W``). With ``prune_fraction=0`` it is the plain gradient."""
    masks = pathway_masks(model, inputs, targets, prune_fraction, integrated, granularity)

    def apply_mask(call: int, out: torch.Tensor) -> torch.Tensor:
        mask = masks[call]
        if mask.dim() < out.dim():  # channel granularity: broadcast over positions
            mask = mask.view(*mask.shape, *([1] * (out.dim() - mask.dim())))
        return out * mask.to(out)

    x = inputs.detach().clone().requires_grad_(True)
    with torch.enable_grad(), _ReluCalls(model, apply_mask):
        logits = forward(model, x)
        grad, = torch.autograd.grad(class_scores(logits, targets).sum(), x)
    return grad


def pathway_channel_scores(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> UnitScores:
    """Per input, per conv filter: Σ_positions |a · ∂y_c/∂a| at the filter's response (after its
    BatchNorm), as ``UnitScores`` with ``axis="input"`` (``N × filters`` per conv layer)."""
    units = conv_units(model, tuple(inputs.shape[1:]))
    sites = {u.site: u.conv_name for u in units}
    seen: dict[str, torch.Tensor] = {}

    def keep(site: str, out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        seen.setdefault(site, out)
        return out

    with torch.enable_grad(), Probe(model, list(sites), on_output=keep):
        logits = forward(model, inputs)
        names = list(seen)
        grads = torch.autograd.grad(class_scores(logits, targets).sum(), [seen[s] for s in names],
                                    allow_unused=True)
    scores = {}
    for site, grad in zip(names, grads):
        a = seen[site].detach()
        g = torch.zeros_like(a) if grad is None else grad
        scores[sites[site]] = (a * g).abs().flatten(2).sum(2)
    ordered = {u.conv_name: scores[u.conv_name] for u in units if u.conv_name in scores}
    return UnitScores(ordered, criterion="pathway", axis="input",
                      info={"paper": "Khakzar et al., CVPR 2021 (NeuronMCT relevance per filter)"})
