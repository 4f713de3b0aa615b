"""SB3 callbacks: the ``equi/`` TensorBoard namespace and periodic evaluation.

:class:`EquiLoggingCallback` writes the same tags for every algorithm (DQN, QR-DQN, PPO, A2C, SAC, TD3 /
DDPG, TQC), every ``equi_freq`` env steps, on up to 256 recent observations (the replay or rollout
buffer's, else the last ones), without gradients and without drawing random numbers:

* ``equi/equivariance_error/actor`` -- ``max_g |f(g·s) - g·f(s)|`` of the actor: the Q-network (DQN,
  QR-DQN), the action logits / Gaussian mean and ``log_std`` (PPO, A2C), the actor's output (SAC, TD3,
  TQC). ≈1e-7 for the symmetrizing methods; the plain network's asymmetry for ``base`` / ``augment``;
* ``equi/equivariance_error/critic`` -- the critic's invariance error: ``max_g |V(g·s) - V(s)|`` (PPO,
  A2C), ``max_g |Q(g·s, g·a) - Q(s, a)|`` over all the critics (SAC, TD3, TQC; the buffer's actions);
* ``equi/lambda_weight/{element}`` -- mean λ weight of each group element (λ-equitune; the Q-network's,
  PPO / A2C's heads', the SAC / TD3 / TQC actor's), and ``equi/lambda_weight_spread``, the mean
  ``|w_g - 1/|G||`` (0 = plain equitune);
* ``equi/equizero_pick/{element}`` -- the fraction of states where equizero picks each element (ties
  shared, so the fractions sum to 1);
* ``equi/lambda_weight_critic/{element}``, ``equi/lambda_weight_spread_critic``,
  ``equi/equizero_pick_critic/{element}`` -- the same for the SAC / TD3 / TQC critics' own symmetrizer.

:class:`EquiEvalCallback` is SB3's :class:`~stable_baselines3.common.callbacks.EvalCallback` (``eval/``
tags, ``best_model.zip``) plus ``equi/eval_return/{method}``, re-seeding its env before each evaluation
so that every evaluation of a run (and of every method) plays the same episode starts.

Both have defaults for every argument, so an RL-zoo hyperparameters file can name them::

    callback:
      - equirl.rl.callbacks.EquiLoggingCallback
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback
from torch import Tensor

from equirl.registry import BASE, MethodSpec, canonical_method, get_method
from equirl.symmetrizers.check import equivariance_errors

__all__ = ["EQUI_BATCH", "EquiEvalCallback", "EquiLoggingCallback", "policy_method"]

log = logging.getLogger(__name__)

#: the most recent observations the ``equi/`` tags are measured on
EQUI_BATCH = 256


def policy_method(model: Any) -> str | None:
    """The symmetrization method of an equirl policy, any algorithm (``None`` for a policy that is not
    equirl's; ``base`` for ``augment``, whose policy is plain)."""
    kw = getattr(getattr(model, "policy", None), "_equi_kwargs", None)
    return None if kw is None else canonical_method(kw["method"])


@dataclass(frozen=True)
class _Probe:
    """One network the callback measures.

    :param role: ``actor`` or ``critic`` (the tags' suffixes).
    :param f: the network on its input rows: observations, or ``[obs (flattened), action]`` rows if
        ``joint``.
    :param in_action: the group's action on those rows; ``out_action`` on ``f``'s output (``None``:
        invariant).
    :param weights: the ``(|G|, B)`` orbit weights on the same rows (``None``: no symmetrizer of its own).
    :param joint: ``f`` reads joint ``(obs, action)`` rows (the SAC / TD3 / TQC critics).
    """

    role: str
    f: Callable[[Tensor], Tensor]
    in_action: Any
    out_action: Any
    weights: Callable[[Tensor], Tensor] | None
    joint: bool = False


def _orbit_weights(equi: Any) -> Callable[[Tensor], Tensor] | None:
    return None if equi is None else (lambda x: equi.forward_with_weights(x).weights)


def _probes(policy: Any) -> list[_Probe]:
    """What to measure in an equirl policy of any family (``[]``: not an equirl policy)."""
    if getattr(policy, "_equi_kwargs", None) is None:
        return []
    from equirl.rl.policies import concat_action, flat_obs_action, policy_obs_action

    net = next(
        (n for n in (getattr(policy, a, None) for a in ("q_net", "quantile_net")) if n is not None), None
    )
    if net is not None:  # DQN, QR-DQN: the Q-network (its forward casts what its scorer needs)
        sym = net.symmetry
        in_act = policy_obs_action(sym, net.observation_space)
        w = None if net.equi is None else (lambda x: net.forward_with_weights(x).weights)
        return [_Probe("actor", net, in_act, sym.action_action(), w)]
    sym = policy._equi_kwargs["symmetry"]
    aa = sym.action_action()
    if hasattr(policy, "symmetric_heads"):  # PPO, A2C: [logits | value] or [mean | log_std | value]
        in_act = policy_obs_action(sym, policy.observation_space)
        blocks = [aa, sym.action_action(absolute=True)] if sym.continuous else [aa]
        return [
            _Probe(
                "actor",
                lambda x: policy.symmetric_heads(x)[:, :-1],
                in_act,
                concat_action(sym.group, blocks),
                _orbit_weights(policy.equi),  # one symmetrizer for the policy and the value
            ),
            _Probe("critic", lambda x: policy.symmetric_heads(x)[:, -1:], in_act, None, None),
        ]
    actor, critic = policy.actor, policy.critic  # SAC, TD3 / DDPG, TQC
    out = concat_action(sym.group, [aa, sym.action_action(absolute=True)]) if actor.has_log_std else aa
    space = critic.observation_space
    obs_act = flat_obs_action(policy_obs_action(sym, space), space)
    n, shape = obs_act.size, tuple(space.shape)

    def split(z: Tensor) -> tuple[Tensor, Tensor]:
        return z[:, :n].reshape(-1, *shape), z[:, n:]

    def critic_weights(z: Tensor) -> Tensor:
        from stable_baselines3.common.preprocessing import preprocess_obs

        obs, act = split(z)  # the critic's symmetrizer reads SB3's preprocessed observation (as joint_values)
        pre = preprocess_obs(obs, space, normalize_images=critic.normalize_images)
        assert isinstance(pre, Tensor)
        return critic.equi.forward_with_weights(torch.cat([pre.float().flatten(1), act.float()], 1)).weights

    return [
        _Probe(
            "actor",
            actor.symmetric_out,
            policy_obs_action(sym, actor.observation_space),
            out,
            _orbit_weights(actor.equi),
        ),
        _Probe(
            "critic",
            lambda z: critic.joint_values(*split(z)),
            concat_action(sym.group, [obs_act, aa]),
            None,
            None if critic.equi is None else critic_weights,
            joint=True,
        ),
    ]


def _recent_rows(buf: Any, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Up to ``n`` of a replay / rollout buffer's most recent ``(observations, actions)`` (``None``: empty
    or a dict-observation buffer)."""
    obs, act = getattr(buf, "observations", None), getattr(buf, "actions", None)
    if not isinstance(obs, np.ndarray) or not isinstance(act, np.ndarray):
        return None
    if getattr(buf, "generator_ready", False):  # a rollout handed to train(): already flattened
        return obs[-n:], act[-n:]
    size, pos, n_envs = buf.buffer_size, buf.pos, buf.n_envs
    k = min(size, -(-n // n_envs))  # rows of n_envs transitions
    idx = np.arange(pos - k, pos) % size if buf.full else np.arange(max(0, pos - k), pos)
    if idx.size == 0:
        return None
    return obs[idx].reshape(-1, *obs.shape[2:])[-n:], act[idx].reshape(-1, *act.shape[2:])[-n:]


class EquiLoggingCallback(BaseCallback):
    """Logs the ``equi/`` tags (module docstring) of an equirl policy of any algorithm (does nothing for
    other policies). The measurement runs without gradients, in eval mode (each module's mode restored),
    on at most :data:`EQUI_BATCH` observations and with the random number generators left as they were,
    so a run trains exactly as without it.

    :param equi_freq: env steps between logs (0: never); a log is due when ``num_timesteps`` reaches the
        next multiple of ``equi_freq`` (with several envs, the first step at or past it).
    :param n_obs: how many recent observations to measure on (at most :data:`EQUI_BATCH`).
    :param verbose: SB3 verbosity.
    """

    def __init__(self, equi_freq: int = 1000, n_obs: int = EQUI_BATCH, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.equi_freq = equi_freq
        self.n_obs = max(1, min(int(n_obs), EQUI_BATCH))
        #: the actor's equivariance error at each log
        self.equi_errors: list[float] = []
        #: the values of the last log, by tag
        self.last: dict[str, float] = {}
        self._next = 0
        self._probes_cache: list[_Probe] | None = None

    def _init_callback(self) -> None:
        f = self.equi_freq
        self._next = (self.model.num_timesteps // f + 1) * f if f > 0 else 0

    def _on_step(self) -> bool:
        f = self.equi_freq
        if f > 0 and self.num_timesteps >= self._next:
            self._next = (self.num_timesteps // f + 1) * f
            self.log_equi()
            # written now, at this step: SB3 dumps only every ``log_interval`` episodes (off-policy) or
            # rollouts (on-policy), and a value recorded twice before a dump keeps only the last one
            self.logger.dump(self.num_timesteps)
        return True

    def _recent(self) -> tuple[Tensor, Tensor | None] | None:
        """Up to ``n_obs`` recent observations as the policy sees them and the actions taken there (the
        replay buffer's, else the rollout buffer's, else the last observations without actions)."""
        model, n = self.model, self.n_obs
        obs: Any
        act: np.ndarray | None = None
        replay = getattr(model, "replay_buffer", None)
        rows = None if replay is None else _recent_rows(replay, n)
        if rows is not None:
            obs, act = rows
            norm = model.get_vec_normalize_env()
            if norm is not None:  # a replay buffer keeps the unnormalized observations
                obs = norm.normalize_obs(obs)
        else:
            rollout = getattr(model, "rollout_buffer", None)
            rows = None if rollout is None else _recent_rows(rollout, n)
            if rows is not None:
                obs, act = rows
            else:  # nothing stored yet
                obs = getattr(model, "_last_obs", None)
                if not isinstance(obs, np.ndarray):
                    return None
                obs = obs[-n:]
        dev = model.device
        x = torch.as_tensor(np.asarray(obs), device=dev)
        return x, None if act is None else torch.as_tensor(act, device=dev)

    @torch.no_grad()
    def log_equi(self) -> None:
        """Record the ``equi/`` tags now (written at the logger's next dump: :meth:`_on_step` dumps at once)."""
        method = policy_method(self.model)
        if method is None:
            return
        recent = self._recent()
        if recent is None:
            return
        if self._probes_cache is None:
            self._probes_cache = _probes(self.model.policy)
        policy = self.model.policy
        modes = [(m, m.training) for m in policy.modules()]
        policy.set_training_mode(False)
        devices = [policy.device] if policy.device.type == "cuda" else []
        try:
            # a draw in here (equizero's random tie-break) leaves the run's generators as they were
            with torch.random.fork_rng(devices=devices):
                values = self._measure(recent, get_method(method))
        finally:
            for m, mode in modes:
                m.training = mode
        for tag, v in values.items():
            self.logger.record(tag, v)
        self.last = values
        if "equi/equivariance_error/actor" in values:
            self.equi_errors.append(values["equi/equivariance_error/actor"])

    def _measure(self, recent: tuple[Tensor, Tensor | None], spec: MethodSpec) -> dict[str, float]:
        """The tags' values: each probe's equivariance error, its orbit weights where the method has them."""
        x, act = recent
        out: dict[str, float] = {}
        for p in self._probes_cache or []:
            rows = x
            if p.joint:
                if act is None:  # no buffer yet: the policy's own deterministic actions
                    act = self.model.policy._predict(x, deterministic=True)
                rows = torch.cat([x.float().flatten(1), act.float().reshape(len(x), -1)], 1)
            errs = equivariance_errors(p.f, p.in_action, p.out_action, rows)
            out[f"equi/equivariance_error/{p.role}"] = max(errs.values())
            if spec.weights_tag is None or p.weights is None:
                continue
            w = p.weights(rows).float()  # (|G|, B)
            labels = p.in_action.group.labels
            if w.shape[0] != len(labels):
                continue
            sfx = "" if p.role == "actor" else f"_{p.role}"
            for g, lab in enumerate(labels):
                out[f"equi/{spec.weights_tag}{sfx}/{lab}"] = float(w[g].mean())
            if spec.learned_weights:
                out[f"equi/lambda_weight_spread{sfx}"] = float((w - 1.0 / len(labels)).abs().mean())
        return out


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
        #: an env id, made again once the model is known (its wrappers and normalisation, as trained)
        self.env_id = eval_env if isinstance(eval_env, str) else None
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

    def _init_callback(self) -> None:
        if self.env_id is not None:  # the env as the model sees it (see equirl.rl.evaluation.make_eval_env)
            from equirl.rl.evaluation import make_eval_env

            self.eval_env.close()
            self.eval_env = make_eval_env(self.model, self.env_id, seed=self.seed)
            self.env_id = None
        super()._init_callback()

    def state(self) -> dict[str, Any]:
        """The evaluation history and the best so far (what a checkpoint keeps)."""
        return {
            "timesteps": [int(t) for t in self.evaluations_timesteps],
            "results": [[float(r) for r in res] for res in self.evaluations_results],
            "best_mean_reward": float(self.best_mean_reward),
            "best_step": self.best_step,
            "last_mean_reward": float(self.last_mean_reward),
        }

    @staticmethod
    def parse_state(state: Any) -> dict[str, Any]:
        """:meth:`state` as read back from a checkpoint's ``state.json`` (not signed: anyone may have
        edited it), checked field by field.

        :raises ValueError: a field of the wrong type or length.
        """

        def number(v: Any, what: str, none_yet: bool = False) -> float:
            """``none_yet``: -inf allowed (SB3's "no evaluation yet" for the best / last mean)."""
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"{what} is {type(v).__name__}, not a number")
            if not (np.isfinite(float(v)) or (none_yet and float(v) == -np.inf)):  # JSON's 1e400 is inf
                raise ValueError(f"{what} is {v}, not a finite number")
            return float(v)

        def listed(v: Any, what: str) -> list[Any]:
            if not isinstance(v, list):
                raise ValueError(f"{what} is {type(v).__name__}, not a list")
            return v

        if not isinstance(state, dict):
            raise ValueError(f"the evaluation state is {type(state).__name__}, not a mapping")
        steps = [
            int(number(t, "an evaluation step")) for t in listed(state.get("timesteps", []), "timesteps")
        ]
        results = [
            [number(r, "an evaluation return") for r in listed(res, "an evaluation's returns")]
            for res in listed(state.get("results", []), "results")
        ]
        if len(steps) != len(results):
            raise ValueError(f"{len(steps)} evaluation steps but {len(results)} evaluations")
        best, last, best_step = (state.get(k) for k in ("best_mean_reward", "last_mean_reward", "best_step"))
        return {
            "timesteps": steps,
            "results": results,
            "best_mean_reward": -np.inf if best is None else number(best, "best_mean_reward", none_yet=True),
            "best_step": None if best_step is None else int(number(best_step, "best_step")),
            "last_mean_reward": -np.inf if last is None else number(last, "last_mean_reward", none_yet=True),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` (on resume).

        :raises ValueError: see :meth:`parse_state`.
        """
        state = self.parse_state(state)
        self.evaluations_timesteps = state["timesteps"]
        self.evaluations_results = state["results"]
        self.best_mean_reward = state["best_mean_reward"]
        self.best_step = state["best_step"]
        self.last_mean_reward = state["last_mean_reward"]

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
