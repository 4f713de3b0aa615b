"""Agents from the wild: the harmless types real SB3 / RL-zoo zips pickle load without trust, hostile ones
never run; the algorithm is read from the zip; ``auto`` works on every kind of agent.

Each crafted zip is a shipped agent whose ``data`` JSON ``policy_kwargs`` entry is replaced by a
cloudpickled mapping (as SB3 stores one holding objects), so the only change is the entry under test.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
import torch
from stable_baselines3.common.torch_layers import FlattenExtractor

from equirl.cli import main
from equirl.errors import CheckpointError, ConfigError
from equirl.rl.build import load_pretrained
from equirl.rl.safe_load import RefusedGlobal, read_zip_data, restricted_loads
from equirl.rl.select import AGENT_KINDS, CONTINUOUS, DISCRETE_AC, collapses, select_method
from equirl.rl.zipinfo import inspect_agent_zip, read_algo

AGENTS = Path(__file__).resolve().parents[2] / "agents"
SAC_PENDULUM = AGENTS / "sac" / "Pendulum-v1" / "Pendulum-v1.zip"
SAC_PARTIAL = AGENTS / "sac" / "Pendulum-v1" / "Pendulum-v1_partial.zip"
PPO_CARTPOLE = AGENTS / "ppo" / "CartPole-v1" / "CartPole-v1.zip"
DQN_CARTPOLE = AGENTS / "dqn" / "CartPole-v1" / "CartPole-v1.zip"


def _with_policy_kwargs(src: Path, dst: Path, change: dict[str, Any]) -> Path:
    """``src`` with its ``policy_kwargs`` updated by ``change`` and stored pickled (cloudpickle, as SB3
    does for a mapping holding objects)."""
    data = read_zip_data(src)
    pk = {**data["policy_kwargs"], **change}
    blob = base64.b64encode(cloudpickle.dumps(pk)).decode()
    data["policy_kwargs"] = {":type:": "<class 'dict'>", ":serialized:": blob}
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(dst, "w") as b:
        for name in a.namelist():
            b.writestr(name, json.dumps(data).encode() if name == "data" else a.read(name))
    return dst


class _Reduce:
    """Unpickles as ``fn(*args)``."""

    def __init__(self, fn: Any, *args: Any) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (self.fn, self.args)


def _one_line(msg: str, *parts: str) -> None:
    assert "\n" not in msg, msg
    for p in parts:
        assert p in msg, msg


# -- the zoo SAC case: a torch.device in policy_kwargs ----------------------------------------------


def test_device_in_policy_kwargs_loads(tmp_path: Path) -> None:
    zpath = _with_policy_kwargs(SAC_PENDULUM, tmp_path / "sac.zip", {"device": torch.device("cpu")})
    assert ":serialized:" in read_zip_data(zpath)["policy_kwargs"]  # pickled, as SB3 stores objects
    model = load_pretrained(zpath, "Pendulum-v1", algo="sac", method="base")
    assert "device" not in model.policy_kwargs  # SB3 drops it as well: the model's device wins
    again = load_pretrained(zpath, "Pendulum-v1", method="equitune")  # algo read from the zip
    assert type(again).__name__ == "SAC"


# -- harmless types ---------------------------------------------------------------------------------

HARMLESS = [
    (SAC_PENDULUM, "Pendulum-v1", {"activation_fn": torch.nn.ReLU}),
    (
        SAC_PENDULUM,
        "Pendulum-v1",
        {"optimizer_class": torch.optim.RMSprop, "optimizer_kwargs": {"alpha": 0.9}},
    ),
    (SAC_PENDULUM, "Pendulum-v1", {"net_arch": {"pi": [64, 64], "qf": [64, 64]}}),
    (SAC_PENDULUM, "Pendulum-v1", {"features_extractor_class": FlattenExtractor}),
    (PPO_CARTPOLE, "CartPole-v1", {"activation_fn": torch.nn.Tanh, "optimizer_class": torch.optim.Adam}),
    (PPO_CARTPOLE, "CartPole-v1", {"net_arch": [{"pi": [64, 64], "vf": [64, 64]}]}),  # SB3 1.x form
    (PPO_CARTPOLE, "CartPole-v1", {"net_arch": {"pi": [64, 64], "vf": [64, 64]}}),
    (PPO_CARTPOLE, "CartPole-v1", {"net_arch": None}),  # the policy's default (64, 64)
    (
        PPO_CARTPOLE,
        "CartPole-v1",
        {"features_extractor_class": FlattenExtractor, "device": torch.device("cpu")},
    ),
]


@pytest.mark.parametrize(("src", "env", "change"), HARMLESS, ids=lambda v: str(v)[:40])
def test_harmless_policy_kwargs_load_safely(
    tmp_path: Path, src: Path, env: str, change: dict[str, Any]
) -> None:
    zpath = _with_policy_kwargs(src, tmp_path / "agent.zip", change)
    model = load_pretrained(zpath, env, method="base")
    for key, value in change.items():
        if key in ("optimizer_class", "activation_fn"):
            assert model.policy_kwargs[key] is value  # the class itself, never an instance
    assert model.predict(model.env.reset(), deterministic=True)[0] is not None


def test_classes_come_back_as_classes_and_records_as_checked_data() -> None:
    import numpy as np
    from stable_baselines3.common.noise import NormalActionNoise
    from stable_baselines3.common.type_aliases import TrainFreq, TrainFrequencyUnit
    from stable_baselines3.common.utils import ConstantSchedule, FloatSchedule, LinearSchedule

    value = {
        "act": torch.nn.Mish,
        "opt": torch.optim.AdamW,
        "dev": torch.device("cuda", 1),
        "freq": TrainFreq(4, TrainFrequencyUnit.STEP),
        "lr": FloatSchedule(ConstantSchedule(3e-4)),
        "eps": LinearSchedule(1.0, 0.05, 0.1),
        "noise": NormalActionNoise(np.zeros(2), 0.1 * np.ones(2)),
    }
    back = restricted_loads(cloudpickle.dumps(value))
    assert back["act"] is torch.nn.Mish and back["opt"] is torch.optim.AdamW
    assert back["dev"] == torch.device("cuda", 1) and back["freq"] == value["freq"]
    assert back["lr"](0.5) == 3e-4 and back["eps"](1.0) == 1.0
    assert back["noise"]().shape == (2,)


# -- hostile types ------------------------------------------------------------------------------------


def _hostile(marker: Path) -> dict[str, Any]:
    return {
        "device-from-a-list": _Reduce(torch.device, [1]),
        "device-from-a-payload": _Reduce(torch.device, _Reduce(open, str(marker), "w")),
        "os.system": _Reduce(os.system, f"touch {marker}"),
        "builtins.eval": _Reduce(eval, f"open({str(marker)!r}, 'w')"),
        "functools.partial": _Reduce(functools.partial(open, str(marker), "w")),
        "activation-called": _Reduce(torch.nn.Tanh),
        "optimizer-called": _Reduce(torch.optim.Adam, [1.0]),
    }


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("device-from-a-list", "torch.device from list"),
        ("device-from-a-payload", "io.open"),
        ("os.system", "system"),
        ("builtins.eval", "builtins.eval"),
        ("functools.partial", "functools.partial"),
        ("activation-called", "a call of torch.nn.modules.activation.Tanh"),
        ("optimizer-called", "a call of torch.optim.adam.Adam"),
    ],
)
def test_hostile_policy_kwargs_are_refused(tmp_path: Path, case: str, says: str) -> None:
    marker = tmp_path / "pwned"
    zpath = _with_policy_kwargs(SAC_PENDULUM, tmp_path / "bad.zip", {"activation_fn": _hostile(marker)[case]})
    with pytest.raises(CheckpointError) as err:
        load_pretrained(zpath, "Pendulum-v1", method="base")
    _one_line(str(err.value), "'policy_kwargs'", "--trust-checkpoint", says)
    assert not marker.exists()


def test_build_on_a_class_is_refused() -> None:
    """``BUILD`` on an allowlisted class would set its attributes for the whole process."""
    blob = (
        b"\x80\x04cstable_baselines3.common.utils\nConstantSchedule\nN}X\x08\x00\x00\x00__call__K\x01s\x86b."
    )
    with pytest.raises(RefusedGlobal, match="attribute set on"):
        restricted_loads(blob)
    from stable_baselines3.common.utils import ConstantSchedule

    assert "__call__" in vars(ConstantSchedule) and callable(vars(ConstantSchedule)["__call__"])


@pytest.mark.parametrize(
    ("arch", "says"),
    [
        ([64, {"pi": [64], "vf": [64]}], "shared layers"),
        ({"pi": [64], "critic": [64]}, "pi, vf and / or qf"),
        ([2**30, 2**30], "RAM"),
        ([64, -1], "positive integer"),
    ],
)
def test_bad_net_arch_is_refused_in_one_line(tmp_path: Path, arch: Any, says: str) -> None:
    zpath = _with_policy_kwargs(PPO_CARTPOLE, tmp_path / "bad.zip", {"net_arch": arch})
    with pytest.raises(CheckpointError) as err:
        load_pretrained(zpath, "CartPole-v1", method="base")
    _one_line(str(err.value), "net_arch", says)


# -- the algorithm is read from the zip -----------------------------------------------------------------


def test_algorithm_read_from_shipped_zips() -> None:
    assert inspect_agent_zip(PPO_CARTPOLE).algo == "ppo"
    assert inspect_agent_zip(SAC_PENDULUM).algo == "sac" and inspect_agent_zip(SAC_PENDULUM).continuous
    assert inspect_agent_zip(DQN_CARTPOLE).algo == "dqn"
    assert read_algo(PPO_CARTPOLE) == "ppo" and read_algo(SAC_PENDULUM, "sac") == "sac"
    with pytest.raises(CheckpointError) as err:
        read_algo(PPO_CARTPOLE, "dqn")
    _one_line(str(err.value), "PPO agent, not DQN", "pass --algo ppo")


@pytest.mark.parametrize(("algo", "kind"), [("a2c", "A2C"), ("ppo", "PPO"), ("tqc", "TQC"), ("dqn", "DQN")])
def test_algorithm_read_from_zoo_zips(shared_data: Path, algo: str, kind: str) -> None:
    env = "Pendulum-v1" if algo == "tqc" else "CartPole-v1" if algo != "ppo" else "Acrobot-v1"
    folder = shared_data / "rl-zoo" / algo / f"{env}_1"
    assert read_algo(folder, None, env) == algo
    other = "ppo" if algo != "ppo" else "a2c"
    with pytest.raises(CheckpointError) as err:
        read_algo(folder, other, env)
    _one_line(str(err.value), f"{kind} agent", f"pass --algo {algo}")


def test_cli_eval_without_algo(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "eval",
        "--agent",
        str(PPO_CARTPOLE),
        "--env",
        "CartPole-v1",
        "--method",
        "base",
        "--episodes",
        "1",
    ]
    assert main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["base"]["episodes"] == 1
    assert main([*argv, "--algo", "dqn"]) == 2
    _one_line(capsys.readouterr().err.strip(), "is a PPO agent, not DQN", "--algo ppo")


# -- auto on every kind of agent --------------------------------------------------------------------------


class _Calls:
    def __init__(self, means: dict[str, float]) -> None:
        self.means, self.calls = means, 0

    def __call__(self, method: str, kw: dict[str, Any], seed: int, episodes: int) -> list[float]:
        from equirl.rl.select import candidate_label

        self.calls += 1
        return [self.means[candidate_label(method, kw)] + (e % 2) for e in range(episodes)]


@pytest.mark.parametrize(
    ("algo", "env", "bad", "says"),
    [
        ("sac", "Pendulum-v1", "equizero:proxy=max_value", "SAC agent (continuous actions)"),
        ("td3", "Pendulum-v1", "equizero:proxy=entropy", "deterministic"),
        ("ppo", "CartPole-v1", "canonicalize", "PPO agent (discrete actions)"),
        ("dqn", "CartPole-v1", "multigroup", "DQN agent"),
        ("dqn", "CartPole-v1", "equizero:proxy=quantile_spread", "DQN agent"),
    ],
)
def test_auto_refuses_a_candidate_that_does_not_apply_before_any_work(
    algo: str, env: str, bad: str, says: str
) -> None:
    fake = _Calls({})
    with pytest.raises(ConfigError) as err:
        select_method("agent", env, ["base", bad], episodes=1, seeds=1, algo=algo, evaluator=fake)
    _one_line(str(err.value), bad, says, "valid candidates for it")
    assert fake.calls == 0


def test_auto_defaults_depend_on_the_agent() -> None:
    means = {"base": -150.0, "equitune": -700.0, "equizero": -150.0, "equizero(proxy=entropy)": -151.0}
    choice = select_method(
        "agent", "Pendulum-v1", None, episodes=2, seeds=1, algo="sac", evaluator=_Calls(means)
    )
    assert [r["label"] for r in choice.table] == [
        "base",
        "equitune",
        "equizero",
        "equizero(proxy=entropy)",
    ]
    assert choice.method == "base"
    # PPO on discrete actions: the logits' proxies; DQN: the Q-values' (as before)
    assert "equizero:proxy=entropy" in AGENT_KINDS[DISCRETE_AC]["candidates"]
    assert "equizero:proxy=max_value" not in AGENT_KINDS[CONTINUOUS]["candidates"]


def test_auto_says_when_a_method_collapses_the_agent(tmp_path: Path) -> None:
    means = {"base": 3908.0, "equitune": 197.0, "equizero": 3900.0}
    choice = select_method(
        "agent",
        "InvertedDoublePendulum-v5",
        ["base", "equitune", "equizero"],
        episodes=4,
        seeds=1,
        algo="sac",
        evaluator=_Calls(means),
    )
    assert choice.method == "base"
    _one_line(choice.reason, "equitune collapses this agent (return 197.5 vs base 3908.5)", "kept base")
    assert "equizero collapses" not in choice.reason
    assert [r["collapses"] for r in choice.table] == [False, True, False]
    choice.save(tmp_path)
    assert "collapses the agent" in (tmp_path / "auto_choice.md").read_text()
    # the rule: under half of base's normalised score, by more than both standard errors
    base = {"mean_return": 100.0, "sem": 1.0}
    assert collapses({"mean_return": 40.0, "sem": 1.0}, base, "CartPole-v1")
    assert not collapses({"mean_return": 60.0, "sem": 1.0}, base, "CartPole-v1")
    assert not collapses({"mean_return": 40.0, "sem": 70.0}, base, "CartPole-v1")
    assert not collapses({"mean_return": -10.0, "sem": 1.0}, {"mean_return": -5.0, "sem": 1.0}, "NoRange-v0")


def test_auto_on_the_shipped_sac_agent() -> None:
    choice = select_method(SAC_PARTIAL, "Pendulum-v1", episodes=1, seeds=1)
    labels = [r["label"] for r in choice.table]
    assert labels == ["base", "equitune", "equizero", "equizero(proxy=entropy)"]
    assert all(r["mean_return"] < 0 for r in choice.table) and "\n" not in choice.reason


def test_auto_on_the_shipped_ppo_agent(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["eval", "--agent", str(PPO_CARTPOLE), "--env", "CartPole-v1", "--method", "auto"]
    assert main([*argv, "--episodes", "1", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["auto"]["choice"] == "base" and res["auto"]["mean_return"] == 500.0


@pytest.mark.parametrize(
    "kind",
    ["gymnasium.spaces.dict.Dict", "gymnasium.spaces.tuple.Tuple", "gymnasium.spaces.discrete.Discrete"],
)
def test_an_agent_of_another_observation_space_is_named_in_one_line(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A zip trained on Dict / Tuple / Discrete observations, given a Box env: one line naming both."""
    data = read_zip_data(DQN_CARTPOLE)
    data["observation_space"] = {**data["observation_space"], ":type:": f"<class '{kind}'>", "_shape": None}
    dst = tmp_path / "agent.zip"
    with zipfile.ZipFile(DQN_CARTPOLE) as a, zipfile.ZipFile(dst, "w") as b:
        for name in a.namelist():
            b.writestr(name, json.dumps(data).encode() if name == "data" else a.read(name))
    name = kind.rsplit(".", 1)[1]
    with pytest.raises(CheckpointError) as err:
        load_pretrained(dst, "CartPole-v1", method="equitune")
    _one_line(str(err.value), f"{name} observations", "CartPole-v1 gives Box")
    assert (
        main(["eval", "--agent", str(dst), "--env", "CartPole-v1", "--method", "base", "--episodes", "1"])
        == 2
    )
    _one_line(capsys.readouterr().err.strip(), f"{name} observations")


