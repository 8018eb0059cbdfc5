"""The mutation check: can the cross-checks tell a broken method from the real one?

For every registered criterion (per-unit and class-wise) and attribution method, a hand-written list
of *mutants* — the method returning a constant, returning its own output shuffled, or computing its
formula with a term dropped — is applied by monkeypatching the registered class or method, and the
method's cross-check (the same plain function its ordinary test calls) is run against it. A mutant
is *killed* when the cross-check fails. A cross-check that lets a "return a constant" mutant through
cannot fail for a broken method (issue #17).

:func:`run_mutants` returns one record per (method, mutant); ``tests/test_strength.py`` asserts on
them and ``benchmarks/test_strength.py`` writes them to ``benchmarks/results/test_strength.json``.

Each cross-check runs on a small case (the tiny two-conv model of ``tests/scores/test_criteria.py``,
the shipped LeNet-5 on four digits) with its independent expected values computed once and cached
(:mod:`tests.crosscheck`), so a mutant costs one or a few calls of the method under test.
"""

from __future__ import annotations

import inspect
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients

import neurotomy.explain.pathway as pathway_module
import neurotomy.explain.perturbation as perturbation_module
import neurotomy.explain.rollout as rollout_module
from neurotomy.explain import METHODS
from neurotomy.explain.cam import (
    AblationCAM,
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
)
from neurotomy.explain.common import class_scores, forward
from neurotomy.explain.metrics import random_map
from neurotomy.probe import Probe
from neurotomy.scores import CRITERIA
from neurotomy.scores.chip import nuclear_norms_without_each_row
from neurotomy.scores.entropy import birth_entropy
from tests.crosscheck import CHECK_THREADS, one_thread  # noqa: F401 (CHECK_THREADS: for the results file)

Patch = Callable[[pytest.MonkeyPatch], None]

CONSTANT, SHUFFLED, TERM, SETTING = "constant", "shuffled", "drop a term", "change a setting"


@dataclass(frozen=True)
class Mutant:
    """One way of breaking a method: ``kind`` is ``constant``, ``shuffled``, ``drop a term`` or
    ``change a setting`` (a subtler break: a documented constant of the method changed)."""

    name: str
    kind: str
    apply: Patch


@dataclass(frozen=True)
class Subject:
    """A registered method, its cross-check (raises ``AssertionError`` when it fails) and its mutants."""

    method: str
    family: str  # "criterion (unit)" | "criterion (class)" | "attribution"
    check: Callable[[], None]
    mutants: tuple[Mutant, ...]


# ------------------------------------------------------------------ output mutants

def derangement(n: int, seed: int = 0) -> torch.Tensor:
    """A seeded permutation of ``n`` items that moves every item (identity when ``n`` < 2)."""
    if n < 2:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(n, generator=g)
        if not (perm == torch.arange(n)).any():
            return perm


def constant(t: torch.Tensor) -> torch.Tensor:
    """Every value replaced by the mean: the scale survives, the information does not."""
    return torch.full_like(t, float(t.double().mean()))


def shuffle_last_axis(t: torch.Tensor) -> torch.Tensor:
    return t[..., derangement(t.shape[-1])]


def shuffle_first_axis(t: torch.Tensor) -> torch.Tensor:
    return t[derangement(t.shape[0])]


def shuffle_pixels(maps: torch.Tensor) -> torch.Tensor:
    return maps.flatten(1)[:, derangement(maps[0].numel())].view_as(maps)


def criterion_output(name: str, transform: Callable[[torch.Tensor], torch.Tensor]) -> Patch:
    """Patch the criterion class's ``compute`` so that each layer's scores pass through ``transform``."""
    cls = CRITERIA.get(name)
    original = cls.compute

    def compute(self, *args, **kw):
        return {layer: transform(scores) for layer, scores in original(self, *args, **kw).items()}
    return lambda mp: mp.setattr(cls, "compute", compute)


def replace_method(mp: pytest.MonkeyPatch, name: str, compute: Callable) -> None:
    """Make the registry serve ``compute`` for method ``name`` (its options — the keyword-only
    parameters — stay those of the real method)."""
    spec = METHODS.get(name)
    compute.__signature__ = inspect.signature(spec.compute)
    mutated = replace(spec, compute=compute)
    original_get = METHODS.get
    mp.setattr(METHODS, "get", lambda wanted: mutated if wanted == name else original_get(wanted))


