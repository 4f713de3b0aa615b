"""A small D4-symmetric gridworld registered with gymnasium as ``equirl/GridWorld-v0``.

The board is an ``N x N`` square seen as a ``(3, N, N)`` uint8 image (channels: agent, goal, walls;
cells are 0 or 255). Actions are moves ``[up, right, down, left]``; moving into a wall or the border
keeps the agent in place. Reaching the goal gives ``+1`` and ends the episode; every other step costs
``step_penalty``. Walls, agent and goal are placed at random on reset, so the distribution of boards
and the dynamics are invariant under the dihedral group D4 acting on the board (rotations and
mirrors), with the moves permuted accordingly (see ``envs/equirl_GridWorld-v0.yaml``).

The full state is visible in the observation, so :meth:`GridWorldEnv.set_state_from_obs` lets
``equirl check-symmetry`` compare ``step(g·s, g·a)`` with ``g·step(s, a)`` exactly.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = ["ENV_ID", "GridWorldEnv", "register"]

ENV_ID = "equirl/GridWorld-v0"
#: (d_row, d_col) per action: up, right, down, left
MOVES = ((-1, 0), (0, 1), (1, 0), (0, -1))


class GridWorldEnv(gym.Env[np.ndarray, int]):
    """Reach the goal on a random square board.

    :param size: board side ``N``.
    :param n_walls: number of wall cells placed at random.
    :param max_steps: episode length before truncation.
    :param step_penalty: reward of a step that does not reach the goal.
    """

    metadata = {"render_modes": ["ansi"]}  # noqa: RUF012

    def __init__(
        self,
        size: int = 5,
        n_walls: int = 3,
        max_steps: int = 50,
        step_penalty: float = -0.02,
        render_mode: str | None = None,
    ) -> None:
        if size < 2 or n_walls < 0 or n_walls > size * size - 2:
            raise ValueError(f"invalid gridworld size={size}, n_walls={n_walls}")
        self.size = size
        self.n_walls = n_walls
        self.max_steps = max_steps
        self.step_penalty = float(step_penalty)
        self.render_mode = render_mode
        self.observation_space = spaces.Box(0, 255, shape=(3, size, size), dtype=np.uint8)
        self.action_space = spaces.Discrete(4)  # type: ignore[assignment]
        self.agent = (0, 0)
        self.goal = (size - 1, size - 1)
        self.walls = np.zeros((size, size), dtype=bool)
        self.steps = 0

    def _obs(self) -> np.ndarray:
        obs = np.zeros((3, self.size, self.size), dtype=np.uint8)
        obs[0][self.agent] = 255
        obs[1][self.goal] = 255
        obs[2][self.walls] = 255
        return obs

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        cells = self.np_random.permutation(self.size * self.size)
        self.walls = np.zeros((self.size, self.size), dtype=bool)
        for c in cells[: self.n_walls]:
            self.walls[divmod(int(c), self.size)] = True
        self.agent = divmod(int(cells[self.n_walls]), self.size)
        self.goal = divmod(int(cells[self.n_walls + 1]), self.size)
        self.steps = 0
        return self._obs(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        dr, dc = MOVES[int(action)]
        r, c = self.agent[0] + dr, self.agent[1] + dc
        if 0 <= r < self.size and 0 <= c < self.size and not self.walls[r, c]:
            self.agent = (r, c)
        self.steps += 1
        terminated = self.agent == self.goal
        reward = 1.0 if terminated else self.step_penalty
        truncated = not terminated and self.steps >= self.max_steps
        return self._obs(), reward, terminated, truncated, {}

    def set_state_from_obs(self, obs: np.ndarray, steps: int | None = None) -> None:
        """Set agent, goal and walls from an observation (the state is fully observed).

        :param obs: a ``(3, N, N)`` board.
        :param steps: the step counter to set (kept when ``None``).
        """
        obs = np.asarray(obs)
        if obs.shape != (3, self.size, self.size):
            raise ValueError(f"expected an observation of shape {(3, self.size, self.size)}, got {obs.shape}")
        agent = np.argwhere(obs[0] > 127)
        goal = np.argwhere(obs[1] > 127)
        if len(agent) != 1 or len(goal) != 1:
            raise ValueError("an observation must hold exactly one agent and one goal")
        self.agent = (int(agent[0][0]), int(agent[0][1]))
        self.goal = (int(goal[0][0]), int(goal[0][1]))
        self.walls = obs[2] > 127
        if steps is not None:
            self.steps = steps

    def render(self) -> str:  # type: ignore[override]
        rows = []
        for r in range(self.size):
            row = ""
            for c in range(self.size):
                row += (
                    "A"
                    if (r, c) == self.agent
                    else "G"
                    if (r, c) == self.goal
                    else "#"
                    if self.walls[r, c]
                    else "."
                )
            rows.append(row)
        return "\n".join(rows)


def register() -> None:
    """Register ``equirl/GridWorld-v0`` with gymnasium (idempotent; the env list is
    :data:`equirl.gym_envs.ENVS`, which an installed equirl also registers when gymnasium is imported)."""
    from equirl.gym_envs import register_envs

    register_envs(gym)
