"""Activations a model calls as functions (``F.relu``, ``torch.relu``, ``x.relu()``) instead of
holding them as modules — torchvision's GoogLeNet and Inception, many hand-written networks.

Hooks see modules, not function calls, so such a model has no place to read or mask its
post-activation features by name. Two answers: :data:`ACTIVATION_FUNCTIONS` for a
:class:`~neurotomy.probe.FunctionProbe` that sees the calls themselves (the pathway method masks
them), and :func:`modules_ending_in_activation` for the modules whose *output* is such a call's
result (GoogLeNet's ``BasicConv2d``: conv → BN → ``F.relu``) — named layers whose outputs are
post-activation features, as a ReLU module's are.

Example:
    >>> import torch
    >>> class ConvReLU(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.conv = nn.Conv2d(1, 2, 3)
    ...     def forward(self, x):
    ...         return F.relu(self.conv(x))
    >>> model = nn.Sequential(ConvReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    >>> modules_ending_in_activation(model, torch.zeros(1, 1, 6, 6))
    ['0']
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


@torch.no_grad()
def modules_ending_in_activation(model: nn.Module, inputs: torch.Tensor) -> list[str]:
    """Names of the modules whose output, in one forward pass of ``inputs``, is the very tensor an
    activation function returned, in execution order; of nested ones that return the same tensor,
    the innermost (the first to finish). The model runs in whatever mode it is in."""
    activated: dict[int, torch.Tensor] = {}  # held, so no other tensor takes a seen one's id meanwhile
    found: dict[int, str] = {}

    def on_call(name: str, out: torch.Tensor) -> None:
        activated[id(out)] = out

    def on_output(name: str, out) -> None:
        if isinstance(out, torch.Tensor) and id(out) in activated:
            found.setdefault(id(out), name)

    names = [name for name, _ in model.named_modules() if name]
    with Probe(model, names, on_output=on_output), FunctionProbe(ACTIVATION_FUNCTIONS, on_call):
        model(inputs)
    return list(found.values())
