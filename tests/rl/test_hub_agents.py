"""Agents from the Hugging Face hub (``hf://ORG/REPO``) load from the hub cache as RL-zoo folders, offline
included, and fail fast in one line when they are not there; an RL-zoo agent with wrappers and statistics
can be finetuned (``init_from``) and its run's models load in the env it ran in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import equirl.rl  # noqa: F401  (registers the aliases)
from equirl.cli import main
from equirl.errors import ConfigError
from equirl.registry import BASE, EQUITUNE
from equirl.rl import envs as envs_mod
from equirl.rl.build import load_pretrained
from equirl.rl.evaluation import evaluate
from equirl.rl.zoo import agent_env_id, find_agent_zip, read_zoo_folder
from equirl.utils.hub import hub_agent_folder, is_hub_ref
from tests.rl.hub_cache import COMMIT, hub_files_of_zoo_folder, seed_hub_cache
from tests.rl.test_zoo_folders import NEW_ID, OLD_ID, TIME_FEATURE, _build_folder

REPO = "equirl-test/ppo-Pendulum-v0"
REF = f"hf://{REPO}"


@pytest.fixture(scope="module")
def zoo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An RL-zoo folder: PPO, TimeFeature + VecNormalize, trained on the old id Pendulum-v0."""
    return _build_folder(tmp_path_factory.mktemp("zoo"), 0)


@pytest.fixture
def hub_cache(tmp_path: Path, zoo_folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A hub cache holding :data:`REPO` (the zoo folder's files in the hub's layout), offline."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    seed_hub_cache(cache, REPO, hub_files_of_zoo_folder(zoo_folder, "ppo", OLD_ID))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(envs_mod, "_WARNED", set())
    hub_agent_folder.cache_clear()
    yield cache
    hub_agent_folder.cache_clear()


def _actions(model: Any, obs: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict(obs, deterministic=True)[0])


def test_hub_refs_are_recognised() -> None:
    assert is_hub_ref("hf://sb3/dqn-CartPole-v1") and is_hub_ref(Path("hf://sb3/dqn-CartPole-v1"))
    assert not is_hub_ref("agents/dqn/CartPole-v1") and not is_hub_ref("hf.zip")
    for bad in ("hf://sb3", "hf://sb3/", "hf:///x", "hf://a/b/c", "hf://a/b@", "hf://-a/b"):
        with pytest.raises(ConfigError) as err:
            hub_agent_folder(bad)
        assert "\n" not in str(err.value) and "hf://ORG/REPO" in str(err.value)


def test_a_hub_agent_reads_as_its_zoo_folder(hub_cache: Path, zoo_folder: Path) -> None:
    snap = hub_agent_folder(REF)
    assert snap == hub_cache / "models--equirl-test--ppo-Pendulum-v0" / "snapshots" / COMMIT
    z = read_zoo_folder(REF, NEW_ID)
    assert z.stats_dir == snap and z.trained_env_id == OLD_ID
    assert z.final_zip == snap / f"ppo-{OLD_ID}.zip" and z.env_wrapper == ((TIME_FEATURE, {}),)
    assert z.normalize and z.statistics() == snap / "vec_normalize.pkl"
    assert find_agent_zip(REF, NEW_ID) == snap / f"ppo-{OLD_ID}.zip"
    assert agent_env_id(REF) == OLD_ID
    # a revision is part of the reference: the seeded cache has main only
    with pytest.raises(Exception) as err:
        hub_agent_folder(f"{REF}@v2")
    assert "\n" not in str(err.value) and "offline" in str(err.value)


@pytest.mark.parametrize("method", [BASE, EQUITUNE])
def test_a_hub_agent_acts_as_its_zoo_folder(hub_cache: Path, zoo_folder: Path, method: str) -> None:
    """The same agent from the hub and from its folder: the same env, statistics and actions."""
    hub = load_pretrained(REF, NEW_ID, method=method)
    local = load_pretrained(zoo_folder, NEW_ID, method=method)
    assert hub.observation_space.shape == local.observation_space.shape == (4,)
    obs = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    obs[:, 3] = np.abs(obs[:, 3])  # the time feature
    np.testing.assert_array_equal(_actions(hub, obs), _actions(local, obs))
    assert evaluate(hub, NEW_ID, n_eval_episodes=1, seed=4) == evaluate(
        local, NEW_ID, n_eval_episodes=1, seed=4
    )


def test_cli_eval_of_a_hub_agent_needs_no_env_nor_algo(
    hub_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["eval", "--agent", REF, "--method", "base", "--episodes", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == ["base"] and out["base"]["episodes"] == 1 and np.isfinite(out["base"]["mean_return"])


def test_an_uncached_hub_agent_offline_fails_at_once_in_one_line(tmp_path: Path) -> None:
    """A subprocess, as a user runs it: offline, the agent not cached -> one line, exit 2, no retries."""
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "1"}
    for argv in (
        ["eval", "--agent", "hf://sb3/dqn-NoSuchEnv-v0"],
        ["train", "dqn-CartPole-v1", "--init-from", "hf://sb3/dqn-NoSuchEnv-v0"],
    ):
        t0 = time.perf_counter()
        res = subprocess.run(
            [sys.executable, "-m", "equirl", *argv], capture_output=True, text=True, env=env, timeout=60
        )
        took = time.perf_counter() - t0
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1, res.stderr
        assert "sb3/dqn-NoSuchEnv-v0" in lines[0] and "offline" in lines[0]
        assert took < 20, f"{argv}: {took:.1f} s (the hub client's retries would take minutes)"


def test_a_finetuned_zoo_agent_runs_in_the_env_it_ran_in(zoo_folder: Path, tmp_path: Path) -> None:
    """``init_from`` a wrapped, normalised zoo folder: the run trains in the folder's env, keeps its recipe
    and statistics in the run folder, and its model loads back in that env with the run's own figures."""
    import yaml

    from equirl.rl.config import load_rl_config
    from equirl.rl.train import run_training

    path = tmp_path / "finetune.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "env": NEW_ID,
                "algo": "ppo",
                "seed": 0,
                "timesteps": 128,
                "method": EQUITUNE,
                "init_from": str(zoo_folder),
                "out": str(tmp_path / "runs"),
                "hyperparams": {"n_steps": 64, "batch_size": 32, "n_epochs": 1, "net_arch": [16]},
                "eval": {"freq": 64, "episodes": 1, "final_episodes": 2},
                "log": {"tensorboard": False},
            }
        )
    )
    cfg = load_rl_config(path)
    res = run_training(cfg)
    copy = res.run_dir / OLD_ID
    assert sorted(p.name for p in copy.iterdir()) == ["args.yml", "config.yml", "vecnormalize.pkl"]
    assert (copy / "vecnormalize.pkl").read_bytes() == (zoo_folder / OLD_ID / "vecnormalize.pkl").read_bytes()
    again = load_pretrained(res.run_dir, NEW_ID, method=EQUITUNE, which="final")
    assert again.observation_space.shape == (4,)  # the time feature, as trained
    rets = evaluate(again, NEW_ID, n_eval_episodes=cfg.eval.final_episodes, seed=cfg.seed + 20_000)
    assert float(np.mean(rets)) == pytest.approx(res.final_mean, abs=1e-6)


