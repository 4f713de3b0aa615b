"""Does a declared symmetry commute with the real dynamics?

For sampled states ``s`` and actions ``a`` the check compares ``step(g·s, g·a)`` with ``g·step(s, a)``:
the next observation, the reward and the termination flag, for every non-identity element ``g``.
It needs to *set* the env's state: either an attribute of ``env.unwrapped`` acted on by a signed
permutation (``verify: {method: state}``: CartPole, Acrobot, Pendulum), the ``[qpos, qvel]`` vector of a
MuJoCo env (``verify: {method: mujoco}``: InvertedPendulum, set with ``env.unwrapped.set_state``) or an
env that can be set from an observation (``verify: {method: obs}``: equirl's GridWorld). Continuous
(``Box``) actions are sampled uniformly from the action box and transformed by the spec's signed
permutation (the box is checked to be mapped onto itself).

Envs whose state cannot be set but whose observation action is a signed permutation (LunarLander) get a
*statistical* check instead (:func:`_check_statistical`): the symmetry must hold in distribution under a
uniformly random policy from the env's own (symmetric) reset distribution. Image envs (Atari) are
reported as "cannot verify exactly" (their spec is still checked against the env's spaces).

MinAtar games (``verify: {method: minatar}``) keep their whole state in plain attributes of the game
object, so their check is exact too (:func:`_check_minatar`): the game's state is mirrored by its entry of
:data:`MINATAR_MIRRORS` and both branches step under the same random draws (a spawn side drawn
symmetrically is reflected: a measure-preserving coupling, so the check stays exact).
"""

from __future__ import annotations

import copy
import itertools
import linecache
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from equirl.errors import EquirlError, SymmetryError
from equirl.rl.envs import action_meanings, make_env
from equirl.rl.spec import EXACT_ATOL, EnvSymmetry, load_spec
from equirl.utils.stats import welch_z

__all__ = [
    "MINATAR_MIRRORS",
    "MINATAR_NOT_MIRRORED",
    "ConjugationResult",
    "FrameCheckSettings",
    "MinAtarMirror",
    "SymmetryReport",
    "check_kind",
    "check_symmetry",
    "compare_conjugate",
    "conjugate_policy",
    "conjugation_check",
    "frame_statistics",
    "spec_frame_map",
]

log = logging.getLogger(__name__)


@dataclass
class SymmetryReport:
    """Result of :func:`check_symmetry`.

    :param env: the env id.
    :param max_error: the largest deviation over observations, rewards and terminations (``None`` when
        the check could not run).
    :param verified: ``max_error <= atol`` (the spec's declared tolerance unless one is given).
    :param exact: whether the env state could be set (an exact check).
    :param transitions: number of (s, a, g) triples compared.
    :param message: a one-line explanation.
    :param statistical: the check was statistical (``max_error`` is then the largest difference of
        conditional means, and ``verified`` means no z-score exceeded the bound).
    :param approximate: verified, but only within a tolerance above 1e-5 (a spec declaring its env
        approximately symmetric, or ``atol`` given).
    """

    env: str
    max_error: float | None
    verified: bool
    exact: bool
    transitions: int
    obs_error: float | None = None
    reward_error: float | None = None
    termination_mismatches: int = 0
    message: str = ""
    statistical: bool = False
    approximate: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _apply_obs(act: Any, x: np.ndarray, g: int) -> np.ndarray:
    import torch

    t = torch.from_numpy(np.ascontiguousarray(x))
    if t.is_floating_point():
        t = t.double()
    return act.apply(t, g).numpy()


def _random_start(env: Any, rng: np.random.Generator, seed: int, warmup: int) -> Any:
    """Reset ``env`` with ``seed`` and take 0..``warmup`` random actions (resetting at an episode's end):
    a state of the kind a policy meets, not only an initial one. Returns its observation."""
    obs, _ = env.reset(seed=seed)
    for _ in range(int(rng.integers(0, warmup + 1))):
        obs, _, term, trunc, _ = env.step(_sample_action(env, rng))
        if term or trunc:
            obs, _ = env.reset(seed=int(rng.integers(1 << 30)))
    return obs


def _sample_action(env: Any, rng: np.random.Generator) -> Any:
    """A uniformly random action: an index, or a point of the (bounded) action box."""
    space = env.action_space
    if hasattr(space, "n"):
        return int(rng.integers(space.n))
    return rng.uniform(space.low, space.high).astype(space.dtype)


def _act_action(act: Any, table: list[list[int]] | None, a: Any, g: int) -> Any:
    """``g·a``: a table look-up for discrete actions, the signed permutation for continuous ones."""
    if table is not None:
        return table[g][a]
    return _apply_obs(act, np.asarray(a, dtype=np.float64), g).astype(np.asarray(a).dtype)


_SETS = {"state": "sets state", "obs": "sets obs", "mujoco": "set_state", "minatar": "mirrors the game state"}


def _check_method(sym: EnvSymmetry) -> str:
    """``"exact"`` (the state can be set), ``"statistical"`` (a signed-permutation spec of an env whose
    state cannot be set), ``"frames"`` (conjugate policies on real frames: ``verify: {method:
    statistical-frames}``) or ``"spaces"`` (only the spaces can be checked): what :func:`check_symmetry`
    runs and :func:`check_kind` describes."""
    if sym.verify == "statistical-frames":
        return "frames"
    if sym.verify != "none":
        return "exact"
    return "statistical" if sym.obs_type == "signed_permutation" else "spaces"


def check_kind(spec: Any) -> str:
    """How :func:`check_symmetry` checks ``spec``, in words (``equirl envs``): ``exact (...)``,
    ``approximate (..., atol ...)`` for a spec declaring a tolerance, ``statistical``, ``statistical
    (frames)`` (``statistical (frames, atol ...)`` with a tolerance) or ``spaces only``."""
    sym: EnvSymmetry = load_spec(spec)
    method = _check_method(sym)
    if method == "frames":
        tol = f", atol {sym.verify_atol:g}" if sym.verify_atol > EXACT_ATOL else ""
        return f"statistical (frames{tol})"
    if method == "exact":
        how = _SETS[sym.verify]
        return (
            f"approximate ({how}, atol {sym.verify_atol:g})"
            if sym.verify_atol > EXACT_ATOL
            else f"exact ({how})"
        )
    return method if method == "statistical" else "spaces only"


