"""RL-zoo folders load as their authors ran them: env wrappers (allowlisted), VecNormalize statistics found
in a subfolder named after the training env id, frame stacks, old env ids; the symmetrized policy stays
exactly equivariant with the time feature and the stacked frames."""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

import equirl.rl  # noqa: F401  (registers the aliases)
from equirl.cli import main
from equirl.errors import CheckpointError, ConfigError, SymmetryError
from equirl.registry import BASE, EQUITUNE, EQUIZERO
from equirl.rl import envs as envs_mod
from equirl.rl.build import load_pretrained
from equirl.rl.envs import LEGACY_ENV_IDS, current_env_id, resolve_env_id
from equirl.rl.evaluation import evaluate
from equirl.rl.normalize import SymmetricVecNormalize
from equirl.rl.spec import load_spec
from equirl.rl.zoo import (
    agent_env_id,
    extend_symmetry,
    find_agent_zip,
    find_vecnormalize,
    parse_normalize,
    read_zoo_folder,
    zoo_env,
)
from equirl.symmetrizers import check_equivariance

ATOL = 1e-5
TIME_FEATURE = "sb3_contrib.common.wrappers.TimeFeatureWrapper"
#: the folder's env id: an old one (gym's), run as Pendulum-v1
OLD_ID, NEW_ID = "Pendulum-v0", "Pendulum-v1"


def _zoo_yaml(data: dict[str, Any]) -> str:
    """A mapping as the RL zoo writes config.yml / args.yml (an OrderedDict of pairs)."""
    return "!!python/object/apply:collections.OrderedDict\n" + yaml.safe_dump(
        [[[k, v] for k, v in data.items()]]
    )


#: the folders built: name -> (frame_stack, norm_obs); every one normalises rewards or observations
VARIANTS = {"stack0": (0, True), "stack2": (2, True), "reward-only": (0, False)}


def _make_env(frame_stack: int, stats: Path | None = None, norm_obs: bool = True) -> Any:
    """The env rl_zoo3 makes for the fixture: Pendulum -> Monitor -> TimeFeatureWrapper -> VecEnv ->
    VecNormalize -> VecFrameStack (a fresh VecNormalize when ``stats`` is None, else the saved one;
    ``norm_obs=False``: the zoo's ``normalize: {norm_obs: False, norm_reward: True}``, rewards only)."""
    from sb3_contrib.common.wrappers import TimeFeatureWrapper
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecFrameStack, VecNormalize

    vec = make_vec_env(NEW_ID, n_envs=1, seed=0, wrapper_class=TimeFeatureWrapper)
    if stats is None:
        vec = VecNormalize(vec, norm_obs=norm_obs, norm_reward=not norm_obs, gamma=0.9)
    else:
        vec = VecNormalize.load(str(stats), vec)  # our own file: SB3's loader is the reference
        vec.training, vec.norm_reward = False, False
    return VecFrameStack(vec, frame_stack) if frame_stack else vec


def _build_folder(root: Path, frame_stack: int, norm_obs: bool = True) -> Path:
    """``ppo/Pendulum-v0_1/``: a tiny PPO trained as the zoo would, saved in the zoo's layout."""
    from stable_baselines3 import PPO

    env = _make_env(frame_stack, norm_obs=norm_obs)
    model = PPO(
        "MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=0, policy_kwargs={"net_arch": [16]}
    )
    model.learn(128)
    folder = root / "ppo" / f"{OLD_ID}_1"
    sub = folder / OLD_ID
    sub.mkdir(parents=True)
    model.save(folder / f"{OLD_ID}.zip")
    norm = model.get_vec_normalize_env()
    assert norm is not None
    norm.save(str(sub / "vecnormalize.pkl"))
    config: dict[str, Any] = {
        "env_wrapper": TIME_FEATURE,
        "gamma": 0.9,
        "n_timesteps": 128,
        "normalize": f"{{'norm_obs': {norm_obs}, 'norm_reward': {not norm_obs}}}",
        "policy": "MlpPolicy",
    }
    if frame_stack:
        config["frame_stack"] = frame_stack
    (sub / "config.yml").write_text(_zoo_yaml(config))
    (sub / "args.yml").write_text(_zoo_yaml({"algo": "ppo", "env": OLD_ID, "env_kwargs": None, "seed": 0}))
    return folder


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[Any, Path]:
    """Zoo folders with TimeFeature + VecNormalize: without and with a 2-frame stack (keys 0 and 2), and
    normalising rewards only (all of :data:`VARIANTS` by name)."""
    root = tmp_path_factory.mktemp("zoo")
    built = {
        name: _build_folder(root / name, stack, norm_obs) for name, (stack, norm_obs) in VARIANTS.items()
    }
    return {0: built["stack0"], 2: built["stack2"], **built}


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(envs_mod, "_WARNED", set())


