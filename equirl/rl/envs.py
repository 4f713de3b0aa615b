"""Making the environments named by the symmetry specs (one-line errors when one cannot run here)."""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from equirl.errors import ConfigError, EquirlError, SymmetryError
from equirl.utils.io import printable

__all__ = ["ALLOW_IMPORT_VAR", "action_meanings", "check_env_id", "is_atari", "make_env", "make_vec_env"]

#: set to ``1`` to let an env id ``"module:EnvName"`` import ``module`` (gymnasium's plugin syntax); off by
#: default, since a config or a spec naming such an id would otherwise run that module's code
ALLOW_IMPORT_VAR = "EQUIRL_ALLOW_ENV_IMPORT"


def check_env_id(env_id: Any) -> str:
    """``env_id`` when gymnasium may make it without importing anything: every env equirl makes goes
    through here (:func:`make_env`, :func:`make_vec_env`).

    gymnasium imports ``module`` for an id ``"module:EnvName"``, so a config or spec file could run code
    by naming one; such ids are refused unless ``$EQUIRL_ALLOW_ENV_IMPORT`` is ``1``.

    :raises ConfigError: one line, for an id that is not a non-empty string or that would import a module.

    Example::

        >>> check_env_id("CartPole-v1")
        'CartPole-v1'
        >>> check_env_id("os:CartPole-v1")
        Traceback (most recent call last):
        ...
        equirl.errors.ConfigError: env id 'os:CartPole-v1' would import the Python module 'os': importing modules from env ids is off; install the env's package (pip install ...) and register the env with gymnasium, or set EQUIRL_ALLOW_ENV_IMPORT=1 to allow it
    """
    if not isinstance(env_id, str) or not env_id.strip():
        raise ConfigError(
            f"env id must be a non-empty string such as CartPole-v1, got {printable(repr(env_id), 80)}"
        )
    if ":" in env_id and os.environ.get(ALLOW_IMPORT_VAR, "").strip() != "1":
        module = env_id.split(":", 1)[0]
        raise ConfigError(
            f"env id '{printable(env_id, 120)}' would import the Python module '{printable(module, 80)}': "
            "importing modules from env ids is off; install the env's package (pip install ...) and register "
            f"the env with gymnasium, or set {ALLOW_IMPORT_VAR}=1 to allow it"
        )
    return env_id


def is_atari(env_id: str) -> bool:
    return env_id.startswith("ALE/") or env_id.endswith("NoFrameskip-v4")


def _prepare(env_id: str) -> None:
    check_env_id(env_id)
    from equirl.rl.gridworld import register

    register()
    if is_atari(env_id):
        if importlib.util.find_spec("ale_py") is None:
            raise EquirlError(f"cannot run {env_id}: ale-py is not installed (pip install ale-py)")
        import ale_py
        import gymnasium as gym

        gym.register_envs(ale_py)
    if env_id.startswith("LunarLander") and importlib.util.find_spec("Box2D") is None:
        raise EquirlError(f"cannot run {env_id}: Box2D is not installed (pip install 'gymnasium[box2d]')")


def make_env(env_id: str, seed: int | None = None, **kwargs: Any) -> Any:
    """``gymnasium.make(env_id)`` after registering equirl's and ALE's envs.

    :raises EquirlError: unknown env id, an id that would import a module (:func:`check_env_id`), or a
        missing optional dependency (one line).
    """
    import gymnasium as gym

    _prepare(env_id)
    try:
        env = gym.make(env_id, **kwargs)
    except gym.error.Error as exc:
        raise SymmetryError(f"cannot make env {env_id!r}: {str(exc).splitlines()[0]}") from None
    except ImportError as exc:  # missing optional dependency (box2d, mujoco...)
        raise EquirlError(f"cannot run {env_id}: {exc}") from None
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def make_vec_env(env_id: str, n_envs: int = 1, seed: int = 0) -> Any:
    """A SB3 vec env; Atari games get the usual wrappers (84x84 grey frames, 4 stacked)."""
    _prepare(env_id)
    if is_atari(env_id):
        from stable_baselines3.common.env_util import make_atari_env
        from stable_baselines3.common.vec_env import VecFrameStack

        return VecFrameStack(make_atari_env(env_id, n_envs=n_envs, seed=seed), n_stack=4)
    from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env

    return sb3_make_vec_env(lambda: make_env(env_id), n_envs=n_envs, seed=seed)


def action_meanings(env: Any) -> list[str] | None:
    """``env.unwrapped.get_action_meanings()`` when the env has it (Atari), else ``None``."""
    fn = getattr(env.unwrapped, "get_action_meanings", None)
    return list(fn()) if callable(fn) else None
