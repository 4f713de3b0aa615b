"""Run lifecycle: run.json, checkpoints, SIGINT / SIGTERM / SIGKILL then ``--resume``, exact resumption,
the non-finite guard, a failing final save, ``equirl runs``."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from stable_baselines3 import DQN
from stable_baselines3.common.callbacks import BaseCallback

from equirl.cli import main
from equirl.errors import NonFiniteError
from equirl.rl.config import load_rl_config
from equirl.rl.lifecycle import load_checkpoint, read_run
from equirl.rl.train import run_training
from tests.rl.helpers import interrupt_and_resume

ROOT = Path(__file__).resolve().parents[2]

#: plain DQN (the lifecycle does not depend on the method) on a tiny net: ~1 ms per step
TINY = {
    "env": "CartPole-v1",
    "timesteps": 1500,
    "method": "base",
    "hyperparams": {"learning_starts": 100, "buffer_size": 2000, "net_arch": [16], "train_freq": 4},
    "eval": {"freq": 250, "episodes": 2, "final_episodes": 2},
    "log": {"equi_freq": 0, "tensorboard": True},
    "checkpoint": {"freq": 200},
}


def _cfg(tmp_path: Path, **patch: Any) -> Path:
    data = {**TINY, "out": str(tmp_path / "runs"), **patch}
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def _only_run(tmp_path: Path) -> Path:
    (run,) = [p for p in (tmp_path / "runs").iterdir()]
    return run


def _no_hidden(tmp_path: Path) -> None:
    assert not [p for p in (tmp_path / "runs").iterdir() if p.name.startswith(".")]


def _start(cfg: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "equirl", "train", str(cfg), "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_steps(tmp_path: Path, proc: subprocess.Popen[str], k: int, timeout: float = 120) -> Path:
    """Poll run.json until it shows more than ``k`` steps done (and a checkpoint at or after ``k``)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, proc.communicate()
        runs = tmp_path / "runs"
        for d in runs.iterdir() if runs.is_dir() else []:
            try:
                info = read_run(d)
            except Exception:
                continue
            ck = info.get("checkpoint") or {}
            if info.get("steps_done", 0) > k and ck.get("step", 0) >= k:
                return d
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"run.json never passed {k} steps")


def _csv_steps(run: Path) -> list[int]:
    lines = (run / "tb" / "progress.csv").read_text().splitlines()
    col = lines[0].split(",").index("time/total_timesteps")
    return [int(float(v.split(",")[col])) for v in lines[1:] if v.split(",")[col]]


def _resume_and_check(tmp_path: Path, run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events_before = len(list((run / "tb").glob("events.out.tfevents.*")))
    steps_before = _csv_steps(run)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "best return" in out and "final return" in out
    assert re.search(r"\(training \d+ s, resumed sessions included; this command \d+ s", out), out
    info = read_run(run)
    total = TINY["timesteps"]
    assert info["status"] == "finished" and info["steps_done"] == total
    assert DQN.load(run / "model.zip").num_timesteps == total  # reached exactly once in total
    # the same TensorBoard folder continued: a second events file, the CSV extended past the interruption
    assert len(list((run / "tb").glob("events.out.tfevents.*"))) == events_before + 1
    after = _csv_steps(run)
    assert after[: len(steps_before)] == steps_before and max(after) > max(steps_before)
    evals = json.loads((run / "evaluations.json").read_text())
    # best_model.zip: the best of the candidates and the final model on fresh episodes (test_confirm_best.py)
    assert evals["best"]["mean_return"] == max(c["mean_return"] for c in evals["confirmation"]["candidates"])
    assert (run / "best_model.zip").is_file()
    _no_hidden(tmp_path)
    # resuming a finished run says so in one line
    assert main(["train", "--resume", str(run)]) == 0
    out = capsys.readouterr().out.strip()
    assert "already finished" in out and len(out.splitlines()) == 1


@pytest.mark.parametrize("sig", [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)])
def test_signal_checkpoints_then_resume_finishes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sig: signal.Signals
) -> None:
    proc = _start(_cfg(tmp_path))
    run = _wait_steps(tmp_path, proc, 400)
    # the run directory is visible (no hidden temporary folder) while training
    assert run.name.startswith("CartPole-v1__base__0__") and (run / "config.yaml").is_file()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    line = err.strip()
    assert len(line.splitlines()) == 1 and f"resume: equirl train --resume {run}" in line, err
    info = read_run(run)
    assert info["status"] == "interrupted" and 400 < info["steps_done"] < TINY["timesteps"]
    ckpt = load_checkpoint(run)
    assert ckpt is not None and ckpt.step == info["steps_done"] and ckpt.replay_buffer is not None
    assert not (run / "model.zip").exists()
    _resume_and_check(tmp_path, run, capsys)