def check_symmetry(
    spec: Any,
    steps: int = 200,
    seed: int = 0,
    atol: float | None = None,
    warmup: int = 20,
    progress: Callable[[int, int], None] | None = None,
) -> SymmetryReport:
    """Measure ``|step(g·s, g·a) - g·step(s, a)|`` on ``steps`` sampled states.

    :param spec: env id, spec path/mapping or :class:`~equirl.rl.spec.EnvSymmetry`.
    :param steps: number of sampled states (each compared under every non-identity element).
    :param seed: RNG seed.
    :param atol: tolerance for ``verified`` (default: the spec's ``verify.atol``, 1e-5 unless it declares
        the env only approximately symmetric).
    :param warmup: up to this many random steps before each sampled state (diverse states; MinAtar games:
        between consecutive sampled states of one long game).
    :param progress: called as ``progress(states done, steps)`` after each sampled state.
    :raises EquirlError: one line when the spec is invalid or its env cannot be made here (unknown to
        gymnasium, a missing optional dependency, an id that would import a module).
    """
    sym: EnvSymmetry = load_spec(spec)
    env = make_env(sym.env_id)  # an env that cannot be made here is an error (exit 2), not a report
    try:
        sym.check_fits(env.observation_space, env.action_space, action_meanings(env))
        method = _check_method(sym)
        if method == "statistical":
            return _check_statistical(sym, env, steps, seed, warmup, progress=progress)
        if method == "frames":
            return _check_frames(sym, env, steps, seed, sym.verify_atol if atol is None else atol, progress)
        if sym.verify == "minatar":
            return _check_minatar(sym, env, steps, seed, warmup, progress)
        if method == "spaces":
            return SymmetryReport(
                sym.env_id,
                None,
                False,
                False,
                0,
                message="cannot verify exactly: the env's state cannot be set (spec checked against its spaces only)",
            )
        return _check_exact(
            sym, env, steps, seed, sym.verify_atol if atol is None else atol, warmup, progress
        )
    finally:
        env.close()


def _check_exact(
    sym: EnvSymmetry,
    env: Any,
    steps: int,
    seed: int,
    atol: float,
    warmup: int,
    progress: Callable[[int, int], None] | None = None,
) -> SymmetryReport:
    rng = np.random.default_rng(seed)
    obs_act = sym.obs_action()
    table = None if sym.continuous else sym.action_table()
    act_act = sym.action_action()
    G = sym.group.order
    state_act = sym.state_action() if sym.verify in ("state", "mujoco") else None
    base = env.unwrapped
    obs_err = rew_err = 0.0
    term_bad = 0
    n = 0
    env.reset(seed=seed)
    if sym.verify == "state":
        _check_state_attribute(sym, base)
    for i in range(steps):
        obs = _random_start(env, rng, int(seed * 100003 + i), warmup)
        snapshot = _get_state(sym, base, obs)
        a = _sample_action(env, rng)
        _set_state(sym, base, snapshot)
        o1, r1, t1, _, _ = base.step(a)
        for g in range(1, G):
            _set_state(sym, base, _act_state(sym, state_act, obs_act, snapshot, g))
            o2, r2, t2, _, _ = base.step(_act_action(act_act, table, a, g))
            diff = np.abs(
                np.asarray(o2, dtype=np.float64) - _apply_obs(obs_act, np.asarray(o1), g).astype(np.float64)
            )
            obs_err = max(obs_err, float(diff.max()) if diff.size else 0.0)
            rew_err = max(rew_err, abs(float(r2) - float(r1)))
            term_bad += int(bool(t1) != bool(t2))
            n += 1
        if progress is not None:
            progress(i + 1, steps)
    max_err = max(obs_err, rew_err, float(term_bad))
    ok = max(obs_err, rew_err) <= atol and term_bad == 0  # a tolerance never excuses a termination mismatch
    approximate = ok and max_err > EXACT_ATOL
    msg = (
        f"approximately symmetric: max error {max_err:.2e} <= {atol:g} over {n} transitions; "
        f"{sym.verify_reason or 'within the tolerance asked for'}"
        if approximate
        else f"verified: max error {max_err:.2e} <= {atol:g} over {n} transitions"
        if ok
        else f"BROKEN: the spec does not commute with the dynamics (obs error {obs_err:.3g}, reward error "
        f"{rew_err:.3g}, {term_bad} termination mismatches over {n} transitions)"
    )
    return SymmetryReport(
        sym.env_id, max_err, ok, True, n, obs_err, rew_err, term_bad, msg, approximate=approximate
    )


def _check_state_attribute(sym: EnvSymmetry, base: Any) -> None:
    """One line when ``verify.attribute`` is not a numeric state vector of ``env.unwrapped`` of the size the
    spec's state generators act on (a misspelt attribute would otherwise end in a traceback)."""
    name = sym.state_attribute
    where = f"symmetry spec {sym.env_id} ({sym.source or 'given'})"
    if not hasattr(base, name):
        public = sorted(
            k
            for k, v in getattr(base, "__dict__", {}).items()
            if not k.startswith("_") and isinstance(v, (np.ndarray, list, tuple))
        )
        hint = f" (its array attributes: {', '.join(public)})" if public else ""
        raise SymmetryError(f"{where}: verify.attribute {name!r} is not an attribute of {sym.env_id}{hint}")
    try:
        value = np.asarray(getattr(base, name), dtype=np.float64)
    except (TypeError, ValueError):
        raise SymmetryError(
            f"{where}: verify.attribute {name!r} of {sym.env_id} is not a numeric state vector"
        ) from None
    n = len(sym.state_generators[0][0]) if sym.state_generators else 0
    if value.ndim != 1 or value.shape[0] != n:
        raise SymmetryError(
            f"{where}: verify.attribute {name!r} of {sym.env_id} has shape {tuple(value.shape)} but "
            f"verify.generators act on {n} values"
        )


