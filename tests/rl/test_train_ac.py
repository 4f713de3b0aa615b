"""``equirl pretrain`` / ``train`` with the actor-critic algorithms (PPO, A2C, SAC, TD3): per-algorithm
hyperparameter schemas, the equivariant policies they build, the run lifecycle (partial model,
checkpoints with / without a replay buffer, exact resume) and the loss keys of the non-finite guard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from stable_baselines3.common.callbacks import BaseCallback

from equirl.errors import ConfigError, NonFiniteError
from equirl.registry import BASE, EQUITUNE
from equirl.rl.algos import get_algo
from equirl.rl.build import build_model
from equirl.rl.config import (
    ALGO_HYPERPARAMS,
    PPOHyperParams,
    RLConfig,
    SACHyperParams,
    TD3HyperParams,
    load_rl_config,
)
from equirl.rl.lifecycle import load_checkpoint, read_run
from equirl.rl.train import run_training
from tests.rl.helpers import interrupt_and_resume

#: tiny runs: a few hundred steps on [16]-unit networks
TINY: dict[str, dict[str, Any]] = {
    "ppo": {
        "env": "CartPole-v1",
        "hyperparams": {"n_envs": 2, "n_steps": 32, "batch_size": 32, "n_epochs": 2},
    },
    "a2c": {"env": "CartPole-v1", "hyperparams": {"n_steps": 8}},
    "sac": {
        "env": "Pendulum-v1",
        "hyperparams": {"buffer_size": 1000, "learning_starts": 50, "batch_size": 32},
    },
    "td3": {
        "env": "Pendulum-v1",
        "hyperparams": {"buffer_size": 1000, "learning_starts": 50, "batch_size": 32},
    },
}


def _cfg(tmp_path: Path, algo: str, **patch: Any) -> RLConfig:
    base = TINY[algo]
    data: dict[str, Any] = {
        "env": base["env"],
        "algo": algo,
        "timesteps": 256,
        "method": EQUITUNE,
        "partial_fraction": 0.25,
        "out": str(tmp_path / "runs"),
        "hyperparams": {**base["hyperparams"], "net_arch": [16]},
        "eval": {"freq": 128, "episodes": 1, "final_episodes": 1, "confirm_episodes": 2},
        "log": {"equi_freq": 64, "tensorboard": False},
        "checkpoint": {"freq": 64},
    }
    for k, v in patch.items():
        data[k] = {**data[k], **v} if isinstance(v, dict) and isinstance(data.get(k), dict) else v
    p = tmp_path / f"{algo}.yaml"
    p.write_text(yaml.safe_dump(data))
    return load_rl_config(p)


def _assert_pendulum_actions_mirror(model: Any, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Mirrored Pendulum observations (cos θ, −sin θ, −θ̇) give negated deterministic torques; returns
    the observations and their mirror images."""
    th = rng.uniform(-np.pi, np.pi, 32)
    obs = np.stack([np.cos(th), np.sin(th), rng.normal(size=32)], 1).astype(np.float32)
    flip = obs * np.array([1, -1, -1], dtype=np.float32)
    a, _ = model.predict(obs, deterministic=True)
    b, _ = model.predict(flip, deterministic=True)
    np.testing.assert_allclose(b, -a, atol=1e-5)
    return obs, flip


