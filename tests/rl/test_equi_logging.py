"""The ``equi/`` TensorBoard namespace of :class:`~equirl.rl.callbacks.EquiLoggingCallback`: the same tags,
measured the same way, for every algorithm (DQN, QR-DQN, PPO, A2C, SAC, TD3, TQC) and method; what
``learn`` dumps through an SB3 logger (collected in memory), the cadence with several envs, and a run
trains exactly as without the callback."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from sb3_contrib import QRDQN, TQC
from stable_baselines3 import A2C, DQN, PPO, SAC, TD3
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import KVWriter, Logger

import equirl.rl  # noqa: F401  (registers the EquiMlpPolicy aliases)
from equirl.registry import AUGMENT, BASE, EQUITUNE, EQUIZERO, LAMBDA
from equirl.rl.augment import augment_kwargs
from equirl.rl.callbacks import EQUI_BATCH, EquiLoggingCallback
from equirl.rl.spec import load_spec, parse_spec

FREQ = 64
STEPS = 200
ATOL = 1e-5
OFF = {"buffer_size": 1000, "learning_starts": 100, "batch_size": 32, "train_freq": 2}
#: algorithm: (class, env, family, constructor kwargs)
ALGOS: dict[str, tuple[Any, str, str, dict[str, Any]]] = {
    "dqn": (DQN, "CartPole-v1", "q", {"buffer_size": 1000, "learning_starts": 50, "batch_size": 32}),
    "qrdqn": (QRDQN, "CartPole-v1", "q", {"buffer_size": 1000, "learning_starts": 50, "batch_size": 32}),
    "ppo": (PPO, "CartPole-v1", "on", {"n_steps": 16, "batch_size": 48, "n_epochs": 1}),
    "a2c": (A2C, "CartPole-v1", "on", {"n_steps": 8}),
    "sac": (SAC, "Pendulum-v1", "off", OFF),
    "td3": (TD3, "Pendulum-v1", "off", OFF),
    "tqc": (TQC, "Pendulum-v1", "off", {**OFF, "top_quantiles_to_drop_per_net": 1}),
}
METHODS = (BASE, EQUITUNE, EQUIZERO, LAMBDA)
#: every algorithm with every method; augment (a plain policy) once per family
CASES = [(a, m) for a in ALGOS for m in METHODS] + [(a, AUGMENT) for a in ("dqn", "ppo", "sac")]


class _Collect(KVWriter):
    """An SB3 output format keeping every dump in memory."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.steps: list[int] = []  # the step of each dump

    def write(self, key_values: dict[str, Any], key_excluded: Any, step: int = 0) -> None:
        self.rows.append(dict(key_values))
        self.steps.append(int(step))


def _model(algo: str, method: str, **extra: Any) -> Any:
    cls, env, _, kw = ALGOS[algo]
    pk: dict[str, Any] = {"symmetry": load_spec(env).to_dict(), "method": method, "net_arch": [16]}
    if algo in ("qrdqn", "tqc"):
        pk["n_quantiles"] = 5
    kw = dict(kw)
    if method == AUGMENT:  # a plain policy trained on mirrored transitions
        kw.update(augment_kwargs(env, algo, seed=0))
        pk["method"] = BASE
    vec = make_vec_env(env, n_envs=3, seed=0) if algo == "ppo" else env  # 3 envs: 64 is no multiple
    return cls("EquiMlpPolicy", vec, policy_kwargs=pk, seed=0, device="cpu", **kw, **extra)


def _learn(model: Any, cb: Any, steps: int = STEPS) -> list[dict[str, Any]]:
    out = _Collect()
    model.set_logger(Logger(None, [out]))
    model.learn(steps, callback=cb, log_interval=1)
    model.logger.dump(model.num_timesteps)  # whatever was recorded since the last dump
    return out.rows


def _expected(algo: str, method: str) -> set[str]:
    _, env, family, _ = ALGOS[algo]
    labels = load_spec(env).group.labels
    roles = ["actor"] if family == "q" else ["actor", "critic"]
    keys = {f"equi/equivariance_error/{r}" for r in roles}
    weighted = ["actor", "critic"] if family == "off" else ["actor"]  # PPO / A2C: one λ for both heads
    for r in weighted:
        sfx = "" if r == "actor" else "_critic"
        if method == LAMBDA:
            keys |= {f"equi/lambda_weight{sfx}/{g}" for g in labels} | {f"equi/lambda_weight_spread{sfx}"}
        elif method == EQUIZERO:
            keys |= {f"equi/equizero_pick{sfx}/{g}" for g in labels}
    return keys


def _check_weights(row: dict[str, Any], algo: str, method: str) -> None:
    labels = load_spec(ALGOS[algo][1]).group.labels
    for sfx in ("", "_critic") if ALGOS[algo][2] == "off" else ("",):
        if method == LAMBDA:
            w = [row[f"equi/lambda_weight{sfx}/{g}"] for g in labels]
            assert sum(w) == pytest.approx(1.0, abs=1e-5) and all(0 < v < 1 for v in w)
            spread = row[f"equi/lambda_weight_spread{sfx}"]  # mean |w_g - 1/|G|| >= |mean w_g - 1/|G||
            assert max(abs(v - 1 / len(labels)) for v in w) - 1e-6 <= spread < 1
        elif method == EQUIZERO:
            p = [row[f"equi/equizero_pick{sfx}/{g}"] for g in labels]
            assert sum(p) == pytest.approx(1.0, abs=1e-5) and all(0 <= v <= 1 for v in p)


