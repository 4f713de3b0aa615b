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


def checkpoint_load_error(path: object, exc: BaseException) -> CheckpointError:
    """A one-line :class:`CheckpointError` naming the real reason ``torch.load`` (or an unpickler) failed
    on ``path``: unreadable, a directory, not a weights-only file (the global it refused), or corrupt.

    torch's weights-only message is 12-16 lines with ANSI codes; only the refused global is kept.

    Example::

        >>> str(checkpoint_load_error("m.pt", PermissionError(13, "Permission denied")))
        'cannot read checkpoint m.pt: permission denied'
    """
    import re

    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", str(exc))
    if isinstance(exc, PermissionError):
        return CheckpointError(f"cannot read checkpoint {path}: permission denied")
    if isinstance(exc, IsADirectoryError):
        return CheckpointError(f"checkpoint {path} is a directory, not a file")
    if isinstance(exc, FileNotFoundError):
        return CheckpointError(f"checkpoint not found: {path}")
    if "Weights only load failed" in text or "weights_only" in text:
        found = re.search(r"Unsupported (?:global|operand)[^\n]*?(?:GLOBAL )?([\w.]+)", text)
        what = f" (it pickles {found.group(1)})" if found else ""
        return CheckpointError(
            f"checkpoint {path} is not a weights-only file{what}: refused, it could run code when loaded"
        )
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    first = lines[0][:200] if lines else ""
    why = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return CheckpointError(f"corrupt checkpoint {path} (truncated, or not a torch checkpoint): {why}")


def first_cause(exc: BaseException, limit: int = 240) -> str:
    """The line of ``exc``'s message that says what went wrong: torch's ``load_state_dict`` puts a
    heading first ("Error(s) in loading state_dict for X:") and the cause ("size mismatch for q_net.0.weight:
    ...", "Missing key(s) ...") on the next lines; otherwise the first line."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    if lines[0].startswith("Error(s) in loading state_dict") and len(lines) > 1:
        return f"{lines[0]} {lines[1]}"[:limit]
    return lines[0][:limit]


class NonFiniteError(EquirlError, ArithmeticError):
    """Training produced a NaN / inf loss, Q-value or parameter; the run is stopped as ``failed``."""


class RunSaveError(EquirlError, OSError):
    """A trained model could not be written where it belongs (the message says where it went instead)."""


class RunFinishedError(EquirlError):
    """``--resume`` was given a run that has already finished."""


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by SIGINT / SIGTERM after writing a checkpoint; ``str()`` is the one-line resume hint."""
