"""RL-zoo actor-critic agents (SB3 1.x zips, old gym spaces, pickled schedules, VecNormalize statistics)
load without running code from them, play, and load equivariant under every method (the gSDE PPO / TQC
Pendulum agents: tests/rl/test_tqc_gsde.py)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pytest
import torch

import equirl.rl  # noqa: F401  (registers the aliases)
from equirl.registry import BASE, EQUITUNE, EQUIZERO, LAMBDA
from equirl.rl.build import load_pretrained
from equirl.rl.evaluation import evaluate
from equirl.rl.normalize import SymmetricVecNormalize
from equirl.rl.spec import load_spec
from equirl.rl.zoo import find_vecnormalize
from equirl.symmetrizers import check_equivariance
from tests.rl.helpers import perturb_lambda

ATOL = 1e-5

#: (algo, env, the base agent's return over 3 episodes must beat this; the zoo's eval logs say ~-75,
#: 500, ~-165, ~-160)
AGENTS = [
    ("ppo", "Acrobot-v1", -100.0),
    ("a2c", "CartPole-v1", 450.0),
    ("ppo", "Pendulum-v1", -300.0),
    ("tqc", "Pendulum-v1", -300.0),
]


@pytest.fixture
def no_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any unrestricted unpickling (SB3's cloudpickle.loads, pickle.load[s]) fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("unrestricted unpickling")

    monkeypatch.setattr(cloudpickle, "loads", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)


def _folder(shared_data: Path, algo: str, env_id: str) -> Path:
    return shared_data / "rl-zoo" / algo / f"{env_id}_1"


@pytest.mark.parametrize(("algo", "env_id", "threshold"), AGENTS, ids=[f"{a}-{e}" for a, e, _ in AGENTS])
def test_zoo_agent_loads_safely_and_plays(
    shared_data: Path, no_unpickling: None, algo: str, env_id: str, threshold: float
) -> None:
    model = load_pretrained(_folder(shared_data, algo, env_id), env_id, method=BASE, algo=algo)
    rets = evaluate(model, env_id, n_eval_episodes=3, seed=0)
    assert np.mean(rets) > threshold, rets


def _pipeline_error(model: Any, env_id: str) -> float:
    sym = load_spec(env_id)
    norm = model.get_vec_normalize_env()
    torch.manual_seed(0)
    x = torch.randn(32, *model.observation_space.shape)

    def f(obs: torch.Tensor) -> torch.Tensor:
        o = obs if norm is None else torch.as_tensor(norm.normalize_obs(obs.numpy()), dtype=torch.float32)
        with torch.no_grad():
            return model.policy.symmetric_heads(o)

    return check_equivariance(f, sym.obs_action(), model.policy.out_action, x)


@pytest.mark.parametrize(("algo", "env_id"), [("ppo", "Acrobot-v1"), ("a2c", "CartPole-v1")])
@pytest.mark.parametrize("method", [EQUITUNE, EQUIZERO, LAMBDA])
def test_zoo_agent_loads_equivariant(
    shared_data: Path, no_unpickling: None, algo: str, env_id: str, method: str
) -> None:
    folder = _folder(shared_data, algo, env_id)
    model = load_pretrained(folder, env_id, method=method, algo=algo)
    if method == LAMBDA:
        perturb_lambda(model.policy)
    if find_vecnormalize(folder, env_id) is not None:  # Acrobot's run normalised its observations
        assert isinstance(model.get_vec_normalize_env(), SymmetricVecNormalize)
    assert _pipeline_error(model, env_id) < ATOL


def test_zoo_base_keeps_the_saved_statistics_and_weights(shared_data: Path) -> None:
    folder = _folder(shared_data, "ppo", "Acrobot-v1")
    base = load_pretrained(folder, "Acrobot-v1", method=BASE, algo="ppo")
    norm = base.get_vec_normalize_env()
    assert type(norm).__name__ == "VecNormalize" and not norm.training
    assert norm.obs_rms.count > 1e6 and abs(norm.obs_rms.mean[0] - 0.5386) < 1e-3  # the zoo run's
    # base is the plain network: the same head as the plain SB3 policy
    from equirl.rl.build import load_plain
    from equirl.rl.envs import make_vec_env

    plain = load_plain(folder, make_vec_env("Acrobot-v1"), algo="ppo")
    x = torch.randn(8, 6)
    with torch.no_grad():
        want = plain.policy.get_distribution(x).distribution.logits
        got = base.policy.get_distribution(x).distribution.logits
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize(
    ("algo", "env_id"), [("ppo", "Pendulum-v1"), ("sac", "Pendulum-v1"), ("td3", "Pendulum-v1")]
)
def test_own_actor_critic_agents_load_under_every_method(tmp_path: Path, algo: str, env_id: str) -> None:
    from equirl.rl.algos import get_algo

    plain = get_algo(algo).cls(
        "MlpPolicy",
        env_id,
        policy_kwargs={"net_arch": [16]},
        seed=0,
        device="cpu",
        **({"buffer_size": 10} if algo != "ppo" else {}),
    )
    plain.save(tmp_path / "agent.zip")
    for method in (BASE, EQUITUNE, LAMBDA):
        model = load_pretrained(tmp_path / "agent.zip", env_id, method=method, algo=algo)
        x = torch.randn(4, 3)
        with torch.no_grad():
            got, _ = model.policy.predict(x.numpy(), deterministic=True)
            want, _ = plain.policy.predict(x.numpy(), deterministic=True)
        if method == BASE:
            np.testing.assert_allclose(got, want, atol=1e-6)
        # the action is odd in the torque: a(g·s) = -a(s) for the symmetrized policies
        if method != BASE:
            flipped = x * torch.tensor([1.0, -1.0, -1.0])
            with torch.no_grad():
                a_flip, _ = model.policy.predict(flipped.numpy(), deterministic=True)
            np.testing.assert_allclose(a_flip, -got, atol=ATOL)


def test_cli_eval_takes_actor_critic_algos(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from stable_baselines3 import A2C

    from equirl.cli import main

    A2C("MlpPolicy", "CartPole-v1", policy_kwargs={"net_arch": [8]}, seed=0, device="cpu").save(
        tmp_path / "a.zip"
    )
    argv = [
        "eval",
        "--agent",
        str(tmp_path / "a.zip"),
        "--env",
        "CartPole-v1",
        "--algo",
        "a2c",
        "--method",
        "base",
        "equitune",
        "--episodes",
        "2",
        "--json",
    ]
    assert main(argv) == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res) == {BASE, EQUITUNE} and all(r["episodes"] == 2 for r in res.values())


def test_cli_algo_choices_match_the_loader() -> None:
    """``--algo`` takes exactly the algorithms of the one table (any case), and names them when refused."""
    import argparse

    from equirl.cli.args import algo_arg
    from equirl.rl.algos import ALGOS

    assert [algo_arg(a.upper()) for a in ALGOS] == list(ALGOS)
    with pytest.raises(argparse.ArgumentTypeError) as err:
        algo_arg("her")
    assert all(a in str(err.value) for a in ALGOS)
