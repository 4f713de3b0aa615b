"""No code from checkpoints: crafted SB3 zips never run their payload unless the user trusts the file.

Each crafted zip is a real small saved model whose ``data`` JSON entry (or ``.pth`` file) is replaced by
a pickle that, when unpickled, creates a marker file (``open(marker, "w")``). Through
:func:`load_pretrained`, ``equirl eval`` and ``equirl train --init-from`` the marker never appears and
the error is one line naming the entry and ``--trust-checkpoint``; with trust, SB3's own loading runs
(the marker appears).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import io
import json
import pickle
import zipfile
from collections import deque
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pytest
import torch
import yaml
from stable_baselines3 import DQN

from equirl.cli import main
from equirl.errors import CheckpointError
from equirl.rl.build import load_plain, load_pretrained
from equirl.rl.envs import make_vec_env
from equirl.rl.safe_load import RefusedGlobal, pickled_entries, read_zip_data, restricted_loads
from equirl.rl.spec import list_specs, load_spec, parse_spec
from equirl.rl.zoo import agent_env_id, find_agent_zip
from tests.helpers import Payload

SHIPPED = sorted(Path(__file__).resolve().parents[2].glob("agents/dqn/*/*.zip"))
SHIPPED_ALL = sorted(Path(__file__).resolve().parents[2].glob("agents/*/*/*.zip"))


def _save_small(path: Path, seed: int = 0, **pk: Any) -> Path:
    model = DQN(
        "EquiMlpPolicy",
        make_vec_env("CartPole-v1", seed=seed),
        policy_kwargs={"symmetry": "CartPole-v1", "method": "base", "net_arch": [8], **pk},
        buffer_size=100,
        learning_starts=0,
        seed=seed,
        device="cpu",
    )
    model.save(path)
    return path


@pytest.fixture(scope="module")
def small_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_small(tmp_path_factory.mktemp("agent") / "agent.zip")


def _rewrite(src: Path, dst: Path, replace: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(dst, "w") as b:
        for name in a.namelist():
            b.writestr(name, replace.get(name, a.read(name)))
    return dst


def _craft_entry(src: Path, dst: Path, key: str, marker: Path) -> Path:
    """``src`` with ``data[key]`` pickled as the payload (keeping the entry's plain fields, as a stealthy
    file would)."""
    data = read_zip_data(src)
    entry = data.get(key)
    fields = {k: v for k, v in entry.items() if k != ":serialized:"} if isinstance(entry, dict) else {}
    blob = base64.b64encode(cloudpickle.dumps(Payload(marker))).decode()
    data[key] = {":type:": "<class 'dict'>", **fields, ":serialized:": blob}
    return _rewrite(src, dst, {"data": json.dumps(data).encode()})


def _craft_pth(src: Path, dst: Path, name: str, marker: Path) -> Path:
    buf = io.BytesIO()
    torch.save({"weight": torch.zeros(1), "extra": Payload(marker)}, buf)
    return _rewrite(src, dst, {name: buf.getvalue()})


def _one_line(msg: str, *parts: str) -> None:
    assert "\n" not in msg, msg
    for p in parts:
        assert p in msg, msg


# -- our own zips are plain data ------------------------------------------------------------------


def test_own_zip_policy_kwargs_are_json_and_load_without_custom_objects(small_zip: Path) -> None:
    data = read_zip_data(small_zip)
    assert "policy_kwargs" not in pickled_entries(data)
    assert data["policy_kwargs"]["symmetry"] == "CartPole-v1"
    loaded = DQN.load(small_zip)  # no custom_objects
    assert loaded.policy.q_net.symmetry == load_spec("CartPole-v1")


def test_load_pretrained_saves_plain_policy_kwargs(small_zip: Path, tmp_path: Path) -> None:
    model = load_pretrained(small_zip, "CartPole-v1", method="equizero", seed=0)
    model.save(tmp_path / "equi.zip")
    data = read_zip_data(tmp_path / "equi.zip")
    assert "policy_kwargs" not in pickled_entries(data)
    pk = data["policy_kwargs"]
    assert parse_spec(pk["symmetry"]) == load_spec("CartPole-v1") and pk["method"] == "equizero"
    again = DQN.load(tmp_path / "equi.zip")
    obs = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    a, _ = model.predict(obs, deterministic=True)
    b, _ = again.predict(obs, deterministic=True)
    assert np.array_equal(a, b)


def test_build_model_policy_kwargs_are_json(tmp_path: Path) -> None:
    from equirl.rl.build import build_model
    from equirl.rl.config import load_rl_config

    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump({"env": "CartPole-v1", "method": "lambda", "hyperparams": {"net_arch": [8]}}))
    model = build_model(load_rl_config(p))
    json.dumps(model.policy_kwargs)  # SB3 stores it as JSON, nothing pickled
    model.save(tmp_path / "m.zip")
    assert "policy_kwargs" not in pickled_entries(read_zip_data(tmp_path / "m.zip"))


@pytest.mark.parametrize("sym", list_specs(), ids=lambda s: s.env_id)
def test_spec_to_dict_round_trips(sym: Any) -> None:
    d = sym.to_dict()
    json.dumps(d)
    back = parse_spec(d)
    # equal in every field but the swapped action names, which to_dict keeps as the permutation only
    assert back == dataclasses.replace(sym, action_names=())


# -- crafted zips ---------------------------------------------------------------------------------

REFUSED = ["policy_kwargs", "policy_class", "replay_buffer_class", "train_freq"]


@pytest.mark.parametrize("key", REFUSED)
def test_crafted_entry_is_refused_and_never_run(small_zip: Path, tmp_path: Path, key: str) -> None:
    marker = tmp_path / "pwned"
    bad = _craft_entry(small_zip, tmp_path / "bad.zip", key, marker)
    with pytest.raises(CheckpointError) as err:
        load_pretrained(bad, "CartPole-v1", method="equitune")
    _one_line(str(err.value), repr(key), "--trust-checkpoint", "io.open")
    assert not marker.exists()
    # trusted: SB3's own loading unpickles it (whatever happens next)
    with contextlib.suppress(Exception):
        load_pretrained(bad, "CartPole-v1", method="equitune", trust_checkpoint=True)
    assert marker.exists()


@pytest.mark.parametrize("key", ["observation_space", "lr_schedule", "exploration_schedule", "_last_obs"])
def test_replaced_entries_are_never_read(small_zip: Path, tmp_path: Path, key: str) -> None:
    """Entries equirl replaces (env spaces, constant schedules, reset rollout state) are not unpickled."""
    marker = tmp_path / "pwned"
    bad = _craft_entry(small_zip, tmp_path / "bad.zip", key, marker)
    model = load_pretrained(bad, "CartPole-v1", method="equitune")
    assert model.policy.q_net.method == "equitune"
    assert not marker.exists()


@pytest.mark.parametrize("name", ["policy.pth", "pytorch_variables.pth"])
def test_crafted_pth_is_refused(small_zip: Path, tmp_path: Path, name: str) -> None:
    marker = tmp_path / "pwned"
    bad = _craft_pth(small_zip, tmp_path / "bad.zip", name, marker)
    with pytest.raises(CheckpointError) as err:
        load_pretrained(bad, "CartPole-v1", method="equitune")
    _one_line(str(err.value), name, "weights_only=True", "--trust-checkpoint")
    assert not marker.exists()


def test_sb3_itself_loads_pth_weights_only(small_zip: Path, tmp_path: Path) -> None:
    """SB3 (the trusted path) also reads ``.pth`` files with ``weights_only=True``: no payload runs."""
    from stable_baselines3.common.save_util import load_from_zip_file

    marker = tmp_path / "pwned"
    bad = _craft_pth(small_zip, tmp_path / "bad.zip", "policy.pth", marker)
    with pytest.raises(pickle.UnpicklingError):
        load_from_zip_file(bad, custom_objects={k: None for k in pickled_entries(read_zip_data(bad))})
    assert not marker.exists()


def test_restricted_unpickler() -> None:
    from equirl.rl.policies import EquiDQNPolicy

    ok = {"sym": load_spec("CartPole-v1"), "q": deque([1.0], maxlen=3), "a": np.arange(3.0)}
    back = restricted_loads(cloudpickle.dumps(ok))
    assert back["sym"] == ok["sym"] and list(back["q"]) == [1.0] and np.array_equal(back["a"], ok["a"])
    assert restricted_loads(cloudpickle.dumps(EquiDQNPolicy)) is EquiDQNPolicy
    with pytest.raises(RefusedGlobal, match="system"):
        import os

        restricted_loads(pickle.dumps(os.system))
    with pytest.raises(RefusedGlobal):
        restricted_loads(cloudpickle.dumps(lambda x: x))  # code by value


def test_cli_eval_refuses_crafted_zip(
    small_zip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    bad = _craft_entry(small_zip, tmp_path / "bad.zip", "policy_kwargs", marker)
    argv = ["eval", "--agent", str(bad), "--env", "CartPole-v1", "--method", "base", "--episodes", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'policy_kwargs'" in err and "--trust-checkpoint" in err, err
    assert not marker.exists()
    with contextlib.suppress(Exception):
        main([*argv, "--trust-checkpoint"])
    assert marker.exists()


def test_cli_train_init_from_refuses_crafted_zip(
    small_zip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    bad = _craft_entry(small_zip, tmp_path / "bad.zip", "policy_class", marker)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "env": "CartPole-v1",
                "timesteps": 50,
                "out": str(tmp_path / "runs"),
                "hyperparams": {"learning_starts": 10, "buffer_size": 100, "net_arch": [8]},
                "eval": {"freq": 0, "final_episodes": 1},
            }
        )
    )
    assert main(["train", str(cfg), "--init-from", str(bad), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'policy_class'" in err and "--trust-checkpoint" in err, err
    assert not marker.exists()
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.iterdir())
    with contextlib.suppress(Exception):
        main(["train", str(cfg), "--init-from", str(bad), "--no-progress", "--trust-checkpoint"])
    assert marker.exists()


# -- run directories, zoo and shipped agents -------------------------------------------------------


def _weights(model: Any) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.policy.state_dict().items() if ".equi." not in k}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_run_directory_takes_best_unless_final(tmp_path: Path) -> None:
    run = tmp_path / "CartPole-v1__base__0__1"
    run.mkdir()
    _save_small(run / "model.zip", seed=1)
    _save_small(run / "best_model.zip", seed=2)
    (run / "config.yaml").write_text("env: CartPole-v1\n")
    (run / "run.json").write_text("{}")
    assert find_agent_zip(run) == run / "best_model.zip"
    assert find_agent_zip(run, "CartPole-v1", which="final") == run / "model.zip"
    vec = make_vec_env("CartPole-v1", seed=0)
    best = load_plain(run / "best_model.zip", vec)
    final = load_plain(run / "model.zip", vec)
    assert not _same(_weights(best), _weights(final))
    assert _same(_weights(load_pretrained(run, "CartPole-v1", method="base")), _weights(best))
    assert _same(_weights(load_pretrained(run, "CartPole-v1", method="base", which="final")), _weights(final))
    (run / "best_model.zip").unlink()  # no best: the final model
    assert find_agent_zip(run) == run / "model.zip"
    with pytest.raises(Exception, match="which"):
        find_agent_zip(run, which="last")


def test_cli_eval_run_directory_final(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    _save_small(run / "model.zip", seed=1)
    argv = [
        "eval",
        "--agent",
        str(run),
        "--env",
        "CartPole-v1",
        "--method",
        "base",
        "--episodes",
        "1",
        "--json",
    ]
    assert main([*argv, "--final"]) == 0
    assert json.loads(capsys.readouterr().out)["base"]["episodes"] == 1
    assert main(argv) == 0  # no best_model.zip: the final one


@pytest.mark.parametrize("zpath", SHIPPED, ids=lambda p: p.name)
def test_shipped_agents_load_safely_with_identical_weights(zpath: Path) -> None:
    env = agent_env_id(zpath)
    assert env is not None
    vec = make_vec_env(env, seed=0)
    safe = load_plain(zpath, vec)
    trusted = load_plain(zpath, vec, trust_checkpoint=True)
    assert _same(safe.policy.state_dict(), trusted.policy.state_dict())
    assert safe.policy_kwargs["net_arch"] == trusted.policy_kwargs["net_arch"]


OLD_POLICY_MODULES = ("equirl.rl.policies", "equirl.rl.ac_policies")


def test_some_shipped_agents_use_the_old_module_paths() -> None:
    """The remap of the old module paths stays exercised by real files."""
    modules = {read_zip_data(z)["policy_class"]["__module__"] for z in SHIPPED_ALL}
    assert modules & set(OLD_POLICY_MODULES)


@pytest.mark.parametrize("zpath", SHIPPED_ALL, ids=lambda p: f"{p.parent.parent.name}-{p.name}")
def test_policy_classes_pickled_under_old_or_new_modules_resolve(zpath: Path) -> None:
    """Most shipped agents were saved when the policies were the modules ``equirl.rl.policies`` (DQN)
    and ``equirl.rl.ac_policies`` (actor-critic), newer ones under ``equirl.rl.policies.<family>``:
    the safe loader maps either path to the package's classes."""
    from equirl.rl.algos import get_algo

    entry = read_zip_data(zpath)["policy_class"]
    assert entry["__module__"] in OLD_POLICY_MODULES or entry["__module__"].startswith("equirl.rl.policies.")
    cls = restricted_loads(base64.b64decode(entry[":serialized:"]))
    assert cls in get_algo(zpath.parent.parent.name).policy_classes()  # the MLP or the CNN policy
    assert cls.__module__.startswith("equirl.rl.policies.")


@pytest.mark.parametrize("env", ["CartPole-v1", "Acrobot-v1"])
def test_zoo_agents_load_safely(shared_data: Path, env: str) -> None:
    folder = shared_data / "rl-zoo" / "dqn" / f"{env}_1"
    vec = make_vec_env(env, seed=0)
    safe = load_plain(folder, vec)
    trusted = load_plain(folder, vec, trust_checkpoint=True)
    assert _same(safe.policy.state_dict(), trusted.policy.state_dict())
    model = load_pretrained(folder, env, method="equitune")
    assert model.policy.q_net.method == "equitune"


def test_space_mismatch_is_one_line(small_zip: Path) -> None:
    with pytest.raises(CheckpointError) as err:
        load_pretrained(small_zip, "Acrobot-v1", method="base")
    _one_line(str(err.value), "size 4", "size 6")


def test_every_shipped_agent_fits_in_git() -> None:
    """Pixel agents are compacted on export (float16, no optimizer moments): none is above 8 MB."""
    from equirl.rl.agents import SHIP_MAX_BYTES

    assert SHIPPED_ALL and all(z.stat().st_size <= SHIP_MAX_BYTES for z in SHIPPED_ALL)
