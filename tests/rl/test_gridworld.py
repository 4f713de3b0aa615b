"""equirl/GridWorld-v0: registration, dynamics, state setting."""

from __future__ import annotations

import numpy as np

from equirl.rl.envs import make_env


def test_gridworld_basics() -> None:
    env = make_env("equirl/GridWorld-v0")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (3, 5, 5) and obs.dtype == np.uint8
    assert (obs[0] > 0).sum() == 1 and (obs[1] > 0).sum() == 1 and (obs[2] > 0).sum() == 3
    base = env.unwrapped
    board = np.zeros((3, 5, 5), np.uint8)
    board[0, 2, 2] = board[1, 2, 3] = board[2, 1, 2] = 255
    base.set_state_from_obs(board, steps=0)
    o, r, term, trunc, _ = base.step(0)  # up: blocked by the wall
    assert (o[0] > 0).nonzero() == (np.array([2]), np.array([2])) and r < 0 and not term
    o, r, term, trunc, _ = base.step(1)  # right: reaches the goal
    assert term and r == 1.0 and not trunc
    assert "A" in base.render() or "G" in base.render()
