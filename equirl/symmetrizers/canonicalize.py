"""Learned canonicalization: one pass of the big model per input.

References:

* Kaba, Mondal, Zhang, Bengio, Ravanbakhsh (2023), *Equivariance with Learned Canonicalization
  Functions*, ICML (arXiv 2022).
* Mondal, Panigrahi, Kaba, Rajeswar, Ravanbakhsh (2023), *Equivariant Adaptation of Large Pretrained
  Models*, NeurIPS (the prior towards the identity element).

A small *scorer* ``h`` rates every element of a finite group ``G`` through the transformed input:
``score_g(x) = h(g·x)``. Because ``score_g(k·x) = h(g k·x) = score_{gk}(x)``, the scores of ``k·x`` are
those of ``x`` re-indexed, so the chosen element ``g*(x) = argmax_g score_g(x)`` satisfies
``g*(k·x) = g*(x) k⁻¹`` -- whatever the weights of ``h`` are. The big model ``M`` then runs once, on the
canonical input ``g*·x``, and its output is mapped back with ``g*⁻¹``:

.. math::  \\Phi(x) = {g^*}^{-1} \\cdot M(g^* \\cdot x), \\qquad \\Phi(k\\cdot x) = k \\cdot \\Phi(x).

Ties (scores within ``tie_atol + tie_rtol·|max|``) happen for inputs with a non-trivial stabiliser; the
default ``tie_break="average"`` then averages over the tied elements (a set that transforms like the
argmax, so equivariance stays exact) at the price of one extra pass per tied element.
``tie_break="first"`` keeps exactly one pass but is not equivariant on such symmetric inputs.

Training: the forward pass is the hard argmax; with ``straight_through`` the canonical input also
carries ``Σ_g p_g (g·x) - stopgrad(...)`` (zero in value) so the task loss reaches the scorer through
the softmax ``p = softmax(score / temperature)``. :meth:`ScoredSymmetrizer.prior_loss` is the
cross-entropy of ``p`` to the identity element (Mondal et al.): it teaches the scorer to leave inputs
in the pose the pretrained model was trained on.

Cost: the scorer on ``|G|`` copies (a small network), the big model on one copy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from equirl.actions import GroupAction
from equirl.errors import ConfigError, GroupError
from equirl.registry import CANONICALIZE
from equirl.symmetrizers.base import Symmetrizer, SymmetrizerOutput, register_symmetrizer
from equirl.symmetrizers.methods import tie_mask
from equirl.symmetrizers.nets import ScoreNet

__all__ = ["Canonicalize", "ScoreNet", "ScoredSymmetrizer", "sparse_orbit_average"]


def sparse_orbit_average(
    sym: Symmetrizer, x: Tensor, weights: Tensor, perturb: Tensor | None = None
) -> tuple[Tensor, int]:
    """``Σ_g w[g, b] · g⁻¹·M(g·x_b)`` evaluating ``M`` only where ``w[g, b] > 0``, in one batched call.

    :param sym: the symmetrizer (its model and actions are used).
    :param x: inputs ``(B, ...)``.
    :param weights: ``(|G|, B)`` non-negative weights, each column summing to one.
    :param perturb: optional ``(B, ...)`` tensor added to every row of sample ``b`` (a zero-valued
        straight-through term that carries gradients to a scorer).
    :return: the averaged output ``(B, ...)`` and the number of rows the model was called on.
    """
    b_idx_t, g_idx_t = (weights.t() > 0).nonzero(as_tuple=True)  # sample-major
    rows = sym.in_action.apply_each(x[b_idx_t], g_idx_t)
    if perturb is not None:
        rows = rows + perturb[b_idx_t]
    y = sym._run_model(rows)
    back = sym.out_action.apply_each(y, g_idx_t, inverse=True)
    w = weights[g_idx_t, b_idx_t].to(back.dtype).view(-1, *([1] * (back.dim() - 1)))
    out = back.new_zeros((x.shape[0], *back.shape[1:]))
    out = out.index_add(0, b_idx_t, w * back)
    return out, int(rows.shape[0])


class ScoredSymmetrizer(Symmetrizer):
    """Shared base of the scorer-driven symmetrizers (:class:`Canonicalize`, ``MultiGroup``).

    :param model: the pretrained model ``M``.
    :param in_action: the group's action on inputs.
    :param out_action: the action on outputs (``None``: invariant outputs).
    :param scorer: the canonicalization network ``h`` (``(N, ...) -> (N,)``); default :class:`ScoreNet`.
    :param scorer_hidden: hidden sizes of the default scorer.
    :param prior_weight: weight of :meth:`prior_loss` (cross-entropy to the identity element).
    :param temperature: softmax temperature of the scorer's distribution over the group.
    :param tie_break: ``"average"`` (exactly equivariant) or ``"first"`` (lowest tied index, one pass).
    :param tie_atol: absolute tolerance under which two scores count as tied.
    :param tie_rtol: relative tolerance (times ``|max score|``).
    :param kwargs: passed to :class:`~equirl.symmetrizers.base.Symmetrizer` (``chunk_size``...).
    """

    def __init__(
        self,
        model: nn.Module | Callable[[Tensor], Tensor],
        in_action: GroupAction[Any],
        out_action: GroupAction[Any] | None = None,
        scorer: nn.Module | None = None,
        scorer_hidden: Sequence[int] = (64,),
        prior_weight: float = 1.0,
        temperature: float = 1.0,
        tie_break: str = "average",
        tie_atol: float = 1e-5,
        tie_rtol: float = 1e-5,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, in_action, out_action, **kwargs)
        if tie_break not in ("average", "first"):
            raise ConfigError(f"tie_break must be 'average' or 'first', got {tie_break!r}")
        if temperature <= 0:
            raise ConfigError(f"temperature must be positive, got {temperature}")
        if prior_weight < 0:
            raise ConfigError(f"prior_weight must be >= 0, got {prior_weight}")
        self.scorer = scorer if scorer is not None else ScoreNet(hidden=tuple(scorer_hidden))
        self.prior_weight = float(prior_weight)
        self.temperature = float(temperature)
        self.tie_break = tie_break
        self.tie_atol = float(tie_atol)
        self.tie_rtol = float(tie_rtol)

    # -- the canonicalization network ---------------------------------------------------------------
    def scores_from_orbit(self, orbit: Tensor) -> Tensor:
        """``(|G|, B)`` scores from the stacked orbit ``(|G|, B, ...)``: ``score[g, b] = h(g·x_b)``."""
        G, B = orbit.shape[0], orbit.shape[1]
        s = self.scorer(orbit.reshape(G * B, *orbit.shape[2:]))
        if s.numel() != G * B:
            raise GroupError(
                f"the scorer must return one score per row ({G * B}), got shape {tuple(s.shape)}"
            )
        return s.reshape(G, B).float()

    def scores(self, x: Tensor) -> Tensor:
        """``(|G|, B)`` scores ``h(g·x)`` (the scorer runs on ``|G|`` copies of ``x``)."""
        return self.scores_from_orbit(self.in_action.orbit(x))

    def distribution(self, x: Tensor) -> Tensor:
        """``(|G|, B)`` softmax of the scores over the group (columns sum to one)."""
        return torch.softmax(self.scores(x) / self.temperature, dim=0)

    def prior_loss(self, x: Tensor) -> Tensor:
        """``prior_weight · CE(p(x), identity)`` averaged over the batch (Mondal et al., 2023).

        Minimising it on (upright) training inputs makes the canonicalizer keep them as they are, so
        the pretrained model sees inputs in the pose it was trained on.
        """
        logp = torch.log_softmax(self.scores(x) / self.temperature, dim=0)
        return -self.prior_weight * logp[0].mean()  # index 0 is the identity element

    def tie_mask(self, scores: Tensor) -> Tensor:
        """``(|G|, B)`` 0/1 mask of the selected elements: all tied maxima, or the first one."""
        return tie_mask(scores, self.tie_atol, self.tie_rtol, self.tie_break == "first")

    def canonical_elements(self, x: Tensor) -> Tensor:
        """``(B,)`` index of ``g*(x)`` (the lowest index among tied maxima)."""
        with torch.no_grad():
            return self.scores(x).argmax(0)

    def canonicalize_input(self, x: Tensor) -> Tensor:
        """The canonical inputs ``g*(x)·x`` (what the big model sees; lowest index on ties)."""
        return self.in_action.apply_each(x, self.canonical_elements(x))

    def _straight_through(self, x: Tensor, orbit: Tensor, scores: Tensor) -> Tensor | None:
        """Zero-valued ``Σ_g p_g (g·x) - stopgrad`` so the task loss reaches the scorer (Kaba et al.)."""
        if not (
            self.training and torch.is_grad_enabled() and torch.is_floating_point(x) and scores.requires_grad
        ):
            return None
        p = torch.softmax(scores / self.temperature, dim=0).to(orbit.dtype)
        soft = (p.view(*p.shape, *([1] * (orbit.dim() - 2))) * orbit).sum(0)
        return soft - soft.detach()

    # -- weights and forward --------------------------------------------------------------------------
    def weights_from_mask(self, mask: Tensor) -> Tensor:
        """``(|G|, B)`` orbit weights from the selection mask (implemented by each method)."""
        raise NotImplementedError

    def forward_with_weights(self, x: Tensor) -> SymmetrizerOutput:
        if x.dim() < self._batched_dims:
            self._unbatched(x)
        B = x.shape[0]
        c = self.chunk_for(x)
        if c >= B:
            return self._forward_chunk(x)
        outs, ws = [], []
        for i in range(0, B, c):
            o, w = self._forward_chunk(x[i : i + c])
            outs.append(o)
            ws.append(w)
        return SymmetrizerOutput(torch.cat(outs), torch.cat(ws, dim=1))

    def _forward_chunk(self, x: Tensor) -> SymmetrizerOutput:
        orbit = self.in_action.orbit(x)
        scores = self.scores_from_orbit(orbit)
        with torch.no_grad():
            mask = self.tie_mask(scores.detach())
            w = self.weights_from_mask(mask)
        perturb = self._straight_through(x, orbit, scores)
        out, _ = sparse_orbit_average(self, x, w, perturb)
        return SymmetrizerOutput(out, w)

    def forward_loop(self, x: Tensor) -> Tensor:
        """Reference: per sample, per selected element, one model call (no batching)."""
        with torch.no_grad():
            w = self.weights_from_mask(self.tie_mask(self.scores(x)))
        outs = []
        for b in range(x.shape[0]):
            acc: Tensor | None = None
            for g in self.group.elements:
                wg = float(w[g.index, b])
                if wg <= 0:
                    continue
                yg = self.out_action.apply(self._run_model(self.in_action.apply(x[b : b + 1], g)), ~g)
                acc = wg * yg if acc is None else acc + wg * yg
            assert acc is not None
            outs.append(acc)
        return torch.cat(outs)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, prior_weight={self.prior_weight}, temperature={self.temperature}, "
            f"tie_break={self.tie_break}"
        )


@register_symmetrizer(CANONICALIZE)
class Canonicalize(ScoredSymmetrizer):
    """Learned canonicalization (Kaba et al., 2023; Mondal et al., 2023): ``g*⁻¹·M(g*·x)`` with
    ``g* = argmax_g h(g·x)``; the big model runs on one copy (plus one per tied element).

    Example::

        >>> import torch
        >>> from equirl import symmetrize
        >>> from equirl.actions import rotation_action
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        >>> can = symmetrize(net, rotation_action(4), method="canonicalize", prior_weight=0.5)
        >>> x = torch.randn(2, 1, 4, 4)
        >>> torch.allclose(can(torch.rot90(x, 1, (-2, -1))), can(x), atol=1e-5)
        True
        >>> can.prior_loss(x).shape
        torch.Size([])
    """

    def weights_from_mask(self, mask: Tensor) -> Tensor:
        return mask / mask.sum(0, keepdim=True)