@pytest.mark.parametrize(("algo", "method"), CASES)
def test_equi_tags(algo: str, method: str) -> None:
    model = _model(algo, method)
    cb = EquiLoggingCallback(FREQ)
    rows = [r for r in _learn(model, cb) if any(k.startswith("equi/") for k in r)]
    assert len(cb.equi_errors) == model.num_timesteps // FREQ  # every 64 env steps, 3 envs or 1
    want = _expected(algo, method)
    assert rows and set(cb.last) == want
    assert {k for r in rows for k in r if k.startswith("equi/")} == want
    symmetrized = method not in (BASE, AUGMENT)
    for row in rows:
        for k in want:
            assert np.isfinite(row[k]), k
        for k in [k for k in want if k.startswith("equi/equivariance_error/")]:
            assert row[k] <= ATOL if symmetrized else row[k] > 1e-4, (k, row[k])
        _check_weights(row, algo, method)


@pytest.mark.parametrize(("algo", "method"), [("dqn", EQUIZERO), ("sac", LAMBDA), ("ppo", LAMBDA)])
def test_logging_changes_nothing(algo: str, method: str) -> None:
    """A run with the callback trains exactly as one without it; the measurement restores each module's
    mode and reads at most EQUI_BATCH observations."""
    cb = EquiLoggingCallback(16)
    logged = _model(algo, method)  # each model seeds the global generators: build, learn, build, learn
    _learn(logged, cb, 260)
    plain = _model(algo, method)
    _learn(plain, None, 260)
    assert len(cb.equi_errors) == logged.num_timesteps // 16
    want = plain.policy.state_dict()
    for k, v in logged.policy.state_dict().items():
        assert torch.equal(v, want[k]), k
    recent = cb._recent()
    assert recent is not None and len(recent[0]) == (EQUI_BATCH if algo != "ppo" else 16 * 3)  # the rollout
    pol = logged.policy
    for mode in (True, False):
        pol.set_training_mode(mode)  # SAC's: the critic target stays in eval mode
        before = [m.training for m in pol.modules()]
        cb.log_equi()
        assert [m.training for m in pol.modules()] == before


@pytest.mark.parametrize("algo", ["a2c", "sac"])
def test_before_anything_is_stored(algo: str) -> None:
    """At a rollout's first step / before the replay buffer's first transition: the last observations
    (SAC's critic: with the actor's deterministic actions)."""
    model = _model(algo, EQUITUNE)
    cb = EquiLoggingCallback(1)
    _learn(model, cb, 8)
    assert len(cb.equi_errors) == 8 and set(cb.last) == _expected(algo, EQUITUNE)
    assert max(cb.last.values()) <= ATOL


def test_plain_sb3_policy_logs_nothing() -> None:
    model = DQN("MlpPolicy", "CartPole-v1", buffer_size=100, learning_starts=10, seed=0, device="cpu")
    cb = EquiLoggingCallback(16)
    rows = _learn(model, cb, 64)
    assert not cb.equi_errors and not any(k.startswith("equi/") for r in rows for k in r)


class _Frames(gym.Env):
    """Random 36x36 RGB frames (channel-last: SB3 transposes them), a 2-d action, 8-step episodes."""

    observation_space = spaces.Box(0, 255, (36, 36, 3), np.uint8)
    action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self.observation_space.seed(seed)
        self._t = 0
        return self.observation_space.sample(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        self._t += 1
        return self.observation_space.sample(), -float(np.sum(np.square(action))), False, self._t >= 8, {}


def test_image_observations() -> None:
    """SAC's CNN policy on frames (D4: quarter turns and a mirror, acting on the action plane too): the
    critic's joint rows hold the flattened frame."""
    spec = parse_spec(
        {
            "env": "Frames-v0",
            "group": "D4",
            "observation": {
                "type": "image",
                "layout": "HWC",
                "generators": [{"rotate": 1}, {"mirror": "left-right"}],
            },
            "actions": {
                "type": "signed_permutation",
                "generators": [{"src": [1, 0], "signs": [-1, 1]}, {"src": [0, 1], "signs": [-1, 1]}],
            },
        }
    )
    pk = {
        "symmetry": spec.to_dict(),
        "method": LAMBDA,
        "net_arch": [8],
        "features_extractor_kwargs": {"features_dim": 8},
    }
    model = SAC(
        "EquiCnnPolicy",
        _Frames(),
        policy_kwargs=pk,
        buffer_size=64,
        learning_starts=8,
        batch_size=4,
        seed=0,
        device="cpu",
    )
    cb = EquiLoggingCallback(8, n_obs=16)
    rows = [r for r in _learn(model, cb, 24) if any(k.startswith("equi/") for k in r)]
    labels = spec.group.labels
    assert len(labels) == 8 and rows and len(cb.equi_errors) == 3
    assert cb.last["equi/equivariance_error/actor"] <= ATOL
    assert cb.last["equi/equivariance_error/critic"] <= ATOL
    for sfx in ("", "_critic"):
        assert sum(cb.last[f"equi/lambda_weight{sfx}/{g}"] for g in labels) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("algo", ["sac", "ppo"])
def test_each_log_is_written_at_its_own_step(algo: str) -> None:
    """A log is written when it is measured: SB3 dumps only every ``log_interval`` episodes (off-policy)
    or rollouts (on-policy), and a value recorded twice before a dump would keep only the last one."""
    model = _model(algo, EQUIZERO)
    cb = EquiLoggingCallback(16)
    out = _Collect()
    model.set_logger(Logger(None, [out]))
    model.learn(160, callback=cb, log_interval=1000)  # SB3 itself would dump (almost) never
    steps = [s for r, s in zip(out.rows, out.steps) if "equi/equivariance_error/actor" in r]
    assert len(steps) == len(cb.equi_errors) >= 160 // 16 - 1
    assert steps == sorted(set(steps)) and all(s % 16 < 3 for s in steps)  # PPO: 3 envs step together
