"""The mirror-symmetry loss baseline (Yu et al. 2018; ``method: mirror-loss``): the penalty is zero
exactly for an equivariant actor, its gradient steps make a plain actor more symmetric, it is attached to
every actor update (fresh, finetuned and resumed runs) and refused where it means nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback

from equirl.config import FieldError
from equirl.errors import ConfigError
from equirl.rl.build import build_model
from equirl.rl.config import load_rl_config
from equirl.rl.mirror_loss import attach_mirror_loss, mirror_penalty
from equirl.rl.spec import load_spec

SAC_PENDULUM = "sac-Pendulum-v1"


def _cfg(*overrides: str) -> Any:
    from equirl.assets import find_config

    base = [
        "timesteps=300",
        "hyperparams.learning_starts=50",
        "hyperparams.batch_size=32",
        "partial_fraction=0",
    ]
    return load_rl_config(find_config(SAC_PENDULUM, section="rl"), [*base, *overrides])


def _asymmetry(model: Any, n: int = 256) -> float:
    """``mean ‖π(g·s) − g·π(s)‖²`` on random observations (no gradient)."""
    sym = load_spec("Pendulum-v1")
    obs = torch.as_tensor(np.random.default_rng(0).uniform(-1, 1, size=(n, 3)), dtype=torch.float32)
    with torch.no_grad():
        return float(
            mirror_penalty(
                model.actor, obs, sym.policy_obs_action(model.actor.observation_space), sym.action_action()
            )
        )


def test_penalty_is_zero_for_an_equivariant_actor_and_positive_for_a_plain_one() -> None:
    equi = build_model(_cfg("method=equitune"))
    plain = build_model(_cfg())
    assert _asymmetry(equi) < 1e-10
    assert _asymmetry(plain) > 1e-4


def test_penalty_matches_its_definition() -> None:
    """``Σ_{g≠e} mean_s ‖π(g·s) − g·π(s)‖²`` with the Pendulum mirror (obs signs [1, −1, −1], torque −1)."""
    model = build_model(_cfg())
    obs = torch.randn(16, 3)
    mirrored = obs * torch.tensor([1.0, -1.0, -1.0])
    with torch.no_grad():
        a, ga = model.actor(obs, deterministic=True), model.actor(mirrored, deterministic=True)
        expected = ((ga + a) ** 2).sum(-1).mean()
    assert _asymmetry(model) >= 0
    sym = load_spec("Pendulum-v1")
    with torch.no_grad():
        got = mirror_penalty(
            model.actor, obs, sym.policy_obs_action(model.actor.observation_space), sym.action_action()
        )
    torch.testing.assert_close(got, expected)


def test_training_with_the_loss_makes_the_actor_more_symmetric_and_logs_it() -> None:
    """Same seed, same steps: the run with a large mirror loss ends with a far more symmetric actor than
    the run without, and reports the penalty as ``train/mirror_loss``."""
    plain = build_model(_cfg())
    plain.learn(300)
    mirrored = build_model(_cfg("method=mirror-loss", "method_kwargs.weight=10"))
    recorded: list[float] = []

    class Spy(BaseCallback):
        def _on_training_start(self) -> None:
            original = self.model.logger.record

            def record(key: str, value: Any, *args: Any, **kwargs: Any) -> None:
                if key == "train/mirror_loss":
                    recorded.append(float(value))
                original(key, value, *args, **kwargs)

            self.model.logger.record = record

        def _on_step(self) -> bool:
            return True

    mirrored.learn(300, callback=Spy())
    assert len(recorded) == 250  # one per actor update (300 steps, 50 of them before learning starts)
    assert _asymmetry(mirrored) < 0.2 * _asymmetry(plain)


def test_td3_gets_it_on_its_delayed_actor_updates() -> None:
    from equirl.rl.config import RLConfig

    hp = {
        "learning_starts": 20,
        "batch_size": 16,
        "buffer_size": 1000,
        "net_arch": [16, 16],
    }
    cfg = RLConfig(env="Pendulum-v1", algo="td3", timesteps=100, method="mirror-loss", hyperparams=hp)
    model = build_model(cfg)
    calls: list[int] = []
    model.actor.optimizer.register_step_pre_hook(lambda *a: calls.append(1))
    before = _asymmetry(model)
    model.learn(100)
    assert 0 < len(calls) <= 80  # TD3 updates its actor every policy_delay (2) gradient steps
    assert _asymmetry(model) < before


class _Hooks(BaseCallback):
    """Records, at every step, how many pre-step hooks the actor's optimizer has."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    def _on_step(self) -> bool:
        self.seen.append(len(self.model.actor.optimizer._optimizer_step_pre_hooks))
        return True


def test_resumed_run_attaches_it_again(tmp_path: Path) -> None:
    import dataclasses
    import threading

    from equirl.errors import RunInterrupted
    from equirl.rl.train import resume_training, run_training
    from tests.rl.helpers import StopAt

    cfg = _cfg("method=mirror-loss", "checkpoint.freq=100", "eval.final_episodes=1")
    cfg = dataclasses.replace(cfg, out=str(tmp_path))
    stop = threading.Event()
    with pytest.raises(RunInterrupted):
        run_training(cfg, callbacks=[StopAt(150, stop)], stop=stop)
    (run,) = tmp_path.iterdir()
    hooks = _Hooks()
    resume_training(run, callbacks=[hooks])
    assert hooks.seen and set(hooks.seen) == {1}


def test_refused_where_it_means_nothing() -> None:
    """Only an off-policy actor-critic has an actor to penalise; the weight is positive; the policy it
    trains is a plain one (evaluated as ``base``)."""
    from equirl.rl.config import RLConfig

    with pytest.raises(FieldError, match="needs SAC, TD3 or TQC, not dqn"):
        RLConfig(env="CartPole-v1", algo="dqn", timesteps=100, method="mirror-loss")
    with pytest.raises(ConfigError, match="option weight: must be > 0"):
        _cfg("method=mirror-loss", "method_kwargs.weight=0")
    model = build_model(_cfg("method=mirror-loss"))
    assert model.policy_kwargs["method"] == "base" and model.policy_kwargs["method_kwargs"] == {}
    dqn = build_model(RLConfig(env="CartPole-v1", algo="dqn", timesteps=100))
    with pytest.raises(ConfigError, match="off-policy actor-critic"):
        attach_mirror_loss(dqn, load_spec("CartPole-v1"), 1.0)
