"""Equitune, equizero and λ-equitune.

References:

* Basu, Sattigeri, Ramamurthy, Chenthamarakshan, Varshney, Varshney, Das (2023),
  *Equi-Tuning: Group Equivariant Fine-Tuning of Pretrained Models*, AAAI.
* Basu, Katdare, Sattigeri, Chenthamarakshan, Driggs-Campbell, Das, Varshney (2023),
  *Efficient Equivariant Transfer Learning from Pretrained Models*, NeurIPS (equizero, λ-equitune).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from equirl.actions import GroupAction
from equirl.errors import ConfigError
from equirl.registry import EQUITUNE, EQUIZERO, LAMBDA
from equirl.symmetrizers.base import Symmetrizer, SymmetrizerOutput, register_symmetrizer
from equirl.symmetrizers.nets import LambdaNet
from equirl.symmetrizers.proxies import Proxy, get_proxy

__all__ = [
    "EquiTune",
    "EquiZero",
    "LambdaEquiTune",
    "LambdaNet",
    "straight_through",
    "tie_mask",
    "tie_weights",
]


def tie_mask(
    scores: Tensor, atol: float, rtol: float, first: bool = False, dtype: torch.dtype | None = None
) -> Tensor:
    """``(|G|, B)`` 0/1 mask of the best elements along dim 0 (higher score is better): every element
    within ``atol + rtol·|max|`` of the column's maximum, or only the lowest index of the maximum with
    ``first`` (deterministic, but not equivariant when scores tie).

    Averaging over the whole tied set keeps a selection equivariant: the tied set of ``k·x`` is the tied
    set of ``x`` re-indexed, while "the lowest tied index" is not.

    :param scores: ``(|G|, B)`` scores.
    :param atol: absolute tolerance under which two scores count as tied.
    :param rtol: relative tolerance (times ``|max|``).
    :param first: take only the first maximum.
    :param dtype: the mask's dtype (default: the scores').
    """
    if first:
        return torch.zeros_like(scores, dtype=dtype).scatter_(0, scores.argmax(0, keepdim=True), 1.0)
    best = scores.amax(0, keepdim=True)
    return (scores >= best - (atol + rtol * best.abs())).to(dtype or scores.dtype)


def tie_weights(
    scores: Tensor, atol: float, rtol: float, first: bool = False, dtype: torch.dtype | None = None
) -> Tensor:
    """``(|G|, B)`` selection weights: :func:`tie_mask` normalised, uniform over the tied maxima of each
    column (each column sums to one), in ``dtype`` (default: the scores')."""
    mask = tie_mask(scores, atol, rtol, first, dtype)
    return mask / mask.sum(0, keepdim=True)


def weight_dtype(ys: Tensor) -> torch.dtype:
    """The dtype orbit weights take for outputs ``ys``: theirs, or float32 for integer / bool outputs
    (weights are fractions; rounded to an integer dtype they would be zeros)."""
    return ys.dtype if ys.is_floating_point() or ys.is_complex() else torch.float32


def straight_through(hard: Tensor, soft: Tensor) -> Tensor:
    """``hard`` in value, ``soft``'s gradient: ``soft + stopgrad(hard - soft)`` (equizero's forward with
    equitune's gradient)."""
    return soft + (hard - soft).detach()


@register_symmetrizer(EQUITUNE)
class EquiTune(Symmetrizer):
    """Equitune: :math:`M_G(x) = \\frac{1}{|G|}\\sum_g g^{-1}\\cdot M(g\\cdot x)` (Basu et al., 2023).

    The output is mapped back with :math:`g^{-1}` (the released code applies :math:`g`, which is only
    right for groups whose elements are their own inverses).

    Example::

        >>> import torch
        >>> from equirl.groups import flip
        >>> from equirl.actions import signed_permutation_action, permutation_action
        >>> q = torch.nn.Linear(4, 2)
        >>> z2 = flip()
        >>> obs = signed_permutation_action(z2, [[0, 1, 2, 3]], signs=[[-1, -1, -1, -1]])
        >>> act = permutation_action(z2, [[1, 0]])
        >>> eq = EquiTune(q, obs, act)
        >>> x = torch.randn(5, 4)
        >>> torch.allclose(eq(-x), eq(x).flip(-1), atol=1e-6)
        True
    """

    fold_safe = True  # a uniform average: continuous in the outputs, and x_rows unread

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._uniform: dict[Any, Tensor] = {}

    def combine(self, x_rows: Tensor | None, ys: Tensor) -> SymmetrizerOutput:
        G, B = ys.shape[0], ys.shape[1]
        return SymmetrizerOutput(self.combine_output(x_rows, ys), ys.new_full((G, B), 1.0 / G))

    def combine_output(self, x_rows: Tensor | None, ys: Tensor) -> Tensor:
        back = self.out_action.inverse_stacked(ys)
        if not back.is_floating_point():
            return back.float().mean(0)
        if back.numel() <= 1 << 12:  # small (Q-values, logits of a few samples): one reduction
            return back.mean(0)
        G = back.shape[0]
        key = (back.device, back.dtype, G)
        w = self._uniform.get(key)
        if w is None:
            with torch.inference_mode(False):  # an inference tensor cannot be saved for backward later
                w = self._uniform[key] = torch.full((G,), 1.0 / G, dtype=back.dtype, device=back.device)
        # one matrix-vector product instead of mean's sum + division
        return torch.mv(back.reshape(G, -1).t(), w).view(back.shape[1:])

    def forward(self, x: Tensor) -> Tensor:
        # fast path: no weights to build; a single sample is never chunked
        B = x.shape[0]
        c = self.chunk_for(x) if B > 1 else 1
        if c >= B:
            return self.combine_output(*self._orbit_outputs(x))
        return torch.cat([self.combine_output(*self._orbit_outputs(x[i : i + c])) for i in range(0, B, c)])


@register_symmetrizer(EQUIZERO)
class EquiZero(Symmetrizer):
    """Equizero: :math:`g^* = \\arg\\min_g \\ell(M(g\\cdot x))`, output :math:`{g^*}^{-1}\\cdot M(g^*\\cdot x)`.

    Ties (losses within ``tie_atol + tie_rtol·|min|``) are averaged over the tied elements, which keeps
    the output exactly equivariant when, e.g., ``x`` is itself symmetric; ``tie_break="first"`` takes the
    lowest element index instead (deterministic, but not equivariant under ties).

    :param proxy: a named proxy (``entropy``, ``max_prob``, ``max_value``, ``nll``) or a callable
        ``(|G|, B, ...) -> (|G|, B)``; see :mod:`equirl.symmetrizers.proxies`.
    :param straight_through: in training mode with gradients on, forward = equizero and gradient =
        equitune (``tune + (zero - tune).detach()``), so the argmin can be finetuned through.
    """

    def __init__(
        self,
        model: nn.Module | Callable[[Tensor], Tensor],
        in_action: GroupAction[Any],
        out_action: GroupAction[Any] | None = None,
        proxy: str | Proxy = "entropy",
        straight_through: bool = True,
        tie_break: str = "average",
        tie_atol: float = 1e-6,
        tie_rtol: float = 1e-6,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, in_action, out_action, **kwargs)
        self.proxy_name = proxy if isinstance(proxy, str) else getattr(proxy, "__name__", "custom")
        self.proxy = get_proxy(proxy)
        if tie_break not in ("average", "first"):
            raise ConfigError(f"tie_break must be 'average' or 'first', got {tie_break!r}")
        self.straight_through = straight_through
        self.tie_break = tie_break
        self.tie_atol = tie_atol
        self.tie_rtol = tie_rtol

    def select(self, ys: Tensor) -> Tensor:
        """``(|G|, B)`` selection weights: one-hot of the argmin, or uniform over tied minima."""
        with torch.no_grad():
            loss = self.proxy(ys)
            if loss.shape != ys.shape[:2]:
                raise ConfigError(
                    f"the proxy must return shape {tuple(ys.shape[:2])}, got {tuple(loss.shape)}"
                )
            return tie_weights(-loss, self.tie_atol, self.tie_rtol, self.tie_break == "first").to(
                weight_dtype(ys)
            )

    def uses_straight_through(self, ys: Tensor) -> bool:
        """Whether this call takes the straight-through path (training, with gradients reaching ``ys``)."""
        return self.straight_through and self.training and torch.is_grad_enabled() and ys.requires_grad

    def combine(self, x_rows: Tensor | None, ys: Tensor) -> SymmetrizerOutput:
        w = self.select(ys)
        B = w.shape[1]
        if bool((w.amax(0) == 1).all()):  # no ties: map back only the chosen outputs
            pick = w.argmax(0)
            index = pick.view(1, B, *([1] * (ys.dim() - 2))).expand(1, *ys.shape[1:])
            chosen = ys.gather(0, index)[0]  # ys[pick[b], b]
            zero = self.out_action.apply_each(chosen, pick, inverse=True)
            if not zero.is_floating_point() and not zero.is_complex():
                zero = zero.float()  # the dtype of a tie's average: the same whether or not inputs tie
        else:
            zero = self.weighted_average(ys, w)
        if self.uses_straight_through(ys):
            zero = straight_through(zero, self.out_action.inverse_stacked(ys).mean(0))
        return SymmetrizerOutput(zero, w)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, proxy={self.proxy_name}, tie_break={self.tie_break}"


@register_symmetrizer(LAMBDA)
class LambdaEquiTune(Symmetrizer):
    """λ-equitune: :math:`M(x) = \\sum_g \\lambda(g\\cdot x)\\, g^{-1}\\cdot M(g\\cdot x) / \\sum_g \\lambda(g\\cdot x)`
    (Basu et al., NeurIPS 2023), with :math:`\\lambda = \\exp(\\text{λ-net})` so the weights are a softmax
    over the group: positive and normalised.

    :param lambda_net: a module mapping rows ``(N, ...)`` to ``(N,)`` logits; default :class:`LambdaNet`.
    :param lambda_in_features: input size of the default λ-net (else inferred lazily).
    :param lambda_hidden: hidden sizes of the default λ-net.
    :param lambda_features: λ's input: ``None`` for the transformed input ``g·x``, or a callable mapping
        the transformed rows to features (e.g. the frozen feature extractor of ``M``).
    :param detach_features: stop λ's gradient from flowing into the feature callable.
    """

    def __init__(
        self,
        model: nn.Module | Callable[[Tensor], Tensor],
        in_action: GroupAction[Any],
        out_action: GroupAction[Any] | None = None,
        lambda_net: nn.Module | None = None,
        lambda_in_features: int | None = None,
        lambda_hidden: tuple[int, ...] = (64,),
        lambda_features: Callable[[Tensor], Tensor] | None = None,
        detach_features: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, in_action, out_action, **kwargs)
        self.lambda_net = (
            lambda_net if lambda_net is not None else LambdaNet(lambda_in_features, tuple(lambda_hidden))
        )
        self.lambda_features = lambda_features
        self.detach_features = detach_features

    def lambda_logits(self, x_rows: Tensor) -> Tensor:
        """``(|G|·B,)`` logits of λ on the transformed rows."""
        z = x_rows
        if self.lambda_features is not None:
            if self.detach_features:
                with torch.no_grad():
                    z = self.lambda_features(x_rows)
            else:
                z = self.lambda_features(x_rows)
        if not torch.is_floating_point(z):
            z = z.float()
        return self.lambda_net(z).reshape(-1)

    def weights_from_logits(self, logits: Tensor, ys: Tensor) -> Tensor:
        """``(|G|, B)`` weights: the softmax over the group of λ's ``(|G|·B,)`` logits, in ``ys``'s dtype
        (float32 for integer outputs)."""
        G, B = ys.shape[0], ys.shape[1]
        return torch.softmax(logits.reshape(G, B).float(), dim=0).to(weight_dtype(ys))

    def combine(self, x_rows: Tensor | None, ys: Tensor) -> SymmetrizerOutput:
        assert x_rows is not None  # not fold_safe: never folded
        w = self.weights_from_logits(self.lambda_logits(x_rows), ys)
        return SymmetrizerOutput(self.weighted_average(ys, w), w)
