"""Actor-critic policies (PPO, A2C, SAC, TD3): equivariant actors, invariant critics, continuous-action
specs, save/load, learning smoke runs and check-symmetry for the continuous-control envs."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import A2C, PPO, SAC, TD3

import equirl.rl  # noqa: F401  (registers the aliases)
from equirl.errors import SymmetryError
from equirl.registry import BASE, CANONICALIZE, EQUITUNE, EQUIZERO, LAMBDA
from equirl.rl.check import check_symmetry
from equirl.rl.policies import (
    EquiActorCriticPolicy,
    EquiSACPolicy,
    concat_action,
)
from equirl.rl.spec import load_spec, parse_spec
from equirl.symmetrizers import check_equivariance
from tests.rl.helpers import perturb_lambda

METHODS = (BASE, EQUITUNE, EQUIZERO, LAMBDA)
ATOL = 1e-5
HAS_MUJOCO = importlib.util.find_spec("mujoco") is not None
HAS_BOX2D = importlib.util.find_spec("Box2D") is not None


def _make(algo: Any, env_id: str, method: str, **extra: Any) -> Any:
    kw: dict[str, Any] = {"n_steps": 32, "batch_size": 32} if algo is PPO else {}
    if algo is A2C:
        kw = {"n_steps": 8}
    if algo in (SAC, TD3):
        kw = {"learning_starts": 50, "buffer_size": 1000, "batch_size": 32}
    kw.update(extra)
    pk = {"symmetry": env_id, "method": method, "net_arch": [32, 32]}
    return algo("EquiMlpPolicy", env_id, policy_kwargs=pk, seed=0, device="cpu", **kw)


def _obs(space: spaces.Space, n: int = 16) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(n, *space.shape) * 2


def _orbit_max(f: Any, in_act: Any, out_act: Any, x: torch.Tensor) -> float:
    return check_equivariance(f, in_act, out_act, x)


# ---------------------------------------------------------------------------------------------------
# specs
# ---------------------------------------------------------------------------------------------------
def test_continuous_spec_parses_and_acts() -> None:
    sym = load_spec("Pendulum-v1")
    assert sym.continuous and sym.n_actions == 1
    a = torch.tensor([[0.7]])
    assert torch.equal(sym.action_action().apply(a, 1), -a)
    assert torch.equal(sym.action_action(absolute=True).apply(a, 1), a)
    lunar = load_spec("LunarLanderContinuous-v3")
    b = torch.tensor([[0.3, -0.8]])
    assert torch.equal(lunar.action_action().apply(b, 1), torch.tensor([[0.3, 0.8]]))
    with pytest.raises(SymmetryError, match="no action table"):
        sym.action_table()
    assert not load_spec("CartPole-v1").continuous


def test_check_fits_refuses_action_maps_that_do_not_fit() -> None:
    sym = load_spec("Pendulum-v1")
    obs = spaces.Box(-8, 8, (3,))
    sym.check_fits(obs, spaces.Box(-2, 2, (1,)))
    for bad, msg in (
        (spaces.Box(-2, 2, (2,)), "acts on 1 action dimensions"),
        (spaces.Box(0, 2, (1,)), "does not map the action box"),
        (spaces.Discrete(3), "continuous"),
    ):
        with pytest.raises(SymmetryError, match=msg) as exc:
            sym.check_fits(obs, bad)
        assert "\n" not in str(exc.value)
    with pytest.raises(SymmetryError, match="discrete action space"):
        load_spec("CartPole-v1").check_fits(spaces.Box(-1, 1, (4,)), spaces.Box(-1, 1, (2,)))
    data = {
        "env": "X-v0",
        "group": "flip",
        "observation": {"type": "signed_permutation", "generators": [{"src": [0], "signs": [-1]}]},
        "actions": {"type": "signed_permutation", "generators": [{"src": [0, 1], "signs": [1]}]},
    }
    with pytest.raises(SymmetryError, match="signs"):
        parse_spec(data)
    data["actions"] = {"type": "rotation", "generators": []}
    with pytest.raises(SymmetryError, match=r"actions\.type"):
        parse_spec(data)


# ---------------------------------------------------------------------------------------------------
# PPO / A2C
# ---------------------------------------------------------------------------------------------------
AC_CASES = [(algo, env, m) for algo in (PPO, A2C) for env in ("CartPole-v1", "Pendulum-v1") for m in METHODS]


@pytest.mark.parametrize(("algo", "env_id", "method"), AC_CASES)
def test_actor_critic_equivariance(algo: Any, env_id: str, method: str) -> None:
    model = _make(algo, env_id, method)
    pol: EquiActorCriticPolicy = model.policy
    perturb_lambda(pol)
    pol.set_training_mode(False)
    sym = load_spec(env_id)
    oa, aa = sym.obs_action(), sym.action_action()
    x = _obs(model.observation_space)
    err = _orbit_max(pol.symmetric_heads, oa, pol.out_action, x)
    if method == BASE:
        assert err > 1e-3  # the plain network is not equivariant
        return
    assert err <= ATOL
    # the distribution and the value through SB3's own entry points
    torch.manual_seed(1)
    if sym.continuous:
        acts = torch.rand(x.shape[0], sym.n_actions) * 4 - 2
    else:
        acts = torch.randint(0, sym.n_actions, (x.shape[0],))
    with torch.no_grad():
        v, lp, ent = pol.evaluate_actions(x, acts)
        for g in range(1, sym.group.order):
            gx = oa.apply(x, g)
            ga = (
                aa.apply(acts, g)
                if sym.continuous
                else torch.tensor([sym.action_table()[g][int(a)] for a in acts])
            )
            v2, lp2, ent2 = pol.evaluate_actions(gx, ga)
            assert (v2 - v).abs().max() <= ATOL  # value invariant
            assert (lp2 - lp).abs().max() <= ATOL  # log π(g·a | g·s) = log π(a | s)
            assert ent is not None and ent2 is not None and (ent2 - ent).abs().max() <= ATOL
            assert (pol.predict_values(gx) - v).abs().max() <= ATOL
            det = pol.get_distribution(x).get_actions(deterministic=True)
            det_g = pol.get_distribution(gx).get_actions(deterministic=True)
            if sym.continuous:
                assert (det_g - aa.apply(det, g)).abs().max() <= ATOL
            std = pol.get_distribution(x).distribution.stddev  # type: ignore[attr-defined]
            std_g = pol.get_distribution(gx).distribution.stddev  # type: ignore[attr-defined]
            if sym.continuous:
                assert (std_g - sym.action_action(absolute=True).apply(std, g)).abs().max() <= ATOL


def test_dihedral_gridworld_ppo_lambda_and_equizero() -> None:
    """An 8-element group (D4 on the gridworld board): logits permuted, value invariant."""
    for method in (EQUIZERO, LAMBDA):
        model = _make(PPO, "equirl/GridWorld-v0", method)
        perturb_lambda(model.policy)
        model.policy.set_training_mode(False)
        sym = load_spec("equirl/GridWorld-v0")
        x = torch.rand(6, *model.observation_space.shape)
        err = _orbit_max(model.policy.symmetric_heads, sym.obs_action(), model.policy.out_action, x)
        assert err <= ATOL


# ---------------------------------------------------------------------------------------------------
# SAC / TD3
# ---------------------------------------------------------------------------------------------------
OFF_CASES = [(algo, m) for algo in (SAC, TD3) for m in METHODS]


@pytest.mark.parametrize(("algo", "method"), OFF_CASES)
def test_sac_td3_actor_equivariant_critics_invariant(algo: Any, method: str) -> None:
    model = _make(algo, "Pendulum-v1", method)
    pol = model.policy
    perturb_lambda(pol)
    pol.set_training_mode(False)
    sym = load_spec("Pendulum-v1")
    oa, aa = sym.obs_action(), sym.action_action()
    x = _obs(model.observation_space)
    sac = algo is SAC
    out = concat_action(sym.group, [aa, sym.action_action(absolute=True)]) if sac else aa
    joint = concat_action(sym.group, [oa, aa])
    acts = torch.rand(x.shape[0], 1) * 2 - 1
    xa = torch.cat([x, acts], 1)
    actors = [pol.actor] + ([pol.actor_target] if not sac else [])
    critics = [pol.critic, pol.critic_target]
    for actor in actors:
        err = _orbit_max(actor.symmetric_out, oa, out, x)
        assert (err > 1e-3) if method == BASE else (err <= ATOL)
    for critic in critics:
        err = _orbit_max(lambda z, c=critic: c.joint_values(z[:, :3], z[:, 3:]), joint, None, xa)
        assert (err > 1e-3) if method == BASE else (err <= ATOL)
        q = torch.cat(critic(x, acts), 1)
        assert q.shape == (x.shape[0], 2)
    if method == BASE:
        return
    with torch.no_grad():
        if sac:
            # log π(g·a | g·s) = log π(a | s) for the squashed Gaussian
            def logp(obs: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
                mean, log_std, _ = pol.actor.get_action_dist_params(obs)
                return pol.actor.action_dist.proba_distribution(mean, log_std).log_prob(a)

            a = torch.rand(x.shape[0], 1) * 1.8 - 0.9
            assert (logp(oa.apply(x, 1), aa.apply(a, 1)) - logp(x, a)).abs().max() <= 1e-4
        det = pol.predict(x.numpy(), deterministic=True)[0]
        det_g = pol.predict(oa.apply(x, 1).numpy(), deterministic=True)[0]
        assert np.abs(det_g + det).max() <= ATOL  # torque -> -torque (also after unscaling)


def test_actor_critic_refusals() -> None:
    with pytest.raises(SymmetryError, match="not available"):
        _make(PPO, "CartPole-v1", CANONICALIZE)
    with pytest.raises(SymmetryError, match="proxy"):
        PPO(
            "EquiMlpPolicy",
            "Pendulum-v1",
            policy_kwargs={
                "symmetry": "Pendulum-v1",
                "method": EQUIZERO,
                "method_kwargs": {"proxy": "max_prob"},
            },
        )
    with pytest.raises(SymmetryError, match="proxy"):
        TD3(
            "EquiMlpPolicy",
            "Pendulum-v1",
            policy_kwargs={
                "symmetry": "Pendulum-v1",
                "method": EQUIZERO,
                "method_kwargs": {"proxy": "entropy"},
            },
        )
    with pytest.raises(SymmetryError, match="needs a discrete action space"):
        PPO("EquiMlpPolicy", "Pendulum-v1", policy_kwargs={"symmetry": "CartPole-v1"})
    # SAC with equizero's entropy proxy (the most confident element) is fine
    m = SAC(
        "EquiMlpPolicy",
        "Pendulum-v1",
        policy_kwargs={"symmetry": "Pendulum-v1", "method": EQUIZERO, "method_kwargs": {"proxy": "entropy"}},
    )
    assert isinstance(m.policy, EquiSACPolicy)


# ---------------------------------------------------------------------------------------------------
# save / load, learning
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("algo", "env_id", "method"),
    [
        (PPO, "CartPole-v1", LAMBDA),
        (A2C, "Pendulum-v1", EQUIZERO),
        (SAC, "Pendulum-v1", LAMBDA),
        (TD3, "Pendulum-v1", EQUIZERO),
    ],
)
def test_save_load_round_trip(tmp_path: Path, algo: Any, env_id: str, method: str) -> None:
    model = _make(algo, env_id, method)
    perturb_lambda(model.policy)
    path = tmp_path / "agent.zip"
    model.save(path)
    loaded = algo.load(path, device="cpu")  # no custom_objects
    assert type(loaded.policy) is type(model.policy)
    x = _obs(model.observation_space).numpy()
    a1, _ = model.predict(x, deterministic=True)
    a2, _ = loaded.predict(x, deterministic=True)
    np.testing.assert_allclose(a1, a2, atol=1e-6)
    for (k, v), (k2, v2) in zip(model.policy.state_dict().items(), loaded.policy.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


@pytest.mark.parametrize(
    ("algo", "env_id"),
    [(PPO, "CartPole-v1"), (A2C, "CartPole-v1"), (SAC, "Pendulum-v1"), (TD3, "Pendulum-v1")],
)
def test_learn_smoke(algo: Any, env_id: str) -> None:
    model = _make(algo, env_id, LAMBDA)
    before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    model.learn(200)
    changed = [k for k, v in model.policy.state_dict().items() if not torch.equal(v, before[k])]
    assert any("lambda_net" in k for k in changed), changed  # the λ-net is trained
    pol = model.policy
    pol.set_training_mode(False)
    sym = load_spec(env_id)
    x = _obs(model.observation_space)
    if algo in (PPO, A2C):
        assert _orbit_max(pol.symmetric_heads, sym.obs_action(), pol.out_action, x) <= ATOL
    else:
        out = (
            concat_action(sym.group, [sym.action_action(), sym.action_action(absolute=True)])
            if algo is SAC
            else sym.action_action()
        )
        assert _orbit_max(pol.actor.symmetric_out, sym.obs_action(), out, x) <= ATOL


def test_freeze_backbone_trains_only_lambda() -> None:
    model = SAC(
        "EquiMlpPolicy",
        "Pendulum-v1",
        learning_starts=20,
        batch_size=16,
        buffer_size=500,
        policy_kwargs={
            "symmetry": "Pendulum-v1",
            "method": LAMBDA,
            "freeze_backbone": True,
            "net_arch": [16],
        },
    )
    before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    model.learn(60)
    for k, v in model.policy.state_dict().items():
        if "lambda_net" not in k and "critic_target" not in k:
            assert torch.equal(v, before[k]), k


# ---------------------------------------------------------------------------------------------------
# check-symmetry on the continuous-control envs
# ---------------------------------------------------------------------------------------------------
def _spec_dict(env_id: str) -> dict:
    from equirl.config import load_yaml
    from equirl.rl.spec import find_spec_file

    path = find_spec_file(env_id)
    assert path is not None
    return load_yaml(path)


def test_pendulum_exact_and_wrong_sign_broken() -> None:
    rep = check_symmetry("Pendulum-v1", steps=50, seed=0)
    assert rep.exact and rep.verified and rep.max_error is not None and rep.max_error <= 1e-5
    wrong = _spec_dict("Pendulum-v1")
    wrong["actions"]["generators"] = [{"src": [0], "signs": [1]}]  # torque not reversed
    bad = check_symmetry(wrong, steps=50, seed=0)
    assert bad.exact and not bad.verified and "BROKEN" in bad.message


@pytest.mark.skipif(not HAS_BOX2D, reason="Box2D not installed")
def test_lunar_lander_continuous_statistical() -> None:
    rep = check_symmetry("LunarLanderContinuous-v3", steps=300, seed=0)
    assert rep.statistical and rep.verified, rep.message
    wrong = _spec_dict("LunarLanderContinuous-v3")
    wrong["actions"]["generators"] = [{"src": [0, 1], "signs": [1, 1]}]  # lateral engine not mirrored
    bad = check_symmetry(wrong, steps=300, seed=0)
    assert bad.statistical and not bad.verified and "BROKEN" in bad.message


@pytest.mark.skipif(not HAS_MUJOCO, reason="mujoco not installed")
def test_mujoco_pendulums() -> None:
    rep = check_symmetry("InvertedDoublePendulum-v5", steps=50, seed=0)
    assert rep.exact and rep.verified and rep.max_error is not None and rep.max_error <= 1e-5, rep.message
    wrong = _spec_dict("InvertedDoublePendulum-v5")
    wrong["observation"]["generators"][0]["signs"][3] = -1  # cos(t1) does not negate
    assert not check_symmetry(wrong, steps=20, seed=0).verified
    # InvertedPendulum's pole is tilted by 1 mm (fromto 0 0 0 0.001 0 0.6): the mirror is approximate, and
    # the spec says so (verify.atol 1e-2 with its reason)
    approx = check_symmetry("InvertedPendulum-v5", steps=50, seed=0)
    assert approx.exact and approx.verified and approx.approximate, approx.message
    assert approx.max_error is not None and 1e-5 < approx.max_error < 1e-2
    assert "approximately symmetric" in approx.message and "off vertical" in approx.message
    strict = check_symmetry("InvertedPendulum-v5", steps=50, seed=0, atol=1e-5)
    assert not strict.verified and "BROKEN" in strict.message
    wrong = _spec_dict("InvertedPendulum-v5")
    wrong["observation"]["generators"][0]["signs"][3] = 1  # theta_dot does not negate
    wrong["verify"]["generators"][0]["signs"][3] = 1
    assert not check_symmetry(wrong, steps=20, seed=0).verified  # one wrong sign: broken even at 1e-2


@pytest.mark.skipif(not HAS_MUJOCO, reason="mujoco not installed")
def test_inverted_pendulum_tilted_pole_is_the_only_asymmetry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Gymnasium's model draws the pole from (0, 0, 0) to (0.001, 0, 0.6): with it upright, the mirror
    obs -> -obs, force -> -force commutes with the dynamics exactly."""
    import os

    import gymnasium as gym

    import equirl.rl.check as check_mod

    src = Path(os.path.dirname(gym.__file__)) / "envs" / "mujoco" / "assets" / "inverted_pendulum.xml"
    xml = src.read_text()
    tilted = 'fromto="0 0 0 0.001 0 0.6"'
    assert tilted in xml
    upright = tmp_path / "inverted_pendulum_upright.xml"
    upright.write_text(xml.replace(tilted, 'fromto="0 0 0 0 0 0.6"'))
    monkeypatch.setattr(check_mod, "make_env", lambda env_id: gym.make(env_id, xml_file=str(upright)))
    rep = check_symmetry("InvertedPendulum-v5", steps=50, seed=0)
    assert rep.exact and rep.verified and rep.max_error is not None and rep.max_error <= 1e-5, rep.message


