"""Making the environments named by the symmetry specs (one-line errors when one cannot run here)."""

from __future__ import annotations

import importlib.util
from typing import Any

from equirl.errors import EquirlError, SymmetryError

__all__ = ["action_meanings", "is_atari", "make_env", "make_vec_env"]


def is_atari(env_id: str) -> bool:
    return env_id.startswith("ALE/") or env_id.endswith("NoFrameskip-v4")


def _prepare(env_id: str) -> None:
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

    :raises EquirlError: unknown env id, or a missing optional dependency (one line).
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
