"""Symmetrizers: one interface, several methods (see :class:`~equirl.symmetrizers.base.Symmetrizer`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from equirl.actions import GroupAction
from equirl.errors import EquirlError
from equirl.registry import EQUITUNE, get_method, method_names, validate_method_kwargs
from equirl.symmetrizers.base import SYMMETRIZERS, Symmetrizer, SymmetrizerOutput, register_symmetrizer
from equirl.symmetrizers.canonicalize import Canonicalize, ScoredSymmetrizer, ScoreNet, sparse_orbit_average
from equirl.symmetrizers.check import check_equivariance, equivariance_errors
from equirl.symmetrizers.methods import EquiTune, EquiZero, LambdaEquiTune, LambdaNet
from equirl.symmetrizers.multigroup import ISLayer, MultiGroup, multigroup_pass_count
from equirl.symmetrizers.nets import SmallMLP
from equirl.symmetrizers.proxies import PROXIES, get_proxy

__all__ = [
    "PROXIES",
    "SYMMETRIZERS",
    "Canonicalize",
    "EquiTune",
    "EquiZero",
    "ISLayer",
    "LambdaEquiTune",
    "LambdaNet",
    "MultiGroup",
    "ScoreNet",
    "ScoredSymmetrizer",
    "SmallMLP",
    "Symmetrizer",
    "SymmetrizerOutput",
    "check_equivariance",
    "equivariance_errors",
    "get_proxy",
    "multigroup_pass_count",
    "register_symmetrizer",
    "sparse_orbit_average",
    "symmetrize",
]


def symmetrize(
    model: nn.Module | Callable[[Tensor], Tensor],
    in_action: GroupAction[Any],
    out_action: GroupAction[Any] | None = None,
    method: str = EQUITUNE,
    **kwargs: Any,
) -> Symmetrizer:
    """Wrap ``model`` so that it is equivariant to ``in_action.group``.

    :param model: the pretrained model ``M``.
    :param in_action: the group's action on inputs.
    :param out_action: its action on outputs (``None``: invariant outputs).
    :param method: a symmetrizing method of :mod:`equirl.registry` by name or alias (``"equitune"``,
        ``"equizero"``, ``"lambda"`` / ``"λ"``, ``"canonicalize"``, ``"multigroup"``), or the name of a
        class added with :func:`register_symmetrizer`.
    :param kwargs: the method's options (e.g. ``proxy="max_value"`` for equizero), checked against the
        registry (:func:`equirl.registry.validate_method_kwargs`).

    Example::

        >>> import torch
        >>> from equirl import symmetrize
        >>> from equirl.groups import flip
        >>> from equirl.actions import signed_permutation_action, permutation_action
        >>> z2 = flip()
        >>> obs = signed_permutation_action(z2, [[0, 1, 2, 3]], signs=[[-1] * 4])
        >>> acts = permutation_action(z2, [[1, 0]])
        >>> q = symmetrize(torch.nn.Linear(4, 2), obs, acts, method="equizero", proxy="max_value")
        >>> q(torch.randn(3, 4)).shape
        torch.Size([3, 2])
    """
    if isinstance(method, str) and method in SYMMETRIZERS and method not in method_names(aliases=True):
        return SYMMETRIZERS[method](model, in_action, out_action, **kwargs)  # a user-registered class
    try:
        spec = get_method(method)
    except EquirlError:
        extra = sorted(set(SYMMETRIZERS) - set(method_names()))
        names = ", ".join(method_names(base=False) + tuple(extra))
        raise EquirlError(f"unknown method {method!r}; choose one of {names}") from None
    if spec.pseudo:
        raise EquirlError(
            f"method {spec.name!r} chooses a method by evaluation (equirl.rl.select_method for RL agents); "
            f"symmetrize needs one of {', '.join(method_names(base=False))}"
        )
    if not spec.symmetrizes:
        raise EquirlError(
            f"method {spec.name!r} leaves the model as it is; use the model itself, or one of "
            f"{', '.join(method_names(base=False))}"
        )
    validate_method_kwargs(spec.name, kwargs, adapter="core")
    return SYMMETRIZERS[spec.name](model, in_action, out_action, **kwargs)