def method_output(name: str, transform: Callable[[torch.Tensor], torch.Tensor]) -> Patch:
    original = METHODS.get(name).compute

    def apply(mp):
        replace_method(mp, name, lambda model, inputs, targets, **opts: transform(original(model, inputs, targets, **opts)))
    return apply


def method_replaced_by(name: str, other: str) -> Patch:
    """Method ``name`` computed by the registered method ``other``, given the options it shares."""
    def apply(mp):
        substitute = METHODS.get(other)

        def compute(model, inputs, targets, **opts):
            shared = {k: v for k, v in opts.items() if k in substitute.options()}
            return substitute.compute(model, inputs, targets, **shared)
        replace_method(mp, name, compute)
    return apply


def criterion_mutants(name: str, *terms: Mutant) -> tuple[Mutant, ...]:
    mutants = [Mutant("return a constant (each layer's mean)", CONSTANT, criterion_output(name, constant)),
               Mutant("shuffle the units (a derangement)", SHUFFLED, criterion_output(name, shuffle_last_axis))]
    if CRITERIA.tags(name)["axis"] == "class":
        mutants.append(Mutant("shuffle the classes (a derangement)", SHUFFLED, criterion_output(name, shuffle_first_axis)))
    return (*mutants, *terms)


def method_mutants(name: str, *terms: Mutant) -> tuple[Mutant, ...]:
    return (Mutant("return a constant (the map's mean)", CONSTANT, method_output(name, constant)),
            Mutant("shuffle the pixels (a derangement)", SHUFFLED, method_output(name, shuffle_pixels)),
            Mutant("explain another image (batch rotated)", SHUFFLED, method_output(name, lambda m: m.roll(1, 0))),
            *terms)


def patched(owner, attribute: str, function: Callable) -> Patch:
    return lambda mp: mp.setattr(owner, attribute, function)


# ------------------------------------------------------------------ drop-a-term mutants: criteria

def _criterion(name):
    return CRITERIA.get(name)


def _ignore_seed(mp):
    cls = _criterion("random")
    original = cls.compute
    mp.setattr(cls, "compute", lambda self, model, units, data, *, seed, **kw: original(self, model, units, data, seed=0, **kw))


def _bn_stats_without_pdf(self, bn):
    mean, std = bn.bias.double(), bn.weight.double().abs()
    return mean * 0.5 * (1 + torch.erf(mean / std.clamp(min=1e-12) / math.sqrt(2)))


def _taylor_signed(self, layer, response, grad):
    per_image = (response * grad).mean((2, 3))
    self.accumulate(layer, "sum", per_image.double().sum(0))
    self.accumulate(layer, "count", per_image.new_tensor(per_image.shape[0]).double())


def _mean_activation_without_relu(self, layer, response, grad):
    self.accumulate(layer, "sum", response.double().sum((0, 2, 3)))
    self.accumulate(layer, "count", response.new_tensor(response.shape[0] * response.shape[2] * response.shape[3]).double())


def _apoz_itself(self, layer):
    state = self.state[layer]
    return 1 - state["nonzero"] / state["count"]


def _hrank_without_relu(self, layer, response, grad):
    ranks = torch.linalg.matrix_rank(response.float()).double()
    self.accumulate(layer, "sum", ranks.sum(0))
    self.accumulate(layer, "count", ranks.new_tensor(ranks.shape[0]))


def _chip_without_full_norm(self, layer, response, grad):
    _, without = nuclear_norms_without_each_row(response.relu().double().flatten(2))
    self.accumulate(layer, "sum", (-without).sum(0))
    self.accumulate(layer, "count", without.new_tensor(without.shape[0]))


def _clp_without_batchnorm(self, unit):
    w = unit.conv.weight.double()
    return torch.linalg.matrix_norm(w.reshape(w.shape[0], w.shape[1], -1), ord=2)


def _entropy_not_negated(self, layer):
    births = torch.tensor(self.state[layer]["births"], dtype=torch.float64)
    return torch.tensor([birth_entropy(births[:, c].tolist(), self.bins) for c in range(births.shape[1])],
                        dtype=torch.float64)


