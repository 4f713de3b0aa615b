"""``EquiCnnPolicy`` on SAC, TD3, DDPG and TQC: image observations through SB3's NatureCNN, an equivariant
actor and joint-invariant critics (targets too) for every method, save / load without ``custom_objects``
(also through equirl's safe loader), ``load_pretrained`` of a plain ``CnnPolicy`` agent, and ``learn``.

The test env is tiny and lives here: a random 36x36 RGB frame (NatureCNN's smallest input) and a 2-d
``Box`` action; its spec is D4 acting on the frame (quarter turns and the left-right mirror) and on the
action as the plane's rotations and reflection, ``(x, y) ↦ (-y, x)`` and ``(x, y) ↦ (-x, y)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from sb3_contrib import TQC
from stable_baselines3 import A2C, DDPG, PPO, SAC, TD3
from stable_baselines3.common.vec_env import DummyVecEnv
from stable_baselines3.td3.policies import Actor as TD3Actor

import equirl.rl  # noqa: F401  (registers the aliases)
from equirl.registry import BASE, EQUITUNE, EQUIZERO, LAMBDA
from equirl.rl.build import load_plain, load_pretrained, policy_alias
from equirl.rl.policies import (
    EquiActorCriticCnnPolicy,
    EquiSACCnnPolicy,
    EquiTD3CnnPolicy,
    EquiTQCCnnPolicy,
    flat_obs_action,
    policy_obs_action,
)
from equirl.rl.spec import EnvSymmetry, parse_spec
from equirl.symmetrizers import check_equivariance
from tests.rl.helpers import perturb_lambda

METHODS = (BASE, EQUITUNE, EQUIZERO, LAMBDA)
ALGOS = (SAC, TD3, DDPG, TQC)
ATOL = 1e-5
SIDE = 36  # NatureCNN's kernels (8/4, 4/2, 3/1) need at least 36x36
CNN_CLASS = {SAC: EquiSACCnnPolicy, TD3: EquiTD3CnnPolicy, DDPG: EquiTD3CnnPolicy, TQC: EquiTQCCnnPolicy}


def _spec(layout: str = "CHW") -> EnvSymmetry:
    return parse_spec(
        {
            "env": "TinyImage-v0",
            "group": "D4",
            "observation": {
                "type": "image",
                "layout": layout,
                "generators": [{"rotate": 1}, {"mirror": "left-right"}],
            },
            "actions": {
                "type": "signed_permutation",
                "generators": [{"src": [1, 0], "signs": [-1, 1]}, {"src": [0, 1], "signs": [-1, 1]}],
            },
        }
    )


class TinyImageEnv(gym.Env):
    """Random uint8 frames, a 2-d action in ``[-1, 1]²``, reward ``-|a|²``, 8-step episodes.

    :param layout: ``"CHW"`` (3, 36, 36) or ``"HWC"`` (36, 36, 3; SB3 transposes it for the policy).
    """

    def __init__(self, layout: str = "CHW") -> None:
        shape = (3, SIDE, SIDE) if layout == "CHW" else (SIDE, SIDE, 3)
        self.observation_space = spaces.Box(0, 255, shape, np.uint8)
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self.observation_space.seed(seed)
        self._t = 0
        return self.observation_space.sample(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        self._t += 1
        reward = -float(np.sum(np.square(action)))
        return self.observation_space.sample(), reward, False, self._t >= 8, {}


def _kw(algo: Any) -> dict[str, Any]:
    kw: dict[str, Any] = {"buffer_size": 64, "learning_starts": 8, "batch_size": 4}
    if algo is TQC:
        kw["top_quantiles_to_drop_per_net"] = 1
    return kw


def _make(algo: Any, method: str, layout: str = "CHW", **extra: Any) -> Any:
    pk = {
        "symmetry": _spec(layout).to_dict(),
        "method": method,
        "net_arch": [8],
        "features_extractor_kwargs": {"features_dim": 8},
        **({"n_quantiles": 5} if algo is TQC else {}),
        **extra,
    }
    return algo("EquiCnnPolicy", TinyImageEnv(layout), policy_kwargs=pk, seed=0, device="cpu", **_kw(algo))


def _frames(n: int = 4) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, SIDE, SIDE), generator=gen, dtype=torch.uint8)


def _actions(n: int = 4) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.rand(n, 2, generator=gen) * 1.8 - 0.9


def _det(actor: Any, obs: torch.Tensor) -> torch.Tensor:
    """The actor's deterministic action (squashed mean for SAC / TQC, the action for TD3 / DDPG)."""
    if isinstance(actor, TD3Actor):
        return actor(obs)  # type: ignore[no-any-return]
    return actor(obs, deterministic=True)  # type: ignore[no-any-return]


