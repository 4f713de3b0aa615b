"""The data-augmentation baseline ``augment``: a plain network trained on every transition and its
mirror images.

:class:`AugmentedReplayBuffer` is an SB3 ``ReplayBuffer`` that stores, with every transition
``(s, a, r, s', done)``, its images ``(g·s, g·a, r, g·s', done)`` under the environment's group (the
spec's observation and action actions; rewards and terminations are invariant). ``mode="all"`` adds
every ``g ≠ e`` (``|G|`` rows per transition, so the buffer holds ``buffer_size / |G|`` env steps);
``mode="random"`` adds one random ``g ≠ e`` per ``add`` call (the same ``g`` for all the envs of that
step), so the buffer holds twice as many rows as steps.

It plugs into SB3's ``replay_buffer_class=`` seam, so it works with every off-policy algorithm (DQN,
QR-DQN, SAC, TD3, DDPG, TQC); :func:`augment_kwargs` gives the two keywords. The policy stays plain:
that is the point of the baseline (the symmetry is learned from data, not built in).

On-policy PPO / A2C use :class:`AugmentedRolloutBuffer` (SB3's ``rollout_buffer_class=`` seam): when a
rollout is handed to ``train()``, every sample ``(s, a)`` is also given as ``(g·s, g·a)`` with the
*same* advantage, return, value and behaviour log-probability. A mirrored sample was produced by the
mirrored behaviour policy ``π_old^g(g·a | g·s) := π_old(a | s)``, which is exactly the probability
kept, so PPO's ratio ``π(g·a | g·s) / π_old(a | s)`` is the right importance weight for it and PPO's
clipping bounds it; advantages and returns carry over because the MDP is symmetric (the mirrored
trajectory has the same rewards). The minibatch size stays the configured one, so an epoch takes
``|G|`` times as many gradient steps (``mode="random"``: twice as many).

Example::

    >>> from stable_baselines3 import DQN
    >>> from equirl.rl.augment import augment_kwargs
    >>> model = DQN("MlpPolicy", "CartPole-v1", buffer_size=1000, **augment_kwargs("CartPole-v1", "dqn"))
    >>> type(model.replay_buffer).__name__
    'AugmentedReplayBuffer'
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer, RolloutBuffer

from equirl.errors import ConfigError, SymmetryError
from equirl.rl.algos import ALGOS
from equirl.rl.policies import policy_obs_action
from equirl.rl.spec import EnvSymmetry, load_spec, resolve_symmetry

__all__ = [
    "AUGMENT_MODES",
    "AugmentedReplayBuffer",
    "AugmentedRolloutBuffer",
    "augment_kwargs",
    "mirror_transition",
]

log = logging.getLogger(__name__)

#: every non-identity element per transition, or one random one
AUGMENT_MODES = ("all", "random")


class _Mirror:
    """The group's action on a buffer's observations and actions, as numpy functions."""

    def __init__(self, sym: EnvSymmetry, observation_space: spaces.Space, action_space: spaces.Space) -> None:
        sym.check_action_space(action_space)
        self.order = sym.group.order
        self.obs_action = policy_obs_action(sym, observation_space)
        self.continuous = sym.continuous
        if self.continuous:
            act = sym.action_action()
            self.a_src = np.asarray([t.src for t in act.transforms], dtype=np.int64)
            self.a_signs = np.asarray([t.signs or (1.0,) * t.size for t in act.transforms], dtype=np.float32)
        else:
            self.table = np.asarray(sym.action_table(), dtype=np.int64)

    def obs(self, obs: np.ndarray, g: int) -> np.ndarray:
        out = self.obs_action.apply(torch.as_tensor(np.asarray(obs)), g)
        return out.numpy().astype(obs.dtype, copy=False)

    def action(self, action: np.ndarray, g: int) -> np.ndarray:
        a = np.asarray(action)
        if self.continuous:
            return (a[..., self.a_src[g]] * self.a_signs[g]).astype(a.dtype, copy=False)
        return self.table[g][a.astype(np.int64)].astype(a.dtype, copy=False)


def mirror_transition(
    symmetry: Any,
    observation_space: spaces.Space,
    action_space: spaces.Space,
    g: int,
    obs: np.ndarray,
    action: np.ndarray,
    next_obs: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(g·s, g·a, g·s')`` for a batch of transitions (reward and done are invariant).

    :param symmetry: the env's spec (id, path, mapping or :class:`~equirl.rl.spec.EnvSymmetry`).
    :param observation_space: the observations' space (as the policy sees them); ``action_space`` likewise.
    :param g: the group element's index.
    """
    m = _Mirror(resolve_symmetry(symmetry), observation_space, action_space)
    return m.obs(obs, g), m.action(action, g), m.obs(next_obs, g)


class _Mirrored:
    """What both augmenting buffers keep: the env's symmetry, the mode and the mirror functions."""

    observation_space: spaces.Space
    action_space: spaces.Space

    def __init__(
        self,
        *args: Any,
        symmetry: Any = None,
        mode: str = "all",
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)  # the SB3 buffer
        self._init_mirror(symmetry, mode, seed)

    def _init_mirror(self, symmetry: Any, mode: str, seed: int | None) -> None:
        if symmetry is None:
            raise SymmetryError(f"{type(self).__name__} needs symmetry=... (the env's spec)")
        if mode not in AUGMENT_MODES:
            raise ConfigError(f"augment mode must be one of {', '.join(AUGMENT_MODES)}, got {mode!r}")
        self.symmetry = resolve_symmetry(symmetry)
        self.mode = mode
        self._mirror = _Mirror(self.symmetry, self.observation_space, self.action_space)
        self._rng = np.random.default_rng(seed)


