"""Observation normalisation that keeps a policy equivariant: :class:`SymmetricVecNormalize`.

SB3's ``VecNormalize`` maps an observation to ``clip((x - μ) / sqrt(σ² + ε))`` with running
statistics ``μ, σ²``. In front of an equivariant policy this breaks equivariance as soon as the
statistics are not themselves symmetric (CartPole's ``x ↦ -x`` needs ``μ = 0``; a swap of two features
needs them to share their mean and variance). :class:`SymmetricVecNormalize` projects its statistics
onto the symmetric ones after every update, for the spec's signed-permutation action
``(g·x)_j = s_g[j] x[src_g[j]]``:

* ``μ ← 1/|G| Σ_g g·μ`` (sign-flipped features get mean 0, permuted features share their means);
* ``σ² ← 1/|G| Σ_g |P_g| σ²`` (the variances permuted, signs drop out).

Then ``g·μ = μ`` and ``σ²[src_g[j]] = σ²[j]``, so ``normalize(g·x) = g·normalize(x)`` exactly, and the
whole pipeline *normalize → equivariant policy* is equivariant. Statistics are saved with SB3's
``save`` (a pickle of the wrapper without its env) and read back by :func:`load_vecnormalize` without
executing code from the file (:func:`equirl.rl.safe_load.read_vecnormalize`), which also reads RL-zoo
``vecnormalize.pkl`` files.

Example::

    >>> from equirl.rl.envs import make_vec_env
    >>> from equirl.rl.normalize import SymmetricVecNormalize
    >>> venv = SymmetricVecNormalize(make_vec_env("CartPole-v1"), "CartPole-v1")
    >>> _ = venv.reset()
    >>> float(abs(venv.obs_rms.mean).max())  # x -> -x: the symmetric mean is 0
    0.0
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from equirl.errors import CheckpointError, SymmetryError
from equirl.rl.safe_load import NormalizeStats, read_vecnormalize
from equirl.rl.spec import EnvSymmetry, load_spec
from equirl.utils.io import printable

__all__ = [
    "SymmetricVecNormalize",
    "load_vecnormalize",
    "signed_perm_tables",
    "symmetrize_mean_var",
    "wrap_like",
]

log = logging.getLogger(__name__)


def _obs_rms(norm: VecNormalize) -> RunningMeanStd | None:
    """The observation statistics (feature-vector observations: one ``RunningMeanStd``); ``None`` where
    observations are not normalised (``norm_obs=False``: SB3 keeps no statistics then, only rewards')."""
    if not norm.norm_obs:
        return None
    rms = norm.obs_rms
    if not isinstance(rms, RunningMeanStd):
        raise SymmetryError("dict observations are not supported: one RunningMeanStd is needed")
    return rms


def signed_perm_tables(symmetry: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(src, signs)``, both ``(|G|, D)``: the spec's observation action as index / sign tables.

    :param symmetry: env id / spec path / mapping / :class:`~equirl.rl.spec.EnvSymmetry`.
    :raises SymmetryError: the spec does not act on feature vectors by signed permutations (images).
    """
    from equirl.actions import SignedPermAction

    sym = symmetry if isinstance(symmetry, EnvSymmetry) else load_spec(symmetry)
    act = sym.obs_action()
    if not isinstance(act, SignedPermAction):
        raise SymmetryError(f"{sym.env_id}: symmetric normalisation needs feature-vector observations")
    src = np.asarray([t.src for t in act.transforms], dtype=np.int64)
    signs = np.asarray([t.signs or (1.0,) * t.size for t in act.transforms], dtype=np.float64)
    return src, signs


def symmetrize_mean_var(
    mean: np.ndarray, var: np.ndarray, src: np.ndarray, signs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The group averages ``(1/|G| Σ_g g·μ, 1/|G| Σ_g |P_g| σ²)`` of a mean and a variance vector.

    :param mean: ``(D,)``; ``var``: ``(D,)``.
    :param src: ``(|G|, D)`` source indices; ``signs``: ``(|G|, D)`` signs (see :func:`signed_perm_tables`).
    """
    m = np.asarray(mean, dtype=np.float64)
    v = np.asarray(var, dtype=np.float64)
    if m.shape != (src.shape[1],) or v.shape != m.shape:
        raise SymmetryError(
            f"statistics of shape {m.shape} do not fit a spec acting on {src.shape[1]} features"
        )
    return (signs * m[src]).mean(axis=0), v[src].mean(axis=0)


class SymmetricVecNormalize(VecNormalize):
    """``VecNormalize`` whose observation statistics stay symmetric under the env's group (see the
    module docstring); everything else (reward normalisation, clipping, ``training``) is SB3's.

    :param venv: the env to wrap.
    :param symmetry: env id / spec path / mapping / :class:`~equirl.rl.spec.EnvSymmetry`; its observation
        action must be a signed permutation (feature vectors).
    :param kwargs: ``VecNormalize``'s (``training``, ``norm_obs``, ``norm_reward``, ``clip_obs``...).
    """

    def __init__(self, venv: VecEnv, symmetry: Any, **kwargs: Any) -> None:
        super().__init__(venv, **kwargs)
        self.perm_src, self.perm_signs = signed_perm_tables(symmetry)
        shape = tuple(self.observation_space.shape or ())
        if shape != (self.perm_src.shape[1],):
            raise SymmetryError(
                f"the spec acts on {self.perm_src.shape[1]} features, the observations are {shape}"
            )
        self.symmetrize_statistics()

    def symmetrize_statistics(self) -> None:
        """Replace the observation mean and variance by their group averages (idempotent)."""
        rms = _obs_rms(self)
        if rms is None:
            return
        rms.mean, rms.var = symmetrize_mean_var(rms.mean, rms.var, self.perm_src, self.perm_signs)

    def step_wait(self) -> Any:
        out = super().step_wait()
        if self.training and self.norm_obs:
            self.symmetrize_statistics()
        return out

    def reset(self) -> Any:
        obs = super().reset()
        if self.training and self.norm_obs:
            self.symmetrize_statistics()
            obs = self.normalize_obs(self.old_obs)  # the first observation, with the symmetric statistics
        return obs

    @staticmethod
    def load(load_path: str, venv: VecEnv) -> VecNormalize:  # type: ignore[override]
        """Refused: SB3's ``load`` unpickles the file; use :func:`load_vecnormalize` (plain data only)."""
        raise CheckpointError(
            "SymmetricVecNormalize.load unpickles code: use equirl.rl.normalize.load_vecnormalize"
        )


def _whose(norm: VecNormalize, source: Path) -> str:
    """Why statistics may not fit: the env they were saved for (their folder's name) against the env."""
    try:
        spec = norm.venv.get_attr("spec")[0]
    except Exception:  # an env without a spec, a VecEnv without get_attr: no names to compare
        spec = None
    env, folder = getattr(spec, "id", None), source.parent.name
    if isinstance(env, str) and folder and folder.replace("ALE-", "ALE/", 1) != env and "-v" in folder:
        return (
            f" (they are {printable(folder, 80)}'s and the env is {printable(env, 80)}: pick the agent's env)"
        )
    return " (another agent's or another env's?)"


def _apply_stats(norm: VecNormalize, stats: NormalizeStats, source: str | Path | None = None) -> VecNormalize:
    shape = tuple(norm.observation_space.shape or ())
    if stats.norm_obs and tuple(stats.mean.shape) != shape:
        what = (
            f"the statistics in {printable(source, 200)}"
            if source is not None
            else "normalisation statistics"
        )
        raise CheckpointError(
            f"{what} of shape {stats.mean.shape} do not fit observations {shape}"
            + (_whose(norm, Path(source)) if source is not None else "")
        )
    rms = _obs_rms(norm) if stats.norm_obs else None
    if rms is not None:
        rms.mean = np.asarray(stats.mean, dtype=np.float64).copy()
        rms.var = np.asarray(stats.var, dtype=np.float64).copy()
        rms.count = float(stats.count)
    norm.ret_rms.mean = np.float64(stats.ret_mean)  # type: ignore[assignment]
    norm.ret_rms.var = np.float64(stats.ret_var)  # type: ignore[assignment]
    norm.ret_rms.count = float(stats.ret_count)
    if isinstance(norm, SymmetricVecNormalize):
        norm.symmetrize_statistics()
    return norm


def load_vecnormalize(
    path: str | Path,
    venv: VecEnv,
    symmetry: Any = None,
    training: bool = False,
    trust_checkpoint: bool = False,
) -> VecNormalize:
    """Wrap ``venv`` in a ``VecNormalize`` with the statistics saved at ``path``, without running code.

    :param path: a ``vecnormalize.pkl`` (SB3's ``VecNormalize.save``, an RL-zoo run's, or
        :class:`SymmetricVecNormalize`'s).
    :param venv: the env to wrap.
    :param symmetry: a spec: the result is a :class:`SymmetricVecNormalize` with the statistics
        symmetrized over its group (``None``: a plain ``VecNormalize`` with the statistics as saved).
    :param training: keep updating the statistics (``False`` for evaluation; rewards are then not
        normalised either).
    :param trust_checkpoint: let :mod:`pickle` read the file unrestricted (runs any code it holds).
    :raises CheckpointError: one line, for a file that is missing, malformed or would need code to load.
    """
    stats = read_vecnormalize(path, trust_checkpoint=trust_checkpoint)
    kw: dict[str, Any] = {
        "training": training,
        "norm_obs": stats.norm_obs,
        "norm_reward": stats.norm_reward and training,
        "clip_obs": stats.clip_obs,
        "clip_reward": stats.clip_reward,
        "gamma": stats.gamma,
        "epsilon": stats.epsilon,
    }
    norm = SymmetricVecNormalize(venv, symmetry, **kw) if symmetry is not None else VecNormalize(venv, **kw)
    return _apply_stats(norm, stats, path)


def stats_of(norm: VecNormalize) -> NormalizeStats:
    """The plain statistics of a ``VecNormalize`` (copies)."""
    rms = _obs_rms(norm)
    return NormalizeStats(
        mean=np.array(rms.mean if rms is not None else (), dtype=np.float64),
        var=np.array(rms.var if rms is not None else (), dtype=np.float64),
        count=float(rms.count) if rms is not None else 1e-4,
        clip_obs=float(norm.clip_obs),
        epsilon=float(norm.epsilon),
        norm_obs=bool(norm.norm_obs),
        norm_reward=bool(norm.norm_reward),
        gamma=float(norm.gamma),
        clip_reward=float(norm.clip_reward),
        ret_mean=float(norm.ret_rms.mean),
        ret_var=float(norm.ret_rms.var),
        ret_count=float(norm.ret_rms.count),
    )


def wrap_like(norm: VecNormalize, venv: VecEnv) -> VecNormalize:
    """``venv`` wrapped in a frozen copy of ``norm`` (same class, statistics and options; not training,
    rewards not normalised): how an agent's normalisation is applied to a fresh evaluation env."""
    kw: dict[str, Any] = {
        "training": False,
        "norm_obs": norm.norm_obs,
        "norm_reward": False,
        "clip_obs": norm.clip_obs,
        "clip_reward": norm.clip_reward,
        "gamma": norm.gamma,
        "epsilon": norm.epsilon,
    }
    if isinstance(norm, SymmetricVecNormalize):
        sym_out = SymmetricVecNormalize.__new__(SymmetricVecNormalize)
        VecNormalize.__init__(sym_out, venv, **kw)
        sym_out.perm_src, sym_out.perm_signs = norm.perm_src.copy(), norm.perm_signs.copy()
        out: VecNormalize = sym_out
    else:
        out = VecNormalize(venv, **kw)
    return _apply_stats(out, stats_of(norm))
