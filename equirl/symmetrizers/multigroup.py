"""Product groups at ``Σ|G_i|`` cost, and the invariant-symmetric (IS) layer.

Reference: Baltaji, Basu, Varshney (2024), *Efficient Model-Agnostic Multi-Group Equivariant
Networks*, TMLR (arXiv 2310.09675, 2023).

**The design.** For ``G = G_1 × ... × G_k`` acting on one input, equitune needs ``Π|G_i|`` passes of
the model ``M``. Following Baltaji et al., each factor ``G_i`` gets its own branch that *averages*
over ``G_i`` and is *invariant* (for invariant outputs; equivariant in general) to the other factors
``G_{-i}``; the branches are then combined (averaged), for ``Σ|G_i|`` passes. Averaging over
``G_{-i}`` to get that invariance would cost the full product again, and for an arbitrary ``M`` no
fixed set of fewer than ``|G|`` elements can be exactly equivariant (the set must move with the
input), so the branches here remove ``G_{-i}`` by *canonicalization*: a small scorer ``h`` rates every
element, ``g* = argmax_g h(g·x)`` (``g*(k·x) = g*(x) k⁻¹`` for every ``k``), and branch ``i`` averages
over the coset

.. math::  F_i(x) = \\{(a, g^*_{-i}(x)) : a \\in G_i\\}, \\qquad
           \\Phi(x) = \\frac{1}{k} \\sum_i \\frac{1}{|G_i|} \\sum_{g \\in F_i(x)} g^{-1} \\cdot M(g \\cdot x).

Since ``F_i(k·x) = F_i(x)·k⁻¹`` as a set (the ``G_i`` coordinate is free, the others follow ``g*``),
every branch -- and so their mean -- satisfies ``Φ(k·x) = k·Φ(x)`` for *every* ``k`` in the full
product, for any ``M``, any scorer weights, invariant outputs (classification) and equivariant ones
alike (e.g. Q-values permuted by each factor). The ``k`` cosets share the element ``g*``, so the model
runs on ``Σ|G_i| - k + 1`` copies (C4 × Z2: 5 instead of 8; D4 × D4: 15 instead of 64), plus the
scorer (a small network) on ``|G|`` copies. Tied scores (symmetric inputs) are averaged as in
:class:`~equirl.symmetrizers.canonicalize.Canonicalize`, which keeps the result exact.

**The IS layer** (:class:`ISLayer`) fuses several inputs ``z_1..z_n``, input ``j`` acted on by its own
group ``H_j``: ``IS(z) = ρ(Σ_j φ(P_j z_j))`` with ``P_j z = (1/|H_j|) Σ_h h·z`` the projection on the
``H_j``-invariants and shared ``φ, ρ``. It is invariant to ``H_1 × ... × H_n`` acting input-wise and
symmetric under permutations of inputs that carry the same action -- the invariant-symmetric
constraint of Baltaji et al., whose linear case is exactly ``W Σ_j P_j z_j``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from equirl.actions import GroupAction
from equirl.errors import ConfigError, GroupError
from equirl.registry import MULTIGROUP
from equirl.symmetrizers.base import register_symmetrizer
from equirl.symmetrizers.canonicalize import ScoredSymmetrizer

__all__ = ["ISLayer", "MultiGroup", "multigroup_pass_count"]


def multigroup_pass_count(factor_orders: Sequence[int]) -> int:
    """Model passes per input of :class:`MultiGroup` without ties: ``Σ|G_i| - k + 1``."""
    return sum(factor_orders) - len(factor_orders) + 1


@register_symmetrizer(MULTIGROUP)
class MultiGroup(ScoredSymmetrizer):
    """Multi-group symmetrizer for a direct product ``G_1 × ... × G_k`` (Baltaji et al.), exact for
    the full product at ``Σ|G_i| - k + 1`` model passes per input.

    The input and output actions are actions of the product group (e.g. from
    :func:`~equirl.actions.product_action` or :func:`~equirl.actions.image_action` of ``C4xZ2``); the
    factors are read from ``group.factors``. Scorer arguments (``scorer``, ``prior_weight``,
    ``temperature``, ``tie_break``...) are those of
    :class:`~equirl.symmetrizers.canonicalize.ScoredSymmetrizer`: train the scorer with
    :meth:`prior_loss` on upright inputs, or share the scorer of a trained
    :class:`~equirl.symmetrizers.canonicalize.Canonicalize` (``scorer=can.scorer``).

    :param model: the pretrained model ``M``.
    :param in_action: the product group's action on inputs.
    :param out_action: its action on outputs (``None``: invariant outputs).
    :param kwargs: scorer and chunking options (see above).

    Example::

        >>> import torch
        >>> from equirl import symmetrize
        >>> from equirl.actions import product_action, signed_permutation_action
        >>> from equirl.groups import cyclic, direct_product, flip
        >>> c4, z2 = cyclic(4), flip()  # C4 cycles features 0..3, Z2 negates feature 4
        >>> act = product_action(direct_product(c4, z2), [
        ...     signed_permutation_action(c4, [[3, 0, 1, 2, 4]]),
        ...     signed_permutation_action(z2, [[0, 1, 2, 3, 4]], signs=[[1, 1, 1, 1, -1]])])
        >>> mg = symmetrize(torch.nn.Linear(5, 3), act, method="multigroup")
        >>> x = torch.randn(2, 5)
        >>> g = act.group.element("r1*flip")
        >>> torch.allclose(mg(act.apply(x, g)), mg(x), atol=1e-5)
        True
        >>> mg.passes_per_input  # 4 + 2 - 1 passes per input, instead of 8
        5
    """

    def __init__(
        self,
        model: nn.Module | Callable[[Tensor], Tensor],
        in_action: GroupAction[Any],
        out_action: GroupAction[Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, in_action, out_action, **kwargs)
        group = in_action.group
        if not group.factors:
            raise GroupError(
                f"multigroup needs a direct product group (e.g. get_group('C4xZ2')), got {group.name}: "
                "use method='equitune' or 'canonicalize' for a single group"
            )
        self.factor_orders: tuple[int, ...] = tuple(f.order for f in group.factors)
        # element index must be the row-major index of its factor tuple (direct_product's order)
        for i, d in enumerate(group.data):
            if not isinstance(d, tuple) or len(d) != len(self.factor_orders):
                raise GroupError(f"{group.name}: element data must be tuples of factor indices")
            flat = 0
            for n, v in zip(self.factor_orders, d):
                flat = flat * n + int(v)
            if flat != i:
                raise GroupError(f"{group.name}: elements are not in direct_product order")

    @property
    def passes_per_input(self) -> int:
        """Model passes per input when no scores tie: ``Σ|G_i| - k + 1``."""
        return multigroup_pass_count(self.factor_orders)

    def weights_from_mask(self, mask: Tensor) -> Tensor:
        """Mean over factors ``i`` of: the selection's marginal on ``G_{-i}`` times uniform on ``G_i``."""
        G, B = mask.shape
        p = (mask / mask.sum(0, keepdim=True)).view(*self.factor_orders, B)
        w = torch.zeros_like(p)
        for i, n in enumerate(self.factor_orders):
            w = w + p.sum(dim=i, keepdim=True).expand_as(p) / n
        return (w / len(self.factor_orders)).reshape(G, B)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, factors={self.factor_orders}, passes={self.passes_per_input}"


