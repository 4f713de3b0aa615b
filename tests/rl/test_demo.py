"""The RL demo on the shipped CartPole agent (slow: evaluates and trains)."""

from __future__ import annotations

from pathlib import Path

import pytest

from equirl.rl.agents import agent_dir


@pytest.mark.slow
def test_run_demo(tmp_path: Path) -> None:
    if not (agent_dir("CartPole-v1") / "CartPole-v1.zip").is_file():
        pytest.skip("no shipped CartPole agent")
    from equirl.rl.demo import DEMO_METHODS, run_demo

    res = run_demo(episodes=2, finetune_steps=600, out=str(tmp_path))
    assert set(res.zero_shot) == {"full", "partial"}
    for col in res.zero_shot.values():
        assert set(col) == set(DEMO_METHODS)
    assert res.zero_shot["full"]["base"]["mean_return"] >= 475  # the shipped agent is fully trained
    assert res.finetune is not None and res.finetune.timesteps[-1] >= 600
    full = res.zero_shot["full"]
    # a method far below the base agent is explained to the user
    if full["equizero"]["mean_return"] < 0.98 * full["base"]["mean_return"]:
        assert res.notes and "equizero" in res.notes[0]
    (run,) = list(tmp_path.iterdir())
    assert (run / "model.zip").is_file() and list((run / "tb").glob("events.*"))
