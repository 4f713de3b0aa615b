"""The RL demo on the shipped CartPole agent (slow: evaluates and trains)."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from equirl.rl.agents import agent_dir


@pytest.mark.slow
def test_run_demo(tmp_path: Path) -> None:
    if not (agent_dir("CartPole-v1") / "CartPole-v1.zip").is_file():
        pytest.skip("no shipped CartPole agent")
    from equirl.rl.demo import run_demo

    console = Console(record=True, width=140)
    assert run_demo(console, episodes=2, finetune_steps=600, out=str(tmp_path)) == 0
    text = console.export_text()
    for m in ("base", "equitune", "equizero", "lambda", "TensorBoard"):
        assert m in text
    (run,) = list(tmp_path.iterdir())
    assert (run / "model.zip").is_file() and list((run / "tb").glob("events.*"))
