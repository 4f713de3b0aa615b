"""``equirl symmetrize`` writes an agent symmetrized as an SB3 zip that SB3 loads by itself (and rl_zoo3's
``-i``, which keeps a zip's own policy), with its normalisation statistics beside it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import equirl.rl  # noqa: F401  (registers the aliases)
from equirl.cli import main
from equirl.registry import EQUITUNE
from equirl.rl.build import load_pretrained
from tests.rl.test_zoo_folders import NEW_ID, _build_folder


@pytest.fixture(scope="module")
def zoo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_folder(tmp_path_factory.mktemp("zoo"), 0)


def test_the_symmetrized_zip_loads_in_sb3_and_acts_as_equirl_s(
    zoo_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pickle

    from stable_baselines3 import PPO

    out = tmp_path / "eq" / "agent.zip"
    assert main(["symmetrize", "--agent", str(zoo_folder), "--method", "equitune", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "vecnormalize.pkl" in said and "--gym-packages equirl.rl" in said
    plain_sb3 = PPO.load(out, device="cpu")  # SB3's own loader: the policy class and kwargs are in the zip
    assert type(plain_sb3.policy).__name__ == "EquiActorCriticPolicy"
    # our own file, written a moment ago: SB3's own pickle loader is the reference here
    norm = pickle.loads((out.parent / NEW_ID / "vecnormalize.pkl").read_bytes())  # where rl_zoo3 -i reads it
    assert type(norm).__name__ == "SymmetricVecNormalize"  # kept symmetric while rl_zoo3 finetunes
    assert (out.parent / NEW_ID / "config.yml").is_file()  # the zoo agent's wrappers travel with it
    ours = load_pretrained(zoo_folder, NEW_ID, method=EQUITUNE)
    obs = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    obs[:, 3] = np.abs(obs[:, 3])
    ref_norm = ours.get_vec_normalize_env()
    np.testing.assert_allclose(norm.obs_rms.mean, ref_norm.obs_rms.mean)
    np.testing.assert_allclose(norm.obs_rms.var, ref_norm.obs_rms.var)
    a, _ = plain_sb3.predict(norm.normalize_obs(obs), deterministic=True)
    b, _ = ours.predict(ref_norm.normalize_obs(obs), deterministic=True)
    np.testing.assert_allclose(a, b, atol=1e-6)
    # nothing is replaced without --overwrite: one line, exit 2, the files unchanged
    before = out.read_bytes()
    assert main(["symmetrize", "--agent", str(zoo_folder), "--method", "equizero", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overwrite" in err[0] and out.read_bytes() == before
    assert (
        main(
            [
                "symmetrize",
                "--agent",
                str(zoo_folder),
                "--method",
                "equizero",
                "--out",
                str(out),
                "--overwrite",
            ]
        )
        == 0
    )
    assert out.read_bytes() != before


def test_symmetrize_takes_only_methods_that_change_the_agent(zoo_folder: Path, tmp_path: Path) -> None:
    for method in ("base", "auto", "augment"):
        with pytest.raises(SystemExit) as exc:
            main(
                [
                    "symmetrize",
                    "--agent",
                    str(zoo_folder),
                    "--method",
                    method,
                    "--out",
                    str(tmp_path / "a.zip"),
                ]
            )
        assert exc.value.code == 2
    assert not (tmp_path / "a.zip").exists()


def test_zips_saved_before_the_policies_package_load_in_sb3() -> None:
    """The shipped PPO / SAC agents were saved when the policies lived in ``equirl.rl.ac_policies``: SB3's
    own loader still reads them (what ``PPO.load`` users and resumed runs do)."""
    import base64
    import json
    import zipfile

    from stable_baselines3 import PPO, SAC

    from equirl.assets import asset_path

    old = 0
    for algo, cls in (("ppo", PPO), ("sac", SAC)):
        for z in sorted(asset_path("agents").joinpath(algo).glob("*/*.zip")):
            with zipfile.ZipFile(z) as f:
                entry = json.loads(f.read("data"))["policy_class"][":serialized:"]
            old += b"equirl.rl.ac_policies" in base64.b64decode(entry)
            model = cls.load(z, device="cpu")
            assert type(model.policy).__module__.startswith("equirl.rl.policies."), z
    assert old > 0  # the shipped agents do name the old module


def test_symmetrize_bad_inputs_are_one_line(
    zoo_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder as ``--out``, and a truncated zip lying beside someone else's statistics: one line naming
    the real cause, exit 2, nothing written."""
    import shutil

    (tmp_path / "out").mkdir()
    assert (
        main(
            ["symmetrize", "--agent", str(zoo_folder), "--method", "equitune", "--out", str(tmp_path / "out")]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a folder" in err[0]
    beside = tmp_path / "beside"
    beside.mkdir()
    shutil.copy(next(zoo_folder.glob("*/vecnormalize.pkl")), beside / "vecnormalize.pkl")
    (beside / "agent.zip").write_bytes(b"PK\x03\x04 truncated")
    argv = [
        "symmetrize",
        "--agent",
        str(beside / "agent.zip"),
        "--env",
        "CartPole-v1",
        "--method",
        "equitune",
    ]
    assert main([*argv, "--out", str(tmp_path / "eq.zip")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "corrupt checkpoint" in err[0]
    assert not (tmp_path / "eq.zip").exists() and not list((tmp_path / "out").iterdir())


def _bare_agent(path: Path) -> Path:
    """A tiny PPO zip for Pendulum trained without normalisation."""
    from stable_baselines3 import PPO

    model = PPO(
        "MlpPolicy", NEW_ID, n_steps=64, batch_size=32, n_epochs=1, seed=0, policy_kwargs={"net_arch": [8]}
    )
    model.learn(64)
    model.save(path)
    return path


def test_a_zip_runs_with_the_statistics_it_was_saved_with(
    zoo_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A zip equirl writes records its statistics (none, or their SHA-256): another agent's file lying
    beside it is never applied silently, at writing or at reading."""
    from stable_baselines3 import PPO

    from equirl.rl.zoo import find_vecnormalize

    bare = _bare_agent(tmp_path / "bare.zip")
    folder = tmp_path / "out"
    normed, plain = folder / "normed.zip", folder / "plain.zip"
    assert main(["symmetrize", "--agent", str(zoo_folder), "--method", "equitune", "--out", str(normed)]) == 0
    stats = folder / NEW_ID / "vecnormalize.pkl"
    theirs = stats.read_bytes()
    capsys.readouterr()
    # writing another agent into the folder whose statistics a zip equirl wrote runs with: refused, even
    # with --overwrite (rl_zoo3 reads one agent per folder; the other zip would lose its statistics)
    argv = ["symmetrize", "--agent", str(bare), "--env", NEW_ID, "--method", "equitune", "--out", str(plain)]
    for extra in ([], ["--overwrite"]):
        assert main([*argv, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"holds the files {normed} runs with" in err[0], err
        assert not plain.exists() and stats.read_bytes() == theirs
    # the normalised agent reads its own statistics
    assert find_vecnormalize(normed, NEW_ID) == stats
    # statistics of no zip of the folder (copied there by hand): refused without --overwrite...
    other = tmp_path / "other"
    (other / NEW_ID).mkdir(parents=True)
    (other / NEW_ID / "vecnormalize.pkl").write_bytes(theirs)
    argv = ["symmetrize", "--agent", str(bare), "--env", NEW_ID, "--method", "equitune"]
    assert main([*argv, "--out", str(other / "plain.zip")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "vecnormalize.pkl" in err[0] and "runs without" in err[0]
    # ...--overwrite removes them; the zip records none, so statistics put back beside it are not used
    plain = other / "plain.zip"
    assert main([*argv, "--out", str(plain), "--overwrite"]) == 0
    assert not (other / NEW_ID / "vecnormalize.pkl").exists()
    (other / NEW_ID / "vecnormalize.pkl").write_bytes(theirs)
    assert find_vecnormalize(plain, NEW_ID) is None
    assert load_pretrained(plain, NEW_ID, method=EQUITUNE).get_vec_normalize_env() is None
    # ... and the normalised zip refuses statistics that are not its own, or missing, in one line
    for tamper in (lambda: stats.write_bytes(theirs + b"\0"), stats.unlink):
        tamper()
        capsys.readouterr()
        code = main(["eval", "--agent", str(normed), "--env", NEW_ID, "--method", "base", "--episodes", "1"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and str(normed) in err[0], err
    # once the agent trained on (rl_zoo3 -i), the record no longer speaks for it: what lies beside is used
    stats.write_bytes(theirs + b"\0")
    model = PPO.load(normed, device="cpu")
    model.num_timesteps += 64
    model.save(normed)
    assert find_vecnormalize(normed, NEW_ID) == stats


def test_base_of_a_symmetrized_agent_says_what_it_runs(
    zoo_folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``base`` of an agent equirl saved symmetrized is its network without the symmetrizer: said in one
    warning, and the actions are the plain network's, not the saved agent's."""
    import logging

    from equirl.registry import BASE

    out = tmp_path / "agent.zip"
    assert main(["symmetrize", "--agent", str(zoo_folder), "--method", "equitune", "--out", str(out)]) == 0
    with caplog.at_level(logging.WARNING, logger="equirl"):
        base = load_pretrained(out, NEW_ID, method=BASE)
    said = [r.getMessage() for r in caplog.records if "saved with equitune" in r.getMessage()]
    assert len(said) == 1 and "without the symmetrizer" in said[0]
    plain = load_pretrained(zoo_folder, NEW_ID, method=BASE)
    obs = np.random.default_rng(1).normal(size=(16, 4)).astype(np.float32)
    obs[:, 3] = np.abs(obs[:, 3])
    np.testing.assert_allclose(
        base.predict(obs, deterministic=True)[0], plain.predict(obs, deterministic=True)[0]
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="equirl"):
        load_pretrained(out, NEW_ID, method=EQUITUNE)
    assert not [r for r in caplog.records if "saved with" in r.getMessage()]


def test_base_of_a_symmetrized_gsde_agent_is_its_network_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A gSDE agent loads as it is for ``base``; one equirl saved symmetrized must still drop its
    symmetrizer there (it ran the saved equitune policy, silently)."""
    import logging

    from stable_baselines3 import PPO

    from equirl.registry import BASE

    PPO("MlpPolicy", NEW_ID, n_steps=64, batch_size=32, n_epochs=1, seed=0, use_sde=True,
        policy_kwargs={"net_arch": [8]}).learn(64).save(tmp_path / "sde.zip")  # fmt: skip
    out = tmp_path / "eq" / "agent.zip"
    argv = ["symmetrize", "--agent", str(tmp_path / "sde.zip"), "--env", NEW_ID, "--method", "equitune"]
    assert main([*argv, "--out", str(out)]) == 0
    obs = np.random.default_rng(2).normal(size=(16, 3)).astype(np.float32)
    plain = load_pretrained(tmp_path / "sde.zip", NEW_ID, method=BASE)
    with caplog.at_level(logging.WARNING, logger="equirl"):
        base = load_pretrained(out, NEW_ID, method=BASE)
    assert [r for r in caplog.records if "saved with equitune" in r.getMessage()]
    eq = load_pretrained(out, NEW_ID, method=EQUITUNE)
    a_plain, a_base, a_eq = (m.predict(obs, deterministic=True)[0] for m in (plain, base, eq))
    np.testing.assert_allclose(a_base, a_plain, atol=1e-6)
    assert np.abs(a_eq - a_plain).max() > 1e-4  # the symmetrized agent acts otherwise: the test has teeth
