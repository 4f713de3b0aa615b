"""Equivariant DQN / QR-DQN policies: exact equivariance, save/load, aliases, frozen backbone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from gymnasium import spaces
from sb3_contrib import QRDQN
from stable_baselines3 import DQN

from equirl.errors import SymmetryError
from equirl.rl.envs import make_env
from equirl.rl.policies import EquiCnnDQNPolicy, EquiDQNPolicy, EquiQRDQNPolicy, policy_obs_action
from equirl.rl.spec import load_spec
from equirl.symmetrizers import equivariance_errors
from equirl.symmetrizers.fold import FoldedOrbit

ATOL = 1e-5
METHODS = ["equitune", "equizero", "lambda"]


def _obs(env_id: str, n: int = 16) -> torch.Tensor:
    env = make_env(env_id)
    xs = [env.reset(seed=i)[0] for i in range(n // 2)]
    xs += [env.observation_space.sample() for _ in range(n - len(xs))]
    return torch.as_tensor(np.stack(xs))


def _check_all_elements(net: torch.nn.Module, env_id: str, space: spaces.Space, x: torch.Tensor) -> None:
    sym = load_spec(env_id)
    errs = equivariance_errors(net, policy_obs_action(sym, space), sym.action_action(), x)
    assert len(errs) == sym.group.order
    assert max(float(e) for e in errs.values()) <= ATOL, errs


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Acrobot-v1", "equirl/GridWorld-v0"])
@pytest.mark.parametrize("method", METHODS)
def test_dqn_q_and_target_nets_are_equivariant(env_id: str, method: str) -> None:
    env = make_env(env_id)
    model = DQN("EquiMlpPolicy", env, policy_kwargs={"symmetry": env_id, "method": method}, buffer_size=100)
    x = _obs(env_id)
    for net in (model.policy.q_net, model.policy.q_net_target):
        with torch.no_grad():
            for p in net.parameters():  # λ starts uniform: perturb it so the test is not trivial
                p.add_(0.1 * torch.randn_like(p))
        _check_all_elements(net, env_id, env.observation_space, x)


@pytest.mark.parametrize("method", METHODS)
def test_qrdqn_quantiles_are_permuted_on_the_action_axis(method: str) -> None:
    env = make_env("Acrobot-v1")
    model = QRDQN(
        "EquiMlpPolicy",
        env,
        policy_kwargs={"symmetry": "Acrobot-v1", "method": method, "n_quantiles": 7},
        buffer_size=100,
    )
    assert isinstance(model.policy, EquiQRDQNPolicy)
    x = _obs("Acrobot-v1")
    assert model.policy.quantile_net(x).shape == (16, 7, 3)
    _check_all_elements(model.policy.quantile_net, "Acrobot-v1", env.observation_space, x)


def test_cnn_policy_acts_on_channel_first_frames() -> None:
    space = spaces.Box(0, 255, (4, 84, 84), np.uint8)  # Breakout after VecTransposeImage + frame stack
    pol = EquiCnnDQNPolicy(
        space, spaces.Discrete(4), lambda _: 1e-4, symmetry="ALE/Breakout-v5", method="equitune"
    )
    x = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    _check_all_elements(pol.q_net, "ALE/Breakout-v5", space, x)
    q = pol.q_net(x)
    # the mirror flips the width axis (the last one in CHW), and swaps RIGHT (2) and LEFT (3)
    assert torch.allclose(pol.q_net(x.flip(-1)), q[:, [0, 1, 3, 2]], atol=ATOL)


@pytest.mark.parametrize("method", METHODS)
def test_pong_policy_mirrors_the_playfield_only(method: str) -> None:
    """Pong's spec mirrors the playfield band (rows 14-76 of the policy's 84: r -> 90 - r), not the whole
    frame, and swaps UP / DOWN (ALE's RIGHT / LEFT and RIGHTFIRE / LEFTFIRE); exactly, for every method."""
    space = spaces.Box(0, 255, (4, 84, 84), np.uint8)
    pol = EquiCnnDQNPolicy(space, spaces.Discrete(6), lambda _: 1e-4, symmetry="ALE/Pong-v5", method=method)
    with torch.no_grad():
        for p in pol.q_net.parameters():  # λ / scorers start neutral: perturb so the test is not trivial
            p.add_(0.01 * torch.randn_like(p))
    x = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    _check_all_elements(pol.q_net, "ALE/Pong-v5", space, x)
    rows = list(range(84))
    rows[14:77] = [90 - r for r in range(14, 77)]
    q = pol.q_net(x)
    assert torch.allclose(pol.q_net(x[:, :, rows]), q[:, [0, 1, 3, 2, 5, 4]], atol=ATOL)
    assert not torch.allclose(pol.q_net(x.flip(-2)), q[:, [0, 1, 3, 2, 5, 4]], atol=ATOL)


def test_save_load_roundtrip_without_custom_objects(tmp_path: Path) -> None:
    env = make_env("CartPole-v1")
    model = DQN(
        "EquiMlpPolicy",
        env,
        policy_kwargs={
            "symmetry": "CartPole-v1",
            "method": "lambda",
            "method_kwargs": {"lambda_hidden": [16]},
        },
        buffer_size=200,
        learning_starts=20,
        seed=0,
    )
    model.learn(80)
    x = _obs("CartPole-v1")
    with torch.no_grad():
        for p in model.policy.q_net.equi.parameters():
            p.add_(0.3)
        before = model.policy.q_net(x)
    model.save(tmp_path / "m.zip")
    loaded = DQN.load(tmp_path / "m.zip")
    assert type(loaded.policy) is EquiDQNPolicy
    assert loaded.policy.q_net.method == "lambda"
    assert torch.allclose(loaded.policy.q_net(x), before, atol=1e-6)
    a1, _ = model.predict(x.numpy(), deterministic=True)
    a2, _ = loaded.predict(x.numpy(), deterministic=True)
    assert (a1 == a2).all()


def _equizero_outputs(**policy_kwargs: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An equizero DQN's Q-network on CartPole observations ``x``: ``net(x)`` and the plain network's
    ``Q(x)`` and ``Q(-x)`` (the mirror)."""
    pk = {"symmetry": "CartPole-v1", "method": "equizero", **policy_kwargs}
    model = DQN("EquiMlpPolicy", make_env("CartPole-v1"), policy_kwargs=pk, buffer_size=10)
    x = _obs("CartPole-v1")
    net = model.policy.q_net
    with torch.no_grad():
        return net(x), net._plain_forward(x), net._plain_forward(-x)


def test_equizero_default_proxy_is_the_action_gap() -> None:
    out, q, qm = _equizero_outputs()
    gap = lambda v: (v[:, 0] - v[:, 1]).abs()
    expected = torch.where((gap(qm) > gap(q))[:, None], qm.flip(-1), q)
    assert torch.allclose(out, expected, atol=ATOL)


def test_equizero_uses_max_value_and_deterministic_actions() -> None:
    out, q, qm = _equizero_outputs(method_kwargs={"proxy": "max_value"})
    pick_mirror = qm.amax(-1) > q.amax(-1)
    expected = torch.where(pick_mirror[:, None], qm.flip(-1), q)
    assert torch.allclose(out, expected, atol=ATOL)


def test_freeze_backbone_trains_only_lambda() -> None:
    env = make_env("CartPole-v1")
    model = DQN(
        "EquiMlpPolicy",
        env,
        policy_kwargs={"symmetry": "CartPole-v1", "method": "lambda", "freeze_backbone": True},
        buffer_size=10,
    )
    trainable = {n for n, p in model.policy.q_net.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("equi.") for n in trainable)
    opt_params = {id(p) for g in model.policy.optimizer.param_groups for p in g["params"]}
    assert opt_params == {id(p) for p in model.policy.q_net.equi.parameters()}
    with pytest.raises(SymmetryError, match="nothing to train"):
        DQN(
            "EquiMlpPolicy",
            env,
            policy_kwargs={"symmetry": "CartPole-v1", "method": "equitune", "freeze_backbone": True},
            buffer_size=10,
        )


def test_policy_errors_are_one_line() -> None:
    with pytest.raises(SymmetryError, match="needs policy_kwargs"):
        EquiDQNPolicy(spaces.Box(-1, 1, (4,)), spaces.Discrete(2), lambda _: 1e-3)
    with pytest.raises(SymmetryError, match="permutes 2 actions"):
        DQN(
            "EquiMlpPolicy",
            make_env("Acrobot-v1"),
            policy_kwargs={
                "symmetry": {
                    "env": "Acrobot-v1",
                    "group": "flip",
                    "observation": {
                        "type": "signed_permutation",
                        "generators": [{"src": [0, 1, 2, 3, 4, 5]}],
                    },
                    "actions": {"n": 2, "generators": [{"swap": [[0, 1]]}]},
                }
            },
            buffer_size=10,
        )
    with pytest.raises(SymmetryError, match=r"permutes 2 actions but the action space is Discrete\(3\)"):
        DQN(
            "EquiMlpPolicy", make_env("Acrobot-v1"), policy_kwargs={"symmetry": "CartPole-v1"}, buffer_size=10
        )
    with pytest.raises(SymmetryError, match="unknown method"):
        DQN(
            "EquiMlpPolicy",
            make_env("CartPole-v1"),
            policy_kwargs={"symmetry": "CartPole-v1", "method": "magic"},
            buffer_size=10,
        )


_FOLD_CASES = [  # (env id, observation space, extractor class or None for the policy's own, folds)
    ("ALE/Breakout-v5", spaces.Box(0, 255, (4, 84, 84), np.uint8), None, True),
    # MinAtar's CNN widens the 4x10x10 frame to 16x8x8 maps: the fold applies but does not pay
    ("MinAtar/Breakout-v1", spaces.Box(0, 1, (10, 10, 4), bool), "minatar", False),
]


@pytest.mark.parametrize("algo", ["dqn", "qrdqn", "ppo"])
@pytest.mark.parametrize("case", _FOLD_CASES, ids=[c[0] for c in _FOLD_CASES])
@pytest.mark.parametrize("method", ["equitune", "equizero"])
def test_cnn_policies_fold_the_mirror_into_their_kernels(
    algo: str, case: tuple[Any, ...], method: str
) -> None:
    """On a training batch the CNN policies compute the mirrored frames' outputs by mirroring their
    extractor's kernels (SB3's NatureCNN, MinAtar's CNN), equal to the stacked orbit of the frames and
    exactly equivariant; a deep copy (a target network) folds through its own layers, and SB3's target
    update (a write through ``.data``) is followed. Where the fold does not pay (MinAtar), and for
    equizero (whose argmin must see exact ties), the split is still found and correct, and the stacked
    orbit is used."""
    import copy

    from stable_baselines3.common.utils import polyak_update

    from equirl.rl.extractors import MinAtarCNN
    from equirl.rl.policies import EquiActorCriticCnnPolicy, EquiActorCriticPolicy, EquiCnnQRDQNPolicy

    env_id, space, extractor, pays = case
    folds = pays and method == "equitune"
    n_actions = 4 if env_id.startswith("ALE") else 3
    kwargs: dict[str, Any] = {"symmetry": env_id, "method": method}
    if extractor == "minatar":
        kwargs["features_extractor_class"] = MinAtarCNN
    cnn = extractor is None
    cls = {
        "dqn": EquiCnnDQNPolicy if cnn else EquiDQNPolicy,
        "qrdqn": EquiCnnQRDQNPolicy if cnn else EquiQRDQNPolicy,
        "ppo": EquiActorCriticCnnPolicy if cnn else EquiActorCriticPolicy,
    }[algo]
    pol = cls(space, spaces.Discrete(n_actions), lambda _: 1e-4, **kwargs)
    net = {"dqn": lambda p: p.q_net, "qrdqn": lambda p: p.quantile_net, "ppo": lambda p: p}[algo](pol)
    torch.manual_seed(0)
    x = torch.as_tensor(np.stack([space.sample() for _ in range(net.equi.fold_min_batch)]))
    chain = net._fold_chain(net.features_extractor, net._head if algo != "ppo" else net._heads_from_features)
    assert chain is not None
    with torch.no_grad():
        assert net.equi._folds(x) is folds
        split = FoldedOrbit(chain, policy_obs_action(load_spec(env_id), space))
        assert torch.allclose(
            split(x), net.equi._orbit_outputs_unfolded(x)[1], atol=ATOL
        )  # the split is right
        folded = net.equi(x)
        assert torch.allclose(folded, net.equi.forward_loop(x), atol=ATOL)
    fn = (lambda obs: net.equi(obs)) if algo == "ppo" else net
    out = load_spec(env_id).action_action()
    if algo == "ppo":
        out = net.out_action
    errs = equivariance_errors(fn, policy_obs_action(load_spec(env_id), space), out, x)
    assert max(float(e) for e in errs.values()) <= ATOL, errs
    twin = copy.deepcopy(net)
    assert (twin.equi._folded is None) is (net.equi._folded is None) is (method != "equitune")
    if twin.equi._folded is not None:
        layer = twin.equi._folded.chain.layers[0]
        assert layer is not net.equi._folded.chain.layers[0] and any(m is layer for m in twin.modules())
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(0.05 * torch.randn_like(p))
        assert twin.equi._folds(x) is folds
        assert torch.allclose(twin.equi(x), twin.equi.forward_loop(x), atol=ATOL)
        assert not torch.allclose(twin.equi(x), folded, atol=ATOL)
        polyak_update(twin.parameters(), net.parameters(), 1.0)  # SB3's target update: .data writes
        assert torch.allclose(net.equi(x), net.equi.forward_loop(x), atol=ATOL)
        assert torch.allclose(net.equi(x), twin.equi(x), atol=ATOL)