@pytest.mark.skipif(not HAS_MUJOCO, reason="mujoco not installed")
def test_walker_leg_swap_exact() -> None:
    rep = check_symmetry("Walker2d-v5", steps=30, seed=0)
    assert rep.exact and rep.verified and rep.max_error is not None and rep.max_error <= 1e-5, rep.message
    wrong = _spec_dict("Walker2d-v5")
    wrong["actions"]["generators"] = [{"src": [0, 1, 2, 3, 4, 5]}]  # torques not swapped with the legs
    assert not check_symmetry(wrong, steps=20, seed=0).verified


# ---------------------------------------------------------------------------------------------------
# the shipped actor-critic agents
# ---------------------------------------------------------------------------------------------------
def _shipped_ac_agents() -> list[tuple[str, str, Path]]:
    """(algo, env id, zip) of every shipped PPO / A2C / SAC / TD3 agent, full and partial."""
    from equirl.rl.agents import shipped_agents

    return [(a.algo, a.env, a.path) for a in shipped_agents() if a.algo in ("ppo", "a2c", "sac", "td3")]


def _needs(env_id: str) -> str | None:
    if (
        env_id.startswith(("Inverted", "Walker", "Swimmer", "Hopper", "HalfCheetah", "Ant", "Humanoid"))
        and not HAS_MUJOCO
    ):
        return "needs mujoco"
    if env_id.startswith("LunarLander") and not HAS_BOX2D:
        return "needs Box2D"
    return None


