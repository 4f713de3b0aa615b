"""equirl's gymnasium environments: the one table of their ids and entry points (torch-free).

Registered by :func:`register_envs` when equirl makes an env, and, in an installed equirl, as soon as
gymnasium is imported (the top-level ``equirl_gymnasium`` hook calls it).
"""

from __future__ import annotations

from typing import Any

__all__ = ["ENVS", "register_envs"]

#: env id -> (entry point, keyword arguments of ``gymnasium.register``)
ENVS: dict[str, tuple[str, dict[str, Any]]] = {
    "equirl/GridWorld-v0": ("equirl.rl.gridworld:GridWorldEnv", {"max_episode_steps": None}),
}


def register_envs(gym: Any) -> None:
    """Register :data:`ENVS` with the ``gymnasium`` module ``gym`` (idempotent)."""
    for env_id, (entry_point, kwargs) in ENVS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, **kwargs)
