"""check-symmetry: exact envs commute with their dynamics, a wrong spec is reported broken."""

from __future__ import annotations

import pytest

from equirl.rl.check import check_symmetry
from equirl.rl.spec import load_spec


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Acrobot-v1", "equirl/GridWorld-v0"])
def test_exact_envs_verify(env_id: str) -> None:
    rep = check_symmetry(env_id, steps=25, seed=1)
    assert rep.exact and rep.verified, rep.message
    assert rep.max_error is not None and rep.max_error <= 1e-5
    assert rep.transitions >= 25


def _spec_dict(env_id: str) -> dict:
    from equirl.config import load_yaml
    from equirl.rl.spec import find_spec_file

    path = find_spec_file(env_id)
    assert path is not None
    return load_yaml(path)


def test_wrong_cartpole_spec_is_broken() -> None:
    data = _spec_dict("CartPole-v1")
    data["observation"]["generators"] = [{"src": [0, 1, 2, 3], "signs": [-1, -1, 1, 1]}]  # angle not mirrored
    data["verify"]["generators"] = [{"src": [0, 1, 2, 3], "signs": [-1, -1, 1, 1]}]
    rep = check_symmetry(data, steps=25)
    assert rep.exact and not rep.verified and rep.max_error is not None and rep.max_error > 1e-3
    assert "BROKEN" in rep.message


def test_wrong_action_permutation_is_broken() -> None:
    data = _spec_dict("Acrobot-v1")
    data["actions"]["generators"] = [{"perm": [0, 1, 2]}]  # torque not reversed
    assert not check_symmetry(data, steps=25).verified
    grid = _spec_dict("equirl/GridWorld-v0")
    grid["actions"]["generators"][0] = {"perm": [1, 2, 3, 0]}  # rotation in the wrong direction
    assert not check_symmetry(grid, steps=25).verified


def test_lunar_lander_is_checked_statistically() -> None:
    pytest.importorskip("Box2D")
    rep = check_symmetry("LunarLander-v3", steps=300, seed=0)
    assert rep.statistical and not rep.exact
    assert rep.verified, rep.message
    assert "not exact" in rep.message
    assert load_spec("LunarLander-v3").verify == "none"
    wrong = _spec_dict("LunarLander-v3")
    wrong["actions"]["generators"][0] = {"perm": [0, 1, 2, 3]}  # the side engines not swapped
    bad = check_symmetry(wrong, steps=300, seed=0)
    assert bad.statistical and not bad.verified
    assert "BROKEN" in bad.message


def test_image_envs_without_settable_state_say_so() -> None:
    pytest.importorskip("ale_py")
    spaces_only = _spec_dict("ALE/Pong-v5")  # the shipped Atari specs have the frames check
    spaces_only["verify"] = {"method": "none"}
    rep = check_symmetry(spaces_only, steps=5)
    assert not rep.verified and rep.max_error is None and not rep.statistical
    assert "cannot" in rep.message


def test_check_kind_says_how_each_shipped_spec_is_checked() -> None:
    """`equirl envs` describes the check each spec gets, from the same facts check_symmetry dispatches on."""
    from equirl.rl.check import check_kind

    assert check_kind("CartPole-v1") == "exact (sets state)"
    assert check_kind("equirl/GridWorld-v0") == "exact (sets obs)"
    assert check_kind("InvertedDoublePendulum-v5") == "exact (set_state)"
    assert check_kind("InvertedPendulum-v5") == "approximate (set_state, atol 0.01)"
    assert check_kind("LunarLander-v3") == check_kind("LunarLanderContinuous-v3") == "statistical"
    assert check_kind("ALE/Pong-v5") == check_kind("ALE/Breakout-v5") == "statistical (frames, atol 0.5)"
