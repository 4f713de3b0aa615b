"""Learned canonicalization / multigroup DQN policies on the gridworld: exact equivariance for every group
element, DQN.save / DQN.load round trip, the scorer phase (prior to the identity, or distilling equizero)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from stable_baselines3 import DQN

from equirl.errors import SymmetryError
from equirl.rl.canonical import collect_observations, fit_scorer
from equirl.rl.envs import make_env
from equirl.rl.policies import EquiDQNPolicy, policy_obs_action
from equirl.rl.spec import load_spec
from equirl.symmetrizers import Canonicalize, MultiGroup, equivariance_errors

ATOL = 1e-5
GRID = "equirl/GridWorld-v0"
KLEIN = str(Path(__file__).resolve().parents[2] / "envs" / "variants" / "equirl_GridWorld-v0_klein.yaml")


def _model(method: str, symmetry: str = GRID, **kw: object) -> DQN:
    return DQN(
        "EquiMlpPolicy",
        make_env(GRID),
        policy_kwargs={
            "symmetry": symmetry,
            "method": method,
            "method_kwargs": {"scorer_hidden": [16]} if method in ("canonicalize", "multigroup") else {},
            **kw,
        },
        buffer_size=200,
        learning_starts=20,
        seed=0,
    )


def _obs(n: int = 24) -> torch.Tensor:
    env = make_env(GRID)
    xs = [env.reset(seed=i)[0] for i in range(n)]
    return torch.as_tensor(np.stack(xs))


@pytest.mark.parametrize(
    ("method", "symmetry", "order"), [("canonicalize", GRID, 8), ("multigroup", KLEIN, 4)]
)
def test_scored_policies_are_equivariant_for_every_element(method: str, symmetry: str, order: int) -> None:
    model = _model(method, symmetry)
    sym = load_spec(symmetry)
    assert sym.group.order == order
    x = _obs()
    for net in (model.policy.q_net, model.policy.q_net_target):
        assert isinstance(net.equi, Canonicalize if method == "canonicalize" else MultiGroup)
        in_act = policy_obs_action(sym, make_env(GRID).observation_space)
        with torch.no_grad():
            errs = equivariance_errors(net, in_act, sym.action_action(), x)
        assert len(errs) == order
        assert max(float(e) for e in errs.values()) <= ATOL, errs


def test_canonicalize_save_load_roundtrip_and_training(tmp_path: Path) -> None:
    model = _model("canonicalize")
    before_scorer = [p.detach().clone() for p in model.policy.q_net.equi.scorer.parameters()]
    model.learn(100)  # the TD loss reaches the scorer through the straight-through estimator
    moved = any(
        not torch.equal(a, b) for a, b in zip(before_scorer, model.policy.q_net.equi.scorer.parameters())
    )
    assert moved
    x = _obs()
    with torch.no_grad():
        before = model.policy.q_net(x)
    model.save(tmp_path / "c.zip")
    loaded = DQN.load(tmp_path / "c.zip")
    assert type(loaded.policy) is EquiDQNPolicy
    assert loaded.policy.q_net.method == "canonicalize"
    with torch.no_grad():
        assert torch.allclose(loaded.policy.q_net(x), before, atol=1e-6)
    a1, _ = model.predict(x.numpy(), deterministic=True)
    a2, _ = loaded.predict(x.numpy(), deterministic=True)
    assert (a1 == a2).all()


@pytest.mark.parametrize("target", ["identity", "equizero"])
def test_fit_scorer_reaches_its_target(target: str) -> None:
    torch.manual_seed(0)
    model = _model("canonicalize")
    obs = collect_observations(model, GRID, 200, seed=0)
    assert obs.shape == (200, 3, 5, 5) and obs.dtype == torch.uint8
    res = fit_scorer(model, obs, steps=150, lr=1e-2, target=target)  # type: ignore[arg-type]
    # the D4 board distribution is symmetric, so the identity prior cannot be met everywhere (about
    # 1/|G| of a symmetric distribution); distilling equizero's pick is learnable
    assert res["agreement"] >= (0.1 if target == "identity" else 0.8), res
    pol = model.policy
    for a, b in zip(pol.q_net.state_dict().values(), pol.q_net_target.state_dict().values()):
        assert torch.equal(a, b)


def test_fit_scorer_and_multigroup_errors() -> None:
    with pytest.raises(SymmetryError, match="canonicalize"):
        fit_scorer(_model("equitune"), _obs(4), steps=1)
    with pytest.raises(Exception, match="direct product"):
        _model("multigroup")  # D4 is not a direct product
