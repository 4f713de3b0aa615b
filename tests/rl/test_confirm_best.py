"""The reported best is what ``best_model.zip`` scores: at the end of a run the candidates (the last new
bests of the periodic evaluations) and the final model are evaluated again on ``eval.confirm_episodes``
fresh episodes, the winner becomes ``best_model.zip`` and its confirmed figure is the run's ``best``."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from equirl.cli import main
from equirl.config import FieldError
from equirl.errors import RunInterrupted
from equirl.rl.build import load_pretrained
from equirl.rl.config import load_rl_config
from equirl.rl.evaluation import evaluate
from equirl.rl.lifecycle import load_checkpoint, read_run
from equirl.rl.train import CONFIRM_SEED_OFFSET, _candidate, resume_training, run_training
from tests.rl.helpers import StopAt

#: PPO learns CartPole within a few thousand steps, so the periodic bests (2 episodes each) differ from
#: their figures on fresh episodes
PPO = {
    "env": "CartPole-v1",
    "algo": "ppo",
    "timesteps": 3072,
    "method": "base",
    "hyperparams": {"n_steps": 256, "batch_size": 64, "n_epochs": 4, "net_arch": [32], "learning_rate": 3e-3},
    "eval": {"freq": 256, "episodes": 2, "final_episodes": 2, "confirm_episodes": 10},
    "log": {"equi_freq": 0, "tensorboard": False},
    "checkpoint": {"freq": 1024},
}

#: plain DQN on a tiny net: a couple of seconds
DQN = {
    "env": "CartPole-v1",
    "timesteps": 1500,
    "method": "base",
    "hyperparams": {"learning_starts": 100, "buffer_size": 2000, "net_arch": [16], "train_freq": 4},
    "eval": {"freq": 250, "episodes": 2, "final_episodes": 2},
    "log": {"equi_freq": 0, "tensorboard": False},
    "checkpoint": {"freq": 200},
}


def _cfg_file(tmp_path: Path, base: dict[str, Any], **patch: Any) -> Path:
    data = {**base, "out": str(tmp_path / "runs")}
    for k, v in patch.items():
        data[k] = {**data[k], **v} if isinstance(v, dict) and isinstance(data.get(k), dict) else v
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def _only_run(tmp_path: Path) -> Path:
    (run,) = list((tmp_path / "runs").iterdir())
    return run


def _fresh_mean(zip_path: Path, algo: str, episodes: int, seed: int) -> float:
    """``zip_path`` loaded back as ``equirl eval`` loads a run's zip, on the confirmation's episodes."""
    model = load_pretrained(zip_path, "CartPole-v1", method="base", algo=algo)
    return float(np.mean(evaluate(model, "CartPole-v1", n_eval_episodes=episodes, seed=seed)))


def test_reported_best_is_best_model_zip_on_fresh_episodes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="equirl.rl.train")
    assert main(["train", str(_cfg_file(tmp_path, PPO)), "--no-progress"]) == 0
    out = capsys.readouterr().out
    run = _only_run(tmp_path)
    info, evals = read_run(run), json.loads((run / "evaluations.json").read_text())
    best, conf = info["best"], evals["confirmation"]
    n, seed = 10, 0 + CONFIRM_SEED_OFFSET
    assert best == evals["best"] and conf["episodes"] == n and conf["seed"] == seed
    assert best["episodes"] == n and {"std_return", "eval_mean_return", "eval_episodes"} <= set(best)
    # every candidate and the final model, on the same fresh episodes; the winner has the highest mean
    cands = conf["candidates"]
    assert 2 <= len(cands) <= 4 and sum(c["final"] for c in cands) == 1
    assert all(len(c["returns"]) == n and c["mean_return"] == np.mean(c["returns"]) for c in cands)
    assert best["mean_return"] == max(c["mean_return"] for c in cands)
    assert any(c["timestep"] == best["timestep"] and c["final"] == best["final"] for c in cands)
    periodic = {e["timestep"]: e["mean_return"] for e in evals["evaluations"][:-1]}
    for c in cands:  # the candidates are the last new bests of the periodic evaluations
        if not c["final"]:
            assert (
                periodic[c["timestep"]]
                == c["eval_mean_return"]
                == max(v for t, v in periodic.items() if t <= c["timestep"])
            )
    # what the user gets: best_model.zip loaded back and evaluated on its own scores the reported figure
    assert _fresh_mean(run / "best_model.zip", "ppo", n, seed) == best["mean_return"]
    # model.zip is the final model, untouched by the confirmation
    (final,) = [c for c in cands if c["final"]]
    assert final["timestep"] == info["steps_done"] == 3072
    assert _fresh_mean(run / "model.zip", "ppo", n, seed) == final["mean_return"]
    assert not (run / "candidates").exists()
    # what `equirl train` prints, and the log line while it confirms
    assert f"best return {best['mean_return']:.1f} ± {best['std_return']:.1f} over {n} fresh episodes" in out
    assert f"step {best['timestep']}; {best['eval_mean_return']:.1f} in its " in out
    assert f"confirming the best model: {len(cands)} candidates × {n} fresh episodes" in caplog.text


def test_confirm_episodes_0_keeps_the_best_periodic_evaluation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _cfg_file(tmp_path, DQN)
    assert main(["train", str(cfg), "--no-progress", "--set", "eval.confirm_episodes=0"]) == 0
    out = capsys.readouterr().out
    run = _only_run(tmp_path)
    evals = json.loads((run / "evaluations.json").read_text())
    best = read_run(run)["best"]
    assert best == evals["best"] and set(best) == {"timestep", "mean_return"}
    assert best["mean_return"] == max(e["mean_return"] for e in evals["evaluations"][:-1])
    assert "confirmation" not in evals and not (run / "candidates").exists()
    assert f"best return {best['mean_return']:.1f} at step {best['timestep']} (best_model.zip)" in out
    assert "fresh episodes" not in out


def test_resume_keeps_the_candidates(tmp_path: Path) -> None:
    """A run interrupted after some new bests keeps them (files + checkpoint state); resumed, it confirms
    the same candidates, with the same figures, as the run that was never stopped."""
    cfg = load_rl_config(
        _cfg_file(tmp_path, PPO, timesteps=2048, eval={"confirm_episodes": 3}, checkpoint={"freq": 512})
    )
    full = run_training(dataclasses.replace(cfg, out=str(tmp_path / "a")))
    stop = threading.Event()
    with pytest.raises(RunInterrupted):
        run_training(
            dataclasses.replace(cfg, out=str(tmp_path / "b")), callbacks=[StopAt(1100, stop)], stop=stop
        )
    (run,) = list((tmp_path / "b").iterdir())
    ckpt = load_checkpoint(run)
    assert ckpt is not None and ckpt.step < 2048
    listed = ckpt.state["eval"]["candidates"]
    assert 1 <= len(listed) <= 3 and all(c["timestep"] <= ckpt.step for c in listed)
    assert {p.name for p in (run / "candidates").iterdir()} == {f"best_{c['timestep']}.zip" for c in listed}
    resumed = resume_training(run)
    assert (resumed.best_step, resumed.best_mean, resumed.best_std) == (
        full.best_step,
        full.best_mean,
        full.best_std,
    )
    conf_a = json.loads((full.run_dir / "evaluations.json").read_text())["confirmation"]
    conf_b = json.loads((run / "evaluations.json").read_text())["confirmation"]
    assert conf_a == conf_b and not (run / "candidates").exists()
    # the candidate written before the interruption is confirmed after the resume
    assert {c["timestep"] for c in listed} <= {c["timestep"] for c in conf_b["candidates"]}


def test_confirm_episodes_is_bounded_and_a_crafted_candidate_is_dropped(tmp_path: Path) -> None:
    with pytest.raises(FieldError, match=r"eval\.confirm_episodes"):
        load_rl_config(_cfg_file(tmp_path, DQN), ["eval.confirm_episodes=-1"])
    assert load_rl_config(_cfg_file(tmp_path, DQN)).eval.confirm_episodes == 20
    assert _candidate({"timestep": 250, "mean_return": 9.0, "episodes": 2}) == {
        "timestep": 250,
        "mean_return": 9.0,
        "episodes": 2,
    }
    for bad in (
        {"timestep": "../x", "mean_return": 1.0},
        {"timestep": -1, "mean_return": 1.0},
        {"timestep": True, "mean_return": 1.0},
        {"timestep": 3, "mean_return": float("nan")},
        [3],
    ):
        assert _candidate(bad) is None


def test_a_failed_confirmation_keeps_every_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """best_model.zip cannot be replaced: the run still finishes, reports the best periodic evaluation
    (what best_model.zip still holds) and keeps the candidates and model.zip."""
    import equirl.rl.train as train

    real = train.atomic_copy

    def refuse(src: Any, dst: Any) -> Path:
        if Path(dst).name == "best_model.zip":
            raise PermissionError(13, "Permission denied", str(dst))
        return real(src, dst)

    monkeypatch.setattr(train, "atomic_copy", refuse)
    res = run_training(load_rl_config(_cfg_file(tmp_path, DQN, eval={"confirm_episodes": 2})))
    run = res.run_dir
    best = read_run(run)["best"]
    assert read_run(run)["status"] == "finished" and set(best) == {"timestep", "mean_return"}
    assert res.best_episodes is None and (run / "model.zip").is_file() and (run / "best_model.zip").is_file()
    assert list((run / "candidates").glob("best_*.zip"))