def _get_state(sym: EnvSymmetry, base: Any, obs: Any) -> Any:
    if sym.verify == "state":
        return np.array(getattr(base, sym.state_attribute), dtype=np.float64, copy=True)
    if sym.verify == "mujoco":
        return np.concatenate([base.data.qpos, base.data.qvel]).astype(np.float64)
    return (np.array(obs, copy=True), int(getattr(base, "steps", 0)))


def _act_state(sym: EnvSymmetry, state_act: Any, obs_act: Any, snapshot: Any, g: int) -> Any:
    if sym.verify in ("state", "mujoco"):
        return _apply_obs(state_act, snapshot, g)
    obs, steps = snapshot
    return (_apply_obs(obs_act, obs, g), steps)


def _set_state(sym: EnvSymmetry, base: Any, state: Any) -> None:
    if sym.verify == "state":
        setattr(base, sym.state_attribute, copy.deepcopy(state))
        if hasattr(base, "steps_beyond_terminated"):
            base.steps_beyond_terminated = None
        return
    if sym.verify == "mujoco":
        nq = int(base.model.nq)
        if state.shape != (nq + int(base.model.nv),):
            raise EquirlError(
                f"{sym.env_id}: the state action acts on {state.shape[0]} values but [qpos, qvel] has "
                f"{nq + int(base.model.nv)}"
            )
        # the solver's warm start depends on the history: start both transitions from zero
        base.data.qacc_warmstart[:] = 0.0
        base.set_state(state[:nq].copy(), state[nq:].copy())
        return
    setter = getattr(base, "set_state_from_obs", None)
    if setter is None:
        raise EquirlError(f"{sym.env_id}: verify method 'obs' needs env.unwrapped.set_state_from_obs(obs)")
    obs, steps = state
    setter(obs, steps)


def _check_statistical(
    sym: EnvSymmetry,
    env: Any,
    steps: int,
    seed: int,
    warmup: int,
    z_bound: float = 4.5,
    progress: Callable[[int, int], None] | None = None,
) -> SymmetryReport:
    """A symmetry *in distribution* for envs whose state cannot be set (LunarLander: random terrain and
    random engine dispersion, so no exact mirror of a transition exists).

    From ``steps`` states reached by a uniformly random policy (reset seeds, then up to ``warmup``
    random steps) one uniformly random action ``a`` is taken, giving ``Δ = s' - s`` and ``r``. If the spec is
    right, ``(g·s, g·a, g·Δ, r)`` has the same distribution as ``(s, a, Δ, r)`` (a symmetric reset
    distribution and a uniform policy are invariant), so for every action ``a`` and element ``g`` the
    mean of ``(g·s, g·Δ, r)`` over samples with action ``a`` must match the mean of ``(s, Δ, r)`` over samples
    with action ``g·a``. Each coordinate is compared with a two-sample z-score; ``verified`` means all
    ``|z| <= z_bound`` (about 1 false alarm in 10^4 checks of ~100 coordinates).
    """
    rng = np.random.default_rng(seed)
    obs_act = sym.obs_action()
    act_act = sym.action_action()
    cont = sym.continuous
    k = sym.n_actions
    # continuous actions are grouped by their orthant (the signs of their coordinates): a signed
    # permutation maps orthants onto orthants, so the orthants play the role of discrete actions
    table = _orthant_table(act_act, k) if cont else sym.action_table()
    n_act = 2**k if cont else k
    feats: list[np.ndarray] = []
    acts: list[int] = []
    for i in range(steps):
        obs = _random_start(env, rng, int(seed * 100003 + i), warmup)
        a = _sample_action(env, rng)
        nxt, r, _, _, _ = env.step(a)
        s0 = np.asarray(obs, dtype=np.float64)
        extra = [np.asarray(a, dtype=np.float64)] if cont else []
        feats.append(np.concatenate([s0, np.asarray(nxt, dtype=np.float64) - s0, [float(r)], *extra]))
        acts.append(_orthant(np.asarray(a)) if cont else int(a))
        if progress is not None:
            progress(i + 1, steps)
    X = np.stack(feats)
    act_arr = np.asarray(acts)
    d = (X.shape[1] - 1 - (k if cont else 0)) // 2

    def act_rows(g: int, rows: np.ndarray) -> np.ndarray:
        out = rows.copy()
        out[:, :d] = _apply_obs(obs_act, rows[:, :d], g)
        out[:, d : 2 * d] = _apply_obs(obs_act, rows[:, d : 2 * d], g)
        if cont:
            out[:, 2 * d + 1 :] = _apply_obs(act_act, rows[:, 2 * d + 1 :], g)
        return out

    max_diff = max_z = 0.0
    for g in range(1, sym.group.order):
        for a in range(n_act):
            left, right = act_rows(g, X[act_arr == a]), X[act_arr == table[g][a]]
            if len(left) < 2 or len(right) < 2:
                continue
            diff, z = welch_z(left, right, zero_tol=1e-9)
            max_diff = max(max_diff, float(np.abs(diff).max()))
            max_z = max(max_z, float(np.abs(z).max()))
    ok = max_z <= z_bound
    msg = (
        f"statistically consistent (not exact: the state cannot be set): max |z| {max_z:.2f} <= {z_bound} "
        f"over {steps} random transitions (largest mean difference {max_diff:.3g})"
        if ok
        else f"BROKEN (statistical): max |z| {max_z:.2f} > {z_bound} over {steps} random transitions "
        f"(largest mean difference {max_diff:.3g}): the spec does not match the dynamics in distribution"
    )
    return SymmetryReport(sym.env_id, max_diff, ok, False, steps, message=msg, statistical=True)


def _orthant(a: np.ndarray) -> int:
    """The orthant of an action vector as an index (bit ``i`` set where ``a[i] > 0``)."""
    return int(sum(1 << i for i, v in enumerate(np.ravel(a)) if v > 0))


def _orthant_table(act: Any, k: int) -> list[list[int]]:
    """``table[g][c]``: the orthant that ``g`` maps orthant ``c`` of a ``k``-dim action to."""
    table = []
    for g in range(act.group.order):
        row = []
        for c in range(2**k):
            rep = np.array([1.0 if c >> i & 1 else -1.0 for i in range(k)])
            row.append(_orthant(_apply_obs(act, rep, g)))
        table.append(row)
    return table