class AugmentedReplayBuffer(_Mirrored, ReplayBuffer):
    """A ``ReplayBuffer`` that also stores the mirror images of every transition (module docstring).

    :param symmetry: the env's spec (id, path, mapping or :class:`~equirl.rl.spec.EnvSymmetry`).
    :param mode: ``"all"`` (every ``g ≠ e``) or ``"random"`` (one random ``g ≠ e`` per step).
    :param seed: seed of the ``"random"`` mode's choice.
    :param args: ``ReplayBuffer``'s (``buffer_size``, ``observation_space``, ``action_space``...).
    """

    def _init_mirror(self, symmetry: Any, mode: str, seed: int | None) -> None:
        if self.optimize_memory_usage:
            raise ConfigError("augment cannot use optimize_memory_usage (it stores next observations apart)")
        super()._init_mirror(symmetry, mode, seed)

    def elements(self) -> list[int]:
        """The elements (indices) whose images the next ``add`` stores."""
        others = list(range(1, self._mirror.order))
        if self.mode == "all" or not others:
            return others
        return [int(self._rng.choice(others))]

    def add(  # type: ignore[override]
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        super().add(obs, next_obs, action, reward, done, infos)
        m = self._mirror
        for g in self.elements():
            super().add(m.obs(obs, g), m.obs(next_obs, g), m.action(action, g), reward, done, infos)


class AugmentedRolloutBuffer(_Mirrored, RolloutBuffer):
    """A ``RolloutBuffer`` whose ``get`` also yields the mirror images of every sample (module docstring).

    :param symmetry: the env's spec (id, path, mapping or :class:`~equirl.rl.spec.EnvSymmetry`).
    :param mode: ``"all"`` (every ``g ≠ e``) or ``"random"`` (one random ``g ≠ e`` per sample).
    :param seed: seed of the ``"random"`` mode's choice.
    :param args: ``RolloutBuffer``'s (``buffer_size``, ``observation_space``, ``action_space``...).
    """

    _FIELDS = ("observations", "actions", "values", "log_probs", "advantages", "returns")

    def _init_mirror(self, symmetry: Any, mode: str, seed: int | None) -> None:
        super()._init_mirror(symmetry, mode, seed)
        self._rows = self.buffer_size * self.n_envs

    def _augment(self) -> None:
        """Flatten the rollout (as SB3 does) and append the mirrored rows."""
        flat = {k: self.swap_and_flatten(getattr(self, k)) for k in self._FIELDS}
        n, m = flat["observations"].shape[0], self._mirror
        others = list(range(1, m.order))
        parts: dict[str, list[np.ndarray]] = {k: [v] for k, v in flat.items()}
        if self.mode == "all" or not others:
            picks = [(g, np.arange(n)) for g in others]
        else:
            choice = self._rng.choice(others, size=n)
            picks = [(g, np.nonzero(choice == g)[0]) for g in others]
        for g, idx in picks:
            parts["observations"].append(m.obs(flat["observations"][idx], g))
            parts["actions"].append(m.action(flat["actions"][idx], g))
            for k in ("values", "log_probs", "advantages", "returns"):
                parts[k].append(flat[k][idx])
        for k, v in parts.items():
            setattr(self, k, np.concatenate(v, axis=0))
        self._rows = int(self.observations.shape[0])
        self.generator_ready = True

    def get(self, batch_size: int | None = None) -> Any:
        """Minibatches over the rollout and its mirror images, in a random order."""
        assert self.full, "the rollout buffer is not full yet"
        if not self.generator_ready:
            self._augment()
        indices = np.random.permutation(self._rows)
        size = self._rows if batch_size is None else batch_size
        for start in range(0, self._rows, size):
            yield self._get_samples(indices[start : start + size])

    def reset(self) -> None:
        super().reset()
        self._rows = self.buffer_size * self.n_envs


def augment_kwargs(symmetry: Any, algo: str, mode: str = "all", seed: int | None = None) -> dict[str, Any]:
    """``replay_buffer_class`` / ``replay_buffer_kwargs`` for an SB3 off-policy algorithm, or
    ``rollout_buffer_class`` / ``rollout_buffer_kwargs`` for PPO / A2C.

    :param symmetry: the env's spec (id, path, mapping or :class:`~equirl.rl.spec.EnvSymmetry`); stored
        as plain data so a saved model pickles nothing of it.
    :param algo: an algorithm of :data:`equirl.rl.algos.ALGOS` (its buffer: ``rollout`` or ``replay``).
    :param mode: ``"all"`` or ``"random"`` (see :class:`AugmentedReplayBuffer`).
    :param seed: seed of the ``"random"`` mode.
    :raises ConfigError: an unknown algorithm (one line).
    """
    if algo not in ALGOS:
        raise ConfigError(f"augment works with {', '.join(ALGOS)}, not {algo!r}")
    spec = ALGOS[algo]
    if mode not in AUGMENT_MODES:
        raise ConfigError(f"augment mode must be one of {', '.join(AUGMENT_MODES)}, got {mode!r}")
    sym = symmetry if isinstance(symmetry, EnvSymmetry) else load_spec(symmetry)
    kw: dict[str, Any] = {"symmetry": sym.to_dict(), "mode": mode}
    if seed is not None:
        kw["seed"] = seed
    if spec.augment_buffer == "rollout":
        return {"rollout_buffer_class": AugmentedRolloutBuffer, "rollout_buffer_kwargs": kw}
    return {"replay_buffer_class": AugmentedReplayBuffer, "replay_buffer_kwargs": kw}
