"""Symmetric observation normalisation: symmetric statistics, an equivariant normalise → policy
pipeline (plain VecNormalize breaks it), and statistics saved / read back without running code."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecNormalize

import equirl.rl  # noqa: F401  (registers the aliases)
from equirl.errors import CheckpointError
from equirl.registry import EQUITUNE
from equirl.rl.envs import make_vec_env
from equirl.rl.normalize import SymmetricVecNormalize, load_vecnormalize, symmetrize_mean_var, wrap_like
from equirl.rl.spec import load_spec
from equirl.symmetrizers import check_equivariance

ATOL = 1e-5


def test_group_average_of_mean_and_variance() -> None:
    # a swap of features 0 and 1 with feature 2 negated
    src = np.array([[0, 1, 2], [1, 0, 2]])
    signs = np.array([[1.0, 1.0, 1.0], [1.0, 1.0, -1.0]])
    mean, var = symmetrize_mean_var(np.array([1.0, 3.0, 5.0]), np.array([1.0, 3.0, 5.0]), src, signs)
    np.testing.assert_allclose(mean, [2.0, 2.0, 0.0])
    np.testing.assert_allclose(var, [2.0, 2.0, 5.0])


def _biased_stats(norm: VecNormalize, steps: int = 300) -> None:
    """Always push right: the cart drifts, so the observation mean is far from the symmetric one."""
    norm.reset()
    for _ in range(steps):
        norm.step(np.array([1]))


def _pipeline_error(norm: VecNormalize, policy: Any, env_id: str) -> float:
    sym = load_spec(env_id)
    x = torch.randn(64, *norm.observation_space.shape) * 0.5

    def f(obs: torch.Tensor) -> torch.Tensor:
        normed = torch.as_tensor(norm.normalize_obs(obs.numpy()), dtype=torch.float32)
        with torch.no_grad():
            return policy.symmetric_heads(normed)

    return check_equivariance(f, sym.obs_action(), policy.out_action, x)


def _equitune_ppo(env_id: str) -> PPO:
    """A small (untrained) equitune PPO agent on ``env_id``."""
    return PPO(
        "EquiMlpPolicy",
        make_vec_env(env_id),
        n_steps=32,
        batch_size=32,
        device="cpu",
        seed=0,
        policy_kwargs={"symmetry": env_id, "method": EQUITUNE, "net_arch": [32, 32]},
    )


def test_symmetric_normalisation_keeps_the_policy_equivariant() -> None:
    env_id = "CartPole-v1"
    sym_norm = SymmetricVecNormalize(make_vec_env(env_id), env_id, norm_reward=False)
    plain_norm = VecNormalize(make_vec_env(env_id), norm_reward=False)
    for n in (sym_norm, plain_norm):
        _biased_stats(n)
    # x -> -x: the symmetric mean is 0, the plain one is not
    assert np.abs(sym_norm.obs_rms.mean).max() == 0.0
    assert np.abs(plain_norm.obs_rms.mean).max() > 0.1
    model = _equitune_ppo(env_id)
    assert _pipeline_error(sym_norm, model.policy, env_id) < ATOL
    assert _pipeline_error(plain_norm, model.policy, env_id) > 1e-2


def test_symmetric_normalisation_of_a_continuous_policy() -> None:
    env_id = "Pendulum-v1"
    norm = SymmetricVecNormalize(make_vec_env(env_id), env_id, norm_reward=False)
    norm.obs_rms.update(np.random.default_rng(0).normal(1.0, 2.0, size=(100, 3)))  # asymmetric data
    norm.symmetrize_statistics()
    assert norm.obs_rms.mean[1] == norm.obs_rms.mean[2] == 0.0 and norm.obs_rms.mean[0] > 0.5
    model = _equitune_ppo(env_id)
    assert _pipeline_error(norm, model.policy, env_id) < ATOL


def test_statistics_save_and_load_without_code(tmp_path: Path) -> None:
    env_id = "CartPole-v1"
    norm = SymmetricVecNormalize(make_vec_env(env_id), env_id)
    _biased_stats(norm, 100)
    norm.save(str(tmp_path / "vecnormalize.pkl"))
    back = load_vecnormalize(tmp_path / "vecnormalize.pkl", make_vec_env(env_id), symmetry=env_id)
    assert isinstance(back, SymmetricVecNormalize) and not back.training
    np.testing.assert_array_equal(back.obs_rms.mean, norm.obs_rms.mean)
    np.testing.assert_array_equal(back.obs_rms.var, norm.obs_rms.var)
    assert back.obs_rms.count == norm.obs_rms.count and back.clip_obs == norm.clip_obs
    plain = load_vecnormalize(tmp_path / "vecnormalize.pkl", make_vec_env(env_id))
    assert type(plain) is VecNormalize
    np.testing.assert_array_equal(plain.obs_rms.var, norm.obs_rms.var)
    frozen = wrap_like(norm, make_vec_env(env_id))
    assert isinstance(frozen, SymmetricVecNormalize) and not frozen.training and not frozen.norm_reward
    np.testing.assert_array_equal(frozen.obs_rms.mean, norm.obs_rms.mean)
    with pytest.raises(CheckpointError, match="load_vecnormalize"):
        SymmetricVecNormalize.load(str(tmp_path / "vecnormalize.pkl"), make_vec_env(env_id))


class _Evil:
    def __reduce__(self) -> Any:
        import os

        return (os.system, ("echo pwned",))


def test_code_in_a_statistics_pickle_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "vecnormalize.pkl"
    bad.write_bytes(pickle.dumps({"obs_rms": _Evil()}))
    with pytest.raises(CheckpointError) as info:
        load_vecnormalize(bad, make_vec_env("CartPole-v1"))
    msg = str(info.value)
    assert "\n" not in msg and "system" in msg and "--trust-checkpoint" in msg
