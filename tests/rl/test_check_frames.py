"""The ``statistical-frames`` check of image envs whose state cannot be set (Atari): an asymmetric policy π
and its conjugate π^g are played on the real env, and π^g's frame statistics are compared with π's
mirrored ones (:func:`equirl.rl.check.conjugation_check`).

Three levels: the pieces on synthetic frames (statistics transform as the frames do, the comparison reads
0 for a conjugate that behaves like the mirror and 1 for one that behaves like π), the spec schema
(``verify.region``, band mirrors), and the real ALE Breakout and Pong, where the shipped specs pass and
each wrong variant (no LEFT / RIGHT swap, the wrong mirror axis, a swap of the wrong pair; Pong: a mirror of
the whole frame instead of its playfield, half the swap) is reported BROKEN.
"""

from __future__ import annotations

import copy
import importlib.util
from typing import Any

import numpy as np
import pytest
import yaml

from equirl.errors import SymmetryError
from equirl.rl.check import (
    check_kind,
    check_symmetry,
    compare_conjugate,
    conjugate_policy,
    frame_statistics,
    spec_frame_map,
)
from equirl.rl.spec import find_spec_file, parse_spec

needs_ale = pytest.mark.skipif(importlib.util.find_spec("ale_py") is None, reason="needs ale-py")


def _shipped(env_id: str) -> dict[str, Any]:
    path = find_spec_file(env_id)
    assert path is not None
    return yaml.safe_load(path.read_text())  # type: ignore[no-any-return]


def _breakout() -> dict[str, Any]:
    return _shipped("ALE/Breakout-v5")


def _pong() -> dict[str, Any]:
    return _shipped("ALE/Pong-v5")


# -- the pieces -------------------------------------------------------------------------------------------


def test_the_frames_are_mirrored_by_the_specs_own_action() -> None:
    """The check mirrors raw frames with the action the policy is symmetrized with: Breakout's whole
    width, Pong's playfield rows 34-193 only (r -> 227 - r; the score line above stays)."""
    x = np.random.default_rng(0).integers(0, 255, size=(3, 210, 160)).astype(np.int16)
    breakout, pong = (spec_frame_map(parse_spec(d)) for d in (_breakout(), _pong()))
    np.testing.assert_array_equal(breakout(x, 1), x[:, :, ::-1])
    np.testing.assert_array_equal(breakout(x, 0), x)
    y = pong(x, 1)
    np.testing.assert_array_equal(y[:, :34], x[:, :34])
    np.testing.assert_array_equal(y[:, 194:], x[:, 194:])
    np.testing.assert_array_equal(y[:, 34:194], x[:, 34:194][:, ::-1])


def test_statistics_of_a_mirrored_episode_are_mirrored() -> None:
    """A left-right mirror maps every column centroid c to 1 - c and leaves the row centroids; the band
    structure mirrors too (horizontal bands keep their order, vertical ones reverse)."""
    rng = np.random.default_rng(1)
    frames = np.zeros((20, 16, 16), dtype=np.int16)
    for t in range(20):  # a moving blob on a black background
        r, c = rng.integers(0, 14, size=2)
        frames[t, r : r + 2, c : c + 2] = 100
    a = frame_statistics(frames, bands=4)
    m = frame_statistics(frames[..., ::-1], bands=4)
    assert a.shape == (2 + 2 * 4,)
    np.testing.assert_allclose(m[0], 1 - a[0], atol=1e-12)  # column centroid
    np.testing.assert_allclose(m[1], a[1], atol=1e-12)  # row centroid
    col_bands, row_bands = slice(2, 6), slice(6, 10)
    ok = np.isfinite(a[col_bands])
    np.testing.assert_allclose(m[col_bands][ok], 1 - a[col_bands][ok], atol=1e-12)
    np.testing.assert_allclose(m[row_bands], a[row_bands][::-1], atol=1e-12, equal_nan=True)


def test_region_and_burn_in_select_what_is_compared() -> None:
    frames = np.zeros((5, 10, 10), dtype=np.int16)
    frames[:, 0, 9] = 50  # a "score" in the top-right corner, outside the region
    frames[:, 5, 2] = 50
    frames[:2, 5, 7] = 50  # only in the first two frames (the burn-in)
    stats = frame_statistics(frames, region=((2, 10), None), bands=1, burn_in=2)
    assert stats[0] == pytest.approx(2 / 9)  # only the pixel at column 2 weighs


def _episodes(rng: np.random.Generator, shift: float, n: int) -> np.ndarray:
    return rng.normal(0.5 + shift, 0.02, size=(n, 4))


