"""Agents from other people, a second round: conventions of RL-zoo folders and SB3 versions that the
first round (``test_wild_agents.py``, ``test_zoo_folders.py``) did not cover."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from equirl.rl.build import load_pretrained
from equirl.rl.evaluation import evaluate


def _zoo(root: Path, algo: str, env_id: str, model: Any, config: dict[str, Any]) -> Path:
    """``{algo}/{env}_1/`` as rl_zoo3 lays it out: the zip, ``{env}/config.yml`` and ``args.yml``
    (mappings; rl_zoo3's own OrderedDict form is covered by ``test_zoo_folders.py``)."""
    folder = root / algo / f"{env_id}_1"
    sub = folder / env_id
    sub.mkdir(parents=True)
    model.save(folder / f"{env_id}.zip")
    (sub / "config.yml").write_text(yaml.safe_dump(config))
    (sub / "args.yml").write_text(yaml.safe_dump({"algo": algo, "env": env_id, "seed": 0}))
    return folder


def test_a_time_limit_wrapper_ends_evaluation_episodes_as_the_agent_saw_them(tmp_path: Path) -> None:
    """A zoo ``env_wrapper: TimeLimit(50)`` on CartPole: SB3's ``make_vec_env`` puts its ``Monitor``
    under the wrappers, so an episode the wrapper cut short never ended for ``evaluate_policy``: such
    episodes were dropped (and on Pendulum, whose episodes only end by time, evaluation never ended).
    The returns are those of rl_zoo3's ``enjoy``, which counts the VecEnv's done flags."""
    from gymnasium.wrappers import TimeLimit
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    def limited(e: Any) -> Any:
        return TimeLimit(e, max_episode_steps=50)

    model = PPO(
        "MlpPolicy",
        make_vec_env("CartPole-v1", n_envs=1, seed=0, wrapper_class=limited),
        n_steps=256,
        batch_size=64,
        seed=0,
        policy_kwargs={"net_arch": [16]},
    ).learn(1024)
    wrapper = {"gymnasium.wrappers.TimeLimit": {"max_episode_steps": 50}}
    folder = _zoo(tmp_path, "ppo", "CartPole-v1", model, {"env_wrapper": [wrapper], "policy": "MlpPolicy"})

    ref_env = make_vec_env("CartPole-v1", n_envs=1, seed=0, wrapper_class=limited)
    ref_env.seed(0)
    obs, rets, total = ref_env.reset(), [], 0.0
    while len(rets) < 8:
        act, _ = model.predict(obs, deterministic=True)
        obs, rew, done, _ = ref_env.step(act)
        total += float(rew[0])
        if done[0]:
            rets.append(total)
            total = 0.0
    assert max(rets) == 50.0  # some episodes are cut by the wrapper: the case in point

    got = evaluate(load_pretrained(folder, "CartPole-v1", method="base"), "CartPole-v1", n_eval_episodes=8)
    assert got == rets


def test_an_evaluation_that_never_ends_an_episode_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from stable_baselines3.common.env_util import make_vec_env

    from equirl.errors import EquirlError
    from equirl.rl import evaluation

    monkeypatch.setattr(evaluation, "MAX_STEPS_WITHOUT_EPISODE", 300)
    model = load_pretrained("agents/dqn/CartPole-v1", "CartPole-v1", method="base")
    # CartPole without its time limit, balanced by a good agent: no episode ends
    vec = make_vec_env(lambda: __import__("gymnasium").make("CartPole-v1", max_episode_steps=10**9), seed=0)
    with pytest.raises(EquirlError, match=r"no episode ended in 300 steps \(0 of 2 done\)"):
        evaluate(model, vec, n_eval_episodes=2)


def test_a_symlinked_env_subfolder_is_read(tmp_path: Path) -> None:
    """Ignoring a symlinked ``{env}/`` folder ran the agent without its statistics, silently."""
    from stable_baselines3 import PPO

    from equirl.rl.zoo import read_zoo_folder

    model = PPO(
        "MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=32, seed=0, policy_kwargs={"net_arch": [8]}
    )
    folder = _zoo(tmp_path / "zoo", "ppo", "Pendulum-v1", model, {"normalize": True, "policy": "MlpPolicy"})
    (folder / "Pendulum-v1" / "vecnormalize.pkl").write_bytes(b"")  # only its presence is read here
    stash = tmp_path / "elsewhere"
    (folder / "Pendulum-v1").rename(stash)
    (folder / "Pendulum-v1").symlink_to(stash, target_is_directory=True)
    z = read_zoo_folder(folder, "Pendulum-v1")
    assert z.stats_dir == folder / "Pendulum-v1" and z.normalize is True
    assert z.vecnormalize == folder / "Pendulum-v1" / "vecnormalize.pkl"


def test_an_sb3_1_zip_saved_with_optimize_memory_usage_loads(tmp_path: Path) -> None:
    """The zoo's SB3 1.x Atari DQNs set ``optimize_memory_usage``; SB3 1.x had no timeout handling in its
    buffer, and SB3 2 refuses the two together: the buffer is not loaded, so the option is dropped."""
    import json
    import zipfile

    from stable_baselines3 import DQN

    m = DQN(
        "MlpPolicy",
        "CartPole-v1",
        buffer_size=100,
        learning_starts=0,
        optimize_memory_usage=True,
        replay_buffer_kwargs={"handle_timeout_termination": False},
        policy_kwargs={"net_arch": [8]},
        seed=0,
    )
    src, dst = tmp_path / "new.zip", tmp_path / "old.zip"
    m.save(src)
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(dst, "w") as out:
        for name in z.namelist():
            blob = z.read(name)
            if name == "data":
                data = json.loads(blob)
                data["replay_buffer_kwargs"] = {}  # SB3 1.0: no handle_timeout_termination
                blob = json.dumps(data).encode()
            out.writestr(name, blob)
    model = load_pretrained(dst, "CartPole-v1", method="base")
    obs = np.zeros((1, 4), dtype=np.float32)
    assert model.predict(obs, deterministic=True)[0] == m.predict(obs, deterministic=True)[0]


def test_an_off_policy_agent_of_several_envs_with_action_noise_loads_without_trust(tmp_path: Path) -> None:
    """SB3 wraps the action noise of an agent trained on ``n_envs > 1`` in ``VectorizedActionNoise``
    (plain data: the noises); it was refused as code."""
    from stable_baselines3 import TD3
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.noise import NormalActionNoise

    m = TD3(
        "MlpPolicy",
        make_vec_env("Pendulum-v1", n_envs=2, seed=0),
        action_noise=NormalActionNoise(np.zeros(1), 0.1 * np.ones(1)),
        buffer_size=200,
        learning_starts=10,
        policy_kwargs={"net_arch": [8]},
        seed=0,
    ).learn(40)
    assert type(m.action_noise).__name__ == "VectorizedActionNoise"
    m.save(tmp_path / "td3.zip")
    model = load_pretrained(tmp_path / "td3.zip", "Pendulum-v1", method="equitune")
    obs = np.array([[0.3, -0.2, 0.5]], dtype=np.float32)
    mirrored = np.array([[0.3, 0.2, -0.5]], dtype=np.float32)  # Pendulum's mirror: sin θ and θ̇ flip
    a, b = model.predict(obs, deterministic=True)[0], model.predict(mirrored, deterministic=True)[0]
    np.testing.assert_allclose(a, -b, atol=1e-6)


def test_older_mujoco_ids_run_as_v5_only_where_the_spaces_are_the_same(tmp_path: Path) -> None:
    import gymnasium as gym
    from stable_baselines3 import SAC

    from equirl.errors import CheckpointError
    from equirl.rl.envs import LEGACY_ENV_IDS, current_env_id
    from equirl.rl.zipinfo import check_agent_zip

    for old, new in LEGACY_ENV_IDS.items():
        if old.endswith("-v4") and new.endswith("-v5") and old != "Pusher-v4":  # Pusher-v4: mujoco<3 only
            a, b = gym.make(old), gym.make(new)  # both made by gymnasium: the same spaces
            assert a.observation_space.shape == b.observation_space.shape, old
            assert a.action_space.shape == b.action_space.shape, old
            a.close(), b.close()
    # InvertedDoublePendulum-v4 has 11 observations, -v5 9: v4 runs as itself
    assert current_env_id("InvertedDoublePendulum-v4") == "InvertedDoublePendulum-v4"
    assert current_env_id("Walker2d-v4") == "Walker2d-v5"
    # an agent of -v3 (mujoco-py: run as -v5) whose observations differ: the line says so, and does not
    # tell the user to pick the env they picked
    model = SAC("MlpPolicy", "InvertedDoublePendulum-v4", buffer_size=10, policy_kwargs={"net_arch": [8]})
    folder = tmp_path / "sac" / "InvertedDoublePendulum-v3_1"
    folder.mkdir(parents=True)
    model.save(folder / "InvertedDoublePendulum-v3.zip")
    space = gym.make("InvertedDoublePendulum-v5").observation_space
    with pytest.raises(
        CheckpointError, match=r"InvertedDoublePendulum-v3 runs here as InvertedDoublePendulum-v5"
    ) as e:
        check_agent_zip(folder / "InvertedDoublePendulum-v3.zip", "sac", space, "InvertedDoublePendulum-v5")
    assert "pick the agent's env" not in str(e.value)


def test_the_zoo_s_normalize_strings_with_float_inf_are_read_and_nothing_else_is_evaluated() -> None:
    from equirl.errors import ConfigError
    from equirl.rl.zoo import parse_normalize

    on, kw = parse_normalize("dict(norm_obs=True, norm_reward=False, clip_obs=float('inf'))", "config.yml")
    assert on and kw == {"norm_obs": True, "norm_reward": False, "clip_obs": float("inf")}
    assert parse_normalize("{'norm_obs': True, 'clip_obs': float('-inf')}", "c")[1]["clip_obs"] == -float(
        "inf"
    )
    for text in ("dict(norm_obs=__import__('os').system('true'))", "{'a': float('1e5')}", "{'a': open('x')}"):
        with pytest.raises(ConfigError, match="normalize must be"):
            parse_normalize(text, "c")


def test_the_env_is_read_from_an_algo_prefixed_name_and_a_folder_of_agents_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    from equirl.cli import main
    from equirl.rl.agents import agent_path
    from equirl.rl.zoo import agent_env_id

    src = agent_path("CartPole-v1", "dqn")
    shutil.copy(src, tmp_path / "dqn-CartPole-v1.zip")  # the hub's / SB3's {algo}-{env} names
    assert agent_env_id(tmp_path / "dqn-CartPole-v1.zip") == "CartPole-v1"
    algo_dir = tmp_path / "zoo" / "dqn"  # rl_zoo3's {algo}/ folder holding several runs
    for n in (1, 2):
        (algo_dir / f"CartPole-v1_{n}").mkdir(parents=True)
        shutil.copy(src, algo_dir / f"CartPole-v1_{n}" / "agent.zip")
    assert main(["eval", "--agent", str(algo_dir), "--method", "base", "--episodes", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds several agents (CartPole-v1_1, CartPole-v1_2): give one of them" in err[0]


def test_an_sb3_1_agent_with_shared_layers_is_named_in_one_line(tmp_path: Path) -> None:
    import io
    import zipfile

    import torch
    from stable_baselines3 import PPO

    from equirl.errors import CheckpointError
    from equirl.rl.safe_load import check_tensor_files

    src, dst = tmp_path / "new.zip", tmp_path / "old.zip"
    PPO("MlpPolicy", "CartPole-v1", n_steps=64, policy_kwargs={"net_arch": [8]}).save(src)
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(dst, "w") as out:
        for name in z.namelist():
            blob = z.read(name)
            if name == "policy.pth":  # SB3 1.x: the layers both heads share
                sd = torch.load(io.BytesIO(blob), weights_only=True)
                sd = {
                    k.replace("policy_net", "shared_net"): v for k, v in sd.items() if "value_net." not in k
                }
                buf = io.BytesIO()
                torch.save(sd, buf)
                blob = buf.getvalue()
            out.writestr(name, blob)
    with pytest.raises(CheckpointError, match=r"actor and critic share layers .*SB3 2 no longer builds") as e:
        check_tensor_files(dst)
    assert "\n" not in str(e.value)


def test_a_folder_of_several_zips_names_them(tmp_path: Path) -> None:
    import shutil

    from equirl.errors import CheckpointError
    from equirl.rl.agents import agent_path
    from equirl.rl.zoo import find_agent_zip

    for name in ("a.zip", "b.zip"):
        shutil.copy(agent_path("CartPole-v1", "dqn"), tmp_path / name)
    with pytest.raises(CheckpointError, match=r"holds several model zips \(a\.zip, b\.zip\): give the one"):
        find_agent_zip(tmp_path, "Pendulum-v1")


def test_a_missing_agents_path_that_falls_back_to_the_shipped_agent_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from equirl.rl.zoo import resolve_agent_path

    monkeypatch.chdir(tmp_path)
    (tmp_path / "agents").mkdir()  # this folder's own agents/, without that agent
    with caplog.at_level("INFO"):
        p = resolve_agent_path("agents/dqn/CartPole-v1/CartPole-v1.zip")
    assert p.is_file() and p != tmp_path / "agents/dqn/CartPole-v1/CartPole-v1.zip"
    assert any(
        r.levelname == "WARNING" and "using the shipped agent" in r.getMessage() for r in caplog.records
    )


def test_base_of_an_actor_critic_with_its_own_feature_extractor_runs_it_as_it_is(tmp_path: Path) -> None:
    """``base`` needs no symmetrizer: a PPO with a custom extractor (trusted) runs as it is; a
    symmetrizing method is still refused in one line."""
    from stable_baselines3 import PPO

    from equirl.errors import CheckpointError

    m = PPO(
        "MlpPolicy",
        "CartPole-v1",
        n_steps=64,
        policy_kwargs={"features_extractor_class": _Extractor, "net_arch": [8]},
        seed=0,
    )
    m.save(tmp_path / "custom.zip")
    model = load_pretrained(tmp_path / "custom.zip", "CartPole-v1", method="base", trust_checkpoint=True)
    obs = np.array([[0.1, -0.2, 0.03, 0.4]], dtype=np.float32)
    assert model.predict(obs, deterministic=True)[0] == m.predict(obs, deterministic=True)[0]
    with pytest.raises(CheckpointError, match="only MlpPolicy / CnnPolicy actor-critic agents"):
        load_pretrained(tmp_path / "custom.zip", "CartPole-v1", method="equitune", trust_checkpoint=True)


def _extractor_base() -> Any:
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

    return BaseFeaturesExtractor


class _Extractor(_extractor_base()):  # type: ignore[misc]
    """A user's own feature extractor (a module-level class: the zip names it by import path)."""

    def __init__(self, observation_space: Any) -> None:
        import torch

        super().__init__(observation_space, features_dim=6)
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh())

    def forward(self, obs: Any) -> Any:
        return self.net(obs)


def test_the_outer_monitor_only_with_a_time_limit_and_never_with_atari_or_unknown_wrappers() -> None:
    """AtariWrapper ends an "episode" at each lost life and clips rewards: an outer Monitor would report
    per-life clipped returns; the game's return is the inner Monitor's (what rl_zoo3's enjoy shows)."""
    import gymnasium as gym
    from gymnasium.wrappers import TimeLimit
    from stable_baselines3.common.atari_wrappers import AtariWrapper
    from stable_baselines3.common.monitor import Monitor

    from equirl.rl.zoo import ALLOWED_WRAPPERS, ResolvedWrapper, ZooEnv

    limit = ResolvedWrapper("gymnasium.wrappers.TimeLimit", TimeLimit, {"max_episode_steps": 50}, "same")
    # AtariWrapper's kind ("image"), on a stand-in class: CartPole has no Atari action meanings
    atari = ResolvedWrapper("stable_baselines3.common.atari_wrappers.AtariWrapper", gym.Wrapper, {}, "image")
    assert (
        ALLOWED_WRAPPERS[atari.path].obs == atari.obs
        and ALLOWED_WRAPPERS[atari.path].name == AtariWrapper.__name__
    )
    unknown = ResolvedWrapper("my.Wrapper", gym.Wrapper, {}, "unknown")
    cases = [
        ((limit,), True),
        ((atari,), False),
        ((limit, atari), False),
        ((limit, unknown), False),
        ((), False),
    ]
    for wrappers, outer in cases:
        z = ZooEnv("CartPole-v1", wrappers=wrappers)
        env = z._wrap_monitored(gym.make("CartPole-v1"))
        assert isinstance(env, Monitor) is outer, wrappers
        env.close()