def _pathway_signed(self, layer, response, grad):
    self.accumulate(layer, "sum", (response * grad).sum((2, 3)).double().sum(0))
    self.accumulate(layer, "count", response.new_tensor(response.shape[0]).double())


def _class_taylor_signed(self, response, grad):
    return (response * grad).mean((2, 3))


# ------------------------------------------------------------------ drop-a-term mutants: attribution

def _integrated_gradients_without_input(model, inputs, targets, **opts):
    ig = IntegratedGradients(model, multiply_by_inputs=False)
    return ig.attribute(inputs.detach().clone().requires_grad_(True), baselines=opts.get("baseline", 0.0),
                        target=targets, n_steps=opts.get("steps", 50))[:, 0].detach()


def _scorecam_without_softmax(self, model, inputs, targets, layer, activations, grads, logits):
    n, c = activations.shape[:2]
    masks = F.interpolate(activations, size=inputs.shape[-2:], mode="bilinear", align_corners=True)
    flat = masks.flatten(2)
    lo, hi = flat.amin(2)[..., None, None], flat.amax(2)[..., None, None]
    masks = (masks - lo) / (hi - lo + 1e-8)
    scores = torch.empty(n, c)
    with torch.no_grad():
        for i in range(n):
            scores[i] = forward(model, inputs[i][None] * masks[i][:, None])[:, targets[i]]
    return scores.to(activations)


def _ablation_without_division(mp):
    original = AblationCAM.channel_weights

    def weights(self, model, inputs, targets, layer, activations, grads, logits):
        relative = original(self, model, inputs, targets, layer, activations, grads, logits)
        return relative * class_scores(logits, targets)[:, None].to(relative)
    mp.setattr(AblationCAM, "channel_weights", weights)


def _eigencam_uncentred(self, model, inputs, targets, layer, activations, grads, logits):
    n, _, h, w = activations.shape
    points = activations.flatten(2).transpose(1, 2)
    _, _, vh = torch.linalg.svd(points, full_matrices=False)
    projection = (points @ vh[:, 0, :, None]).squeeze(-1)
    sign = torch.sign((projection * points.sum(2)).sum(1, keepdim=True))
    sign[sign == 0] = 1
    return (projection * sign).view(n, h, w)


def _signed_neuron_relevance(model, inputs, targets, integrated=False, alphas=11):
    seen = []

    def keep(name, out):
        out = out.clone()
        seen.append(out)
        return out
    with torch.enable_grad(), Probe(model, pathway_module.relu_layers(model), on_output=keep):
        logits = forward(model, inputs)
        grads = torch.autograd.grad(class_scores(logits, targets).sum(), seen, allow_unused=True)
    return [(a * (torch.zeros_like(a) if g is None else g)).detach() for a, g in zip(seen, grads)]


def _random_ignoring_seed(model, inputs, targets, **opts):
    return random_map(inputs)


def _sobel_horizontal_only(model, inputs, targets, **opts):
    kernel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]).to(inputs)[None, None]
    n, c, h, w = inputs.shape
    padded = F.pad(inputs.reshape(n * c, 1, h, w), (1, 1, 1, 1), mode="replicate")
    return F.conv2d(padded, kernel).view(n, c, h, w).pow(2).sum(1).sqrt()


def _with_options(name: str, **changed) -> Patch:
    """Method ``name`` called with some of its options silently changed (scaled when callable)."""
    original = METHODS.get(name).compute
    defaults = {p.name: p.default for p in inspect.signature(original).parameters.values()
                if p.kind is inspect.Parameter.KEYWORD_ONLY}

    def compute(model, inputs, targets, **opts):
        opts = {**defaults, **opts}
        opts.update({k: v(opts[k]) if callable(v) else v for k, v in changed.items()})
        return original(model, inputs, targets, **opts)
    return lambda mp: replace_method(mp, name, compute)


def _pathway_alphas(alphas: int) -> Patch:
    original = pathway_module.neuron_relevance

    def relevance(model, inputs, targets, integrated=False, alphas_=11):
        return original(model, inputs, targets, integrated, alphas)
    return lambda mp: mp.setattr(pathway_module, "neuron_relevance", relevance)