def test_comparison_reads_zero_for_the_mirror_and_one_for_pi() -> None:
    """``b`` distributed like the mirrored ``ga``: discrepancy near 0 and no large z; ``b`` distributed
    like π's own ``a`` (a forgotten action swap): discrepancy near 1 and a large z."""
    rng = np.random.default_rng(2)
    a = _episodes(rng, 0.2, 40)
    ga = 1 - a
    good = compare_conjugate(a, ga, _episodes(rng, -0.2, 40), np.random.default_rng(0))
    bad = compare_conjugate(a, ga, _episodes(rng, 0.2, 40), np.random.default_rng(0))
    assert good.discrepancy < 0.1 and good.max_z < 4.5 and good.interval[1] < 0.2
    assert 0.9 < bad.discrepancy < 1.1 and bad.max_z > 20 and bad.interval[0] > 0.8
    assert good.interval[0] <= good.discrepancy <= good.interval[1]
    assert good.mirror_effect == pytest.approx(np.linalg.norm(ga.mean(0) - a.mean(0)))


def test_conjugate_policy_favours_a_direction_whatever_the_spec_swaps() -> None:
    """The favoured actions come from the env's action names, not from the spec: a spec that forgets the
    swap still gets a policy whose conjugate differs from it where the true symmetry acts."""
    names = ["NOOP", "FIRE", "RIGHT", "LEFT"]
    for tables in ([[0, 1, 2, 3], [0, 1, 3, 2]], [[0, 1, 2, 3], [0, 1, 2, 3]]):
        probs, favoured = conjugate_policy(4, names, tables, bias=0.6)
        assert favoured == [2]
        assert probs.sum() == pytest.approx(1) and probs[2] == pytest.approx(0.6)
    pong = ["NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE"]
    probs, favoured = conjugate_policy(6, pong, [list(range(6))], bias=0.6)
    assert favoured == [2, 4] and probs[[2, 4]].sum() == pytest.approx(0.6)


# -- the spec schema --------------------------------------------------------------------------------------


def test_shipped_atari_specs_declare_the_frames_check_and_round_trip() -> None:
    sym = parse_spec(_breakout())
    assert sym.verify == "statistical-frames" and sym.verify_region == ((32, 194), (8, 152))
    assert sym.verify_atol == 0.5 and "paddle" in sym.verify_reason
    assert parse_spec(sym.to_dict()).to_dict() == sym.to_dict()
    assert check_kind(sym) == "statistical (frames, atol 0.5)"
    pong = parse_spec(_pong())
    assert pong.obs_band == (34, 194, 210) and pong.verify_region == ((34, 194), (0, 160))
    again = parse_spec(pong.to_dict())
    assert again.to_dict() == pong.to_dict() and again.obs_band == pong.obs_band
    assert check_kind(pong) == "statistical (frames, atol 0.5)"


def _band(**gen: Any) -> Any:
    return lambda d: d["observation"].update(generators=[{"mirror": "top-bottom", **gen}])


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda d: d["verify"].update(method="none"), "statistical-frames only"),
        (lambda d: d["verify"]["region"].update(rows=[10, 5]), "0 <= start < stop"),
        (lambda d: d["observation"].update(type="signed_permutation"), "observation"),
        (_band(band=[34, 194]), "band [start, stop] and size"),
        (_band(size=210), "band [start, stop] and size"),
        (_band(band=[34, 250], size=210), "within the frame's size (210"),
        (_band(band=[94, 34], size=210), "0 <= start < stop"),
        (
            lambda d: d.update(group="C4") or _band(band=[34, 194], size=210)(d),
            "observation.generators[0].band: a band mirror generates a group of order 2",
        ),
        (lambda d: d["observation"].update(generators=[{"rotate": 2, "band": [0, 4], "size": 8}]), "mirror"),
        (
            lambda d: (
                d.update(group="D2")
                or d["observation"].update(
                    generators=[
                        {"mirror": "top-bottom", "band": [34, 194], "size": 210},
                        {"mirror": "left-right"},
                    ]
                )
            ),
            "band mirror",
        ),
    ],
)
def test_bad_frames_specs_are_one_line(edit: Any, words: str) -> None:
    data = copy.deepcopy(_breakout())
    edit(data)
    with pytest.raises(SymmetryError) as err:
        parse_spec(data)
    msg = str(err.value)
    assert "\n" not in msg and words in msg


# -- the real game ----------------------------------------------------------------------------------------


def _variant(name: str) -> dict[str, Any]:
    if name.startswith("pong-"):
        return _pong_variant(name)
    data = copy.deepcopy(_breakout())
    if name == "no-swap":  # frames mirrored, LEFT / RIGHT left alone
        data["actions"]["generators"] = [{"perm": [0, 1, 2, 3]}]
    elif name == "wrong-axis":  # top-bottom instead of left-right
        data["observation"]["generators"] = [{"mirror": "top-bottom"}]
    elif name == "wrong-pair":  # FIRE <-> LEFT instead of RIGHT <-> LEFT
        data["actions"]["generators"] = [{"swap_names": [["FIRE", "LEFT"]]}]
    return data


