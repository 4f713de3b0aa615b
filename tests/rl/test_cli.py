"""``equirl`` RL subcommands: outputs, run directories, and one-line errors (exit code 2) on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from stable_baselines3 import DQN

from equirl.cli import main
from equirl.rl.envs import make_env
from equirl.rl.spec import SPEC_DIR

TINY = {
    "env": "CartPole-v1",
    "timesteps": 120,
    "method": "equitune",
    "hyperparams": {"learning_starts": 20, "buffer_size": 500, "net_arch": [16], "train_freq": 4},
    "eval": {"freq": 0, "final_episodes": 1},
    "log": {"equi_freq": 40},
}


def _cfg(tmp_path: Path, **patch: object) -> Path:
    data = {**TINY, "out": str(tmp_path / "runs"), **patch}
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def _no_run_dirs(tmp_path: Path) -> bool:
    runs = tmp_path / "runs"
    return not runs.exists() or not any(runs.iterdir())


def _one_line_error(capsys: pytest.CaptureFixture[str], text: str) -> None:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and text in " ".join(err.split()), err


def test_envs_lists_specs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["envs", "--json"]) == 0
    envs = {e["env"] for e in json.loads(capsys.readouterr().out)}
    assert {"CartPole-v1", "ALE/Pong-v5", "equirl/GridWorld-v0"} <= envs


def test_check_symmetry_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-symmetry", "CartPole-v1", "--steps", "10", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["env"] == "CartPole-v1" and out["verified"] is True and out["max_error"] <= 1e-5


def test_check_symmetry_broken_spec_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = yaml.safe_load((SPEC_DIR / "CartPole-v1.yaml").read_text())
    spec["actions"]["generators"] = [{"perm": [0, 1]}]
    p = tmp_path / "wrong.yaml"
    p.write_text(yaml.safe_dump(spec))
    assert main(["check-symmetry", str(p), "--steps", "10", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["verified"] is False


@pytest.mark.parametrize(
    ("argv", "text"),
    [
        (["check-symmetry", "Nope-v0"], "unknown env 'Nope-v0'"),
        (["eval", "--agent", "missing.zip", "--env", "CartPole-v1"], "checkpoint not found"),
        (["eval", "--agent", "x.zip", "--env", "Nope-v0"], "unknown env"),
        (["eval", "--agent", "x.zip", "--env", "CartPole-v1", "--method", "magic"], "unknown method"),
    ],
)
def test_bad_input_one_line(argv: list[str], text: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    _one_line_error(capsys, text)


def test_non_bijective_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = yaml.safe_load((SPEC_DIR / "CartPole-v1.yaml").read_text())
    spec["actions"]["generators"] = [{"perm": [1, 1]}]
    p = tmp_path / "nb.yaml"
    p.write_text(yaml.safe_dump(spec))
    assert main(["check-symmetry", str(p)]) == 2
    _one_line_error(capsys, "not a bijection")
    cfg = _cfg(tmp_path, symmetry=str(p))
    assert main(["train", str(cfg), "--no-progress"]) == 2
    _one_line_error(capsys, "not a bijection")
    assert _no_run_dirs(tmp_path)


def test_spec_not_fitting_the_action_space(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _cfg(tmp_path, env="Acrobot-v1", symmetry="CartPole-v1")
    assert main(["train", str(cfg), "--no-progress"]) == 2
    _one_line_error(capsys, "permutes 2 actions")
    assert _no_run_dirs(tmp_path)


def test_malformed_yaml_and_unknown_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("env: CartPole-v1\nhyperparams: [oops\n")
    assert main(["train", str(bad)]) == 2
    _one_line_error(capsys, "malformed YAML")
    assert main(["train", str(_cfg(tmp_path, learning_rat=1))]) == 2
    _one_line_error(capsys, "unknown key learning_rat")
    assert main(["train", str(_cfg(tmp_path)), "--set", "hyperparams.gama=0.9"]) == 2
    _one_line_error(capsys, "hyperparams.gama")
    assert _no_run_dirs(tmp_path)


def test_missing_and_corrupt_init_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", str(_cfg(tmp_path, init_from=str(tmp_path / "none.zip"))), "--no-progress"]) == 2
    _one_line_error(capsys, "checkpoint not found")
    corrupt = tmp_path / "corrupt.zip"
    corrupt.write_bytes(b"\x00garbage")
    assert main(["eval", "--agent", str(corrupt), "--env", "CartPole-v1"]) == 2
    _one_line_error(capsys, "corrupt checkpoint")
    assert _no_run_dirs(tmp_path)


def test_train_writes_a_complete_run_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", str(_cfg(tmp_path)), "--no-progress", "--set", "seed=3"]) == 0
    (run,) = list((tmp_path / "runs").iterdir())
    assert run.name.startswith("CartPole-v1__equitune__3__")
    assert {"config.yaml", "model.zip", "evaluations.npz", "evaluations.json", "tb"} <= {
        p.name for p in run.iterdir()
    }
    assert yaml.safe_load((run / "config.yaml").read_text())["seed"] == 3
    assert list((run / "tb").glob("events.out.tfevents.*"))
    progress = (run / "tb" / "progress.csv").read_text()
    assert "equi/equivariance_error" in progress and "equi/final_return/equitune" in progress
    loaded = DQN.load(run / "model.zip")
    assert loaded.policy.q_net.method == "equitune"


def test_eval_json_all_methods(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = DQN(
        "MlpPolicy", make_env("CartPole-v1"), policy_kwargs={"net_arch": [16]}, buffer_size=50, seed=0
    )
    model.save(tmp_path / "a.zip")
    assert (
        main(
            [
                "eval",
                "--agent",
                str(tmp_path / "a.zip"),
                "--env",
                "CartPole-v1",
                "--method",
                "all",
                "--episodes",
                "2",
                "--seeds",
                "2",
                "--json",
            ]
        )
        == 0
    )
    res = json.loads(capsys.readouterr().out)
    assert set(res) == {"base", "equitune", "equizero", "lambda"}
    for r in res.values():
        assert r["episodes"] == 4 and r["mean_return"] > 0 and r["std_return"] >= 0
        # the per-episode returns and a bootstrap interval of their mean that holds it
        assert len(r["returns"]) == 4 and abs(sum(r["returns"]) / 4 - r["mean_return"]) < 1e-9
        low, high = r["ci95"]
        assert min(r["returns"]) <= low <= r["mean_return"] <= high <= max(r["returns"])


def test_pretrain_exports_zoo_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _cfg(tmp_path, method="base", partial_fraction=0.25)
    assert main(["pretrain", str(cfg), "--no-progress", "--export", str(tmp_path / "agents")]) == 0
    d = tmp_path / "agents" / "dqn" / "CartPole-v1"
    assert {"CartPole-v1.zip", "CartPole-v1_partial.zip", "config.yaml", "eval.json"} <= {
        p.name for p in d.iterdir()
    }
    assert json.loads((d / "eval.json").read_text())["final"]["episodes"] == 1
    partial = DQN.load(d / "CartPole-v1_partial.zip")
    assert 30 <= partial.num_timesteps < 40  # 25 % of 120 steps, rounded up to a rollout of train_freq


def test_a_large_agent_is_exported_compacted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Above the shipping size the zip gets float16 weights and no optimizer moments: every loader still
    takes it (float32 again, equal to the original up to float16 rounding), it finetunes, eval.json says
    what was done."""
    import torch

    from equirl.rl import agents
    from equirl.rl.build import load_plain
    from equirl.rl.envs import make_vec_env

    cfg = _cfg(tmp_path, method="base", partial_fraction=0.25)
    assert main(["pretrain", str(cfg), "--no-progress", "--set", f"out={tmp_path / 'runs'}"]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    monkeypatch.setattr(agents, "SHIP_MAX_BYTES", 1)
    d = agents.export_agent(run, tmp_path / "agents")
    info = json.loads((d / "eval.json").read_text())["compacted"]
    assert set(info) == {"CartPole-v1.zip", "CartPole-v1_partial.zip"}
    assert info["CartPole-v1.zip"]["weights"] == "float16" and info["CartPole-v1.zip"]["targets"] == "online"
    assert (d / "CartPole-v1.zip").stat().st_size == info["CartPole-v1.zip"]["bytes"]
    assert (d / "CartPole-v1.zip").stat().st_size < (run / "model.zip").stat().st_size
    vec = make_vec_env("CartPole-v1", seed=0)
    full, small = load_plain(run / "model.zip", vec), load_plain(d / "CartPole-v1.zip", vec)
    online = full.policy.state_dict()
    for (k, v), (k2, w) in zip(online.items(), small.policy.state_dict().items(), strict=True):
        assert k == k2 and w.dtype == torch.float32
        if k.startswith("q_net_target."):  # the target is stored as the online network (one copy)
            v = online[k.replace("q_net_target.", "q_net.", 1)]
        torch.testing.assert_close(w, v.half().float(), rtol=0, atol=0)
    assert small.policy.optimizer.state_dict()["state"] == {}
    assert small.policy.optimizer.param_groups[0]["lr"] == full.policy.optimizer.param_groups[0]["lr"]
    DQN.load(d / "CartPole-v1.zip", env=vec).learn(20)  # SB3's own loader; Adam starts afresh


@pytest.mark.parametrize(
    "path",
    sorted((Path(__file__).resolve().parents[2] / "configs" / "rl").glob("*.yaml")),
    ids=lambda p: p.name,
)
def test_every_shipped_rl_config_validates(path: Path) -> None:
    """Each shipped run config passes validation as written (zoo values such as gradient_steps -1 included)."""
    from equirl.rl.config import load_rl_config

    cfg = load_rl_config(str(path))
    assert cfg.timesteps > 0 and cfg.env


def test_gradient_steps_minus_one_means_one_per_env_step() -> None:
    from equirl.config import FieldError
    from equirl.rl.config import HyperParams

    assert HyperParams(gradient_steps=-1).sb3_kwargs()["gradient_steps"] == -1
    for bad in (0, -2):
        with pytest.raises(FieldError, match="or -1"):
            HyperParams(gradient_steps=bad)


def test_a_spec_file_given_as_the_env_serves_eval_and_symmetrize(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An env with no shipped spec (MountainCar-v0): its spec file's path works wherever an env id does,
    and the env id alone says how to get there."""
    import equirl.rl.spec as spec_mod

    monkeypatch.setattr(spec_mod, "_USER_SPECS", {})  # the file serves this test's commands only

    spec = tmp_path / "mountain.yaml"
    spec.write_text(
        "env: MountainCar-v0\ngroup: flip\nobservation:\n  type: signed_permutation\n  generators:\n"
        "    - {src: [0, 1], signs: [-1, -1]}\nactions:\n  n: 3\n  generators:\n    - {swap: [[0, 2]]}\n"
    )
    DQN(
        "MlpPolicy", "MountainCar-v0", learning_starts=0, buffer_size=100, policy_kwargs={"net_arch": [8]}
    ).save(tmp_path / "mc.zip")
    agent = str(tmp_path / "mc.zip")
    assert main(["eval", "--agent", agent, "--env", "MountainCar-v0", "--method", "base"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pass its path as the env" in err[0] and "EQUIRL_ENVS_PATH" in err[0]
    argv = ["eval", "--agent", agent, "--env", str(spec), "--method", "base", "equitune", "--episodes", "1"]
    assert main([*argv, "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"base", "equitune"}
    out = tmp_path / "eq" / "agent.zip"
    assert (
        main(["symmetrize", "--agent", agent, "--env", str(spec), "--method", "equitune", "--out", str(out)])
        == 0
    )
    assert out.is_file()
    # the symmetrized zip carries its spec: evaluated by env id without the file
    spec_mod._USER_SPECS.clear()
    capsys.readouterr()
    argv = ["eval", "--agent", str(out), "--env", "MountainCar-v0", "--method", "equitune", "--episodes", "1"]
    assert main([*argv, "--json"]) == 0, capsys.readouterr().err
    assert set(json.loads(capsys.readouterr().out)) == {"equitune"}