def test_an_agent_saved_with_other_observation_bounds_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Bounds saved as Box(-1, 1) where the env gives CartPole's (a clipping wrapper left out): one warning
    naming both; older gym's float32-max for an unbounded feature is the env's inf (no warning)."""
    import logging

    data = read_zip_data(DQN_CARTPOLE)
    space = data["observation_space"]

    def variant(low: str, high: str) -> Path:
        dst = tmp_path / f"agent{len(list(tmp_path.iterdir()))}.zip"
        changed = {**data, "observation_space": {**space, "low": low, "high": high}}
        with zipfile.ZipFile(DQN_CARTPOLE) as a, zipfile.ZipFile(dst, "w") as b:
            for name in a.namelist():
                b.writestr(name, json.dumps(changed).encode() if name == "data" else a.read(name))
        return dst

    clipped = variant("[-1. -1. -1. -1.]", "[1. 1. 1. 1.]")
    old_gym = variant(
        "[-4.8000002e+00 -3.4028235e+38 -4.1887903e-01 -3.4028235e+38]",
        "[4.8000002e+00 3.4028235e+38 4.1887903e-01 3.4028235e+38]",
    )
    for path, warned in ((clipped, True), (old_gym, False)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="equirl"):
            load_pretrained(path, "CartPole-v1", method="base")
        said = [r.getMessage() for r in caplog.records if "clips or rescales" in r.getMessage()]
        assert len(said) == int(warned), said
        if warned:
            _one_line(said[0], "[-1, 1]", "[-4.8, 4.8]", "CartPole-v1")
