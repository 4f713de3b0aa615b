"""Weights read from a file, loaded into a module only when they are what they claim to be."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from equirl.errors import CheckpointError, EquirlError, first_cause
from equirl.utils.io import printable

__all__ = ["load_state"]


def load_state(module: nn.Module, state: Any, what: str) -> None:
    """Load the weights ``state`` into ``module``, or refuse in one :class:`CheckpointError` line that
    names ``what`` and the cause: not a mapping of names to tensors, a NaN / inf weight (a model that
    would answer at random), a missing or unexpected key, or a key whose shape differs (both shapes).

    Every weight loaded from a file goes through here (the CNN, λ-equitune's λ-net, the canonicalizer's
    scorer), so none is accepted unchecked.
    """
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{what}: the weights are a {type(state).__name__}, not a state dict")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise CheckpointError(
                f"{what}: weight {printable(key, 80)!r} is a {type(value).__name__}, not a tensor"
            )
        if (value.is_floating_point() or value.is_complex()) and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{what}: weight {printable(key, 80)!r} holds NaN or inf values: refused")
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, ValueError, EquirlError) as exc:
        raise CheckpointError(f"{what} does not fit {type(module).__name__}: {_state_cause(exc)}") from None


def _state_cause(exc: BaseException) -> str:
    """``load_state_dict``'s cause without its heading: the key and both shapes of a size mismatch, or
    the missing / unexpected keys."""
    cause = first_cause(exc, limit=400)
    head = cause.split(":", 1)
    return head[1].strip() if cause.startswith("Error(s) in loading state_dict") and len(head) > 1 else cause
