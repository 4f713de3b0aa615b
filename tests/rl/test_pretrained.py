"""Loading plain agents (ours and the RL zoo's SB3 1.0 agents) into equivariant policies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from stable_baselines3 import DQN

from equirl.errors import CheckpointError
from equirl.rl.build import load_plain, load_pretrained
from equirl.rl.envs import make_env
from equirl.rl.evaluation import evaluate
from equirl.rl.policies import EquiDQNPolicy
from equirl.rl.spec import load_spec
from equirl.symmetrizers import check_equivariance


@pytest.fixture(scope="module")
def plain_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = DQN(
        "MlpPolicy",
        make_env("CartPole-v1"),
        policy_kwargs={"net_arch": [32, 32]},
        buffer_size=100,
        learning_starts=10,
        seed=0,
    )
    model.learn(50)
    p = tmp_path_factory.mktemp("agent") / "plain.zip"
    model.save(p)
    return p


def _states(n: int = 32) -> torch.Tensor:
    env = make_env("CartPole-v1")
    return torch.as_tensor(np.stack([env.observation_space.sample() for _ in range(n)]))


@pytest.mark.parametrize("method", ["base", "equitune", "equizero", "lambda"])
def test_strict_and_partial_loading(plain_zip: Path, method: str) -> None:
    model = load_pretrained(plain_zip, "CartPole-v1", method=method)
    assert isinstance(model.policy, EquiDQNPolicy)
    plain = DQN.load(plain_zip)
    x = _states()
    with torch.no_grad():
        q, qm = plain.policy.q_net(x), plain.policy.q_net(-x)
        out = model.policy.q_net(x)
    expected = {"base": q, "equitune": (q + qm.flip(-1)) / 2, "lambda": (q + qm.flip(-1)) / 2}
    if method in expected:
        assert torch.allclose(out, expected[method], atol=1e-5)
    if method != "base":
        sym = load_spec("CartPole-v1")
        assert check_equivariance(model.policy.q_net, sym.obs_action(), sym.action_action(), x) <= 1e-5
    # the target network carries the same weights
    for a, b in zip(model.policy.q_net.parameters(), model.policy.q_net_target.parameters()):
        assert torch.equal(a, b)
    assert model.policy.freeze_backbone == (method == "lambda")


def test_missing_and_corrupt_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_pretrained(tmp_path / "nope.zip", "CartPole-v1")
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip at all")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_pretrained(bad, "CartPole-v1")


def test_checkpoint_of_another_env_does_not_fit(plain_zip: Path) -> None:
    with pytest.raises(CheckpointError):
        load_pretrained(plain_zip, "Acrobot-v1")


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Acrobot-v1"])
def test_zoo_agents_load_strictly(shared_data: Path, env_id: str) -> None:
    folder = shared_data / "rl-zoo" / "dqn" / f"{env_id}_1"
    vec_model = load_pretrained(folder, env_id, method="equizero")
    plain = load_plain(folder, vec_model.get_env())
    x = torch.as_tensor(np.stack([make_env(env_id).observation_space.sample() for _ in range(16)]))
    with torch.no_grad():
        assert torch.allclose(vec_model.policy.q_net._plain_forward(x), plain.policy.q_net(x), atol=1e-6)
    sym = load_spec(env_id)
    assert check_equivariance(vec_model.policy.q_net, sym.obs_action(), sym.action_action(), x) <= 1e-5


def test_zoo_cartpole_equizero_matches_base(shared_data: Path) -> None:
    """With the max-value proxy (the zoo agent is where it beats the RL default action_gap, docs/rl.md)."""
    folder = shared_data / "rl-zoo" / "dqn" / "CartPole-v1_1"
    base = evaluate(
        load_pretrained(folder, "CartPole-v1", method="base"), "CartPole-v1", n_eval_episodes=1, seed=3
    )
    zero_model = load_pretrained(
        folder, "CartPole-v1", method="equizero", method_kwargs={"proxy": "max_value"}
    )
    zero = evaluate(zero_model, "CartPole-v1", n_eval_episodes=1, seed=3)
    assert base == [500.0] and zero == [500.0]


@pytest.mark.slow
def test_zoo_cartpole_lambda_learns_to_500(shared_data: Path) -> None:
    """λ-equitune with a frozen zoo backbone: ≥ 495 after 5k env steps of λ learning (equitune gives ≈ 320)."""
    folder = shared_data / "rl-zoo" / "dqn" / "CartPole-v1_1"
    model = load_pretrained(
        folder,
        "CartPole-v1",
        method="lambda",
        learning_rate=1e-2,
        batch_size=64,
        train_freq=1,
        gradient_steps=1,
        target_update_interval=10,
        learning_starts=500,
        exploration_initial_eps=0.04,
        exploration_final_eps=0.04,
        seed=0,
        method_kwargs={"lambda_hidden": [64]},
    )
    model.learn(5000)
    assert np.mean(evaluate(model, "CartPole-v1", n_eval_episodes=10, seed=0)) >= 495


def test_lambda_agent_reloads_under_every_method(tmp_path: Path) -> None:
    model = DQN(
        "EquiMlpPolicy",
        make_env("CartPole-v1"),
        policy_kwargs={"symmetry": "CartPole-v1", "method": "lambda", "net_arch": [16]},
        buffer_size=10,
    )
    with torch.no_grad():
        for p in model.policy.q_net.equi.parameters():
            p.add_(0.5)
    model.save(tmp_path / "lam.zip")
    x = _states(8)
    again = load_pretrained(tmp_path / "lam.zip", "CartPole-v1", method="lambda")
    assert torch.allclose(again.policy.q_net(x), model.policy.q_net(x), atol=1e-6)  # λ-net kept
    base = load_pretrained(tmp_path / "lam.zip", "CartPole-v1", method="base")
    assert torch.allclose(base.policy.q_net(x), model.policy.q_net._plain_forward(x), atol=1e-6)


def test_shipped_agents_load_into_equivariant_policies() -> None:
    from equirl.rl.agents import agent_dir

    for env_id in ("CartPole-v1", "Acrobot-v1", "equirl/GridWorld-v0"):
        d = agent_dir(env_id)
        if not d.is_dir():
            pytest.skip(f"no shipped agent for {env_id}")
        for name in (f"{d.name}.zip", f"{d.name}_partial.zip"):
            model = load_pretrained(d / name, env_id, method="equitune")
            sym = load_spec(env_id)
            env = make_env(env_id)
            x = torch.as_tensor(np.stack([env.observation_space.sample() for _ in range(4)]))
            err = check_equivariance(
                model.policy.q_net, model.policy.q_net.equi.in_action, sym.action_action(), x
            )
            assert err <= 1e-5


@pytest.mark.parametrize("method", ["equitune", "equizero", "lambda"])
def test_qrdqn_plain_agent_wraps(tmp_path: Path, method: str) -> None:
    from sb3_contrib import QRDQN

    plain = QRDQN(
        "MlpPolicy",
        make_env("Acrobot-v1"),
        policy_kwargs={"net_arch": [16], "n_quantiles": 5},
        buffer_size=10,
        seed=0,
    )
    plain.save(tmp_path / "qr.zip")
    model = load_pretrained(tmp_path / "qr.zip", "Acrobot-v1", method=method, algo="qrdqn")
    net = model.policy.quantile_net
    x = torch.as_tensor(np.stack([make_env("Acrobot-v1").observation_space.sample() for _ in range(8)]))
    with torch.no_grad():
        assert torch.allclose(net._plain_forward(x), plain.policy.quantile_net(x), atol=1e-6)
    sym = load_spec("Acrobot-v1")
    assert net(x).shape == (8, 5, 3)
    assert check_equivariance(net, sym.obs_action(), sym.action_action(), x) <= 1e-5