def _pong_variant(name: str) -> dict[str, Any]:
    data = copy.deepcopy(_pong())
    if name == "pong-whole-frame":  # the frame's centre, not the playfield's
        data["observation"]["generators"] = [{"mirror": "top-bottom"}]
    elif name == "pong-no-swap":
        data["actions"]["generators"] = [{"perm": list(range(6))}]
    elif name == "pong-half-swap":  # RIGHTFIRE / LEFTFIRE left alone
        data["actions"]["generators"] = [{"swap_names": [["RIGHT", "LEFT"]]}]
    return data


@needs_ale
def test_a_band_given_for_other_frames_is_one_line() -> None:
    data = _pong()
    data["observation"]["generators"][0]["size"] = 200
    msg = r"observation.generators\[0\].size is 200 pixels but the raw frames are 210x160"
    with pytest.raises(SymmetryError, match=msg):
        check_symmetry(parse_spec(data), steps=16, seed=0)
    from equirl.rl.envs import make_env

    env = make_env("ALE/Pong-v5")  # training checks the raw frames too (build_model's check_fits)
    try:
        with pytest.raises(SymmetryError, match=msg):
            parse_spec(data).check_fits(env.observation_space, env.action_space)
    finally:
        env.close()


@needs_ale
def test_a_region_outside_the_raw_frame_is_one_line() -> None:
    data = _breakout()
    data["verify"]["region"]["cols"] = [0, 500]
    with pytest.raises(SymmetryError, match=r"verify.region.cols \[0, 500\] does not fit the 210x160 frames"):
        check_symmetry(parse_spec(data), steps=16, seed=0)


@needs_ale
@pytest.mark.parametrize("env_id", ["ALE/Breakout-v5", pytest.param("ALE/Pong-v5", marks=pytest.mark.slow)])
def test_atari_specs_are_approximately_symmetric_on_real_frames(env_id: str) -> None:
    report = check_symmetry(parse_spec(_shipped(env_id)), steps=32, seed=0)
    assert report.verified and report.statistical and report.approximate and not report.exact
    assert report.max_error is not None and report.max_error < 0.5
    assert "approximately symmetric" in report.message and "paddle" in report.message


@needs_ale
@pytest.mark.parametrize(
    "variant",
    [
        "no-swap",
        "wrong-axis",
        pytest.param("wrong-pair", marks=pytest.mark.slow),
        "pong-whole-frame",
        pytest.param("pong-no-swap", marks=pytest.mark.slow),
        pytest.param("pong-half-swap", marks=pytest.mark.slow),
    ],
)
def test_wrong_atari_specs_are_broken_on_real_frames(variant: str) -> None:
    report = check_symmetry(parse_spec(_variant(variant)), steps=32, seed=0)
    assert not report.verified and report.statistical
    assert report.message.startswith("BROKEN") and report.max_error is not None and report.max_error > 0.5


@needs_ale
def test_training_env_skips_four_frames_as_the_zoo_does() -> None:
    """SB3's AtariWrapper skips 4 frames itself: an ALE v5 game under it is made with frameskip 1 (the
    zoo's 4 emulator frames per agent step, not 16), sticky actions kept."""
    from equirl.rl.envs import atari_env_kwargs, make_vec_env

    assert atari_env_kwargs("ALE/Breakout-v5") == {"frameskip": 1}
    assert atari_env_kwargs("BreakoutNoFrameskip-v4") == {}
    vec = make_vec_env("ALE/Breakout-v5", seed=0)
    try:
        game = vec.venv.envs[0].unwrapped
        assert game._frameskip == 1 and game.ale.getFloat("repeat_action_probability") == pytest.approx(0.25)
        assert vec.observation_space.shape == (84, 84, 4)
    finally:
        vec.close()


@needs_ale
def test_eval_env_of_a_pixel_model_is_wrapped_as_its_training_env() -> None:
    """SB3 transposes channel-last frames for its CNN policy; the periodic evaluation's env gets the same
    wrapper (else SB3's EvalCallback warns that the two envs differ), with the same observations."""
    import warnings

    from stable_baselines3 import DQN
    from stable_baselines3.common.callbacks import EvalCallback
    from stable_baselines3.common.vec_env import VecTransposeImage

    from equirl.rl.envs import make_vec_env
    from equirl.rl.evaluation import make_eval_env

    model = DQN("CnnPolicy", make_vec_env("ALE/Breakout-v5", seed=0), buffer_size=10, learning_starts=5)
    ev = make_eval_env(model, "ALE/Breakout-v5", seed=1)
    try:
        assert isinstance(model.get_env(), VecTransposeImage) and isinstance(ev, VecTransposeImage)
        assert ev.observation_space == model.observation_space
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            model.learn(8, callback=EvalCallback(ev, eval_freq=4, n_eval_episodes=1))
    finally:
        ev.close()
        model.get_env().close()