@pytest.mark.parametrize(
    ("algo", "env_id", "path"), _shipped_ac_agents(), ids=lambda v: getattr(v, "name", str(v))
)
def test_shipped_actor_critic_agents_are_equivariant(algo: str, env_id: str, path: Path) -> None:
    """Each shipped agent is small and loads under equitune without running code from the zip: its action
    distribution follows the group, its values do not change (PPO: the state value; SAC: both critics under
    the joint action), for every group element."""
    from equirl.rl.agents import SHIP_MAX_BYTES
    from equirl.rl.build import load_pretrained

    assert path.stat().st_size <= SHIP_MAX_BYTES
    if (why := _needs(env_id)) is not None:
        pytest.skip(why)
    model = load_pretrained(path, env_id, method=EQUITUNE, algo=algo)  # no trust_checkpoint
    assert type(model).__name__.lower() == algo and model.policy_kwargs["method"] == EQUITUNE
    pol = model.policy
    pol.set_training_mode(False)
    sym = load_spec(env_id)
    oa, aa = sym.obs_action(), sym.action_action()
    x = _obs(model.observation_space)
    with torch.no_grad():
        for g in range(1, sym.group.order):
            gx = oa.apply(x, g)
            if isinstance(pol, EquiActorCriticPolicy):
                assert (pol.predict_values(gx) - pol.predict_values(x)).abs().max() <= ATOL * 10
                if sym.continuous:
                    det = pol.get_distribution(x).get_actions(deterministic=True)
                    det_g = pol.get_distribution(gx).get_actions(deterministic=True)
                    assert (det_g - aa.apply(det, g)).abs().max() <= ATOL
                else:
                    p = pol.get_distribution(x).distribution.probs  # type: ignore[attr-defined]
                    p_g = pol.get_distribution(gx).distribution.probs  # type: ignore[attr-defined]
                    table = sym.action_table()[g]
                    assert (p_g[:, table] - p).abs().max() <= ATOL  # π(g·a | g·s) = π(a | s)
            else:
                mean = pol.actor.get_action_dist_params(x)[0]
                mean_g = pol.actor.get_action_dist_params(gx)[0]
                assert (mean_g - aa.apply(mean, g)).abs().max() <= ATOL
                acts = torch.rand(x.shape[0], sym.n_actions) * 2 - 1
                q = torch.cat(pol.critic(x, acts), 1)
                q_g = torch.cat(pol.critic(gx, aa.apply(acts, g)), 1)
                assert (q_g - q).abs().max() <= ATOL * max(1.0, float(q.abs().max()))  # Q(g·s, g·a) = Q(s, a)
