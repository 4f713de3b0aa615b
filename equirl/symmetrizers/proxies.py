"""Proxy losses for equizero: ``g* = argmin_g ℓ(M(g·x))``.

A proxy takes the stacked outputs ``ys`` of shape ``(|G|, B, ...)`` (``ys[g] = M(g·x)``, in the frame of
``g``) and returns losses of shape ``(|G|, B)``. The named proxies score the last axis (logits or
Q-values) and sum over any axes in between (sequence positions), so the same names serve
classifiers, Q-networks and decoders:

* ``"entropy"`` -- entropy of ``softmax(y)`` (Basu et al., 2023, classification);
* ``"max_prob"`` -- ``-max softmax(y)``: choose the *most* confident element;
* ``"max_value"`` -- ``-max_a Q(·, a)``: the RL proxy (choose the element with the highest value);
* ``"nll"`` -- ``-max log softmax(y)``: negative log-likelihood of the model's own greedy output.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from equirl.errors import EquirlError

Proxy = Callable[[Tensor], Tensor]

__all__ = ["PROXIES", "Proxy", "entropy", "get_proxy", "max_prob", "max_value", "nll"]


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


PROXIES: dict[str, Proxy] = {"entropy": entropy, "max_prob": max_prob, "max_value": max_value, "nll": nll}


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
