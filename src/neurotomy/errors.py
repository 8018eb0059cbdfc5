"""User-facing errors.

Every problem a user can fix (a wrong path, a corrupt file, an impossible request) is raised as a
:class:`NeurotomyError` subclass whose message names the problem *and* the fix. The CLI prints the
message on one line and exits non-zero; library users can catch the base class.
"""

from __future__ import annotations


class NeurotomyError(Exception):
    """Base class of every error a user can act on."""


class DataError(NeurotomyError):
    """A dataset cannot be found, read or understood."""


class CheckpointError(NeurotomyError):
    """A checkpoint is missing, corrupt, unsafe or inconsistent."""


class ModelError(NeurotomyError):
    """A model name is unknown or a model cannot be handled."""


class PruningError(NeurotomyError):
    """A pruning request is impossible (ratio, target, layer, untraceable op)."""


class OptionError(NeurotomyError):
    """An option's value is unknown or out of range (a training rule, an attack budget)."""
