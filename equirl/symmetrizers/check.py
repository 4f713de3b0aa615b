"""Measuring equivariance: ``max_g |f(g·x) - g·f(x)|``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from equirl.actions import GroupAction, TrivialAction
from equirl.groups import GroupElement

__all__ = ["check_equivariance", "equivariance_errors"]


def equivariance_errors(
    f: Callable[[Tensor], Tensor],
    in_action: GroupAction[Any],
    out_action: GroupAction[Any] | None,
    x: Tensor,
    elements: Iterable[GroupElement] | None = None,
) -> dict[str, float]:
    """The largest absolute error ``|f(g·x) - g·f(x)|`` per group element (by label).

    ``out_action=None`` checks invariance. Runs under ``torch.no_grad()``; the module's train/eval mode
    is left as it is.
    """
    out_action = out_action or TrivialAction(in_action.group)
    errs: dict[str, float] = {}
    with torch.no_grad():
        fx = f(x)
        for g in elements if elements is not None else in_action.group.elements:
            lhs = f(in_action.apply(x, g))
            rhs = out_action.apply(fx, g)
            errs[g.label] = float((lhs.float() - rhs.float()).abs().max()) if lhs.numel() else 0.0
    return errs


def check_equivariance(
    f: Callable[[Tensor], Tensor],
    in_action: GroupAction[Any],
    out_action: GroupAction[Any] | None,
    x: Tensor,
    elements: Iterable[GroupElement] | None = None,
) -> float:
    """The largest error ``max_g |f(g·x) - g·f(x)|`` over all group elements and the batch ``x``.

    Example::

        >>> import torch
        >>> from equirl import symmetrize
        >>> from equirl.actions import rotation_action
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        >>> inv = symmetrize(net, rotation_action(4), method="equitune")
        >>> check_equivariance(inv, rotation_action(4), None, torch.randn(2, 1, 4, 4)) < 1e-5
        True
    """
    return max(equivariance_errors(f, in_action, out_action, x, elements).values())