# -- image envs whose state cannot be set (Atari): conjugate policies on real frames ----------------------

#: ALE's direction words: the asymmetric policy favours the actions naming the first one found (action
#: names scanned in order, each name for these words in this order)
_DIRECTIONS = ("RIGHT", "LEFT", "UP", "DOWN")


@dataclass(frozen=True)
class FrameCheckSettings:
    """How the ``statistical-frames`` check plays and compares (see :func:`conjugation_check`).

    :param bias: the probability the asymmetric policy π puts on its favoured actions (the rest is spread
        evenly over the other actions).
    :param horizon: env steps per episode (an episode is cut there; most Atari games last longer).
    :param burn_in: the first frames of each episode left out of the statistics (the reset, which need not
        be mirror-invariant: Breakout's paddle starts right of centre).
    :param bands: the compared region is cut into this many horizontal and this many vertical bands; each
        gives a column (horizontal band) or row (vertical band) centroid.
    :param z_bound: the largest ``|z|`` of a statistic that is not a detected asymmetry (LunarLander's
        bound: about 1 false alarm in 10^4 checks of ~10 statistics).
    :param resamples: bootstrap resamples of the relative discrepancy's interval.
    :param level: the two-sided level of that interval.
    """

    bias: float = 0.6
    horizon: int = 100
    burn_in: int = 16
    bands: int = 4
    z_bound: float = 4.5
    resamples: int = 400
    level: float = 0.99


@dataclass(frozen=True)
class ConjugationResult:
    """One group element's comparison of the conjugate policy's frames with the mirrored frames
    (:func:`compare_conjugate`).

    :param z: per statistic, the Welch z-score of ``mean(B) - mean(g·A)`` (``B``: the episodes of π^g,
        ``g·A``: those of π, mirrored).
    :param diff: per statistic, ``mean(B) - mean(g·A)`` (a fraction of the region's height or width).
    :param discrepancy: ``|mean(B) - mean(g·A)| / |mean(g·A) - mean(A)|`` (Euclidean norms over the
        statistics): 0 when acting with π^g gives what mirroring π's frames gives, about 1 when π^g's frames
        look like π's unmirrored ones (a wrong action map) or unlike either (a wrong frame map).
    :param interval: the bootstrap interval of ``discrepancy`` (episodes resampled within each policy).
    :param mirror_effect: ``|mean(g·A) - mean(A)|``, how far the mirror moves π's statistics.
    """

    z: np.ndarray
    diff: np.ndarray
    discrepancy: float
    interval: tuple[float, float]
    mirror_effect: float

    @property
    def max_z(self) -> float:
        return float(np.max(np.abs(self.z))) if self.z.size else 0.0


def conjugate_policy(
    n_actions: int, meanings: Sequence[str] | None, tables: Sequence[Sequence[int]], bias: float = 0.6
) -> tuple[np.ndarray, list[int]]:
    """The asymmetric, observation-independent policy π: probability ``bias`` spread over its favoured
    actions, the rest spread evenly over the others.

    The favoured actions do not depend on the spec's action map (a spec that forgets a swap would otherwise
    get a policy its map leaves alone): they are the actions whose name contains the first direction word
    (:data:`_DIRECTIONS`) found in the env's action names (ALE Breakout: ``RIGHT``; Pong: ``RIGHT`` and
    ``RIGHTFIRE``). Without action names: the first action the spec moves, else the last action.

    :param n_actions: the number of discrete actions.
    :param meanings: the env's action names (ALE's ``get_action_meanings()``), or ``None``.
    :param tables: ``tables[g][a]`` = the spec's ``g·a`` (its :meth:`~equirl.rl.spec.EnvSymmetry.action_table`).
    :param bias: the favoured actions' total probability.
    :returns: the probabilities and the favoured action indices.
    """
    favoured: list[int] = []
    for name in meanings or ():
        word = next((w for w in _DIRECTIONS if w in name.upper()), None)
        if word is not None:
            favoured = [i for i, m in enumerate(meanings or ()) if word in m.upper()]
            break
    if not favoured:
        moved = [a for a in range(n_actions) if any(t[a] != a for t in tables)]
        favoured = [moved[0] if moved else n_actions - 1]
    if len(favoured) == n_actions:
        favoured = favoured[:1]
    probs = np.full(n_actions, (1.0 - bias) / max(n_actions - len(favoured), 1))
    probs[favoured] = bias / len(favoured)
    return probs / probs.sum(), favoured


def _grey(obs: np.ndarray, layout: str) -> np.ndarray:
    """The frame's intensity (channels summed, int16) as ``(H, W)``: HWC frames sum their last axis, CHW
    frames their first; leading axes (stacked frames) are summed too."""
    x = np.asarray(obs)
    h_axis = x.ndim - 2 if layout == "CHW" else x.ndim - 3
    other = tuple(i for i in range(x.ndim) if i not in (h_axis, h_axis + 1))
    return x.astype(np.int16).sum(axis=other, dtype=np.int16) if other else x.astype(np.int16)


def spec_frame_map(sym: EnvSymmetry) -> Callable[[np.ndarray, int], np.ndarray]:
    """``frame_map(frames, g)``: the spec's own image action of ``g`` (the one the policy is symmetrized
    with) on ``(T, H, W)`` intensities."""
    import torch

    act = sym.obs_action(image_dims=(-2, -1))

    def frame_map(frames: np.ndarray, g: int) -> np.ndarray:
        return act.apply(torch.from_numpy(np.ascontiguousarray(frames)), g).numpy()

    return frame_map


