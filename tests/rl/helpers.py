"""Helpers shared by the RL training test modules."""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback

from equirl.errors import RunInterrupted
from equirl.rl.lifecycle import read_run
from equirl.rl.train import resume_training, run_training


class StopAt(BaseCallback):
    """Sets ``event`` at env step ``k``: the run then checkpoints at the next rollout boundary, as after
    SIGINT, but at a deterministic step.

    :param k: the env step.
    :param event: the run's stop event.
    """

    def __init__(self, k: int, event: threading.Event) -> None:
        super().__init__()
        self.k, self.event = k, event

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.k:
            self.event.set()
        return True


def interrupt_and_resume(cfg: Any, tmp_path: Path, stop_at: int, match: str) -> tuple[Any, Any, Path]:
    """Run ``cfg`` to the end (in ``tmp_path/a``), then again (in ``tmp_path/b``) stopped at step
    ``stop_at`` and resumed; checks the interrupted run's record and the partial model on the way.

    :param cfg: an RL config (its ``out`` is set here).
    :param tmp_path: the test's folder.
    :param stop_at: the env step that stops the second run.
    :param match: what the :class:`RunInterrupted` message must match.
    :returns: the uninterrupted run's result, the resumed run's result and the resumed run's folder.
    """
    cfg = dataclasses.replace(cfg, out=str(tmp_path / "a"))
    full = run_training(cfg)
    cfg = dataclasses.replace(cfg, out=str(tmp_path / "b"))
    stop = threading.Event()
    with pytest.raises(RunInterrupted, match=match):
        run_training(cfg, callbacks=[StopAt(stop_at, stop)], stop=stop)
    (run,) = list((tmp_path / "b").iterdir())
    assert read_run(run)["status"] == "interrupted" and not (run / "model_partial.zip").exists()
    resumed = resume_training(run)
    assert (run / "model_partial.zip").is_file()
    return full, resumed, run


def perturb_lambda(module: torch.nn.Module) -> None:
    """λ starts as equitune (zero last layer): random weights make an equivariance check non-trivial.

    :param module: a policy (or network) with ``lambda_net`` parameters, changed in place.
    """
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "lambda_net" in name:
                p.copy_(torch.randn(p.shape, generator=gen))


def finished_run(d: Path, method: str, seed: int, returns: list[float], env: str = "CartPole-v1") -> Path:
    """A finished run folder as a sweep report reads it (``run.json`` and ``evaluations.json`` only):
    evaluations every 100 steps with these mean returns, the last one the final evaluation.

    :returns: ``d``.
    """
    d.mkdir(parents=True)
    evals = [{"timestep": 100 * (i + 1), "mean_return": r} for i, r in enumerate(returns)]
    info = {
        "status": "finished",
        "env": env,
        "method": method,
        "seed": seed,
        "steps_done": 100 * len(returns),
        "total_timesteps": 100 * len(returns),
        "best": {"timestep": 100, "mean_return": max(returns)},
    }
    (d / "run.json").write_text(json.dumps(info))
    (d / "evaluations.json").write_text(json.dumps({"evaluations": evals}))
    return d
