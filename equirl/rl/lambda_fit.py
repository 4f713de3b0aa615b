"""λ fitting that cannot end worse than it started (RL λ-equitune finetuning).

:class:`BestLambdaCallback` sits beside the run's :class:`~equirl.rl.callbacks.EquiEvalCallback`: it
evaluates the *start* λ once on the same re-seeded episodes, then after every periodic evaluation keeps
a copy of λ when it is strictly better than every λ seen so far (early stopping on a held-out
evaluation), and at the end of training puts the kept λ back into the Q-network and its target. So the
returned λ is never worse than the start on those validation episodes: with a learning rate that wrecks
λ, the run ends with the λ it started from (uniform for a fresh λ: the agent's equitune).

``lambda_reg`` (a ``method_kwargs`` option of ``lambda`` under RL) adds a decoupled decay of λ's
parameters toward their start values, ``θ ← θ₀ + (θ - θ₀)·exp(-lambda_reg · gradient_steps)`` after each
training round; for a fresh (zero-initialised) λ the start is the uniform weighting.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy

__all__ = ["BestLambdaCallback", "lambda_parameters"]

log = logging.getLogger(__name__)


def _nets(model: Any) -> list[Any]:
    """The modules holding the λ-nets: DQN's Q-network and its target, QR-DQN's quantile networks, or
    (actor-critic) the whole policy (its actor, critic and target critic λ-nets)."""
    pol = model.policy
    if hasattr(pol, "q_net"):
        return [pol.q_net, pol.q_net_target]
    if hasattr(pol, "quantile_net"):
        return [pol.quantile_net, pol.quantile_net_target]
    return [pol]


def lambda_parameters(net: Any) -> dict[str, torch.Tensor]:
    """The symmetrizer's own parameters of an equirl network or policy (``equi.*`` / ``*.equi.*``: the
    λ-nets)."""
    return {n: p for n, p in net.named_parameters() if n.startswith("equi.") or ".equi." in n}


class BestLambdaCallback(BaseCallback):
    """Keep the best λ of the run's periodic evaluations (the start included); optionally decay λ toward
    its start.

    Put it *after* ``eval_callback`` in the callback list, so it sees each evaluation in the same step.

    :param eval_callback: the run's evaluation callback (its env, seed and episodes are the validation).
    :param lambda_reg: decay rate of λ toward its start per gradient step (0: none).
    :param verbose: SB3 verbosity.
    """

    def __init__(self, eval_callback: Any, lambda_reg: float = 0.0, verbose: int = 0) -> None:
        super().__init__(verbose)
        if lambda_reg < 0 or not math.isfinite(lambda_reg):
            raise ValueError(f"lambda_reg must be a finite number >= 0, got {lambda_reg}")
        self.eval_callback = eval_callback
        self.lambda_reg = float(lambda_reg)
        self.start_score: float | None = None
        self.best_score = -math.inf
        self.best_timestep = 0
        self.history: list[tuple[int, float]] = []
        self._start: dict[str, torch.Tensor] = {}
        self._best: dict[str, torch.Tensor] = {}
        self._seen = 0

    def _params(self) -> dict[str, torch.Tensor]:
        return lambda_parameters(_nets(self.model)[0])

    def _snapshot(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self._params().items()}

    def evaluate_now(self) -> float:
        """The current λ's mean return on the evaluation callback's episodes (its env re-seeded)."""
        cb = self.eval_callback
        cb.eval_env.seed(cb.seed)
        rewards, _ = evaluate_policy(
            self.model,
            cb.eval_env,
            n_eval_episodes=cb.n_eval_episodes,
            deterministic=cb.deterministic,
            return_episode_rewards=True,
            warn=False,
        )
        return float(np.mean(rewards))

    def _on_training_start(self) -> None:
        if self.start_score is not None:  # a second learn() of the same run (partial_fraction)
            return
        if not self._params():
            log.warning("BestLambdaCallback: the policy has no λ parameters; nothing to keep")
            return
        self._start = self._snapshot()
        self._best = self._snapshot()
        self.start_score = self.best_score = self.evaluate_now()
        self.best_timestep = int(self.num_timesteps)
        self.history.append((self.best_timestep, self.start_score))
        self._seen = len(self.eval_callback.evaluations_results)
        log.info("λ at the start: %.2f on the validation episodes", self.start_score)

    def _on_step(self) -> bool:
        n = len(self.eval_callback.evaluations_results)
        if self._best and n > self._seen:
            self._seen = n
            score = float(self.eval_callback.last_mean_reward)
            self.history.append((int(self.num_timesteps), score))
            if score > self.best_score:
                self.best_score, self.best_timestep = score, int(self.num_timesteps)
                self._best = self._snapshot()
        return True

    def _on_rollout_start(self) -> None:
        self.decay()  # after the previous training round

    def decay(self) -> None:
        """Decay λ toward its start for one training round (``lambda_reg`` > 0)."""
        steps = int(getattr(self.model, "gradient_steps", 1) or 1)
        if self.lambda_reg > 0 and self._start and self.num_timesteps > 0:
            keep = math.exp(-self.lambda_reg * max(steps, 1))
            with torch.no_grad():
                for n, p in self._params().items():
                    p.copy_(self._start[n] + (p - self._start[n]) * keep)

    def _on_training_end(self) -> None:
        self.decay()  # the last training round
        self.restore()

    def restore(self) -> None:
        """Put the kept λ into the Q-network and its target network (actor-critic: the policy)."""
        if not self._best:
            return
        with torch.no_grad():
            for net in _nets(self.model):
                params = lambda_parameters(net)
                for n, v in self._best.items():
                    params[n].copy_(v)
        log.info(
            "λ kept from step %d: %.2f on the validation episodes (start %.2f)",
            self.best_timestep,
            self.best_score,
            self.start_score if self.start_score is not None else float("nan"),
        )
