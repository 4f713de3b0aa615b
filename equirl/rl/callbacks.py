"""SB3 callbacks: the ``equi/`` TensorBoard namespace and periodic evaluation.

Tags written by :class:`EquiLoggingCallback` (every ``equi_freq`` env steps, on up to 256 recent
replay-buffer observations):

* ``equi/lambda_weight/{element}`` -- mean λ weight of each group element (λ-equitune);
* ``equi/lambda_weight_spread`` -- mean ``|w_g - 1/|G||`` (0 = plain equitune);
* ``equi/equizero_pick/{element}`` -- how often equizero picks each element (ties shared);
* ``equi/equivariance_error`` -- ``max |Q(g·s) - g·Q(s)|`` over the group (≈0 for symmetrized
  policies, the plain network's asymmetry for ``base``).

:class:`EquiEvalCallback` is SB3's :class:`~stable_baselines3.common.callbacks.EvalCallback` (``eval/``
tags, ``best_model.zip``) plus ``equi/eval_return/{method}``, re-seeding its env before each evaluation
so that every evaluation of a run (and of every method) plays the same episode starts.

Both have defaults for every argument, so an RL-zoo hyperparameters file can name them::

    callback:
      - equirl.rl.callbacks.EquiLoggingCallback
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback

from equirl.registry import BASE, get_method
from equirl.symmetrizers import check_equivariance

__all__ = ["EquiEvalCallback", "EquiLoggingCallback", "policy_method"]

log = logging.getLogger(__name__)


def _net(model: Any) -> Any:
    pol = model.policy
    return pol.q_net if hasattr(pol, "q_net") else pol.quantile_net


def policy_method(model: Any) -> str | None:
    """The symmetrization method of an equirl policy (``None`` for a policy that is not equirl's)."""
    try:
        return getattr(_net(model), "method", None)
    except AttributeError:
        return None


class EquiLoggingCallback(BaseCallback):
    """Logs the ``equi/`` tags of an equirl DQN / QR-DQN policy (does nothing for other policies).

    :param equi_freq: env steps between λ / equizero / equivariance logs (0: never).
    :param verbose: SB3 verbosity.
    """

    def __init__(self, equi_freq: int = 1000, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.equi_freq = equi_freq
        self.equi_errors: list[float] = []

    def _on_step(self) -> bool:
        if self.equi_freq and self.num_timesteps % self.equi_freq == 0:
            self.log_equi()
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
        """Record the ``equi/`` tags now (they are written at the logger's next dump)."""
        if policy_method(self.model) is None:
            return
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


class EquiEvalCallback(EvalCallback):
    """SB3's ``EvalCallback`` on a re-seeded env, adding ``equi/eval_return/{method}``.

    :param eval_env: the evaluation env (an env id is made into a VecEnv).
    :param eval_freq: env steps between evaluations (0: never; one training env assumed).
    :param n_eval_episodes: episodes per evaluation.
    :param seed: the evaluation env's seed, set again before each evaluation.
    :param method: the tag's method name (default: the policy's).
    :param best_model_save_path: folder for ``best_model.zip`` (``None``: not saved), written atomically
        and only when the parameters are finite (:class:`~equirl.errors.NonFiniteError` otherwise).
    :param callback_on_new_best: called when the mean return improves (e.g.
        ``StopTrainingOnRewardThreshold``).
    :param kwargs: passed to ``EvalCallback``.
    """

    def __init__(
        self,
        eval_env: Any,
        eval_freq: int = 5000,
        n_eval_episodes: int = 5,
        seed: int = 0,
        method: str | None = None,
        best_model_save_path: str | None = None,
        callback_on_new_best: BaseCallback | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(eval_env, str):
            from equirl.rl.envs import make_vec_env

            eval_env = make_vec_env(eval_env, seed=seed)
        super().__init__(
            eval_env,
            callback_on_new_best=callback_on_new_best,
            n_eval_episodes=n_eval_episodes,
            eval_freq=eval_freq,
            best_model_save_path=None,  # saved here, atomically and checked (see _save_best)
            verbose=kwargs.pop("verbose", 0),
            warn=kwargs.pop("warn", False),
            **kwargs,
        )
        self.seed = seed
        self.method = method
        self.best_dir = best_model_save_path
        #: env step of the best evaluation so far (``None``: none yet)
        self.best_step: int | None = None
        self._episode_rewards: list[float] = []

    def state(self) -> dict[str, Any]:
        """The evaluation history and the best so far (what a checkpoint keeps)."""
        return {
            "timesteps": [int(t) for t in self.evaluations_timesteps],
            "results": [[float(r) for r in res] for res in self.evaluations_results],
            "best_mean_reward": float(self.best_mean_reward),
            "best_step": self.best_step,
            "last_mean_reward": float(self.last_mean_reward),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` (on resume)."""
        self.evaluations_timesteps = [int(t) for t in state.get("timesteps", [])]
        self.evaluations_results = [list(map(float, r)) for r in state.get("results", [])]
        best = state.get("best_mean_reward")
        self.best_mean_reward = -np.inf if best is None else float(best)
        self.best_step = state.get("best_step")
        last = state.get("last_mean_reward")
        self.last_mean_reward = -np.inf if last is None else float(last)

    def _save_best(self) -> None:
        from pathlib import Path

        from equirl.errors import NonFiniteError
        from equirl.rl.lifecycle import nonfinite_reason
        from equirl.utils.io import atomic_write_stream

        if self.best_dir is None:
            return
        bad = nonfinite_reason(self.model, check_q=False)
        if bad is not None:
            raise NonFiniteError(f"non-finite {bad} at step {self.num_timesteps}: best_model.zip not written")
        atomic_write_stream(Path(self.best_dir) / "best_model.zip", self.model.save)

    @property
    def timesteps(self) -> list[int]:
        """Env steps of the evaluations so far."""
        return self.evaluations_timesteps

    @property
    def results(self) -> list[list[float]]:
        """Per-episode returns of each evaluation."""
        return self.evaluations_results

    def _log_success_callback(self, locals_: dict[str, Any], globals_: dict[str, Any]) -> None:
        super()._log_success_callback(locals_, globals_)
        # the list evaluate_policy fills (kept so the history exists without a log_path)
        self._episode_rewards = locals_.get("episode_rewards", self._episode_rewards)

    def _on_step(self) -> bool:
        due = self.eval_freq > 0 and self.n_calls % self.eval_freq == 0
        if due:
            self.eval_env.seed(self.seed)
            self._episode_rewards = []
        best_before = self.best_mean_reward
        cont = super()._on_step()
        if due:
            if self.best_mean_reward > best_before:
                self.best_step = int(self.num_timesteps)
                self._save_best()
            if self.log_path is None:  # EvalCallback keeps its history only with a log_path
                self.evaluations_timesteps.append(self.num_timesteps)
                self.evaluations_results.append([float(r) for r in self._episode_rewards])
            method = self.method or policy_method(self.model) or BASE
            self.logger.record(f"equi/eval_return/{method}", float(self.last_mean_reward))
            self.logger.dump(self.num_timesteps)
        return cont
