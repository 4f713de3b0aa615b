"""Exceptions raised by equirl.

Every error a user can cause derives from :class:`EquirlError`; its message is one actionable line,
which the CLI prints without a traceback.
"""

from __future__ import annotations


class EquirlError(Exception):
    """Base class of the errors a user can cause (bad input, config, checkpoint...)."""


class GroupError(EquirlError, ValueError):
    """A group or a group action is ill-defined (not a bijection, not a homomorphism...)."""


class ConfigError(EquirlError, ValueError):
    """A configuration file or override is malformed or has unknown keys."""


class SymmetryError(EquirlError, ValueError):
    """A symmetry spec does not fit a model, an environment or its action space."""


class CheckpointError(EquirlError, ValueError):
    """A checkpoint is missing, corrupt or does not fit the requested model."""


class OfflineError(EquirlError, RuntimeError):
    """A model hub resource was needed but cannot be reached."""


class NonFiniteError(EquirlError, ArithmeticError):
    """Training produced a NaN / inf loss, Q-value or parameter; the run is stopped as ``failed``."""


class RunSaveError(EquirlError, OSError):
    """A trained model could not be written where it belongs (the message says where it went instead)."""


class RunFinishedError(EquirlError):
    """``--resume`` was given a run that has already finished."""


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by SIGINT / SIGTERM after writing a checkpoint; ``str()`` is the one-line resume hint."""