# --- reading a folder ------------------------------------------------------------------------------


def test_the_folder_is_read_whatever_env_id_is_passed(zoo: dict[int, Path]) -> None:
    folder = zoo[2]
    for env_id in (None, NEW_ID, OLD_ID, "CartPole-v1"):
        z = read_zoo_folder(folder, env_id)
        assert z.stats_dir == folder / OLD_ID and z.trained_env_id == OLD_ID
        assert z.final_zip == folder / f"{OLD_ID}.zip" and z.best_zip is None
        assert z.env_wrapper == ((TIME_FEATURE, {}),) and z.frame_stack == 2
        assert z.normalize is True and z.norm_obs and not z.norm_reward
        assert z.vecnormalize == folder / OLD_ID / "vecnormalize.pkl" == z.statistics()
    # the statistics of a subfolder named after the older id are found for the current id
    assert find_vecnormalize(folder, NEW_ID) == folder / OLD_ID / "vecnormalize.pkl"
    assert find_agent_zip(folder, NEW_ID, which="final") == folder / f"{OLD_ID}.zip"
    # a zip inside the folder reads the same folder
    assert read_zoo_folder(folder / f"{OLD_ID}.zip").stats_dir == folder / OLD_ID


def test_the_shared_swimmer_folder_is_read(shared_data: Path) -> None:
    folder = shared_data / "rl-zoo" / "ppo" / "Swimmer-v3_1"
    z = read_zoo_folder(folder, "Swimmer-v5")
    assert z.trained_env_id == "Swimmer-v3" and z.stats_dir == folder / "Swimmer-v3"
    assert z.env_wrapper == ((TIME_FEATURE, {}),) and z.normalize and z.norm_obs and z.norm_reward
    assert z.statistics() == folder / "Swimmer-v3" / "vecnormalize.pkl"


