"""Residual blocks found by what they compute, not by what their attributes are called.

A residual block returns ``x + f(x)`` — or ``shortcut(x) + f(x)``, or an activation of either —
for its own input ``x``. Torchvision and timm write that in many ways: a ``downsample`` or
``shortcut`` branch (ResNets), a ``use_res_connect`` flag (MobileNet, EfficientNet), ``result +=
input`` after layer scale and stochastic depth (ConvNeXt), ``apply_residual`` (MNASNet), a ``proj``
that is None for the identity (RegNet). Guessing from names misses most of them and mistakes
others: a timm ConvNeXt *stage* has a ``downsample`` but adds nothing.

So one forward pass on a blank input decides (:func:`residual_forms`): while each module runs, a
:class:`~torch.overrides.TorchFunctionMode` records every sum (``+``, ``+=``, ``torch.add``) with
its operands and every activation call with its input; when the module returns, it is a residual
block if its output is such a sum (or an activation of one) and one operand is its input itself —
or the output of one of its own children run on its input, which is then the block's
``shortcut``. Tensors are matched by identity, so the blank input's values do not matter. Of
nested residual modules (a stage of one block) the innermost is the unit.

Example:
    >>> import torchvision
    >>> net = torchvision.models.mobilenet_v3_small(num_classes=10).eval()
    >>> forms = residual_forms(net, (3, 32, 32))
    >>> list(forms)[:2], forms["features.3"].shortcut, forms["features.3"].downsampling
    (['features.3', 'features.5'], None, False)
    >>> resnet = torchvision.models.resnet18(num_classes=10).eval()
    >>> residual_forms(resnet, (3, 32, 32))["layer2.0"].shortcut
    'layer2.0.downsample'
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from neurotomy.models.activations import ACTIVATION_FUNCTIONS
from neurotomy.models.blank_pass import blank_pass, cached
from neurotomy.probe import Probe

_SUMS = frozenset({"add", "add_", "__add__", "__radd__", "__iadd__"})


@dataclass(frozen=True)
class ResidualForm:
    """A residual block: ``shortcut`` is the child that carries its input to the sum (None: the
    input itself, so removing the block leaves the identity); ``keeps_shape``: its output is shaped
    like its input."""

    name: str
    shortcut: str | None
    keeps_shape: bool

    @property
    def downsampling(self) -> bool:
        """Whether removing the block must keep a branch (its shortcut) rather than leave the identity."""
        return self.shortcut is not None or not self.keeps_shape


class _DataflowRecorder(TorchFunctionMode):
    """Records each sum (result → when, operands, whether in place) and each activation call
    (output → input), numbered in call order. Every tensor seen is held until the pass ends, so no
    other tensor can take a recorded one's ``id``."""

    def __init__(self) -> None:
        super().__init__()
        self.step = 0
        self.sums: dict[int, tuple[int, list[torch.Tensor], bool]] = {}
        self.activated: dict[int, tuple[int, torch.Tensor]] = {}
        self.held: list = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not isinstance(out, torch.Tensor) or not args:
            return out
        self.step += 1
        if getattr(func, "__name__", "") in _SUMS:
            # in place (``out += x``) the first operand is the result: its value before is gone
            in_place = args[0] is out
            self.sums[id(out)] = (self.step, [a for a in args[:2] if isinstance(a, torch.Tensor) and a is not out],
                                  in_place)
            self.held.append((out, args))
        elif func in ACTIVATION_FUNCTIONS and isinstance(args[0], torch.Tensor):
            self.activated[id(out)] = (self.step, args[0])
            self.held.append((out, args[0]))
        return out

    def made_inside(self, output: torch.Tensor, since: int) -> tuple[torch.Tensor, list[torch.Tensor], bool] | None:
        """The sum ``output`` is — or that an activation returning ``output`` read — when it ran
        after step ``since``: (the sum's result, its other operands, whether in place)."""
        total = output
        if id(output) not in self.sums and id(output) in self.activated:
            step, total = self.activated[id(output)]
            if step <= since:
                return None
        found = self.sums.get(id(total))
        if found is None or found[0] <= since:
            return None
        return total, found[1], found[2]


def _parent(name: str) -> str:
    return name.rpartition(".")[0]


def _measure(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, ResidualForm]:
    recorder = _DataflowRecorder()
    calls: dict[str, list[tuple[torch.Tensor, torch.Tensor, str]]] = {}  # children's (input, output, name), by parent
    started: dict[str, list[int]] = {}
    params = {name: sum(p.numel() for p in m.parameters()) for name, m in model.named_modules()}
    found: dict[str, ResidualForm] = {}

    def enter(name: str, module: nn.Module, inputs: tuple) -> None:
        started.setdefault(name, []).append(recorder.step)

    def leave(name: str, module: nn.Module, inputs: tuple, output) -> None:
        since = started[name].pop()
        if not inputs or not isinstance(inputs[0], torch.Tensor) or not isinstance(output, torch.Tensor):
            return
        x = inputs[0]
        calls.setdefault(_parent(name), []).append((x, output, name))
        recorder.held.append((x, output))
        # judged now, while the sum that made the output is the last one recorded for that tensor
        made = recorder.made_inside(output, since)
        if name in found or made is None:
            return
        total, operands, in_place = made
        if any(op is x for op in operands) or (in_place and total is x):
            shortcut = None
        else:  # an operand one of its own children made from its input; of two such, the cheaper branch
            branches = [child for child_x, child_out, child in calls.get(name, [])
                        if child_x is x and any(op is child_out for op in operands)]
            if not branches:
                return
            shortcut = min(branches, key=lambda child: params[child])
        found[name] = ResidualForm(name, shortcut, tuple(output.shape) == tuple(x.shape))

    names = [name for name, _ in model.named_modules() if name]
    blank_pass(model, input_shape, Probe(model, names, on_module=leave, on_enter=enter), recorder)
    # the innermost: a residual module holding another (a stage of one block) is not the unit
    return {name: form for name, form in found.items()
            if not any(other.startswith(name + ".") for other in found)}


def residual_forms(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, ResidualForm]:
    """The residual blocks of ``model`` in module order, measured by one forward pass on a blank
    input of ``input_shape`` (in eval mode; the caller's mode is restored), remembered until the
    model's modules change (:func:`~neurotomy.models.blank_pass.cached`)."""
    def measure() -> dict[str, ResidualForm]:
        found = _measure(model, tuple(input_shape))
        return {name: found[name] for name, _ in model.named_modules() if name in found}

    return dict(cached(model, "residual_forms", input_shape, measure))


__all__ = ["ResidualForm", "residual_forms"]
