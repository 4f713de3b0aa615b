"""One Adam loop for the fits of the adapters and the benchmarks: a λ-net, a canonicalization scorer, a finetune.

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

__all__ = ["KeepBest", "NonFiniteLossError", "fit"]


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
    on_step: Callable[[int, float], bool | None] | None = None,
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
    :param on_step: called as ``on_step(step, loss)`` after each step (logging, TensorBoard, validation);
        returning ``True`` stops the fit there (early stopping).
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
        if on_step is not None and on_step(step, value):
            break
    return losses


class KeepBest:
    """Keep the best state of a module by a validation score, for :func:`fit`'s ``on_step``.

    The score (higher is better; a tuple compares lexicographically, e.g. ``(accuracy, -loss)``) is taken
    by :meth:`start` before the first step, then every ``eval_every`` steps and after the last one;
    :meth:`restore` loads the best state seen, so a fit never ends worse on the validation data than it
    started. ``patience`` scores without improvement stop the fit (``on_step`` returns ``True``).

    :param module: the module being trained (its ``state_dict`` is copied at each new best).
    :param score: the validation score of the module as it is now.
    :param steps: the fit's number of steps (the last one is always scored).
    :param eval_every: steps between scores.
    :param patience: scores without improvement before stopping (``None``: never stop early).
    :param history: if given, ``(step, score[0])`` of every score is appended to it.
    """

    def __init__(
        self,
        module: nn.Module,
        score: Callable[[], tuple[float, ...]],
        steps: int,
        eval_every: int = 25,
        patience: int | None = None,
        history: list[tuple[int, float]] | None = None,
    ) -> None:
        if eval_every < 1:
            raise EquirlError(f"eval_every must be positive, got {eval_every}")
        if patience is not None and patience < 1:
            raise EquirlError(f"patience must be positive, got {patience}")
        self.module, self.score, self.steps = module, score, steps
        self.eval_every, self.patience, self.history = eval_every, patience, history
        self.best: tuple[float, ...] | None = None
        self.best_step = 0
        self._state: dict[str, Tensor] = {}
        self._bad = 0

    def evaluate(self, step: int) -> bool:
        """Score the module after ``step`` steps; ``True`` when the patience is spent."""
        s = self.score()
        if self.history is not None:
            self.history.append((step, float(s[0])))
        if self.best is None or s > self.best:
            self.best, self.best_step, self._bad = s, step, 0
            self._state = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
            return False
        self._bad += 1
        return self.patience is not None and self._bad >= self.patience

    def start(self) -> None:
        """Score the starting point (step 0)."""
        self.evaluate(0)

    def on_step(self, step: int, loss: float) -> bool:
        """:func:`fit`'s ``on_step``: score every ``eval_every`` steps and after the last."""
        if (step + 1) % self.eval_every == 0 or step + 1 == self.steps:
            return self.evaluate(step + 1)
        return False

    def restore(self) -> int:
        """Load the best state seen; returns its step."""
        if self._state:
            self.module.load_state_dict(self._state)
        return self.best_step
