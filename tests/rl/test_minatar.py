"""MinAtar specs: the left-right mirror of Breakout and Asterix, checked exactly against the games' own
state; wrong variants are reported broken; equitune DQN policies on the 10x10 boolean frames are exactly
equivariant; the games without a mirror say why."""

from __future__ import annotations

import copy
import importlib.util
from typing import Any

import numpy as np
import pytest
import torch

from equirl.errors import EquirlError, SymmetryError
from equirl.rl.spec import load_spec

HAS_MINATAR = importlib.util.find_spec("minatar") is not None
needs_minatar = pytest.mark.skipif(
    not HAS_MINATAR, reason="minatar not installed (pip install 'equirl[minatar]')"
)

ENVS = ["MinAtar/Breakout-v1", "MinAtar/Asterix-v1"]
ATOL = 1e-5


def _variant(env_id: str, which: str) -> dict[str, Any]:
    """The shipped spec as a mapping, made wrong in one way."""
    data = copy.deepcopy(load_spec(env_id).to_dict())
    if which == "frames mirrored, LEFT/RIGHT not swapped":
        data["actions"]["generators"] = [{"perm": list(range(data["actions"]["n"]))}]
    elif which == "LEFT/RIGHT swapped, frames not mirrored":
        data["observation"]["generators"] = [{"rotate": 0}]
    elif which == "mirrored top-bottom":
        data["observation"]["generators"] = [{"mirror": "top-bottom"}]
    else:  # pragma: no cover
        raise AssertionError(which)
    return data


def test_specs_load_without_minatar() -> None:
    for env_id in ENVS:
        sym = load_spec(env_id)
        assert sym.verify == "minatar" and sym.group.order == 2
        assert sym.obs_type == "image" and sym.layout == "HWC"
    assert load_spec("MinAtar/Breakout-v1").action_table()[1] == [0, 2, 1]  # NOOP LEFT RIGHT
    assert load_spec("MinAtar/Asterix-v1").action_table()[1] == [0, 3, 2, 1, 4]  # NOOP LEFT UP RIGHT DOWN


def test_check_kind_says_exact() -> None:
    from equirl.rl.check import check_kind

    assert all(check_kind(e) == "exact (mirrors the game state)" for e in ENVS)


def test_missing_minatar_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import equirl.rl.envs as envs

    real = importlib.util.find_spec
    monkeypatch.setattr(
        envs.importlib.util, "find_spec", lambda name, *a: None if name == "minatar" else real(name, *a)
    )
    with pytest.raises(EquirlError) as err:
        envs.make_env("MinAtar/Breakout-v1")
    msg = str(err.value)
    assert "\n" not in msg and "pip install 'equirl[minatar]'" in msg


@needs_minatar
@pytest.mark.parametrize("env_id", ENVS)
def test_spec_fits_the_env(env_id: str) -> None:
    from equirl.rl.envs import action_meanings, make_env

    env = make_env(env_id)
    try:
        assert env.observation_space.shape == (10, 10, 4) and env.observation_space.dtype == np.bool_
        names = action_meanings(env)
        assert names is not None and "LEFT" in names and "RIGHT" in names
        load_spec(env_id).check_fits(env.observation_space, env.action_space, names)
    finally:
        env.close()


@needs_minatar
@pytest.mark.parametrize("env_id", ENVS)
def test_check_symmetry_is_exact(env_id: str) -> None:
    from equirl.rl.check import check_symmetry

    rep = check_symmetry(env_id, steps=60, seed=3)
    assert rep.exact and rep.verified and not rep.statistical, rep.message
    assert rep.max_error == 0.0 and rep.transitions == 60 * load_spec(env_id).n_actions
    assert "start state is not mirror-invariant" in rep.message  # a 10-wide grid has no centre column
    if env_id == "MinAtar/Asterix-v1":  # the spawn-side draws were coupled (reflected), not skipped
        n = int(rep.message.split(" spawn-side draws reflected")[0].rsplit(" ", 1)[1])
        assert n > 0


@needs_minatar
@pytest.mark.parametrize("env_id", ENVS)
@pytest.mark.parametrize(
    "which",
    [
        "frames mirrored, LEFT/RIGHT not swapped",
        "LEFT/RIGHT swapped, frames not mirrored",
        "mirrored top-bottom",
    ],
)
def test_wrong_variants_are_broken(env_id: str, which: str) -> None:
    from equirl.rl.check import check_symmetry

    rep = check_symmetry(_variant(env_id, which), steps=40, seed=1)
    assert rep.exact and not rep.verified and "BROKEN" in rep.message
    assert rep.max_error is not None and rep.max_error >= 1