def _eigencam_unoriented(self, model, inputs, targets, layer, activations, grads, logits):
    n, _, h, w = activations.shape
    points = activations.flatten(2).transpose(1, 2)
    centred = points - points.mean(1, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    return (centred @ vh[:, 0, :, None]).squeeze(-1).view(n, h, w)  # the SVD's own sign


def _sobel_zero_padded(model, inputs, targets, **opts):
    kernel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]).to(inputs)
    kernels = torch.stack([kernel_x, kernel_x.T])[:, None]
    n, c, h, w = inputs.shape
    gradients = F.conv2d(inputs.reshape(n * c, 1, h, w), kernels, padding=1).view(n, c, 2, h, w)
    return gradients.pow(2).sum((1, 2)).sqrt()


def _confidence(threshold: float) -> Callable:
    def image_weights(self, logits, targets):
        probs = logits.softmax(1)
        return ((logits.argmax(1) == targets) & (probs.gather(1, targets[:, None])[:, 0] >= threshold)).double()
    return image_weights


def _replacing(name: str, compute: Callable) -> Patch:
    return lambda mp: replace_method(mp, name, compute)


def _ones_weights(self, model, inputs, targets, layer, activations, grads, logits):
    return torch.ones(activations.shape[:2], dtype=activations.dtype)


def _logit_scores(f, images, targets, masks, baseline=0.0, batch_size=256):
    """Occlusion / RISE scoring the target's logit instead of its softmax probability."""
    masks = masks.to(images)
    rows = []
    with torch.no_grad():
        for image, target in zip(images, targets.tolist()):
            masked = image[None] * masks[:, None] + baseline * (1 - masks[:, None])
            rows.append(torch.as_tensor(f(masked)).float()[:, target])
    return torch.stack(rows)


