"""Env symmetry specs: the shipped specs load, bad specs are refused."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import pytest

from equirl.assets import asset_path
from equirl.errors import SymmetryError
from equirl.rl.envs import LEGACY_ENV_IDS
from equirl.rl.spec import SPEC_DIR, env_scores, find_spec_file, list_specs, load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[2]
REQUIRED = {
    "CartPole-v1",
    "Acrobot-v1",
    "LunarLander-v3",
    "equirl/GridWorld-v0",
    "ALE/Breakout-v5",
    "ALE/Pong-v5",
}


def _cartpole() -> dict:
    return {
        "env": "CartPole-v1",
        "group": "flip",
        "observation": {
            "type": "signed_permutation",
            "generators": [{"src": [0, 1, 2, 3], "signs": [-1, -1, -1, -1]}],
        },
        "actions": {"n": 2, "generators": [{"swap": [[0, 1]]}]},
    }


def test_all_required_specs_ship() -> None:
    assert {s.env_id for s in list_specs()} >= REQUIRED


def test_specs_come_from_the_one_shipped_folder() -> None:
    # one source of truth: the top-level envs/ (the wheel maps it into equirl/assets/envs)
    assert SPEC_DIR.resolve() == asset_path("envs").resolve()
    assert not (ROOT / "equirl" / "rl" / "envs").exists(), "a second copy of the specs is back"
    assert {p.stem for p in SPEC_DIR.glob("*.yaml")} == {p.stem for p in (ROOT / "envs").glob("*.yaml")}


def test_action_tables() -> None:
    assert load_spec("CartPole-v1").action_table() == [[0, 1], [1, 0]]
    assert load_spec("Acrobot-v1").action_table()[1] == [2, 1, 0]
    assert load_spec("LunarLander-v3").action_table()[1] == [0, 3, 2, 1]
    pong = load_spec("ALE/Pong-v5")
    assert pong.action_table()[1] == [0, 1, 3, 2, 5, 4]
    grid = load_spec("equirl/GridWorld-v0")
    assert grid.group.order == 8 and len({tuple(r) for r in grid.action_table()}) == 8


@pytest.mark.skipif(importlib.util.find_spec("ale_py") is None, reason="ale-py not installed")
@pytest.mark.parametrize("env_id", ["ALE/Pong-v5", "ALE/Breakout-v5"])
def test_atari_action_names_match_the_real_env(env_id: str) -> None:
    from equirl.rl.envs import action_meanings, make_env

    env = make_env(env_id)
    try:
        load_spec(env_id).check_fits(env.observation_space, env.action_space, action_meanings(env))
    finally:
        env.close()


def test_mapping_and_yaml_path(tmp_path: Path) -> None:
    import yaml

    p = tmp_path / "mine.yaml"
    p.write_text(yaml.safe_dump(_cartpole()))
    assert load_spec(p) == load_spec(_cartpole())


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"actions": {"n": 2, "generators": [{"perm": [0, 0]}]}}, "not a bijection"),
        ({"actions": {"n": 3, "generators": [{"swap": [[0, 1], [1, 2]]}]}}, "reuses an index"),
        (
            {"observation": {"type": "signed_permutation", "generators": [{"src": [0, 1, 1, 3]}]}},
            "not a bijection",
        ),
        (
            {
                "observation": {
                    "type": "signed_permutation",
                    "generators": [{"src": [0, 1, 2, 3], "signs": [2, 1, 1, 1]}],
                }
            },
            "signs",
        ),
        ({"group": "D4"}, "2 generator"),
        ({"group": "Q8"}, "unknown group"),
        ({"extra": 1}, "unknown key extra"),
        ({"observation": {"type": "fourier"}}, "observation.type"),
        ({"verify": {"method": "none", "atol": 0.01}}, "give verify.reason"),
        ({"verify": {"method": "none", "atol": -1}}, r"verify\.atol = -1\.0: must be > 0"),
        ({"verify": {"method": "none", "atol": "loose", "reason": "x"}}, "verify.atol: expected a number"),
    ],
)
def test_bad_specs_are_one_line_errors(patch: dict, message: str) -> None:
    data = {**_cartpole(), **patch}
    with pytest.raises(SymmetryError, match=message) as exc:
        parse_spec(data)
    assert "\n" not in str(exc.value)


def test_generators_must_define_a_group_action() -> None:
    data = {
        **_cartpole(),
        "group": "C4",
        "observation": {"type": "signed_permutation", "generators": [{"src": [1, 0, 2, 3]}]},
        "actions": {"n": 2, "generators": [{"swap": [[0, 1]]}]},
    }
    parse_spec(data)  # a swap is a valid (non-faithful) image of the C4 generator
    data["observation"]["generators"] = [{"src": [1, 2, 0, 3]}]  # order 3 cannot be the image of r (r^4=e)
    with pytest.raises(SymmetryError, match="do not define an action"):
        parse_spec(data)


def test_unknown_env_and_mismatched_spaces() -> None:
    from gymnasium import spaces

    with pytest.raises(SymmetryError, match="unknown env"):
        load_spec("NoSuchEnv-v0")
    sym = load_spec("CartPole-v1")
    with pytest.raises(SymmetryError, match="action space has 3"):
        sym.check_fits(spaces.Box(-1, 1, (4,)), spaces.Discrete(3))
    with pytest.raises(SymmetryError, match="observation shape"):
        sym.check_fits(spaces.Box(-1, 1, (6,)), spaces.Discrete(2))


def test_a_declared_tolerance_round_trips() -> None:
    """verify.atol / verify.reason survive to_dict -> parse (an approximately symmetric env stays declared)."""
    sym = load_spec("InvertedPendulum-v5")
    assert sym.verify_atol == 1e-2 and "off vertical" in sym.verify_reason
    assert parse_spec(sym.to_dict()) == sym
    tighter = {**sym.to_dict(), "verify": {**sym.to_dict()["verify"], "atol": 1e-6}}
    del tighter["verify"]["reason"]  # a tolerance below 1e-5 needs no reason, and survives the round trip
    assert parse_spec(parse_spec(tighter).to_dict()).verify_atol == 1e-6
    assert (
        load_spec("CartPole-v1").verify_atol == 1e-5
        and "atol" not in load_spec("CartPole-v1").to_dict()["verify"]
    )


# --- scores: the one table of per-env score ranges and thresholds -------------------------------------


def test_spec_scores_are_ranges_holding_their_threshold_and_round_trip() -> None:
    from equirl.rl.spec import env_scores

    with_scores = [s for s in list_specs() if s.scores is not None]
    assert {s.env_id for s in with_scores} >= {"CartPole-v1", "Acrobot-v1", "LunarLander-v3", "Pendulum-v1"}
    for sym in with_scores:
        sc = sym.scores
        assert sc is not None and sc.min < sc.max and sc.min <= sc.threshold <= sc.max, sym.env_id
        assert parse_spec(sym.to_dict()).scores == sc  # (swap_names specs lose only their names)
        assert env_scores(sym.env_id) == {"min": sc.min, "max": sc.max, "threshold": sc.threshold}
    assert env_scores("NoSuchEnv-v0") is None


@pytest.mark.parametrize(
    ("scores", "says"),
    [
        ({"min": 1, "max": 0, "threshold": 0.5}, "scores.min"),
        ({"min": 0, "max": 1}, "scores"),
        ({"min": 0, "max": 1, "threshold": ".nan"}, "scores.threshold"),
        ({"min": 0, "max": 1, "threshold": 1, "x": 2}, "scores"),
    ],
)
def test_bad_spec_scores_are_one_line(scores: dict[str, object], says: str) -> None:
    data = load_spec("CartPole-v1").to_dict()
    data["scores"] = scores
    with pytest.raises(SymmetryError) as err:
        parse_spec(data)
    assert says in str(err.value) and "\n" not in str(err.value)


def _ale_specs() -> list[str]:
    return [s.env_id for s in list_specs() if s.env_id.startswith("ALE/")]


@pytest.mark.parametrize("env_id", _ale_specs())
def test_the_zoo_atari_id_of_every_ale_spec_gets_that_spec(env_id: str) -> None:
    """RL-zoo Atari agents are trained on ``{Game}NoFrameskip-v4``: the v5 spec serves that env as it is
    (named by the v4 id, so checks and errors name the env the user runs); RAM ids have no frames."""
    game = env_id.removeprefix("ALE/").removesuffix("-v5")
    v5 = load_spec(env_id)
    v4 = load_spec(f"{game}NoFrameskip-v4")
    assert v4.env_id == f"{game}NoFrameskip-v4" and f"{game}NoFrameskip-v4" in v4.source
    assert replace(v4, env_id=v5.env_id, source=v5.source) == v5  # the same spec otherwise
    assert env_scores(f"{game}NoFrameskip-v4") == env_scores(env_id)
    with pytest.raises(SymmetryError, match="unknown env"):
        load_spec(f"{game}-ramNoFrameskip-v4")


@pytest.mark.parametrize("old", sorted(LEGACY_ENV_IDS))
def test_an_old_id_gets_its_current_versions_spec(old: str) -> None:
    """Old ids run as their current version (``LEGACY_ENV_IDS``): the spec is that version's, env and all."""
    new = LEGACY_ENV_IDS[old]
    if find_spec_file(new) is None:
        with pytest.raises(SymmetryError, match="unknown env"):
            load_spec(old)
        return
    assert load_spec(old) == load_spec(new)


def test_an_older_registered_version_with_the_same_dynamics_takes_the_current_spec() -> None:
    """CartPole-v0 (gymnasium still registers it; episodes end at 200 steps) is served by CartPole-v1's
    spec, for the v0 env itself, and its symmetry checks exactly."""
    from equirl.rl.check import check_symmetry
    from equirl.rl.spec import SAME_DYNAMICS, spec_twin

    for old, new in SAME_DYNAMICS.items():
        assert spec_twin(old) == new
        sym = load_spec(old)
        assert sym.env_id == old and sym.obs_generators == load_spec(new).obs_generators
        report = check_symmetry(sym, steps=50, seed=0)
        assert report.verified and report.max_error is not None and report.max_error <= 1e-5
