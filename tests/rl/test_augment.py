"""The data-augmentation baseline: mirrored transitions in the replay buffer, ``augment`` configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from stable_baselines3 import DQN, SAC

import equirl.rl  # noqa: F401  (registers the aliases)
from equirl.errors import ConfigError
from equirl.registry import AUGMENT, canonical_method, get_method
from equirl.rl.augment import AugmentedReplayBuffer, AugmentedRolloutBuffer, augment_kwargs
from equirl.rl.build import build_model
from equirl.rl.config import load_rl_config
from equirl.rl.spec import load_spec


def test_augment_is_a_registered_training_baseline() -> None:
    spec = get_method(AUGMENT)
    assert spec.augments_data and not spec.symmetrizes
    assert canonical_method("data-augmentation") == AUGMENT


def _check_mirrors(buf: AugmentedReplayBuffer, env_id: str) -> int:
    """Rows come in orbits (original, then g = 1..|G|-1): each is exactly g· the original."""
    sym = load_spec(env_id)
    obs_act = sym.obs_action()
    order = sym.group.order
    n = buf.pos
    assert n > 0 and n % order == 0
    for start in range(0, n, order):
        s, s2 = buf.observations[start], buf.next_observations[start]
        a, r, d = buf.actions[start], buf.rewards[start], buf.dones[start]
        for g in range(1, order):
            row = start + g
            np.testing.assert_array_equal(buf.observations[row], obs_act.apply(torch.as_tensor(s), g).numpy())
            np.testing.assert_array_equal(
                buf.next_observations[row], obs_act.apply(torch.as_tensor(s2), g).numpy()
            )
            if sym.continuous:
                want = sym.action_action().apply(torch.as_tensor(a), g).numpy()
            else:
                want = np.asarray(sym.action_table()[g])[a.astype(int)]
            np.testing.assert_array_equal(buf.actions[row], want)
            assert buf.rewards[row] == r and buf.dones[row] == d
    return n // order


def test_dqn_buffer_holds_exact_mirror_images() -> None:
    model = DQN(
        "MlpPolicy",
        "CartPole-v1",
        buffer_size=1000,
        learning_starts=20,
        batch_size=16,
        policy_kwargs={"net_arch": [16]},
        seed=0,
        device="cpu",
        **augment_kwargs("CartPole-v1", "dqn"),
    )
    model.learn(60)
    assert isinstance(model.replay_buffer, AugmentedReplayBuffer)
    steps = _check_mirrors(model.replay_buffer, "CartPole-v1")
    assert steps == model.num_timesteps
    # left <-> right: every mirrored action is the other one
    acts = model.replay_buffer.actions[: 2 * steps].reshape(steps, 2)
    assert (acts[:, 0] != acts[:, 1]).all()


def test_sac_buffer_holds_exact_mirror_images() -> None:
    model = SAC(
        "MlpPolicy",
        "Pendulum-v1",
        buffer_size=500,
        learning_starts=20,
        batch_size=16,
        policy_kwargs={"net_arch": [16]},
        seed=0,
        device="cpu",
        **augment_kwargs("Pendulum-v1", "sac"),
    )
    model.learn(40)
    _check_mirrors(model.replay_buffer, "Pendulum-v1")
    a = model.replay_buffer.actions
    np.testing.assert_array_equal(a[1], -a[0])  # the torque negates


def test_random_mode_and_bad_arguments() -> None:
    kw = augment_kwargs("CartPole-v1", "dqn", mode="random", seed=0)
    model = DQN("MlpPolicy", "CartPole-v1", buffer_size=200, learning_starts=1000, seed=0, device="cpu", **kw)
    model.learn(10)
    _check_mirrors(model.replay_buffer, "CartPole-v1")  # flip: the random g != e is the mirror
    with pytest.raises(ConfigError, match="not 'ppo2'"):
        augment_kwargs("CartPole-v1", "ppo2")
    with pytest.raises(ConfigError, match="mode"):
        augment_kwargs("CartPole-v1", "dqn", mode="some")


def _orbit_rows(buf: AugmentedRolloutBuffer, env_id: str) -> None:
    """After ``get``: the rollout's N rows, then for each g != e their images g·s, g·a with the same
    value, behaviour log-probability, advantage and return."""
    sym = load_spec(env_id)
    from equirl.rl.augment import _Mirror

    m = _Mirror(sym, buf.observation_space, buf.action_space)
    n = buf.buffer_size * buf.n_envs
    assert buf.observations.shape[0] == n * sym.group.order
    for g in range(1, sym.group.order):
        rows = slice(g * n, (g + 1) * n)
        np.testing.assert_allclose(buf.observations[rows], m.obs(buf.observations[:n], g), atol=0)
        np.testing.assert_array_equal(buf.actions[rows], m.action(buf.actions[:n], g))
        for k in ("values", "log_probs", "advantages", "returns"):
            np.testing.assert_array_equal(getattr(buf, k)[rows], getattr(buf, k)[:n])


@pytest.mark.parametrize(("algo", "env_id"), [("ppo", "CartPole-v1"), ("a2c", "Pendulum-v1")])
def test_on_policy_augmentation_yields_every_sample_and_its_mirror(algo: str, env_id: str) -> None:
    from stable_baselines3 import A2C, PPO

    cls = {"ppo": PPO, "a2c": A2C}[algo]
    kw = augment_kwargs(env_id, algo)
    assert kw["rollout_buffer_class"] is AugmentedRolloutBuffer
    model = cls("MlpPolicy", env_id, n_steps=32, seed=0, device="cpu", policy_kwargs={"net_arch": [8]}, **kw)
    seen: list[int] = []
    real_get = model.rollout_buffer.get

    def counting_get(batch_size: int | None = None) -> Any:
        for batch in real_get(batch_size):
            seen.append(int(batch.observations.shape[0]))
            yield batch

    model.rollout_buffer.get = counting_get  # type: ignore[method-assign]
    model.learn(32)
    _orbit_rows(model.rollout_buffer, env_id)
    epochs = getattr(model, "n_epochs", 1)
    assert sum(seen) == epochs * 2 * 32  # every epoch sees the 32 samples and their 32 mirror images
    assert all(np.isfinite(p.detach().numpy()).all() for p in model.policy.parameters())
    # a fresh rollout starts from the plain size again
    model.rollout_buffer.reset()
    assert model.rollout_buffer._rows == 32


def test_augment_config_builds_a_plain_policy_with_the_buffer(tmp_path: Path) -> None:
    p = tmp_path / "cfg.yaml"
    p.write_text(
        yaml.safe_dump(
            {
                "env": "CartPole-v1",
                "method": "augmentation",
                "timesteps": 50,
                "hyperparams": {"buffer_size": 300, "learning_starts": 10, "net_arch": [8]},
            }
        )
    )
    cfg = load_rl_config(p)
    assert cfg.method == AUGMENT
    model = build_model(cfg)
    assert isinstance(model.replay_buffer, AugmentedReplayBuffer)
    assert model.policy.q_net.equi is None  # the network stays plain
    model.learn(50)
    model.save(tmp_path / "m.zip")
    from equirl.rl.build import load_plain
    from equirl.rl.envs import make_vec_env

    back = load_plain(tmp_path / "m.zip", make_vec_env("CartPole-v1"))  # safe load of the buffer class
    assert isinstance(back.replay_buffer, AugmentedReplayBuffer)


def test_augment_config_for_ppo_trains_saves_and_loads_safely(tmp_path: Path) -> None:
    p = tmp_path / "cfg.yaml"
    p.write_text(
        yaml.safe_dump(
            {
                "env": "CartPole-v1",
                "algo": "ppo",
                "method": AUGMENT,
                "timesteps": 64,
                "hyperparams": {"n_steps": 32, "batch_size": 16, "n_epochs": 2, "net_arch": [8]},
            }
        )
    )
    model = build_model(load_rl_config(p))
    assert isinstance(model.rollout_buffer, AugmentedRolloutBuffer)
    model.learn(64)
    model.save(tmp_path / "m.zip")
    from equirl.rl.build import load_plain
    from equirl.rl.envs import make_vec_env

    back = load_plain(tmp_path / "m.zip", make_vec_env("CartPole-v1"), algo="ppo")
    assert isinstance(back.rollout_buffer, AugmentedRolloutBuffer)