def _occlusion_summed(model, inputs, targets, **opts):
    """Occlusion without the division by the number of windows covering each pixel."""
    side = min(inputs.shape[-2:])
    patch = opts.get("patch") or -(-side // 7)
    stride = opts.get("stride") or max(1, patch // 2)
    counts = perturbation_module.occlusion_windows(*inputs.shape[-2:], patch, stride).sum(0)
    return perturbation_module.occlusion(model, inputs, targets, **opts) * counts


def _rise_masks_unshifted(height, width, masks=1000, cells=7, keep=0.5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    grid = (torch.rand(masks, cells, cells, generator=generator) < keep).float()
    cell_h, cell_w = -(-height // cells), -(-width // cells)
    up = F.interpolate(grid[:, None], size=((cells + 1) * cell_h, (cells + 1) * cell_w), mode="bilinear",
                       align_corners=False)[:, 0]
    return up[:, :height, :width]


def _rollout_without_identity(model, inputs, targets, **opts):
    """Attention rollout without the residual identity: R = Ā_L ⋯ Ā_1 of the head means alone."""
    layout = rollout_module._token_layout(model, inputs)
    maps = rollout_module.observe_attention(model, inputs)
    relevance = None
    for m in maps:
        mixed = m.probs.mean(1)
        relevance = mixed if relevance is None else mixed @ relevance
    return rollout_module._class_row_map(relevance, layout, tuple(inputs.shape[-2:]))


def _grad_rollout_clamped_after_mean(model, inputs, targets, **opts):
    """Gradient rollout that averages the heads first and clamps after (vit-explain's order)."""
    layout = rollout_module._token_layout(model, inputs)
    maps = rollout_module.observe_attention(model, inputs, targets)
    tokens = maps[0].probs.shape[-1]
    relevance = torch.eye(tokens).expand(inputs.shape[0], tokens, tokens)
    for m in maps:
        relevance = relevance + (m.grads * m.probs).mean(1).clamp(min=0) @ relevance
    return rollout_module._class_row_map(relevance, layout, tuple(inputs.shape[-2:]))


# ------------------------------------------------------------------ the catalogue

def subjects() -> list[Subject]:
    """Every registered criterion and attribution method with its cross-check and its mutants."""
    from tests.explain import test_cam, test_crp, test_gradients, test_pathway, test_perturbation, test_rollout
    from tests.explain.cases import lenet_case
    from tests.explain.metrics import test_controls
    from tests.scores import test_classwise, test_entropy
    from tests.scores import test_criteria as tc

    def tiny(check, with_data=False):
        return lambda: check(tc.tiny_model(), tc.tiny_data()) if with_data else check(tc.tiny_model())

    def lenet(*checks):
        def run():
            for check in checks:
                check(lenet_case())
        return run

    def cam(method):
        return lambda: test_cam.check_cam(method, lenet_case())

    def term(name, patch):
        return Mutant(name, TERM, patch)

    def setting(name, patch):
        return Mutant(name, SETTING, patch)

    c = _criterion
    unit = "criterion (unit)"
    out = [
        Subject("random", unit, tiny(tc.check_random), criterion_mutants("random", term("ignore the seed", _ignore_seed))),
        Subject("l1", unit, tiny(tc.check_l1), criterion_mutants("l1", term(
            "drop |·| (sum of signed weights)", patched(c("l1"), "score_layer", lambda self, u: u.conv.weight.flatten(1).sum(1))))),
        Subject("l2", unit, tiny(tc.check_l2), criterion_mutants("l2", term(
            "drop the square root", patched(c("l2"), "score_layer", lambda self, u: u.conv.weight.flatten(1).pow(2).sum(1))))),
        Subject("bn_scale", unit, tiny(tc.check_bn_scale), criterion_mutants("bn_scale", term(
            "drop |·| (signed γ)", patched(c("bn_scale"), "score_batchnorm", lambda self, bn: bn.weight)))),
        Subject("bn_stats", unit, tiny(tc.check_bn_stats), criterion_mutants("bn_stats", term(
            "drop the σ·φ(β/σ) term", patched(c("bn_stats"), "score_batchnorm", _bn_stats_without_pdf)))),
        Subject("fpgm", unit, tiny(tc.check_fpgm), criterion_mutants("fpgm", term(
            "drop the other filters (n·‖W_c‖)", patched(c("fpgm"), "score_layer",
                                                       lambda self, u: u.conv.weight.flatten(1).double().norm(dim=1) * u.conv.out_channels)))),
        Subject("taylor", unit, tiny(tc.check_taylor, True), criterion_mutants("taylor", term(
            "drop |·| (signed mean)", patched(c("taylor"), "update", _taylor_signed)))),
        Subject("mean_activation", unit, tiny(tc.check_mean_activation, True), criterion_mutants("mean_activation", term(
            "drop the ReLU", patched(c("mean_activation"), "update", _mean_activation_without_relu)))),
        Subject("apoz", unit, tiny(tc.check_apoz, True), criterion_mutants("apoz", term(
            "drop the 1 − (score APoZ itself)", patched(c("apoz"), "result", _apoz_itself)))),
        Subject("hrank", unit, tiny(tc.check_hrank, True), criterion_mutants("hrank", term(
            "drop the ReLU", patched(c("hrank"), "update", _hrank_without_relu)))),
        Subject("chip", unit, tiny(tc.check_chip, True), criterion_mutants("chip", term(
            "drop ‖A‖_* (score −‖A without c‖_*)", patched(c("chip"), "update", _chip_without_full_norm)))),
        Subject("clp", unit, tiny(tc.check_clp), criterion_mutants("clp", term(
            "drop the BatchNorm scale", patched(c("clp"), "score_layer", _clp_without_batchnorm)))),
        Subject("feature_entropy", unit, lambda: test_entropy.check_feature_entropy(*test_entropy.entropy_case()),
                criterion_mutants("feature_entropy", term(
                    "drop the minus sign (prune stable units first)", patched(c("feature_entropy"), "result", _entropy_not_negated)))),
        Subject("pathway", unit, tiny(tc.check_pathway_criterion, True), criterion_mutants("pathway", term(
            "drop |·| (signed sum)", patched(c("pathway"), "update", _pathway_signed)))),
        Subject("class_activation", "criterion (class)",
                lambda: test_classwise.check_class_activation(*test_classwise.lenet_case()),
                criterion_mutants("class_activation", term(
                    "drop the confidence filter (every image counts)",
                    patched(c("class_activation"), "image_weights", lambda self, logits, targets: torch.ones(len(targets)))),
                    setting("confidence threshold 0.8 instead of 0.9", patched(c("class_activation"), "image_weights", _confidence(0.8))))),
        Subject("class_taylor", "criterion (class)",
                lambda: test_classwise.check_class_taylor(*test_classwise.lenet_case()),
                criterion_mutants("class_taylor", term(
                    "drop |·| (signed mean)", patched(c("class_taylor"), "per_image", _class_taylor_signed)))),
    ]
    attribution = "attribution"
    out += [
        Subject("gradient", attribution, lenet(test_gradients.check_gradient), method_mutants("gradient", term(
            "drop the sign (|∂y/∂x|)", method_output("gradient", torch.abs)))),
        Subject("input_x_gradient", attribution, lenet(test_gradients.check_input_x_gradient), method_mutants(
            "input_x_gradient", term("drop the input factor (plain gradient)", method_replaced_by("input_x_gradient", "gradient")))),
        Subject("integrated_gradients", attribution, lenet(test_gradients.check_integrated_gradients), method_mutants(
            "integrated_gradients", term("drop the (x − x′) factor", _replacing("integrated_gradients", _integrated_gradients_without_input)),
            setting("8 steps whatever is asked", _with_options("integrated_gradients", steps=8)))),
        Subject("smoothgrad", attribution,
                lenet(test_gradients.check_smoothgrad, test_gradients.check_smoothgrad_batch_consistency),
                method_mutants("smoothgrad", term("drop the noise (plain gradient)", method_replaced_by("smoothgrad", "gradient")),
                               setting("noise σ ⅔ of what is asked (0.10 for 0.15)",
                                       _with_options("smoothgrad", noise=lambda v: v * 2 / 3)))),
        Subject("smoothgrad_sq", attribution,
                lenet(test_gradients.check_smoothgrad_sq,
                      lambda case: test_gradients.check_smoothgrad_batch_consistency(case, "smoothgrad_sq")),
                method_mutants("smoothgrad_sq", term("drop the square (SmoothGrad)", method_replaced_by("smoothgrad_sq", "smoothgrad")),
                               setting("noise σ ⅔ of what is asked (0.10 for 0.15)",
                                       _with_options("smoothgrad_sq", noise=lambda v: v * 2 / 3)))),
        Subject("gradcam", attribution, cam("gradcam"), method_mutants("gradcam", term(
            "drop the gradient weights (sum of activations)", patched(GradCAM, "channel_weights", _ones_weights)))),
        Subject("gradcam_pp", attribution, cam("gradcam_pp"), method_mutants("gradcam_pp", term(
            "drop α (weights Σ ReLU(∂y/∂A))", patched(GradCAMPlusPlus, "channel_weights",
                                                     lambda self, m, x, t, layer, a, g, logits: g.clamp(min=0).sum((2, 3)))))),
        Subject("hirescam", attribution, cam("hirescam"), method_mutants("hirescam", term(
            "drop the gradient (sum of activations)", patched(HiResCAM, "layer_map", lambda self, m, x, t, layer, a, g, logits: a.sum(1))))),
        Subject("layercam", attribution, cam("layercam"), method_mutants("layercam", term(
            "drop the ReLU on the gradient (HiResCAM)", patched(LayerCAM, "layer_map",
                                                                lambda self, m, x, t, layer, a, g, logits: (g * a).sum(1))))),
        Subject("scorecam", attribution, cam("scorecam"), method_mutants("scorecam", term(
            "drop the softmax over channels", patched(ScoreCAM, "channel_weights", _scorecam_without_softmax)))),
        Subject("ablationcam", attribution, cam("ablationcam"), method_mutants("ablationcam", term(
            "drop the division by y_c", _ablation_without_division))),
        Subject("eigencam", attribution, lambda: test_cam.check_eigencam(lenet_case()), method_mutants("eigencam", term(
            "drop the centring", patched(EigenCAM, "layer_map", _eigencam_uncentred)),
            term("drop the orientation (the SVD's arbitrary sign)", patched(EigenCAM, "layer_map", _eigencam_unoriented)))),
        Subject("pathway", attribution,
                lenet(test_pathway.check_pathway, test_pathway.check_pathway_channels, test_pathway.check_pathway_integrated),
                method_mutants("pathway",
                               term("drop the masks (plain gradient)", method_replaced_by("pathway", "gradient")),
                               term("drop |·| in the relevance", patched(pathway_module, "neuron_relevance", _signed_neuron_relevance)),
                               setting("integrated variant: 6 values of α instead of 11", _pathway_alphas(6)))),
        Subject("occlusion", attribution, lenet(test_perturbation.check_occlusion), method_mutants(
            "occlusion",
            term("score the logit, not the softmax probability", patched(perturbation_module, "target_probabilities",
                                                                           _logit_scores)),
            term("drop the division by the windows covering a pixel", _replacing("occlusion", _occlusion_summed)))),
        Subject("rise", attribution, lenet(test_perturbation.check_rise), method_mutants(
            "rise",
            term("score the logit, not the softmax probability", patched(perturbation_module, "target_probabilities",
                                                                           _logit_scores)),
            term("drop the random shift of the masks", patched(perturbation_module, "rise_masks", _rise_masks_unshifted)),
            setting("ignore the seed (always 0)", _with_options("rise", seed=0)))),
        Subject("rollout", attribution, lambda: test_rollout.check_rollout_method("rollout"), method_mutants(
            "rollout",
            term("drop the residual identity (+ I)", _replacing("rollout", _rollout_without_identity)),
            term("gradient-weighted instead of plain", method_replaced_by("rollout", "grad_rollout")))),
        Subject("grad_rollout", attribution, lambda: test_rollout.check_rollout_method("grad_rollout"), method_mutants(
            "grad_rollout",
            term("clamp after the head mean", _replacing("grad_rollout", _grad_rollout_clamped_after_mean)),
            term("drop the gradient (plain rollout)", method_replaced_by("grad_rollout", "rollout")))),
        Subject("crp", attribution, lenet(test_crp.check_crp), method_mutants(
            "crp", term("drop the channel mask (plain input × gradient)", method_replaced_by("crp", "input_x_gradient")))),
        Subject("random", attribution, lenet(test_controls.check_random_method), method_mutants("random", term(
            "ignore the seed", _replacing("random", _random_ignoring_seed)))),
        Subject("sobel", attribution, lenet(test_controls.check_sobel_method), method_mutants("sobel", term(
            "drop the vertical gradient", _replacing("sobel", _sobel_horizontal_only)),
            setting("zero padding instead of replicated borders", _replacing("sobel", _sobel_zero_padded)))),
    ]
    return out


# ------------------------------------------------------------------ running them

TESTS = Path(__file__).resolve().parent


def outcome(check: Callable[[], None]) -> str | None:
    """``None`` when the check passes, else what failed it: the error's type (``AssertionError``, or
    the error of a mutant that crashes the check — killed too, and saying so) and the line of the
    cross-check where it surfaced (``tests/…/test_x.py:LINE``)."""
    try:
        check()
    except Exception as error:  # noqa: BLE001 (a crash fails the check too)
        frames = [f for f in traceback.extract_tb(error.__traceback__)
                  if Path(f.filename).resolve().is_relative_to(TESTS) and Path(f.filename).name != "mutants.py"]
        checks = [f for f in frames if f.name.startswith("check")] or frames
        if not checks:
            return type(error).__name__
        where = Path(checks[-1].filename).resolve().relative_to(TESTS.parent)
        return f"{type(error).__name__} in {checks[-1].name} ({where}:{checks[-1].lineno})"
    return None


def run_subject(subject: Subject) -> list[dict]:
    """The cross-check must pass on the real method (else the check itself is broken), then fail on
    each mutant. One record per mutant."""
    with one_thread():
        failure = outcome(subject.check)
        if failure is not None:
            subject.check()  # raise it, with its message
        records = []
        for mutant in subject.mutants:
            start = time.perf_counter()
            with pytest.MonkeyPatch.context() as mp:
                mutant.apply(mp)
                failure = outcome(subject.check)
            records.append({"method": subject.method, "family": subject.family, "mutant": mutant.name,
                            "kind": mutant.kind, "killed": failure is not None, "killed_by": failure,
                            "seconds": round(time.perf_counter() - start, 3)})
    return records


def run_mutants(names: list[str] | None = None) -> list[dict]:
    """Records of every mutant of every subject (or of the subjects ``names``, as ``family:method``)."""
    records = []
    for subject in subjects():
        if names is None or f"{subject.family}:{subject.method}" in names:
            records += run_subject(subject)
    return records