@needs_minatar
def test_an_asymmetric_spawn_rule_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reflected draw is a measure-preserving coupling, not a mirror of the outcome: a spawn side
    drawn with probability 0.3 / 0.7 breaks the check, as does leaving the symmetric draw uncoupled."""
    import dataclasses

    import minatar.environments.asterix as asterix

    from equirl.rl import check

    def lopsided(self: Any) -> None:
        lr = self.random.rand() < 0.3
        is_gold = self.random.rand() < 1 / 3
        slots = [i for i in range(len(self.entities)) if self.entities[i] is None]
        if slots:
            slot = slots[self.random.randint(len(slots))]
            self.entities[slot] = [0 if lr else 9, slot + 1, lr, is_gold]

    with monkeypatch.context() as m:
        m.setattr(asterix.Env, "_spawn_entity", lopsided)
        rep = check.check_symmetry("MinAtar/Asterix-v1", steps=80, seed=0)
        assert not rep.verified and "BROKEN" in rep.message
    entry = check.MINATAR_MIRRORS["asterix"]
    monkeypatch.setitem(check.MINATAR_MIRRORS, "asterix", dataclasses.replace(entry, reflect=()))
    assert not check.check_symmetry("MinAtar/Asterix-v1", steps=80, seed=0).verified


@needs_minatar
@pytest.mark.parametrize("game", ["Seaquest", "SpaceInvaders", "Freeway"])
def test_games_without_a_mirror_say_why(game: str) -> None:
    from equirl.rl.check import MINATAR_NOT_MIRRORED, check_symmetry

    data = copy.deepcopy(load_spec("MinAtar/Breakout-v1").to_dict())
    data["env"] = f"MinAtar/{game}-v1"
    n = {"Seaquest": 6, "SpaceInvaders": 4, "Freeway": 3}[game]
    data["actions"] = {"n": n, "generators": [{"perm": list(range(n))}]}
    with pytest.raises(SymmetryError) as err:
        check_symmetry(data, steps=2)
    msg = str(err.value)
    key = {"Seaquest": "seaquest", "SpaceInvaders": "space_invaders", "Freeway": "freeway"}[game]
    assert "\n" not in msg and "no left-right mirror" in msg and MINATAR_NOT_MIRRORED[key] in msg


@needs_minatar
def test_minatar_method_on_another_env_is_one_line() -> None:
    from equirl.rl.check import check_symmetry

    data = {
        "env": "equirl/GridWorld-v0",
        "group": "flip",
        "observation": {"type": "image", "layout": "CHW", "generators": [{"mirror": "left-right"}]},
        "actions": {"n": 4, "generators": [{"swap": [[1, 3]]}]},
        "verify": {"method": "minatar"},
    }
    with pytest.raises(SymmetryError, match="needs a MinAtar env"):
        check_symmetry(data, steps=2)


@needs_minatar
@pytest.mark.parametrize("env_id", ENVS)
@pytest.mark.parametrize("method", ["equitune", "equizero", "lambda"])
@pytest.mark.parametrize("extractor", ["auto", "minatar-cnn"])
def test_dqn_policy_is_exactly_equivariant(env_id: str, method: str, extractor: str) -> None:
    """With SB3's flatten and an MLP, and with the MinAtar paper's convolution (``minatar-cnn``)."""
    from stable_baselines3 import DQN

    from equirl.rl.algos import feature_extractor
    from equirl.rl.envs import make_env
    from equirl.rl.policies import policy_obs_action
    from equirl.symmetrizers import equivariance_errors

    env = make_env(env_id)
    pk: dict[str, Any] = {"symmetry": env_id, "method": method, "net_arch": [32, 32]}
    if extractor != "auto":
        pk |= {"features_extractor_class": feature_extractor(extractor), "net_arch": []}
    model = DQN("EquiMlpPolicy", env, policy_kwargs=pk, buffer_size=100)
    assert type(model.policy.q_net.features_extractor).__name__ == (
        "MinAtarCNN" if extractor != "auto" else "FlattenExtractor"
    )
    frames = [env.reset(seed=i)[0] for i in range(4)]
    for _ in range(12):
        obs, _, term, trunc, _ = env.step(env.action_space.sample())
        frames.append(obs)
        if term or trunc:
            env.reset()
    x = torch.as_tensor(np.stack(frames))  # (B, 10, 10, 4) bool, channel-last as SB3 hands them over
    sym = load_spec(env_id)
    in_act = policy_obs_action(sym, env.observation_space)
    for net in (model.policy.q_net, model.policy.q_net_target):
        with torch.no_grad():
            for p in net.parameters():  # λ starts uniform: perturb it so the test is not trivial
                p.add_(0.1 * torch.randn_like(p))
        errs = equivariance_errors(net, in_act, sym.action_action(), x)
        assert len(errs) == sym.group.order
        assert max(errs.values()) <= ATOL, errs
    # the mirror flips the width axis (HWC: the middle one) and swaps LEFT and RIGHT
    q = model.policy.q_net(x)
    assert torch.allclose(model.policy.q_net(x.flip(-2)), q[:, sym.action_table()[1]], atol=ATOL)
    env.close()


def test_minatar_cnn_config_trains_saves_and_loads_without_trusting_the_zip(tmp_path: Any) -> None:
    """``features_extractor: minatar-cnn`` reaches equirl's policy and stock SB3's alike, and a zip that
    names the extractor class loads through the restricted loader (no ``trust_checkpoint``)."""
    if not HAS_MINATAR:
        pytest.skip("minatar not installed (pip install 'equirl[minatar]')")
    from equirl.rl.build import build_model, load_pretrained, policy_net_kwargs
    from equirl.rl.config import load_rl_config
    from equirl.rl.extractors import MinAtarCNN

    cfg = load_rl_config(
        "dqn-MinAtar-Breakout-v1-cnn", overrides=["method=equitune", "hyperparams.learning_starts=10"]
    )
    assert policy_net_kwargs(cfg) == {"net_arch": [], "features_extractor_class": MinAtarCNN}
    model = build_model(cfg)
    model.learn(40)
    model.save(tmp_path / "agent.zip")
    loaded = load_pretrained(tmp_path / "agent.zip", "MinAtar/Breakout-v1", method="equizero")
    assert isinstance(loaded.policy.q_net.features_extractor, MinAtarCNN)
    for a, b in zip(model.policy.q_net.parameters(), loaded.policy.q_net.parameters(), strict=True):
        assert torch.equal(a, b)