def _critic_values(critic: Any, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    out = critic(obs, act)
    return torch.cat(out, 1) if isinstance(out, tuple) else out


def _max_actor_error(actor: Any, oa: Any, aa: Any, x: torch.Tensor) -> float:
    with torch.no_grad():
        a = _det(actor, x)
        return max(
            (_det(actor, oa.apply(x, g)) - aa.apply(a, g)).abs().max().item() for g in range(oa.group.order)
        )


def _max_critic_error(critic: Any, oa: Any, aa: Any, x: torch.Tensor, act: torch.Tensor) -> float:
    with torch.no_grad():
        q = _critic_values(critic, x, act)
        return max(
            (_critic_values(critic, oa.apply(x, g), aa.apply(act, g)) - q).abs().max().item()
            for g in range(oa.group.order)
        )


# ---------------------------------------------------------------------------------------------------
# equivariance
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("algo", ALGOS, ids=lambda a: a.__name__)
@pytest.mark.parametrize("method", METHODS)
def test_cnn_actor_equivariant_critics_invariant(algo: Any, method: str) -> None:
    model = _make(algo, method)
    pol = model.policy
    assert type(pol) is CNN_CLASS[algo]
    assert type(pol.actor.features_extractor).__name__ == "NatureCNN"
    perturb_lambda(pol)
    pol.set_training_mode(False)
    sym = _spec()
    oa, aa = policy_obs_action(sym, model.observation_space), sym.action_action()
    assert oa.group.order == 8
    x, act = _frames(), _actions()
    actors = [pol.actor] + ([pol.actor_target] if hasattr(pol, "actor_target") else [])
    critics = [pol.critic, pol.critic_target]
    for net in actors:
        err = _max_actor_error(net, oa, aa, x)
        assert (err > 1e-3) if method == BASE else (err <= ATOL), (net, err)
    for net in critics:
        err = _max_critic_error(net, oa, aa, x, act)
        assert (err > 1e-3) if method == BASE else (err <= ATOL), (net, err)
    if method == BASE or algo not in (SAC, TQC):
        return
    # the squashed Gaussian: log π(g·a | g·s) = log π(a | s)
    with torch.no_grad():

        def logp(obs: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
            mean, log_std, _ = pol.actor.get_action_dist_params(obs)
            return pol.actor.action_dist.proba_distribution(mean, log_std).log_prob(a)

        ref = logp(x, act)
        for g in range(1, 8):
            assert (logp(oa.apply(x, g), aa.apply(act, g)) - ref).abs().max() <= 1e-4


@pytest.mark.parametrize("algo", (SAC, TQC), ids=lambda a: a.__name__)
def test_cnn_gsde(algo: Any) -> None:
    """gSDE on frames: the mean is equivariant, the per-state standard deviation permuted by ``|P_g|``."""
    model = _make(algo, LAMBDA, use_sde=True)
    perturb_lambda(model.policy)
    model.policy.set_training_mode(False)
    sym = _spec()
    oa, aa = policy_obs_action(sym, model.observation_space), sym.action_action()
    absolute = sym.action_action(absolute=True)
    x = _frames()
    with torch.no_grad():
        mean, log_std, _ = model.policy.actor.get_action_dist_params(x)
        for g in range(8):
            mean_g, log_std_g, _ = model.policy.actor.get_action_dist_params(oa.apply(x, g))
            assert (mean_g - aa.apply(mean, g)).abs().max() <= ATOL
            assert (log_std_g - absolute.apply(log_std, g)).abs().max() <= ATOL
    assert _max_critic_error(model.policy.critic, oa, aa, x, _actions()) <= ATOL
    model.learn(16)


def test_flat_obs_action_matches_the_image_action() -> None:
    space = spaces.Box(0, 255, (3, 5, 5), np.uint8)
    oa = policy_obs_action(_spec(), space)
    flat = flat_obs_action(oa, space)
    x = torch.randn(2, 3, 5, 5)
    for g in range(8):
        assert torch.equal(flat.apply(x.flatten(1), g), oa.apply(x, g).flatten(1))


def test_base_is_sb3_cnn_policy() -> None:
    """Method ``base`` is SB3's ``CnnPolicy`` exactly (same parameter names, same outputs)."""
    for algo in (SAC, TD3):
        equi = _make(algo, BASE)
        pk = {"net_arch": [8], "features_extractor_kwargs": {"features_dim": 8}}
        plain = algo("CnnPolicy", TinyImageEnv(), policy_kwargs=pk, seed=1, device="cpu", **_kw(algo))
        plain.policy.load_state_dict(equi.policy.state_dict())  # strict: the same names
        x, act = _frames(), _actions()
        with torch.no_grad():
            assert torch.equal(_det(equi.policy.actor, x), _det(plain.policy.actor, x))
            for c in ("critic", "critic_target"):
                q1 = _critic_values(getattr(equi.policy, c), x, act)
                q2 = _critic_values(getattr(plain.policy, c), x, act)
                assert torch.allclose(q1, q2, atol=1e-6, rtol=0)


def test_channel_last_frames_and_shared_extractor() -> None:
    """An HWC env (SB3 transposes it for the policy): ``predict`` on raw frames is equivariant under the
    spec's raw-layout action; also with the actor and the critic sharing one CNN."""
    sym = _spec("HWC")
    raw_oa, aa = sym.obs_action(), sym.action_action()
    x = _frames().permute(0, 2, 3, 1).contiguous().numpy()  # (B, H, W, C)
    for extra in ({}, {"share_features_extractor": True}):
        model = _make(SAC, LAMBDA, layout="HWC", **extra)
        assert model.observation_space.shape == (3, SIDE, SIDE)
        perturb_lambda(model.policy)
        a, _ = model.predict(x, deterministic=True)
        for g in range(8):
            ga, _ = model.predict(raw_oa.apply(torch.from_numpy(x), g).numpy(), deterministic=True)
            np.testing.assert_allclose(ga, aa.apply(torch.from_numpy(a), g).numpy(), atol=ATOL)
        pol = model.policy
        pol.set_training_mode(False)
        oa = policy_obs_action(sym, model.observation_space)
        assert _max_critic_error(pol.critic, oa, aa, _frames(), _actions()) <= ATOL


# ---------------------------------------------------------------------------------------------------
# save / load, load_pretrained, learning
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("algo", "method"),
    [(SAC, LAMBDA), (TD3, EQUIZERO), (DDPG, EQUITUNE), (TQC, LAMBDA)],
    ids=["SAC-lambda", "TD3-equizero", "DDPG-equitune", "TQC-lambda"],
)
def test_cnn_save_load_round_trip(tmp_path: Path, algo: Any, method: str) -> None:
    model = _make(algo, method)
    perturb_lambda(model.policy)
    path = tmp_path / "agent.zip"
    model.save(path)
    x = _frames().numpy()
    a1, _ = model.predict(x, deterministic=True)
    name = algo.__name__.lower()
    vec = DummyVecEnv([TinyImageEnv])
    rewrapped = load_pretrained(path, vec, method=method, algo=name, symmetry=_spec())  # λ-nets kept
    for loaded in (algo.load(path, device="cpu"), load_plain(path, vec, algo=name), rewrapped):
        assert type(loaded.policy) is CNN_CLASS[algo]
        a2, _ = loaded.predict(x, deterministic=True)
        np.testing.assert_allclose(a1, a2, atol=1e-6)
        state, state2 = model.policy.state_dict(), loaded.policy.state_dict()
        assert state.keys() == state2.keys()
        assert all(torch.equal(state[k], state2[k]) for k in state)


@pytest.mark.parametrize("algo", (SAC, TD3, PPO), ids=lambda a: a.__name__)
def test_load_pretrained_plain_cnn_agent(tmp_path: Path, algo: Any) -> None:
    """A plain SB3 ``CnnPolicy`` agent loads (safe loader) under every method: ``base`` predicts as the
    agent, the others are equivariant."""
    pk = {"net_arch": [8], "features_extractor_kwargs": {"features_dim": 8}}
    kw = {"n_steps": 8, "batch_size": 8} if algo is PPO else _kw(algo)
    plain = algo("CnnPolicy", TinyImageEnv(), policy_kwargs=pk, seed=0, device="cpu", **kw)
    path = tmp_path / "plain.zip"
    plain.save(path)
    sym = _spec()
    x = _frames()
    a_plain, _ = plain.predict(x.numpy(), deterministic=True)
    for method in METHODS:
        model = load_pretrained(
            path, DummyVecEnv([TinyImageEnv]), method=method, algo=algo.__name__.lower(), symmetry=sym
        )
        assert type(model.policy) is CNN_CLASS.get(algo, EquiActorCriticCnnPolicy)
        a, _ = model.predict(x.numpy(), deterministic=True)
        if method == BASE:
            np.testing.assert_allclose(a, a_plain, atol=1e-6)
            continue
        perturb_lambda(model.policy)
        a, _ = model.predict(x.numpy(), deterministic=True)
        oa = policy_obs_action(sym, model.observation_space)
        for g in range(8):
            ga, _ = model.predict(oa.apply(x, g).numpy(), deterministic=True)
            expected = sym.action_action().apply(torch.from_numpy(a), g).numpy()
            np.testing.assert_allclose(ga, expected, atol=ATOL)


@pytest.mark.parametrize("algo", ALGOS, ids=lambda a: a.__name__)
def test_cnn_learn_smoke(algo: Any) -> None:
    model = _make(algo, LAMBDA)
    before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    model.learn(16)
    changed = [k for k, v in model.policy.state_dict().items() if not torch.equal(v, before[k])]
    assert any("lambda_net" in k for k in changed), changed  # the λ-nets are trained
    assert any("features_extractor" in k for k in changed), changed  # and the CNNs
    pol = model.policy
    pol.set_training_mode(False)
    sym = _spec()
    oa, aa = policy_obs_action(sym, model.observation_space), sym.action_action()
    assert _max_actor_error(pol.actor, oa, aa, _frames()) <= ATOL
    assert _max_critic_error(pol.critic, oa, aa, _frames(), _actions()) <= ATOL


# ---------------------------------------------------------------------------------------------------
# PPO / A2C (EquiActorCriticCnnPolicy) on the same env, and the alias equirl train picks
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("algo", (PPO, A2C), ids=lambda a: a.__name__)
@pytest.mark.parametrize("method", (EQUITUNE, EQUIZERO, LAMBDA))
def test_ppo_a2c_cnn_equivariant(tmp_path: Path, algo: Any, method: str) -> None:
    kw: dict[str, Any] = {"n_steps": 8} | ({"batch_size": 8} if algo is PPO else {})
    pk = {
        "symmetry": _spec().to_dict(),
        "method": method,
        "net_arch": [8],
        "features_extractor_kwargs": {"features_dim": 8},
    }
    model = algo("EquiCnnPolicy", TinyImageEnv(), policy_kwargs=pk, seed=0, device="cpu", **kw)
    pol = model.policy
    assert type(pol) is EquiActorCriticCnnPolicy
    perturb_lambda(pol)
    pol.set_training_mode(False)
    sym = _spec()
    oa = policy_obs_action(sym, model.observation_space)
    x = _frames()
    with torch.no_grad():
        assert check_equivariance(pol.symmetric_heads, oa, pol.out_action, x) <= ATOL
    model.learn(8)
    path = tmp_path / "agent.zip"
    model.save(path)
    loaded = algo.load(path, device="cpu")
    a1, _ = model.predict(x.numpy(), deterministic=True)
    a2, _ = loaded.predict(x.numpy(), deterministic=True)
    np.testing.assert_allclose(a1, a2, atol=1e-6)
    for g in range(8):
        ga, _ = loaded.predict(oa.apply(x, g).numpy(), deterministic=True)
        expected = sym.action_action().apply(torch.from_numpy(a1), g).clamp(-1, 1).numpy()
        np.testing.assert_allclose(ga, expected, atol=ATOL)


def test_train_picks_the_cnn_alias_for_frames() -> None:
    for shape, alias in (
        ((3, SIDE, SIDE), "EquiCnnPolicy"),
        ((SIDE, SIDE, 3), "EquiCnnPolicy"),
        ((4, 84, 84), "EquiCnnPolicy"),
        ((84, 84, 4), "EquiCnnPolicy"),
        ((3, 5, 5), "EquiMlpPolicy"),  # the gridworld board: too small for NatureCNN
        ((3,), "EquiMlpPolicy"),
    ):
        assert policy_alias(spaces.Box(0, 255, shape, np.uint8)) == alias, shape
    assert policy_alias(spaces.Box(-1.0, 1.0, (3, SIDE, SIDE), np.float32)) == "EquiMlpPolicy"
