"""Activations a model calls as functions (``F.relu``, ``torch.relu``, ``x.relu()``) instead of
holding them as modules — torchvision's GoogLeNet and Inception, and most hand-written networks
(``x = F.relu(self.bn1(self.conv1(x)))``).

Hooks see modules, not function calls, so such a model has no place to read or mask its
post-activation features by name. Two answers: :data:`ACTIVATION_FUNCTIONS` for a
:class:`~neurotomy.probe.FunctionProbe` that sees the calls themselves (the pathway method masks
them), and :func:`activation_sites`, which names each call's result as a layer: the module whose
*output* it is (GoogLeNet's ``BasicConv2d``: conv → BN → ``F.relu``), or, for a call in the forward
of a module that goes on computing (the model's own), ``"<module>:activated"`` — the activation of
that module's output (:data:`ACTIVATED`; read by :func:`neurotomy.dynamics.features.stream_features`).

Example:
    >>> import torch
    >>> class ConvReLU(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.conv = nn.Conv2d(1, 2, 3)
    ...     def forward(self, x):
    ...         return F.relu(self.conv(x))
    >>> class Flat(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.block, self.conv, self.fc = ConvReLU(), nn.Conv2d(2, 2, 3), nn.Linear(2 * 2 * 2, 3)
    ...     def forward(self, x):
    ...         return self.fc(F.relu(self.conv(self.block(x))).flatten(1))
    >>> activation_sites(Flat(), torch.zeros(1, 1, 6, 6))
    ['block', 'conv:activated']
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neurotomy.probe import FunctionProbe, Probe

# Element-wise activations called as functions. The in-place forms are listed too:
# ``F.relu(x, inplace=True)`` is one call of ``F.relu``, ``x.relu_()`` one of its own.
ACTIVATION_FUNCTIONS = (F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_, F.relu6,
                        F.leaky_relu, F.leaky_relu_, F.elu, F.elu_, F.selu, F.celu, F.gelu, F.silu, F.mish,
                        F.hardswish, F.hardtanh, F.softplus)
# those with f(f(x)) = f(x): a block whose conv and norm are removed leaves its activation applied
# to the block's input, which is what the block had read, unchanged when that input was activated
IDEMPOTENT_ACTIVATIONS = frozenset({F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_,
                                    F.relu6, F.hardtanh})
# the view of a layer that is its output after the activation function the forward applies to it
ACTIVATED = ":activated"


@torch.no_grad()
def activation_sites(model: nn.Module, inputs: torch.Tensor) -> list[str]:
    """Where one forward pass of ``inputs`` applies an activation function, in execution order, each
    once: the innermost module that made the call and returns its result, else ``"<module>:activated"`` for the innermost module whose output the call
    read. A call on anything else (an input, a sum) or on what an earlier call returned has no name
    of its own and is left out. The model runs in whatever mode it is in."""
    events: list[tuple[str, str, torch.Tensor, torch.Tensor | None]] = []  # holds every tensor: ids stay unique
    running: list[str] = []
    inside: dict[int, frozenset[str]] = {}  # event index of a call → the modules running when it was made

    def on_call(name: str, out: torch.Tensor, read) -> None:
        inside[len(events)] = frozenset(running)
        events.append(("call", name, out, read if isinstance(read, torch.Tensor) else None))

    def on_output(name: str, out) -> None:
        running.remove(name)
        if isinstance(out, torch.Tensor):
            events.append(("module", name, out, None))

    names = [name for name, _ in model.named_modules() if name]
    with Probe(model, names, on_output=on_output, on_enter=lambda name, *_: running.append(name)), \
            FunctionProbe(ACTIVATION_FUNCTIONS, on_call, with_input=True):
        model(inputs)
    sites: list[str] = []
    for i, (kind, _, out, read) in enumerate(events):
        # an activation of what an activation returned (``torch.relu`` over a block that ends in one) adds nothing
        if kind != "call" or any(k == "call" and o is read for k, _, o, _ in events[:i]):
            continue
        # the module that made the call and returned its result (not one that passes it on: Dropout in eval)
        site = next((n for k, n, o, _ in events[i + 1:] if k == "module" and o is out and n in inside[i]), None)
        if site is None and read is not None:
            producer = next((n for k, n, o, _ in events[:i] if k == "module" and o is read), None)
            site = None if producer is None else producer + ACTIVATED
        if site is not None and site not in sites:
            sites.append(site)
    return sites


__all__ = ["ACTIVATED", "ACTIVATION_FUNCTIONS", "IDEMPOTENT_ACTIVATIONS", "activation_sites"]
