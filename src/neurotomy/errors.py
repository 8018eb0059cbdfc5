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


class ScoresError(NeurotomyError):
    """A scores file is missing or corrupt, or its scores do not fit the model they are applied to."""


class OptionError(NeurotomyError):
    """An option's value is unknown or out of range (a training rule, an attack budget)."""


class TrainingError(NeurotomyError):
    """Training cannot go on (the loss became NaN/inf or exploded)."""


class ResumeError(NeurotomyError):
    """``--resume`` finds no state file, an unreadable one, or one written with other settings."""


class WorseResultError(NeurotomyError):
    """A result is worse than what it would replace (refused unless forced)."""


class NeurotomyWarning(UserWarning):
    """Something a user should know that does not stop the work (a model file changed since its
    checkpoint was saved, a layer left out of a prune); the CLI prints it on one line."""


class DeviceError(NeurotomyError):
    """A ``--device``/``device=`` is unknown or not present on this machine (``cuda`` without CUDA)."""