@pytest.mark.parametrize(
    ("value", "want"),
    [
        (True, (True, {})),
        (False, (False, {})),
        (None, (False, {})),
        ({"norm_obs": True, "norm_reward": False}, (True, {"norm_obs": True, "norm_reward": False})),
        ("{'norm_obs': False, 'norm_reward': True}", (True, {"norm_obs": False, "norm_reward": True})),
        (
            "dict(norm_obs=True, norm_reward=False, clip_obs=5.0)",
            (True, {"norm_obs": True, "norm_reward": False, "clip_obs": 5.0}),
        ),
    ],
)
def test_normalize_forms(value: Any, want: tuple[bool, dict[str, Any]]) -> None:
    assert parse_normalize(value, "config.yml") == want


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('touch pwned')",
        "dict(**{'norm_obs': True})",
        "print('x')",
        "{'norm_obs': open('x')}",
        "[1, 2]",
        "dict(norm_obs='yes')",
    ],
)
def test_normalize_strings_are_never_evaluated(
    text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        parse_normalize(text, "config.yml")
    assert "\n" not in str(err.value) and "normalize" in str(err.value)
    assert list(tmp_path.iterdir()) == []


# --- base is the zoo's agent; the symmetrized ones are equivariant -------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_base_acts_as_the_plain_sb3_agent_on_the_zoo_env(zoo: dict[Any, Path], variant: str) -> None:
    from stable_baselines3 import PPO
    from stable_baselines3.common.evaluation import evaluate_policy

    folder = zoo[variant]
    frame_stack, norm_obs = VARIANTS[variant]
    model = load_pretrained(folder, NEW_ID, method=BASE, algo="ppo")
    assert tuple(model.observation_space.shape) == ((3 + 1) * max(frame_stack, 1),)
    norm = model.get_vec_normalize_env()
    assert type(norm).__name__ == "VecNormalize" and not norm.training and norm.norm_obs == norm_obs
    plain = PPO.load(folder / f"{OLD_ID}.zip", device="cpu")  # our own zip: SB3's loader is the reference
    ref = _make_env(frame_stack, stats=folder / OLD_ID / "vecnormalize.pkl", norm_obs=norm_obs)
    ref.seed(3)
    obs = ref.reset()
    for _ in range(30):  # the same actions on the observations of the env rl_zoo3 makes
        a_ref, _ = plain.predict(obs, deterministic=True)
        a, _ = model.predict(obs, deterministic=True)
        np.testing.assert_allclose(a, a_ref, atol=1e-6)
        obs, *_ = ref.step(a_ref)
    # and evaluate() rebuilds that env: the same returns as SB3's evaluate_policy on the reference env
    ref = _make_env(frame_stack, stats=folder / OLD_ID / "vecnormalize.pkl", norm_obs=norm_obs)
    ref.seed(5)
    want, _ = evaluate_policy(plain, ref, n_eval_episodes=1, deterministic=True, return_episode_rewards=True)
    got = evaluate(model, NEW_ID, n_eval_episodes=1, seed=5)
    assert got == pytest.approx([float(r) for r in want], abs=1e-6)


def _pipeline_error(model: Any, frame_stack: int) -> float:
    """``max_g |f(g·x) - g·f(x)|`` of raw (stacked) observation -> frame-wise normalisation -> heads."""
    sym = extend_symmetry(load_spec(NEW_ID), extra_features=1, n_stack=max(frame_stack, 1))
    norm = model.get_vec_normalize_env()
    x = torch.randn(64, *model.observation_space.shape) * 2
    x[:, 3::4] = torch.rand(64, max(frame_stack, 1))  # the time features in [0, 1]

    def f(obs: torch.Tensor) -> torch.Tensor:
        frames = obs.numpy().reshape(obs.shape[0], -1, 4)
        o = np.stack([norm.normalize_obs(frames[:, k]) for k in range(frames.shape[1])], axis=1)
        with torch.no_grad():
            return model.policy.symmetric_heads(
                torch.as_tensor(o.reshape(obs.shape[0], -1), dtype=torch.float32)
            )

    return check_equivariance(f, sym.obs_action(), model.policy.out_action, x)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("method", [EQUITUNE, EQUIZERO])
def test_symmetrized_zoo_agent_is_equivariant(zoo: dict[Any, Path], variant: str, method: str) -> None:
    frame_stack, norm_obs = VARIANTS[variant]
    model = load_pretrained(zoo[variant], NEW_ID, method=method, algo="ppo")
    norm = model.get_vec_normalize_env()
    assert isinstance(norm, SymmetricVecNormalize) and norm.norm_obs == norm_obs
    if norm_obs:
        assert norm.obs_rms.mean.shape == (4,) and abs(norm.obs_rms.mean[1]) < 1e-12  # sin θ's mean: 0
    assert _pipeline_error(model, frame_stack) < ATOL
    rets = evaluate(model, NEW_ID, n_eval_episodes=1, seed=0)
    assert len(rets) == 1 and np.isfinite(rets[0])


def test_extend_symmetry() -> None:
    sym = load_spec(NEW_ID)  # Pendulum: [cos, sin, θ'] -> [cos, -sin, -θ']
    same = extend_symmetry(sym)
    assert same is sym
    ext = extend_symmetry(sym, extra_features=1, n_stack=3)
    src, signs = ext.obs_generators[0]
    assert list(src) == list(range(12)) and list(signs) == [1, -1, -1, 1] * 3
    assert ext.action_generators == sym.action_generators and ext.env_id == sym.env_id
    # every element, not just the generators, acts frame by frame with an invariant time feature
    x = torch.randn(5, 12)
    act, base = ext.obs_action(), sym.obs_action()
    for g in range(ext.group.order):
        y = act.apply(x, g).reshape(5, 3, 4)
        xs = x.reshape(5, 3, 4)
        torch.testing.assert_close(y[..., 3], xs[..., 3])
        torch.testing.assert_close(y[..., :3], base.apply(xs[..., :3].reshape(-1, 3), g).reshape(5, 3, 3))
    image = load_spec("equirl/GridWorld-v0")
    assert extend_symmetry(image, n_stack=4) is image
    with pytest.raises(SymmetryError, match="time feature"):
        extend_symmetry(image, extra_features=1)


# --- refusals ------------------------------------------------------------------------------------------


MARKER_MODULE = """
from pathlib import Path
import gymnasium as gym
Path({marker!r}).write_text("imported")

class Wrapper(gym.Wrapper):
    pass
"""


def _copy(folder: Path, dest: Path) -> Path:
    out = dest / "ppo" / folder.name
    shutil.copytree(folder, out)
    return out


def test_a_wrapper_outside_the_allowlist_is_refused_and_never_imported(
    zoo: dict[int, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "MARKER"
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "zoo_marker_mod.py").write_text(MARKER_MODULE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    folder = _copy(zoo[0], tmp_path)
    cfg = folder / OLD_ID / "config.yml"
    cfg.write_text(
        cfg.read_text().replace(f"- {TIME_FEATURE}", f"- - {TIME_FEATURE}\n      - zoo_marker_mod.Wrapper")
    )
    assert read_zoo_folder(folder).env_wrapper == ((TIME_FEATURE, {}), ("zoo_marker_mod.Wrapper", {}))
    with pytest.raises(CheckpointError) as err:
        load_pretrained(folder, NEW_ID, method=BASE, algo="ppo")
    msg = str(err.value)
    assert "zoo_marker_mod.Wrapper" in msg and "--trust-checkpoint" in msg and "\n" not in msg
    argv = ["eval", "--agent", str(folder), "--algo", "ppo", "--method", "base", "--episodes", "1"]
    assert main(argv) == 2
    err_lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err_lines) == 1 and "zoo_marker_mod.Wrapper" in err_lines[0]
    assert not marker.exists()
    # trusted: imported by its path, as rl_zoo3 does
    model = load_pretrained(folder, NEW_ID, method=BASE, algo="ppo", trust_checkpoint=True)
    assert marker.exists() and model.observation_space.shape == (4,)


def test_allowlisted_wrapper_options_are_checked(zoo: dict[int, Path], tmp_path: Path) -> None:
    folder = _copy(zoo[0], tmp_path)
    cfg = folder / OLD_ID / "config.yml"
    text = cfg.read_text()
    cfg.write_text(
        text.replace(f"- {TIME_FEATURE}", f"- {TIME_FEATURE}: {{max_steps: 200, test_mode: false}}")
    )
    env = zoo_env(read_zoo_folder(folder), NEW_ID)
    assert env.wrappers[0].kwargs == {"max_steps": 200, "test_mode": False} and env.extra_features == 1
    cfg.write_text(text.replace(f"- {TIME_FEATURE}", f"- {TIME_FEATURE}: {{max_stepz: 200}}"))
    with pytest.raises(ConfigError, match="no option max_stepz"):
        zoo_env(read_zoo_folder(folder), NEW_ID)
    cfg.write_text(text.replace(f"- {TIME_FEATURE}", f"- {TIME_FEATURE}: {{max_steps: -1}}"))
    with pytest.raises(ConfigError, match="max_steps must be int"):
        zoo_env(read_zoo_folder(folder), NEW_ID)


def test_a_normalised_agent_without_its_statistics_is_refused(
    zoo: dict[int, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _copy(zoo[0], tmp_path)
    (folder / OLD_ID / "vecnormalize.pkl").unlink()
    with pytest.raises(CheckpointError) as err:
        load_pretrained(folder, NEW_ID, method=BASE, algo="ppo")
    assert (
        "normalize" in str(err.value) and "vecnormalize.pkl" in str(err.value) and "\n" not in str(err.value)
    )
    argv = [
        "eval",
        "--agent",
        str(folder),
        "--env",
        NEW_ID,
        "--algo",
        "ppo",
        "--method",
        "base",
        "--episodes",
        "1",
    ]
    assert main(argv) == 2
    assert "vecnormalize.pkl" in capsys.readouterr().err
    # normalize: false runs without statistics (as the authors did)
    cfg = folder / OLD_ID / "config.yml"
    cfg.write_text(cfg.read_text().replace("- '{''norm_obs'': True, ''norm_reward'': False}'", "- false"))
    assert read_zoo_folder(folder).normalize is False and read_zoo_folder(folder).statistics() is None


def test_several_env_folders_need_the_env(zoo: dict[int, Path], tmp_path: Path) -> None:
    folder = _copy(zoo[0], tmp_path)
    shutil.copytree(folder / OLD_ID, folder / "CartPole-v1")
    assert read_zoo_folder(folder, NEW_ID).stats_dir == folder / OLD_ID  # Pendulum-v0 runs as Pendulum-v1
    assert read_zoo_folder(folder).stats_dir == folder / OLD_ID  # the folder's name says Pendulum-v0
    renamed = folder.rename(folder.parent / "run")
    with pytest.raises(CheckpointError, match="several env folders"):
        read_zoo_folder(renamed)


# --- env ids -------------------------------------------------------------------------------------------


def test_legacy_ids_map_to_ids_gymnasium_makes() -> None:
    import gymnasium as gym

    assert LEGACY_ENV_IDS["LunarLander-v2"] == "LunarLander-v3"
    assert LEGACY_ENV_IDS["Swimmer-v3"] == "Swimmer-v5" and LEGACY_ENV_IDS["Walker2d-v4"] == "Walker2d-v5"
    for old, new in LEGACY_ENV_IDS.items():
        assert new in gym.envs.registry, new
        assert old != new and new not in LEGACY_ENV_IDS
    for kept in ("BipedalWalker-v3", "CartPole-v1", "Acrobot-v1", "Pendulum-v1", "Swimmer-v5"):
        assert current_env_id(kept) == kept


def test_an_old_id_warns_once_through_logging(caplog: pytest.LogCaptureFixture) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a logging warning, never warnings.warn
        with caplog.at_level(logging.WARNING, logger="equirl.rl.envs"):
            assert resolve_env_id("Swimmer-v3") == "Swimmer-v5"
            assert resolve_env_id("Swimmer-v5", trained_on="Swimmer-v3") == "Swimmer-v5"
            assert resolve_env_id("Swimmer-v3") == "Swimmer-v5"
            assert resolve_env_id("CartPole-v1", trained_on="CartPole-v1") == "CartPole-v1"
    msgs = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(msgs) == 1 and "Swimmer-v3" in msgs[0] and "Swimmer-v5" in msgs[0]


def test_eval_takes_the_env_from_the_folder(
    zoo: dict[int, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    import json

    argv = ["eval", "--agent", str(zoo[0]), "--algo", "ppo", "--method", "base", "--episodes", "1", "--json"]
    with caplog.at_level(logging.WARNING):
        assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == ["base"] and out["base"]["episodes"] == 1
    msgs = [
        r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name == "equirl.rl.envs"
    ]
    assert len(msgs) == 1 and OLD_ID in msgs[0] and NEW_ID in msgs[0]
    # a shipped agent names its env in its config.yaml / folder name
    assert agent_env_id("agents/dqn/CartPole-v1/CartPole-v1_partial.zip") == "CartPole-v1"
    assert agent_env_id(zoo[0]) == OLD_ID
    # a lone zip names no env: one line asking for --env
    lone = tmp_path / "agent.zip"
    shutil.copy(zoo[0] / f"{OLD_ID}.zip", lone)
    assert main(["eval", "--agent", str(lone), "--algo", "ppo", "--method", "base"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--env" in err[0]


# --- Swimmer ---------------------------------------------------------------------------------------------


def test_swimmer_mirror_is_exact() -> None:
    pytest.importorskip("mujoco")
    from equirl.rl.check import check_symmetry

    rep = check_symmetry("Swimmer-v5", steps=25, seed=1)
    assert rep.exact and rep.verified and rep.max_error is not None and rep.max_error <= 1e-5, rep.message


@pytest.mark.parametrize("joint", [1, 2])
def test_swimmer_mirror_with_a_joint_not_flipped_is_broken(joint: int) -> None:
    pytest.importorskip("mujoco")
    from equirl.config import load_yaml
    from equirl.rl.check import check_symmetry
    from equirl.rl.spec import find_spec_file

    path = find_spec_file("Swimmer-v5")
    assert path is not None
    data = load_yaml(path)
    obs_signs = [-1, -1, -1, 1, -1, -1, -1, -1]
    state_signs = [1, -1, -1, -1, -1, 1, -1, -1, -1, -1]
    act_signs = [-1, -1]
    obs_signs[joint] = obs_signs[joint + 5] = 1  # joint angle and its rate kept
    state_signs[2 + joint] = state_signs[7 + joint] = 1
    act_signs[joint - 1] = 1  # its torque kept
    data["observation"]["generators"] = [{"src": list(range(8)), "signs": obs_signs}]
    data["verify"]["generators"] = [{"src": list(range(10)), "signs": state_signs}]
    data["actions"]["generators"] = [{"src": [0, 1], "signs": act_signs}]
    rep = check_symmetry(data, steps=25)
    assert rep.exact and not rep.verified and rep.max_error is not None and rep.max_error > 1e-3
    assert "BROKEN" in rep.message


@pytest.mark.parametrize("method", [BASE, EQUITUNE])
def test_the_shared_swimmer_agent_runs_as_trained(shared_data: Path, method: str) -> None:
    pytest.importorskip("mujoco")
    folder = shared_data / "rl-zoo" / "ppo" / "Swimmer-v3_1"
    model = load_pretrained(folder, "Swimmer-v5", method=method, algo="ppo")
    assert model.observation_space.shape == (9,)  # 8 features + the time feature
    norm = model.get_vec_normalize_env()
    assert norm is not None and norm.obs_rms.count > 1e6
    if method == BASE:  # the zoo's logs: ~280 at the end of training
        rets = evaluate(model, "Swimmer-v5", n_eval_episodes=1, seed=0)
        assert rets[0] > 200, rets
        return
    sym = extend_symmetry(load_spec("Swimmer-v5"), extra_features=1)
    x = torch.randn(32, 9)

    def f(obs: torch.Tensor) -> torch.Tensor:
        o = torch.as_tensor(norm.normalize_obs(obs.numpy()), dtype=torch.float32)
        with torch.no_grad():
            return model.policy.symmetric_heads(o)

    assert check_equivariance(f, sym.obs_action(), model.policy.out_action, x) < ATOL


def test_env_kwargs_as_rl_zoo_applies_them(zoo: dict[int, Path], tmp_path: Path) -> None:
    folder = _copy(zoo[0], tmp_path)
    sub = folder / OLD_ID
    cfg = sub / "config.yml"
    cfg.write_text(cfg.read_text() + "  - - env_kwargs\n    - {g: 9.0, render_mode: human}\n")
    assert read_zoo_folder(folder).env_kwargs == {"g": 9.0, "render_mode": "human"}
    env = zoo_env(read_zoo_folder(folder), NEW_ID)
    assert env.env_kwargs == {"g": 9.0}  # never rendering
    (sub / "env_kwargs.yml").write_text("g: 9.5\n")
    assert read_zoo_folder(folder).env_kwargs == {"g": 9.5, "render_mode": "human"}
    args = sub / "args.yml"
    args.write_text(args.read_text().replace("- env_kwargs\n    - null", "- env_kwargs\n    - {g: 10.5}"))
    assert read_zoo_folder(folder).env_kwargs == {"g": 10.5}  # the command line's replaced the config's
    model = load_pretrained(folder, NEW_ID, method=BASE, algo="ppo")
    assert model.get_env().envs[0].unwrapped.g == 10.5
    args.write_text(args.read_text().replace("{g: 10.5}", "{nope: 1}"))
    with pytest.raises(ConfigError, match="nope"):
        load_pretrained(folder, NEW_ID, method=BASE, algo="ppo")


def test_atari_zoo_wrappers_resolve_without_changing_the_image_spec(tmp_path: Path) -> None:
    folder = tmp_path / "dqn" / "BreakoutNoFrameskip-v4_1"
    (folder / "BreakoutNoFrameskip-v4").mkdir(parents=True)
    config = {
        "env_wrapper": [
            {"stable_baselines3.common.atari_wrappers.AtariWrapper": {"terminal_on_life_loss": False}}
        ],
        "frame_stack": 4,
        "policy": "CnnPolicy",
    }
    (folder / "BreakoutNoFrameskip-v4" / "config.yml").write_text(_zoo_yaml(config))
    z = read_zoo_folder(folder)
    assert z.trained_env_id == "BreakoutNoFrameskip-v4" and z.frame_stack == 4 and z.normalize is False
    env = zoo_env(z, "BreakoutNoFrameskip-v4")
    assert env.wrappers[0].obs == "image" and env.extra_features == 0
    sym = load_spec("ALE/Breakout-v5")
    assert env.symmetries(sym) == (sym, sym)  # the image action acts on each stacked frame already


def test_statistics_of_another_env_name_both_envs(
    zoo: dict[Any, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The folder's statistics meet the wrong env first: the line names whose they are and the env."""
    code = main(
        ["eval", "--agent", str(zoo[0]), "--env", "CartPole-v1", "--method", "base", "--episodes", "1"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert f"they are {OLD_ID}'s and the env is CartPole-v1: pick the agent's env" in err[0] or (
        "pick the agent's env" in err[0] and OLD_ID in err[0]
    ), err
