"""Proxy losses for equizero: ``g* = argmin_g ℓ(M(g·x))``.

A proxy takes the stacked outputs ``ys`` of shape ``(|G|, B, ...)`` (``ys[g] = M(g·x)``, in the frame of
``g``) and returns losses of shape ``(|G|, B)``. The named proxies score the last axis (logits or
Q-values) and sum over any axes in between (sequence positions), so the same names serve
classifiers, Q-networks and decoders:

* ``"entropy"`` -- entropy of ``softmax(y)`` (Basu et al., 2023, classification);
* ``"max_prob"`` -- ``-max softmax(y)``: choose the *most* confident element;
* ``"max_value"`` -- ``-max_a Q(·, a)``: the RL proxy (choose the element with the highest value);
* ``"nll"`` -- ``-max log softmax(y)``: negative log-likelihood of the model's own greedy output;
* ``"action_gap"`` -- ``-(max_a y - second max_a y)``: the element where the model is most decisive;
* ``"min_spread"`` -- ``max_a y - min_a y``: the element whose outputs are *closest together*. For a
  Q-network this is the pose whose action values look like the ones it was trained on: a well-trained
  agent's values on its own (familiar) states are nearly equal across actions (any action can still be
  recovered from), while on states it never saw (e.g. mirrored ones) its values are extrapolated and
  spread apart (``docs/rl.md``, "Methods that never hurt");
* ``"quantile_spread"`` -- for quantile outputs ``(|G|, B, n_quantiles, A)`` only: the spread
  (standard deviation over the quantiles) of the greedy action's return distribution, i.e. the element
  where a QR-DQN agent is least uncertain.

Every named proxy scores element ``g`` from ``M(g·x)`` alone, which is what keeps equizero exactly
equivariant: for the input ``h·x`` the orbit outputs are the same set re-indexed by ``g ↦ gh``, so the
scores, the argmin (and the averaged ties) move with them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from equirl.errors import EquirlError

Proxy = Callable[[Tensor], Tensor]

__all__ = [
    "PROXIES",
    "Proxy",
    "action_gap",
    "entropy",
    "get_proxy",
    "max_prob",
    "max_value",
    "min_spread",
    "nll",
    "quantile_spread",
]


def _reduce(per_pos: Tensor) -> Tensor:
    """``(G, B, ...)`` -> ``(G, B)`` by summing the positions."""
    return per_pos.flatten(2).sum(-1) if per_pos.dim() > 2 else per_pos


def entropy(ys: Tensor) -> Tensor:
    logp = torch.log_softmax(ys.float(), dim=-1)
    return _reduce(-(logp.exp() * logp).sum(-1))


def max_prob(ys: Tensor) -> Tensor:
    return _reduce(-torch.softmax(ys.float(), dim=-1).amax(-1))


def max_value(ys: Tensor) -> Tensor:
    return _reduce(-ys.float().amax(-1))


def nll(ys: Tensor) -> Tensor:
    return _reduce(-torch.log_softmax(ys.float(), dim=-1).amax(-1))


def action_gap(ys: Tensor) -> Tensor:
    y = ys.float()
    if y.shape[-1] < 2:
        return _reduce(torch.zeros_like(y[..., 0]))
    top = y.topk(2, dim=-1).values
    return _reduce(-(top[..., 0] - top[..., 1]))


def min_spread(ys: Tensor) -> Tensor:
    y = ys.float()
    return _reduce(y.amax(-1) - y.amin(-1))


def quantile_spread(ys: Tensor) -> Tensor:
    """``(|G|, B, n_quantiles, A)`` -> ``(|G|, B)``: std over the quantiles of the greedy action (greedy by
    the quantile mean), summed over any axes between ``B`` and the quantiles."""
    if ys.dim() < 4:
        raise EquirlError(
            f"the quantile_spread proxy needs quantile outputs (|G|, B, n_quantiles, A), got shape {tuple(ys.shape)}"
        )
    y = ys.float()
    greedy = y.mean(-2).argmax(-1, keepdim=True)  # (G, B, ..., 1)
    z = torch.take_along_dim(y, greedy.unsqueeze(-2).expand(*y.shape[:-1], 1), dim=-1)[..., 0]
    return _reduce(z.std(-1, unbiased=False))


PROXIES: dict[str, Proxy] = {
    "entropy": entropy,
    "max_prob": max_prob,
    "max_value": max_value,
    "nll": nll,
    "action_gap": action_gap,
    "min_spread": min_spread,
    "quantile_spread": quantile_spread,
}


def get_proxy(proxy: str | Proxy) -> Proxy:
    """A proxy by name, or the callable itself."""
    if callable(proxy):
        return proxy
    try:
        return PROXIES[proxy]
    except KeyError:
        raise EquirlError(
            f"unknown equizero proxy {proxy!r}; choose one of {sorted(PROXIES)} or pass a callable"
        ) from None