class _Payload:
    """Unpickled, it creates the file ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("crafted", ["wrapper", "statistics"])
@pytest.mark.parametrize("where", ["folder", "hub"])
def test_a_crafted_zoo_agent_never_runs_code(
    crafted: str,
    where: str,
    zoo_folder: Path,
    hub_cache: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A ``config.yml`` naming an arbitrary callable as its wrapper, or a ``vecnormalize.pkl`` carrying a
    payload, in a folder or a hub repository: refused in one line (exit 2), and the marker never appears."""
    import pickle
    import shutil

    from tests.rl.test_zoo_folders import _zoo_yaml

    marker = tmp_path / "pwned"
    folder = tmp_path / "ppo" / f"{OLD_ID}_1"
    shutil.copytree(zoo_folder, folder)
    sub = folder / OLD_ID
    if crafted == "wrapper":
        cfg = {"env_wrapper": [{"builtins.open": {"file": str(marker), "mode": "w"}}], "normalize": True}
        (sub / "config.yml").write_text(_zoo_yaml(cfg))
    else:
        (sub / "vecnormalize.pkl").write_bytes(pickle.dumps(_Payload(marker)))
    agent = str(folder)
    if where == "hub":
        repo = "equirl-test/crafted"
        seed_hub_cache(hub_cache, repo, hub_files_of_zoo_folder(folder, "ppo", OLD_ID))
        agent = f"hf://{repo}"
    assert main(["eval", "--agent", agent, "--method", "base", "equitune", "--episodes", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:"), err
    assert "--trust-checkpoint" in err[0] and ("normalize.pkl" in err[0] or crafted == "wrapper")
    assert not marker.exists()