@pytest.mark.slow
def test_sigkill_leaves_a_stale_run_that_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proc = _start(_cfg(tmp_path))
    run = _wait_steps(tmp_path, proc, 400)
    proc.kill()
    proc.communicate(timeout=60)
    info = read_run(run)
    assert info["status"] == "running" and load_checkpoint(run) is not None
    assert main(["runs", str(tmp_path / "runs"), "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["status"] == "stale" and listed["resume_command"] == f"equirl train --resume {run}"
    _no_hidden(tmp_path)
    _resume_and_check(tmp_path, run, capsys)


def _params(path: Path) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in DQN.load(path).policy.state_dict().items()}


def test_interrupted_and_resumed_run_reproduces_the_uninterrupted_one(tmp_path: Path) -> None:
    """With the replay buffer, the RNG states and the training env saved at a rollout boundary, a run
    stopped at step ~250 and resumed ends with exactly the parameters (and evaluations) of the run that
    was never stopped; crossing the ``partial_fraction`` point after the resume still writes
    ``model_partial.zip``."""
    cfg_path = _cfg(
        tmp_path,
        timesteps=800,
        partial_fraction=0.5,
        eval={"freq": 200, "episodes": 2, "final_episodes": 2},
        log={"equi_freq": 0, "tensorboard": False},
    )
    cfg = load_rl_config(cfg_path)
    full, resumed, run = interrupt_and_resume(cfg, tmp_path, 250, r"interrupted at step 2\d\d of 800")
    assert resumed.steps == full.steps == 800 and resumed.timesteps == full.timesteps
    a, b = _params(full.run_dir / "model.zip"), _params(run / "model.zip")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.results == full.results and resumed.best_mean == full.best_mean


class _Poison(BaseCallback):
    """Writes a NaN into the Q-network at env step ``k`` (a diverged update, deterministically)."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def _on_step(self) -> bool:
        if self.num_timesteps == self.k:
            with torch.no_grad():
                next(iter(self.model.policy.q_net.parameters())).view(-1)[0] = float("nan")
        return True


def _zip_params_finite(path: Path) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in DQN.load(path).policy.state_dict().values())


def test_injected_nan_fails_the_run_without_saving_it(tmp_path: Path) -> None:
    cfg = load_rl_config(_cfg(tmp_path, timesteps=800))
    with pytest.raises(
        NonFiniteError, match=r"non-finite .* at step \d+.*last finite checkpoint: .*model_400"
    ):
        run_training(cfg, callbacks=[_Poison(450)])
    run = _only_run(tmp_path)
    info = read_run(run)
    assert info["status"] == "failed" and "non-finite" in info["error"]
    assert not (run / "model.zip").exists()
    for z in [*run.glob("*.zip"), *(run / "checkpoint").glob("*.zip")]:
        assert _zip_params_finite(z), z
    text = (run / "run.json").read_text()
    assert "NaN" not in text and "Infinity" not in text


def test_huge_learning_rate_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _cfg(tmp_path, timesteps=600)
    assert main(["train", str(cfg), "--no-progress", "--set", "hyperparams.learning_rate=1e30"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: non-finite") and "at step" in err, err
    run = _only_run(tmp_path)
    assert read_run(run)["status"] == "failed" and not (run / "model.zip").exists()
    for z in run.rglob("*.zip"):
        assert _zip_params_finite(z), z
    for j in run.rglob("*.json"):
        assert "NaN" not in j.read_text(), j
    assert main(["runs", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert run.name in out and "failed" in out


def test_unwritable_run_dir_at_final_save_keeps_the_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run directory refuses the final ``model.zip`` (as a read-only folder would; tests may run as
    root, which ignores permissions, so the write is made to fail): the model is saved elsewhere and the
    one-line error names the file."""
    import equirl.rl.train as train

    real = train.atomic_write_stream

    def refuse(path: Any, writer: Any) -> Path:
        if Path(path).name == "model.zip":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, writer)

    monkeypatch.setattr(train, "atomic_write_stream", refuse)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    assert main(["train", str(_cfg(tmp_path, timesteps=300)), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    (rescue,) = list((tmp_path / "tmp").glob("equirl-rescue-*.zip"))
    assert len(err.splitlines()) == 1 and str(rescue) in err and "Permission denied" in err, err
    assert DQN.load(rescue).num_timesteps == 300
    assert read_run(_only_run(tmp_path))["status"] == "failed"


def test_run_dir_is_visible_and_zip_files_are_whole(tmp_path: Path) -> None:
    """Every zip in a finished run directory is complete, and no temporary file or folder is left."""
    res = run_training(load_rl_config(_cfg(tmp_path, timesteps=400)))
    names = {p.name for p in res.run_dir.rglob("*")}
    assert not [n for n in names if n.startswith(".")]
    for z in res.run_dir.rglob("*.zip"):
        with zipfile.ZipFile(z) as f:
            assert f.testzip() is None
    info = read_run(res.run_dir)
    assert info["status"] == "finished" and info["steps_done"] == 400 == res.steps
    assert res.best_step in (250,) and np.isfinite(res.best_mean or np.nan)


def test_a_full_disk_keeps_checkpoints_whole_and_the_model_saved(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills in the middle of a run: a checkpoint that cannot be written whole leaves none of its
    files (the last whole one stays resumable), the failure is said once, and when the run's own files
    can no longer be written the model is saved elsewhere and the one line names the file that failed."""
    import tempfile

    import equirl.rl.train as train

    full = {"on": False}
    original = DQN.save_replay_buffer

    def buffer_fails(self: Any, path: Any) -> None:  # the replay buffer is the checkpoint's largest file
        if full["on"]:
            raise OSError(28, "No space left on device", str(getattr(path, "name", path)))
        original(self, path)

    class _Fill(BaseCallback):
        def _on_step(self) -> bool:
            full["on"] = self.num_timesteps >= 500
            if self.num_timesteps >= 1100:  # and then the run's record cannot be written either
                raise OSError(28, "No space left on device", str(tmp_path / "runs" / "run.json"))
            return True

    monkeypatch.setattr(DQN, "save_replay_buffer", buffer_fails)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", None)
    cfg = load_rl_config(_cfg(tmp_path, timesteps=1500))
    with pytest.raises(train.RunSaveError) as err, caplog.at_level("WARNING", logger="equirl"):
        run_training(cfg, callbacks=[_Fill()])
    msg = str(err.value)
    (rescue,) = list((tmp_path / "tmp").glob("equirl-rescue-*.zip"))
    assert "\n" not in msg and str(rescue) in msg and "run.json" in msg, msg
    assert DQN.load(rescue).num_timesteps >= 1100
    run = _only_run(tmp_path)
    ckpt = run / "checkpoint"
    state = json.loads((ckpt / "state.json").read_text())
    assert state["step"] < 500 + 200  # the last whole checkpoint, from before the disk filled
    named = {n for n in state["files"].values() if n}
    assert {p.name for p in ckpt.iterdir()} == named | {"state.json"}  # no half checkpoint left
    assert read_run(run)["status"] == "failed"
    assert load_checkpoint(run) is not None
    said = [r for r in caplog.records if "not written" in r.getMessage() and r.levelname == "WARNING"]
    assert len(said) == 1  # said once, not at every later checkpoint (there were three)


def test_a_signal_during_the_final_evaluation_stops_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing polls for a stop during the final evaluation: the first SIGINT interrupts it there (one
    line, checkpoint written), and resuming finishes the run."""
    import equirl.rl.evaluation as evaluation

    real = evaluation.evaluate
    calls = {"n": 0}

    def evaluate(model: Any, env_id: str, n_eval_episodes: int = 10, **kw: Any) -> list[float]:
        if n_eval_episodes == 7 and calls["n"] == 0:  # the final evaluation (final_episodes: 7)
            calls["n"] += 1
            signal.raise_signal(signal.SIGINT)
            time.sleep(0.5)
            raise AssertionError("the signal did not stop the final evaluation")
        return real(model, env_id, n_eval_episodes=n_eval_episodes, **kw)

    monkeypatch.setattr(evaluation, "evaluate", evaluate)
    cfg = _cfg(tmp_path, timesteps=600, eval={"freq": 300, "episodes": 2, "final_episodes": 7})
    assert main(["train", str(cfg), "--no-progress"]) == 130  # interrupted, as by a signal mid-training
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "interrupted at step 600 of 600" in err[0], err
    run = _only_run(tmp_path)
    assert read_run(run)["status"] == "interrupted"
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert read_run(run)["status"] == "finished" and (run / "model.zip").is_file()