def frame_statistics(
    frames: np.ndarray,
    region: tuple[tuple[int, int] | None, tuple[int, int] | None] | None = None,
    bands: int = 4,
    burn_in: int = 0,
) -> np.ndarray:
    """Per-episode position statistics of a sequence of frames.

    Within ``region`` of each frame (``(rows, cols)`` half-open pixel ranges; ``None``: all) the weight of a
    pixel is its distance to the region's background intensity (the episode's most common value: black in
    Breakout, Pong's brown), so what is drawn counts and the background does not. The statistics, each a
    fraction of the region's width or height, averaged over the frames after ``burn_in`` (a frame without
    weight where a statistic looks is skipped):

    * the column and the row centroid of the region;
    * the column centroid of each of ``bands`` horizontal bands (where the paddle of a game is, in its band);
    * the row centroid of each of ``bands`` vertical bands.

    :param frames: ``(T, H, W)`` intensities (one episode).
    :param region: the compared pixels.
    :param bands: bands per direction.
    :param burn_in: frames left out at the start.
    :returns: ``2 + 2 * bands`` values (``nan`` where a statistic never had weight).
    """
    x = np.asarray(frames)[burn_in:]
    rows, cols = region if region is not None else (None, None)
    if rows is not None:
        x = x[:, rows[0] : rows[1]]
    if cols is not None:
        x = x[:, :, cols[0] : cols[1]]
    n_stats = 2 + 2 * bands
    if x.shape[0] == 0 or x.shape[1] < 2 or x.shape[2] < 2:
        return np.full(n_stats, np.nan)
    values = np.ascontiguousarray(x).astype(np.int32)
    lo = int(values.min())
    background = int(np.bincount((values - lo).ravel()).argmax()) + lo
    weight = np.abs(values - background).astype(np.float64)  # (T, H, W)
    _, h, w = weight.shape
    xs, ys = np.arange(w) / (w - 1), np.arange(h) / (h - 1)

    def centroid(mass: np.ndarray, coords: np.ndarray) -> float:
        total = mass.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_frame = (mass @ coords) / total
        per_frame = per_frame[total > 0]
        return float(per_frame.mean()) if per_frame.size else float("nan")

    out = [centroid(weight.sum(axis=1), xs), centroid(weight.sum(axis=2), ys)]
    row_cuts = np.linspace(0, h, bands + 1).round().astype(int)
    col_cuts = np.linspace(0, w, bands + 1).round().astype(int)
    out += [centroid(weight[:, a:b].sum(axis=1), xs) for a, b in itertools.pairwise(row_cuts)]
    out += [centroid(weight[:, :, a:b].sum(axis=2), ys) for a, b in itertools.pairwise(col_cuts)]
    return np.asarray(out)