@pytest.mark.parametrize("algo", ["ppo", "a2c", "sac", "td3"])
def test_tiny_pretrain_builds_an_equivariant_agent(tmp_path: Path, algo: str) -> None:
    """The run finishes with model / partial / best zips of the right SB3 class whose equitune policy
    is equivariant: mirrored observations give mirrored deterministic actions."""
    cfg = _cfg(tmp_path, algo)
    res = run_training(cfg, command="pretrain")
    run = res.run_dir
    assert read_run(run)["status"] == "finished" and res.steps >= 256
    assert {"model.zip", "model_partial.zip", "best_model.zip"} <= {p.name for p in run.iterdir()}
    ckpt = load_checkpoint(run)
    assert ckpt is not None and (ckpt.replay_buffer is None) == (algo in ("ppo", "a2c"))
    model = get_algo(algo).cls.load(run / "model.zip", device="cpu")
    assert type(model.policy).__name__.startswith("Equi")
    rng = np.random.default_rng(0)
    if cfg.env == "Pendulum-v1":
        _assert_pendulum_actions_mirror(model, rng)
    else:
        obs = rng.normal(scale=0.05, size=(32, 4)).astype(np.float32)
        with torch.no_grad():
            p = model.policy.get_distribution(torch.as_tensor(obs)).distribution.probs
            q = model.policy.get_distribution(torch.as_tensor(-obs)).distribution.probs
        torch.testing.assert_close(q, p.flip(-1), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_gsde_trains_from_a_config_and_stays_equivariant(tmp_path: Path, algo: str) -> None:
    """``hyperparams.use_sde`` trains a gSDE agent (noise resampled every 4 steps): the saved equitune
    policy keeps gSDE, its deterministic action is equivariant and its exploration scale invariant under
    the mirror (torque -> -torque: |P_g| = 1)."""
    extra = {"hyperparams": {"use_sde": True, "sde_sample_freq": 4}}
    if algo == "ppo":
        extra["env"] = "Pendulum-v1"  # type: ignore[assignment]
    cfg = _cfg(tmp_path, algo, **extra)
    res = run_training(cfg, command="pretrain")
    assert read_run(res.run_dir)["status"] == "finished"
    model = get_algo(algo).cls.load(res.run_dir / "model.zip", device="cpu")
    assert model.use_sde and model.sde_sample_freq == 4
    obs, flip = _assert_pendulum_actions_mirror(model, np.random.default_rng(1))
    pol = model.policy
    with torch.no_grad():
        if algo == "ppo":
            std = pol.get_distribution(torch.as_tensor(obs)).distribution.stddev
            std_f = pol.get_distribution(torch.as_tensor(flip)).distribution.stddev
        else:  # the log-std of the Gaussian the gSDE actor samples
            std = pol.actor.get_action_dist_params(torch.as_tensor(obs))[1].exp()
            std_f = pol.actor.get_action_dist_params(torch.as_tensor(flip))[1].exp()
    torch.testing.assert_close(std_f, std, atol=1e-5, rtol=1e-5)
    assert float((std - std.mean()).abs().max()) > 0  # state-dependent, as gSDE's is


def test_each_algo_has_its_schema_and_refuses_the_others_keys(tmp_path: Path) -> None:
    assert {"ppo", "a2c", "sac", "td3", "dqn", "qrdqn"} == set(ALGO_HYPERPARAMS)
    assert isinstance(_cfg(tmp_path, "ppo").hyperparams, PPOHyperParams)
    assert isinstance(_cfg(tmp_path, "sac").hyperparams, SACHyperParams)
    assert isinstance(RLConfig(env="Pendulum-v1", algo="td3").hyperparams, TD3HyperParams)
    with pytest.raises(ConfigError, match=r"unknown key hyperparams\.exploration_fraction; .*\(algo ppo\)$"):
        _cfg(tmp_path, "ppo", hyperparams={"exploration_fraction": 0.1})
    with pytest.raises(ConfigError, match=r"unknown key hyperparams\.n_epochs.*\(algo sac\)$"):
        _cfg(tmp_path, "sac", hyperparams={"n_epochs": 3})


@pytest.mark.parametrize(
    ("algo", "patch", "message"),
    [
        ("ppo", {"batch_size": 512}, r"hyperparams\.batch_size = 512: must be <= n_steps \* n_envs \(64\)"),
        ("ppo", {"clip_range": 0}, r"hyperparams\.clip_range = 0"),
        ("ppo", {"lr_schedule": "cosine"}, r"hyperparams\.lr_schedule = 'cosine': must be one of"),
        ("a2c", {"gae_lambda": 1.5}, r"hyperparams\.gae_lambda = 1\.5: must lie in \[0, 1\]"),
        ("sac", {"ent_coef": "autox"}, r"hyperparams\.ent_coef = 'autox'"),
        ("sac", {"ent_coef": -0.1}, r"hyperparams\.ent_coef"),
        ("sac", {"tau": 0}, r"hyperparams\.tau = 0\.0: must lie in \(0, 1\]"),
        ("td3", {"policy_delay": 0}, r"hyperparams\.policy_delay = 0: must be >= 1"),
    ],
)
def test_out_of_range_values_are_refused_in_one_line(
    tmp_path: Path, algo: str, patch: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        _cfg(tmp_path, algo, hyperparams=patch)
    assert "\n" not in str(err.value)


def test_sac_ent_coef_forms_and_td3_noise_reach_the_model(tmp_path: Path) -> None:
    assert _cfg(tmp_path, "sac", hyperparams={"ent_coef": "auto_0.1"}).hyperparams.ent_coef == "auto_0.1"
    model = build_model(_cfg(tmp_path, "sac", hyperparams={"ent_coef": 0.05}, method=BASE))
    assert float(model.ent_coef_tensor) == pytest.approx(0.05)
    td3 = build_model(_cfg(tmp_path, "td3", hyperparams={"action_noise_std": 0.3, "policy_delay": 3}))
    assert td3.policy_delay == 3 and td3.action_noise is not None
    assert float(td3.action_noise._sigma[0]) == pytest.approx(0.3)
    ppo = build_model(_cfg(tmp_path, "ppo", hyperparams={"lr_schedule": "linear", "learning_rate": 0.01}))
    assert ppo.n_envs == 2 and ppo.lr_schedule(1.0) == pytest.approx(0.01) and ppo.lr_schedule(0.5) < 0.01


def _params(algo: str, path: Path) -> dict[str, torch.Tensor]:
    return dict(get_algo(algo).cls.load(path, device="cpu").policy.state_dict())


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_interrupted_and_resumed_run_reproduces_the_uninterrupted_one(tmp_path: Path, algo: str) -> None:
    """On-policy (no replay buffer) and off-policy (buffer in the checkpoint): a run stopped mid-way and
    resumed ends with exactly the parameters and evaluations of the run never stopped."""
    cfg = _cfg(tmp_path, algo, partial_fraction=0.75)
    full, resumed, run = interrupt_and_resume(cfg, tmp_path, 70, r"interrupted at step \d+ of 256")
    assert resumed.steps == full.steps and resumed.timesteps == full.timesteps
    a, b = _params(algo, full.run_dir / "model.zip"), _params(algo, run / "model.zip")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.results == full.results


class _PoisonLoss(BaseCallback):
    """Makes ``train()`` record a NaN under ``key`` from env step ``k`` on (as a diverged update would)."""

    def __init__(self, key: str, k: int) -> None:
        super().__init__()
        self.key, self.k = key, k

    def _on_training_start(self) -> None:
        train = self.model.train

        def poisoned(*args: Any, **kwargs: Any) -> None:
            train(*args, **kwargs)
            if self.model.num_timesteps >= self.k:
                self.model.logger.record(self.key, float("nan"))

        self.model.train = poisoned

    def _on_step(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("algo", "key"), [("ppo", "train/loss"), ("a2c", "train/value_loss"), ("sac", "train/critic_loss")]
)
def test_nonfinite_guard_reads_each_algos_loss(tmp_path: Path, algo: str, key: str) -> None:
    assert key in get_algo(algo).loss_keys
    cfg = _cfg(tmp_path, algo, partial_fraction=0.0, eval={"freq": 0}, checkpoint={"freq": 0})
    with pytest.raises(NonFiniteError, match=r"non-finite training loss.*\(nan\) at step \d+") as err:
        run_training(cfg, callbacks=[_PoisonLoss(key, 100)])
    assert key in str(err.value) or key == "train/loss"
    (run,) = list((tmp_path / "runs").iterdir())
    assert read_run(run)["status"] == "failed" and not (run / "model.zip").exists()


def test_augment_builds_the_mirroring_buffer_of_each_algorithm(tmp_path: Path) -> None:
    from equirl.registry import AUGMENT, BASE
    from equirl.rl.augment import AugmentedReplayBuffer, AugmentedRolloutBuffer

    sac = build_model(_cfg(tmp_path, "sac", method=AUGMENT))
    assert isinstance(sac.replay_buffer, AugmentedReplayBuffer)
    ppo = build_model(_cfg(tmp_path, "ppo", method=AUGMENT))
    assert isinstance(ppo.rollout_buffer, AugmentedRolloutBuffer)
    assert ppo.policy_kwargs["method"] == BASE  # the policy stays plain


@pytest.mark.parametrize("method", ["base", "augment", "equitune"])
def test_finetuning_a_gsde_agent_keeps_gsde_and_the_configs_hyperparameters(
    tmp_path: Path, method: str
) -> None:
    """``init_from`` a gSDE agent: the run keeps gSDE (the config need not say ``use_sde``), takes the
    config's learning rate, and ``augment`` gets its mirroring buffer (the plain gSDE path used to drop
    them all)."""
    from stable_baselines3 import PPO

    from equirl.rl.augment import AugmentedRolloutBuffer

    agent = PPO(
        "MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=32, use_sde=True, seed=0, device="cpu",
        policy_kwargs={"net_arch": [16]},
    )  # fmt: skip
    agent.save(tmp_path / "gsde.zip")
    cfg = _cfg(
        tmp_path,
        "ppo",
        env="Pendulum-v1",
        method=method,
        init_from=str(tmp_path / "gsde.zip"),
        partial_fraction=0,
        hyperparams={"learning_rate": 1.23e-4},
    )
    model = build_model(cfg)
    assert model.use_sde and model.learning_rate == pytest.approx(1.23e-4)
    assert isinstance(model.rollout_buffer, AugmentedRolloutBuffer) == (method == "augment")
    res = run_training(cfg)
    assert read_run(res.run_dir)["status"] == "finished"