class ISLayer(nn.Module):
    """Invariant-symmetric (IS) layer of Baltaji et al.: ``ρ(Σ_j φ(P_j z_j))``.

    Invariant to the product of the per-input groups (input ``j`` transformed by any element of its
    group ``H_j``) and symmetric in its inputs (any permutation of inputs sharing the same action).

    :param actions: one action per input, or a single action shared by ``num_inputs`` inputs.
    :param out_features: output size.
    :param hidden: width of the shared per-input map ``φ`` (``0``: linear IS layer ``W Σ_j P_j z_j``).
    :param num_inputs: number of inputs when a single shared action is given.
    :param in_features: flattened size of each input (``None``: inferred at the first call).

    Example::

        >>> import torch
        >>> from equirl.actions import rotation_action
        >>> layer = ISLayer(rotation_action(4), out_features=3, num_inputs=2)
        >>> a, b = torch.randn(5, 1, 4, 4), torch.randn(5, 1, 4, 4)
        >>> y = layer(a, b)
        >>> torch.allclose(y, layer(torch.rot90(b, 1, (-2, -1)), a), atol=1e-5)
        True
    """

    def __init__(
        self,
        actions: GroupAction[Any] | Sequence[GroupAction[Any]],
        out_features: int,
        hidden: int = 64,
        num_inputs: int | None = None,
        in_features: int | None = None,
    ) -> None:
        super().__init__()
        if isinstance(actions, GroupAction):
            if num_inputs is None or num_inputs < 1:
                raise ConfigError("with a single shared action, pass num_inputs >= 1")
            acts = [actions] * num_inputs
        else:
            acts = list(actions)
            if not acts or (num_inputs is not None and num_inputs != len(acts)):
                raise ConfigError(f"need one action per input, got {len(acts)} for num_inputs={num_inputs}")
        self.actions = acts
        if hidden > 0:
            first = nn.Linear(in_features, hidden) if in_features is not None else nn.LazyLinear(hidden)
            self.phi: nn.Module = nn.Sequential(nn.Flatten(), first, nn.ReLU())
            self.rho: nn.Module = nn.Linear(hidden, out_features)
        else:
            lin = (
                nn.Linear(in_features, out_features)
                if in_features is not None
                else nn.LazyLinear(out_features)
            )
            self.phi = nn.Sequential(nn.Flatten(), lin)
            self.rho = nn.Identity()

    @property
    def num_inputs(self) -> int:
        return len(self.actions)

    @staticmethod
    def project(action: GroupAction[Any], z: Tensor) -> Tensor:
        """``P z = (1/|H|) Σ_h h·z``: the projection on the ``H``-invariant subspace."""
        return action.orbit(z).mean(0)

    def forward(self, *zs: Tensor) -> Tensor:
        """Fuse ``num_inputs`` tensors of shape ``(B, ...)`` into ``(B, out_features)``."""
        if len(zs) == 1 and isinstance(zs[0], (list, tuple)):
            zs = tuple(zs[0])
        if len(zs) != self.num_inputs:
            raise ConfigError(f"ISLayer expects {self.num_inputs} inputs, got {len(zs)}")
        total = sum((self.phi(self.project(a, z)) for a, z in zip(self.actions, zs)), start=torch.zeros(()))
        return self.rho(total)

    def extra_repr(self) -> str:
        groups = ", ".join(a.group.name for a in self.actions)
        return f"inputs=[{groups}], invariant order={math.prod(a.group.order for a in self.actions)}"
