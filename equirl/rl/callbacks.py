"""SB3 callbacks: the ``equi/`` TensorBoard namespace and a rich progress bar.

Tags written by :class:`EquiLoggingCallback` (every ``equi_freq`` env steps, on up to 256 recent
replay-buffer observations):

* ``equi/lambda_weight/{element}`` -- mean λ weight of each group element (λ-equitune);
* ``equi/lambda_weight_spread`` -- mean ``|w_g - 1/|G||`` (0 = plain equitune);
* ``equi/equizero_pick/{element}`` -- how often equizero picks each element (ties shared);
* ``equi/equivariance_error`` -- ``max |Q(g·s) - g·Q(s)|`` over the group (≈0 for symmetrized
  policies, the plain network's asymmetry for ``base``);
* ``equi/eval_return/{method}`` -- mean evaluation return (every ``eval_freq`` steps).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback

from equirl.registry import get_method
from equirl.symmetrizers import check_equivariance

__all__ = ["EquiLoggingCallback", "RichProgressCallback"]

log = logging.getLogger(__name__)


def _net(model: Any) -> Any:
    pol = model.policy
    return pol.q_net if hasattr(pol, "q_net") else pol.quantile_net


class EquiLoggingCallback(BaseCallback):
    """Logs the ``equi/`` tags and keeps the evaluation history.

    :param method: the run's method name (for the eval tag).
    :param eval_env: env id used for evaluation.
    :param eval_freq: env steps between evaluations (0: never).
    :param eval_episodes: episodes per evaluation.
    :param equi_freq: env steps between λ / equizero / equivariance logs (0: never).
    :param seed: evaluation seed.
    """

    def __init__(
        self,
        method: str,
        eval_env: str,
        eval_freq: int = 5000,
        eval_episodes: int = 5,
        equi_freq: int = 1000,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.method = method
        self.eval_env = eval_env
        self.eval_freq = eval_freq
        self.eval_episodes = eval_episodes
        self.equi_freq = equi_freq
        self.seed = seed
        self.timesteps: list[int] = []
        self.results: list[list[float]] = []
        self.equi_errors: list[float] = []

    def _on_step(self) -> bool:
        n = self.num_timesteps
        if self.equi_freq and n % self.equi_freq == 0:
            self.log_equi()
        if self.eval_freq and n % self.eval_freq == 0:
            self.run_eval()
        return True

    def _recent_obs(self) -> torch.Tensor | None:
        buf = getattr(self.model, "replay_buffer", None)
        if buf is None or buf.size() == 0:
            return None
        end = buf.pos if not buf.full else buf.buffer_size
        obs = buf.observations[max(0, end - 256) : end, 0]
        return torch.as_tensor(np.asarray(obs), device=self.model.device)

    @torch.no_grad()
    def log_equi(self) -> None:
        x = self._recent_obs()
        if x is None:
            return
        net = _net(self.model)
        was = net.training
        net.train(False)
        try:
            labels = net.symmetry.group.labels
            sym = net.symmetry
            from equirl.rl.policies import policy_obs_action

            in_act = policy_obs_action(sym, net.observation_space)
            err = check_equivariance(net, in_act, sym.action_action(), x)
            self.equi_errors.append(float(err))
            self.logger.record("equi/equivariance_error", float(err))
            spec = get_method(net.method)
            if spec.weights_tag is not None:  # λ's learned weights, equizero's pick
                w = net.forward_with_weights(x).weights.float()
                for g, lab in enumerate(labels):
                    self.logger.record(f"equi/{spec.weights_tag}/{lab}", float(w[g].mean()))
                if spec.learned_weights:
                    self.logger.record(
                        "equi/lambda_weight_spread", float((w - 1.0 / len(labels)).abs().mean())
                    )
        finally:
            net.train(was)

    def run_eval(self) -> float:
        from equirl.rl.pretrained import evaluate

        rets = evaluate(self.model, self.eval_env, episodes=self.eval_episodes, seed=self.seed + 10_000)
        self.timesteps.append(self.num_timesteps)
        self.results.append(rets)
        mean = float(np.mean(rets))
        self.logger.record(f"equi/eval_return/{self.method}", mean)
        self.logger.dump(self.num_timesteps)
        return mean


class RichProgressCallback(BaseCallback):
    """A rich progress bar over env steps (the CLI passes its console; nothing is printed otherwise).

    :param total: total env steps of the run.
    :param console: a ``rich.console.Console``.
    :param description: the bar's label.
    """

    def __init__(self, total: int, console: Any, description: str = "training") -> None:
        super().__init__()
        self.total = total
        self.console = console
        self.description = description
        self._progress: Any = None
        self._task: Any = None

    def _on_training_start(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task(self.description, total=self.total)

    def _on_step(self) -> bool:
        if self._progress is not None:
            self._progress.update(self._task, advance=self.training_env.num_envs)
        return True

    def _on_training_end(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
