"""One Adam loop for the short fits of the adapters: a λ-net, a canonicalization scorer, a finetune.

The caller supplies the loss of each step (drawing its own mini-batch, with its own generator), so the
data pipeline stays where it is; :func:`fit` owns the optimizer, the optional gradient clipping and
learning-rate schedule, the loss history, and a one-line error when the loss stops being finite.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from equirl.errors import EquirlError

__all__ = ["NonFiniteLossError", "fit"]


class NonFiniteLossError(EquirlError, ArithmeticError):
    """The training loss became NaN or infinite (usually: the learning rate is too high)."""


def fit(
    params: Iterable[nn.Parameter],
    loss_fn: Callable[[int], Tensor],
    steps: int,
    lr: float,
    *,
    weight_decay: float = 0.0,
    clip: float | None = None,
    lr_lambda: Callable[[int], float] | None = None,
    on_step: Callable[[int, float], None] | None = None,
    what: str = "training",
) -> list[float]:
    """``steps`` Adam steps on ``loss_fn(step)``; returns the loss of every step.

    Only ``params`` are updated (freeze or leave out the rest); the train/eval mode of the modules is
    the caller's.

    Example::

        >>> import torch
        >>> w = torch.nn.Parameter(torch.tensor([3.0]))
        >>> losses = fit([w], lambda step: (w - 1).square().sum(), steps=200, lr=0.1)
        >>> len(losses), round(float(w), 2)
        (200, 1.0)

    :param params: the parameters to train.
    :param loss_fn: the scalar loss of step ``0..steps-1`` (it draws its own mini-batch).
    :param steps: optimizer steps.
    :param lr: Adam learning rate.
    :param weight_decay: Adam weight decay.
    :param clip: clip the gradients' global norm to this value (``None``: no clipping).
    :param lr_lambda: learning-rate factor of step ``s`` (``torch.optim.lr_scheduler.LambdaLR``).
    :param on_step: called as ``on_step(step, loss)`` after each step (logging, TensorBoard...).
    :param what: names the fit in the error message.
    :raises NonFiniteLossError: when a step's loss is NaN or infinite (nothing is updated on that step).
    """
    trained = list(params)
    opt = torch.optim.Adam(trained, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda) if lr_lambda is not None else None
    losses: list[float] = []
    for step in range(steps):
        loss = loss_fn(step)
        value = loss.detach().item()
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"{what}: the loss is {value} at step {step + 1} of {steps}; lower the learning rate (lr={lr})"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            nn.utils.clip_grad_norm_(trained, clip)
        opt.step()
        if sched is not None:
            sched.step()
        losses.append(value)
        if on_step is not None:
            on_step(step, value)
    return losses