def _discrepancy(a: np.ndarray, ga: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """``(|mean(b) - mean(ga)| / |mean(ga) - mean(a)|, |mean(ga) - mean(a)|)`` over the last axis (the
    leading axes, if any, are bootstrap resamples: then arrays)."""
    delta = np.linalg.norm(b.mean(-2) - ga.mean(-2), axis=-1)
    effect = np.linalg.norm(ga.mean(-2) - a.mean(-2), axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(
            effect > 1e-12, delta / np.maximum(effect, 1e-300), np.where(delta > 1e-12, np.inf, 0.0)
        )
    return ratio, effect  # type: ignore[return-value]


def compare_conjugate(
    a: np.ndarray,
    ga: np.ndarray,
    b: np.ndarray,
    rng: np.random.Generator,
    resamples: int = 400,
    level: float = 0.99,
) -> ConjugationResult:
    """Compare the episodes ``b`` of π^g with the mirrored episodes ``ga`` of π (:class:`ConjugationResult`).

    :param a: ``(n, k)`` statistics of π's episodes.
    :param ga: ``(n, k)`` the same episodes' statistics after the spec's frame map ``g`` (paired with ``a``).
    :param b: ``(m, k)`` statistics of π^g's episodes.
    :param rng: the bootstrap's generator (seeded: the result is deterministic).
    :param resamples: bootstrap resamples.
    :param level: the interval's two-sided level.
    """
    a, ga, b = (np.asarray(v, dtype=np.float64) for v in (a, ga, b))
    # a statistic that never had weight in some episode (an empty band) is left out
    keep = np.isfinite(a).all(0) & np.isfinite(ga).all(0) & np.isfinite(b).all(0)
    a, ga, b = a[:, keep], ga[:, keep], b[:, keep]
    if a.shape[1] == 0 or len(a) < 2 or len(b) < 2:
        raise EquirlError("statistical-frames: no statistic had weight in every episode (an empty region?)")
    diff, z = welch_z(b, ga)
    ratio, effect = _discrepancy(a, ga, b)
    ia = rng.integers(len(a), size=(resamples, len(a)))
    ib = rng.integers(len(b), size=(resamples, len(b)))
    boot, _ = _discrepancy(a[ia], ga[ia], b[ib])
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(boot, [tail, 100 - tail])
    return ConjugationResult(z, diff, float(ratio), (float(lo), float(hi)), float(effect))


def _play_episode(
    env: Any, probs: np.ndarray, horizon: int, rng: np.random.Generator, layout: str
) -> np.ndarray:
    """One episode of the observation-independent policy ``probs`` (cut after ``horizon`` steps): its
    frames' intensities ``(T + 1, H, W)``, the reset frame first."""
    obs, _ = env.reset(seed=int(rng.integers(1 << 31)))
    actions = rng.choice(len(probs), size=horizon, p=probs)
    frames = [_grey(obs, layout)]
    for a in actions:
        obs, _, term, trunc, _ = env.step(int(a))
        frames.append(_grey(obs, layout))
        if term or trunc:
            break
    return np.stack(frames)


def conjugation_check(
    sym: EnvSymmetry,
    env: Any,
    episodes: int,
    seed: int,
    settings: FrameCheckSettings = FrameCheckSettings(),
    frame_map: Callable[[np.ndarray, int], np.ndarray] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[int, ConjugationResult], int]:
    """Play π and each conjugate π^g (:func:`conjugate_policy`) on the real env and compare, for every
    non-identity element ``g``, π^g's frames with π's frames mirrored by ``g`` (:func:`compare_conjugate`).

    If the spec is a symmetry of the game (frames, dynamics, start), the trajectories of π^g are
    distributed as the ``g``-images of π's trajectories, so every statistic of
    :func:`frame_statistics` has the same law under both.

    :param sym: the spec (an image spec with discrete actions).
    :param env: the env (``make_env(sym.env_id)``: the frames the spec acts on, the env's own frame skip
        and sticky actions).
    :param episodes: episodes per policy.
    :param seed: the seed of every draw (resets, actions, bootstrap).
    :param settings: :class:`FrameCheckSettings`.
    :param frame_map: ``frame_map(frames, g)``: ``g`` acting on ``(T, H, W)`` intensities (default: the
        spec's image transform of ``g``).
    :param progress: called as ``progress(episodes played, episodes in all)``.
    :returns: the result per element and the number of env steps played.
    """
    tables = sym.action_table()
    order = sym.group.order
    sym.check_region(env.observation_space.shape)
    probs, _ = conjugate_policy(sym.n_actions, action_meanings(env), tables, settings.bias)
    if frame_map is None:
        frame_map = spec_frame_map(sym)

    def stats(frames: np.ndarray) -> np.ndarray:
        return frame_statistics(frames, sym.verify_region, settings.bands, settings.burn_in)

    total = episodes * order
    done = steps = 0
    rng = np.random.default_rng([seed, 0])
    a_stats: dict[int, list[np.ndarray]] = {g: [] for g in range(order)}
    for _ in range(episodes):  # π: its statistics under every element (0: unmirrored)
        frames = _play_episode(env, probs, settings.horizon, rng, sym.layout)
        steps += len(frames) - 1
        for g in range(order):
            a_stats[g].append(stats(frame_map(frames, g) if g else frames))
        done += 1
        if progress is not None:
            progress(done, total)
    results: dict[int, ConjugationResult] = {}
    for g in range(1, order):
        conj = np.empty_like(probs)
        conj[np.asarray(tables[g])] = probs  # π^g(g·a) = π(a)
        rng_g = np.random.default_rng([seed, g])
        b_stats = []
        for _ in range(episodes):
            frames = _play_episode(env, conj, settings.horizon, rng_g, sym.layout)
            steps += len(frames) - 1
            b_stats.append(stats(frames))
            done += 1
            if progress is not None:
                progress(done, total)
        results[g] = compare_conjugate(
            np.stack(a_stats[0]),
            np.stack(a_stats[g]),
            np.stack(b_stats),
            np.random.default_rng([seed, order + g]),
            settings.resamples,
            settings.level,
        )
    return results, steps


def _check_frames(
    sym: EnvSymmetry,
    env: Any,
    steps: int,
    seed: int,
    atol: float,
    progress: Callable[[int, int], None] | None = None,
    settings: FrameCheckSettings = FrameCheckSettings(),
) -> SymmetryReport:
    """``verify: {method: statistical-frames}``: :func:`conjugation_check` with ``steps`` episodes in all
    (split evenly over π and its conjugates, at least 8 each), then the verdict.

    No statistic with ``|z| > z_bound``: statistically consistent. Otherwise, when the spec declares the env
    only approximately symmetric (``verify.atol``, or ``atol`` given), it is verified as approximately
    symmetric when every element's discrepancy interval lies within ``atol`` (its upper end); else BROKEN.
    """
    order = sym.group.order
    episodes = max(8, steps // order)
    results, played = conjugation_check(sym, env, episodes, seed, settings, progress=progress)
    max_z = max(r.max_z for r in results.values())
    worst = max(results.values(), key=lambda r: r.discrepancy)
    max_diff = max(float(np.max(np.abs(r.diff))) for r in results.values())
    tolerant = atol > EXACT_ATOL
    consistent = max_z <= settings.z_bound
    within = all(r.interval[1] <= atol for r in results.values())
    ok = consistent or (tolerant and within)
    approximate = ok and not consistent
    lo, hi = worst.interval
    what = (
        f"{episodes} episodes of an asymmetric policy and {episodes * (order - 1)} of its conjugate(s), "
        f"{played} frames"
    )
    rel = f"relative discrepancy {worst.discrepancy:.3f} [{lo:.3f}, {hi:.3f}]"
    if consistent:
        msg = (
            f"statistically consistent (not exact: the state cannot be set): max |z| {max_z:.2f} <= "
            f"{settings.z_bound} over {what} ({rel})"
        )
    elif approximate:
        msg = (
            f"approximately symmetric (statistical): {rel} <= {atol:g}, max |z| {max_z:.1f} over {what}; "
            f"{sym.verify_reason or 'within the tolerance asked for'}"
        )
    else:
        bound = f" (not within {atol:g})" if tolerant else ""
        msg = (
            f"BROKEN (statistical): the conjugate policy's frames are not the mirrored frames: {rel}{bound}, "
            f"max |z| {max_z:.1f} > {settings.z_bound} over {what}"
        )
    log.debug(
        "statistical-frames %s: %s", sym.env_id, {g: (r.discrepancy, r.max_z) for g, r in results.items()}
    )
    return SymmetryReport(
        sym.env_id,
        worst.discrepancy,
        ok,
        False,
        played,
        obs_error=max_diff,
        message=msg,
        statistical=True,
        approximate=approximate,
    )


# -- MinAtar: the game's own state, mirrored --------------------------------------------------------------


@dataclass(frozen=True)
class MinAtarMirror:
    """How ``check-symmetry`` mirrors a MinAtar game's state left-right (an entry of
    :data:`MINATAR_MIRRORS`).

    :param mirror: mirrors the game object (``minatar.environments.<game>.Env``) in place: every column
        ``x ↦ 9 - x``, every left / right direction swapped.
    :param reflect: source lines of the game (stripped, matched as prefixes) whose ``random.rand()`` draws
        the mirrored branch reflects, ``u ↦ 1 - 2^-53 - u``: a bijection of ``rand()``'s 2^53 equally
        likely values, so the mirrored branch still draws from the game's own law (a measure-preserving
        coupling). Only a draw whose rule is mirror-symmetric (a side chosen with probability 1/2) then
        gives mirrored outcomes: an asymmetric rule (``rand() < 0.3``) is reported broken.
    :param explore: a behaviour policy (the game object to an index of MinAtar's full action set
        ``n l u r d f``) reaching deeper states than random play; followed 9 steps in 10 between sampled
        states, never for the compared transitions (those take every action).
    :param start: why the game's start state is not mirror-invariant (said in the report when it is not).
    """

    mirror: Callable[[Any], None]
    reflect: tuple[str, ...] = ()
    explore: Callable[[Any], int] | None = None
    start: str = ""


#: MinAtar's full action set ``n l u r d f`` (``Env.action_map``) under the left-right mirror: l <-> r
_MINATAR_MIRROR_ACTION = (0, 3, 2, 1, 4, 5)
#: ``random.rand()`` returns ``k / 2^53`` for ``k`` uniform in ``0 .. 2^53 - 1``
_TWO53 = float(1 << 53)


def _mirror_breakout(game: Any) -> None:
    """Breakout: the ball, its trail and the paddle at column ``9 - x``; the ball's diagonal direction
    (0 up-left, 1 up-right, 2 down-right, 3 down-left) mirrored; the brick map flipped."""
    game.ball_x, game.last_x, game.pos = 9 - game.ball_x, 9 - game.last_x, 9 - game.pos
    game.ball_dir = (1, 0, 3, 2)[game.ball_dir]
    game.brick_map = game.brick_map[:, ::-1].copy()


def _explore_breakout(game: Any) -> int:
    """Move the paddle to where the ball next reaches row 8 going down (a copy of the game played with
    NOOP, no paddle): long rallies, so walls get cleared and refilled."""
    sim = copy.copy(game)  # Breakout draws no random numbers after its reset: the generator may be shared
    sim.brick_map = game.brick_map.copy()
    sim.pos = -9  # off the board: the copy's ball never bounces off it
    for _ in range(64):
        if sim.terminal or (sim.ball_y == 8 and sim.ball_dir in (2, 3)):
            break
        sim.act(0)
    target = sim.ball_x
    return 0 if target == game.pos else (1 if target < game.pos else 3)


def _mirror_asterix(game: Any) -> None:
    """Asterix: the player at column ``9 - x``; each enemy / treasure ``[x, row, moving_right, is_gold]``
    at column ``9 - x``, moving the other way (its row is its slot: unchanged)."""
    game.player_x = 9 - game.player_x
    game.entities = [None if e is None else [9 - e[0], e[1], not e[2], e[3]] for e in game.entities]


#: The one table of MinAtar games with an exact left-right mirror: the game's name (``Environment.env_name``)
#: to its state mirror. The grid is 10 columns wide, so no start is centred: the mirrored start state is
#: never a start state, which an MDP symmetry (transitions and rewards) does not need.
MINATAR_MIRRORS: dict[str, MinAtarMirror] = {
    "breakout": MinAtarMirror(
        _mirror_breakout,
        explore=_explore_breakout,
        start="the paddle starts at column 4 of 0-9, the ball at column 0 or 9 with probability 1/2 each",
    ),
    "asterix": MinAtarMirror(
        _mirror_asterix,
        # the spawn side: column 0 moving right or column 9 moving left, each with probability 1/2
        reflect=("lr = self.random.rand()",),
        start="the player starts at column 5 of 0-9",
    ),
}

#: MinAtar games without a left-right mirror of their frames, and why (read from the games' rules)
MINATAR_NOT_MIRRORED: dict[str, str] = {
    "seaquest": "the oxygen gauge is drawn from the left (row 9, columns 0..) and the diver gauge from the "
    "right (columns ..8) of the bottom row: a mirrored frame is never a frame (the rest of the game, spawn "
    "side included, is mirror-symmetric)",
    "space_invaders": "the alien that shoots is the nearest to the cannon with ties broken towards the left "
    "column (a stable sort by distance), and the aliens' direction is drawn in two channels (left, right) "
    "that a frame mirror does not swap",
    "freeway": "the chicken crosses at the fixed column 4 (x = 9 - x would move it to column 5); the road "
    "wraps around, so its only mirror is x = 8 - x (mod 10), a reflection plus a shift that no frame mirror "
    "is, and the three actions (NOOP, UP, DOWN) have no left or right",
}


class _ReflectedDraws:
    """The mirrored branch's ``numpy.random.RandomState``: the same draws as the original branch, with the
    ``rand()`` draws of the lines in ``lines`` reflected (``k ↦ 2^53 - 1 - k``, exact in floating point)."""

    def __init__(self, rs: np.random.RandomState, lines: Sequence[str]) -> None:
        self.rs = rs
        self.lines = tuple(lines)
        self.hits = 0

    def rand(self, *size: int) -> Any:
        u = self.rs.rand(*size)
        if self.lines:
            caller = sys._getframe(1)
            line = linecache.getline(caller.f_code.co_filename, caller.f_lineno).strip()
            if line.startswith(self.lines):
                self.hits += 1
                return (_TWO53 - 1.0 - u * _TWO53) / _TWO53
        return u

    def __getattr__(self, name: str) -> Any:  # randint, ...: the same draws
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.rs, name)


def _minatar_entry(sym: EnvSymmetry, base: Any) -> tuple[str, MinAtarMirror]:
    """The game's name and its mirror (one line when the env is not a MinAtar game or has no mirror)."""
    where = f"symmetry spec {sym.env_id} ({sym.source or 'given'})"
    name = getattr(getattr(base, "game", None), "env_name", None)
    if not isinstance(name, str) or not hasattr(base.game, "env"):
        raise SymmetryError(f"{where}: verify method minatar needs a MinAtar env (MinAtar/<Game>-v1)")
    if sym.group.order != 2:
        raise SymmetryError(
            f"{where}: verify method minatar checks the left-right mirror: the group must have 2 elements "
            f"(flip), {sym.group.name} has {sym.group.order}"
        )
    if name in MINATAR_NOT_MIRRORED:
        raise SymmetryError(f"{where}: MinAtar {name} has no left-right mirror: {MINATAR_NOT_MIRRORED[name]}")
    if name not in MINATAR_MIRRORS:
        raise SymmetryError(
            f"{where}: no state mirror for MinAtar {name} (known: {', '.join(sorted(MINATAR_MIRRORS))})"
        )
    return name, MINATAR_MIRRORS[name]


def _mirrored_game(game: Any, entry: MinAtarMirror, couple: bool) -> Any:
    """A mirrored deep copy of ``game`` (MinAtar's ``Environment``: the game, its sticky last action and
    its random state), drawing through :class:`_ReflectedDraws` when ``couple``."""
    out = copy.deepcopy(game)
    entry.mirror(out.env)
    out.last_action = _MINATAR_MIRROR_ACTION[out.last_action]
    if couple:
        proxy = _ReflectedDraws(out.random, entry.reflect)
        if out.env.random is out.random:
            out.env.random = proxy
        else:  # an env reset without a seed keeps two generators
            out.env.random = _ReflectedDraws(out.env.random, entry.reflect)
        out.random = proxy
    return out


def _same(a: Any, b: Any) -> bool:
    """Exact equality of plain game state (numbers, arrays, lists, ``None``)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(a == b)


def _rs_state(rs: Any) -> Any:
    return (rs.rs if isinstance(rs, _ReflectedDraws) else rs).get_state()


def _same_game(expected: Any, got: Any) -> bool:
    """Whether two MinAtar ``Environment``s hold the same state: every attribute of the game but its random
    generator, the sticky last action, and the generators' positions (both branches drew alike)."""
    skip = {"random"}
    ea = {k: v for k, v in vars(expected.env).items() if k not in skip}
    ga = {k: v for k, v in vars(got.env).items() if k not in skip}
    if ea.keys() != ga.keys() or expected.last_action != got.last_action:
        return False
    if not all(_same(ea[k], ga[k]) for k in ea):
        return False
    return _same(_rs_state(expected.random), _rs_state(got.random)) and _same(
        _rs_state(expected.env.random), _rs_state(got.env.random)
    )


def _check_minatar(
    sym: EnvSymmetry,
    env: Any,
    steps: int,
    seed: int,
    warmup: int,
    progress: Callable[[int, int], None] | None = None,
) -> SymmetryReport:
    """The exact check of a MinAtar game (``verify: {method: minatar}``).

    One long game (uniformly random actions, or the game's :attr:`MinAtarMirror.explore` policy 9 steps in
    10; a new game after each end) is sampled every 1 to ``warmup + 1`` steps. At each sampled state ``s``
    (the game object, its sticky last action and its random generator) every action ``a`` is compared:
    ``s`` and its mirror ``m·s`` (:data:`MINATAR_MIRRORS`) are stepped with ``a`` and the spec's ``g·a``
    under the same random draws (the entry's spawn-side draws reflected), and ``g·obs(s')`` must equal
    ``obs(s'_m)`` exactly, as must the rewards, the terminations and the whole next state: ``m·s' == s'_m``
    (hidden timers and directions included). ``g·obs(s) == obs(m·s)`` is checked too (the spec's frame
    action against the state mirror).
    """
    base = env.unwrapped
    game_name, entry = _minatar_entry(sym, base)
    obs_act = sym.obs_action()
    g_action = sym.action_table()[1]
    n_act = int(env.action_space.n)
    full = list(base.action_set)
    rng = np.random.default_rng(seed)

    def obs_diff(mirrored: np.ndarray, got: np.ndarray) -> float:
        return float(np.abs(mirrored.astype(np.float64) - got.astype(np.float64)).max())

    # is the start mirror-invariant? (each mirrored start's frame among the start frames)
    starts, mirrored = set(), set()
    for i in range(16):
        base.reset(seed=int(seed * 100003 + i))
        starts.add(np.asarray(base.game.state()).tobytes())
        mirrored.add(np.asarray(_mirrored_game(base.game, entry, False).state()).tobytes())
    start_invariant = mirrored <= starts

    obs_err = rew_err = 0.0
    term_bad = state_bad = reflected = n = 0
    base.reset(seed=seed)
    for i in range(steps):
        game = base.game
        obs_err = max(
            obs_err,
            obs_diff(_apply_obs(obs_act, game.state(), 1), _mirrored_game(game, entry, False).state()),
        )
        for a in range(n_act):
            orig = copy.deepcopy(game)
            mirr = _mirrored_game(game, entry, True)
            base.game = orig
            o1, r1, t1, _, _ = base.step(a)
            base.game = mirr
            o2, r2, t2, _, _ = base.step(g_action[a])
            obs_err = max(obs_err, obs_diff(_apply_obs(obs_act, np.asarray(o1), 1), np.asarray(o2)))
            rew_err = max(rew_err, abs(float(r1) - float(r2)))
            term_bad += int(bool(t1) != bool(t2))
            state_bad += int(not _same_game(_mirrored_game(orig, entry, False), mirr))
            reflected += mirr.random.hits if isinstance(mirr.random, _ReflectedDraws) else 0
            n += 1
        base.game = game
        for _ in range(1 + int(rng.integers(0, warmup + 1))):  # play on to the next sampled state
            if entry.explore is not None and rng.random() < 0.9:
                move = entry.explore(base.game.env)
                a = full.index(move) if move in full else int(rng.integers(n_act))
            else:
                a = int(rng.integers(n_act))
            _, _, term, trunc, _ = base.step(a)
            if term or trunc:
                base.reset(seed=int(rng.integers(1 << 30)))
        if progress is not None:
            progress(i + 1, steps)
    max_err = max(obs_err, rew_err, float(term_bad), float(state_bad))
    ok = max_err == 0.0
    coupled = (
        f"; {reflected} spawn-side draws reflected (a measure-preserving coupling)" if entry.reflect else ""
    )
    start = "" if start_invariant else f"; the start state is not mirror-invariant: {entry.start}"
    msg = (
        f"verified: max error 0 over {n} transitions (MinAtar {game_name}'s state mirrored exactly; every "
        f"action at {steps} states){coupled}{start}"
        if ok
        else f"BROKEN: the spec does not commute with MinAtar {game_name}'s dynamics (obs error {obs_err:.3g}, "
        f"reward error {rew_err:.3g}, {term_bad} termination and {state_bad} next-state mismatches over {n} "
        "transitions)"
    )
    return SymmetryReport(sym.env_id, max_err, ok, True, n, obs_err, rew_err, term_bad, msg)
