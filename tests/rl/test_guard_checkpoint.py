"""Crafted run directories never run code, read, write or delete outside themselves, and a refused resume
changes nothing: checkpoint files are signed by this user's equirl and restored only when the signature
verifies; paths in ``state.json`` stay inside ``checkpoint/``; symlinks are not followed; an edited config,
a corrupt or incomplete checkpoint and a read-only folder are refused before anything is written."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import threading
import zipfile
from pathlib import Path
from typing import Any

import pytest

from equirl.cli import main
from equirl.errors import RunInterrupted
from equirl.rl.config import load_rl_config
from equirl.rl.train import run_training
from tests.rl.helpers import StopAt

TINY = {
    "env": "CartPole-v1",
    "timesteps": 1200,
    "method": "base",
    "hyperparams": {"learning_starts": 100, "buffer_size": 2000, "net_arch": [16], "train_freq": 4},
    "eval": {"freq": 0, "episodes": 2, "final_episodes": 2},
    "log": {"equi_freq": 0, "tensorboard": True},
    "checkpoint": {"freq": 200, "replay_buffer": True},
}


class _Payload:
    """Unpickling it creates ``path`` (the marker a crafted file must never make appear)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (os.system, (f"touch {self.path}",))


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An interrupted run with a checkpoint (model, replay buffer, extra state)."""
    import yaml

    root = tmp_path_factory.mktemp("guard")
    cfg_path = root / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump({**TINY, "out": str(root / "runs")}))
    stop = threading.Event()
    with pytest.raises(RunInterrupted):
        run_training(load_rl_config(cfg_path), callbacks=[StopAt(400, stop)], stop=stop)
    (run,) = list((root / "runs").iterdir())
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["files"]["replay_buffer"] and state["files"]["extra"] and state["digests"]
    return run


def _copy(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "runs" / run.name
    shutil.copytree(run, dst, symlinks=True)
    return dst


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def _state(run: Path) -> dict[str, Any]:
    return dict(json.loads((run / "checkpoint" / "state.json").read_text()))


def _refused(run: Path, capsys: pytest.CaptureFixture[str], *match: str, extra: tuple[str, ...] = ()) -> str:
    """``equirl train --resume run`` exits 2 with one line containing ``match``; nothing in the run
    folder changed."""
    before = _snapshot(run)
    assert main(["train", "--resume", str(run), "--no-progress", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for m in match:
        assert m in err, err
    assert _snapshot(run) == before
    return err


def _state_with(run: Path, **files: str | None) -> None:
    st = _state(run)
    st["files"].update(files)
    (run / "checkpoint" / "state.json").write_text(json.dumps(st))


def test_resume_of_own_run_works_and_is_signed(interrupted: Path, tmp_path: Path) -> None:
    run = _copy(interrupted, tmp_path)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and info["steps_done"] >= 1200
    assert len(info["config_sha256"]) == 64


@pytest.mark.parametrize("key", ["extra", "model", "replay_buffer"])
def test_payload_in_a_checkpoint_file_never_runs(
    key: str, interrupted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each checkpoint file replaced by a pickle (or an SB3 zip whose data holds a pickle) that would
    create a marker: refused as unsigned, the marker never appears."""
    run = _copy(interrupted, tmp_path)
    marker = tmp_path / "MARKER"
    target = run / "checkpoint" / _state(run)["files"][key]
    blob = pickle.dumps(_Payload(marker))
    if key == "model":
        with zipfile.ZipFile(target) as z:
            members = {n: z.read(n) for n in z.namelist()}
        import base64

        data = json.loads(members["data"])
        data["policy_class"] = {":type:": "x", ":serialized:": base64.b64encode(blob).decode()}
        members["data"] = json.dumps(data).encode()
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            for n, b in members.items():
                z.writestr(n, b)
        blob = buf.getvalue()
    target.write_bytes(blob)
    _refused(run, capsys, "does not match its signature", "--trust-checkpoint")
    assert not marker.exists()


def test_trust_checkpoint_is_the_way_around(
    interrupted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run folder without signatures (an older equirl, another machine) is refused by default and
    resumes with --trust-checkpoint."""
    run = _copy(interrupted, tmp_path)
    st = _state(run)
    del st["digests"]
    (run / "checkpoint" / "state.json").write_text(json.dumps(st))
    _refused(run, capsys, "is not signed", "--trust-checkpoint")
    assert main(["train", "--resume", str(run), "--no-progress", "--trust-checkpoint"]) == 0


@pytest.mark.parametrize("key", ["model", "replay_buffer", "extra"])
def test_state_paths_never_leave_the_checkpoint_folder(
    key: str, interrupted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A state.json naming ``../../victim`` (or an absolute path) is refused; the victim is untouched."""
    run = _copy(interrupted, tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    for name in ("../../../victim.txt", str(victim)):
        _state_with(run, **{key: name})
        _refused(run, capsys, "a path outside")
    assert victim.read_text() == "precious"


def test_old_file_entries_never_delete_outside(interrupted: Path, tmp_path: Path) -> None:
    """Superseded checkpoint files are deleted only when they are equirl's own names in checkpoint/:
    a crafted ``state.json`` cannot delete another file (here a resumed run writes new checkpoints
    over a state whose old entries were edited after the load)."""
    from equirl.rl.lifecycle import save_checkpoint

    run = _copy(interrupted, tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    inside = run / "checkpoint" / "notes.txt"
    inside.write_text("mine")
    _state_with(run, replay_buffer=str(victim), extra="notes.txt")

    class Fake:
        num_timesteps = 999
        replay_buffer = None

        def save(self, fh: Any) -> None:
            fh.write(b"zip")

    save_checkpoint(Fake(), run, {}, replay_buffer=False, exact=False)
    assert victim.read_text() == "precious" and inside.read_text() == "mine"


@pytest.mark.parametrize("where", ["tb/progress.csv", "checkpoint", "run.json"])
def test_symlinks_in_a_run_folder_are_refused(
    where: str, interrupted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(interrupted, tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "target"
    p = run / where
    if p.is_dir():
        shutil.copytree(p, target)
        shutil.rmtree(p)
    else:
        target.write_bytes(p.read_bytes())
        p.unlink()
    p.symlink_to(target)
    before = _snapshot(outside)
    _refused(run, capsys, "symbolic link")
    assert _snapshot(outside) == before


@pytest.mark.parametrize("content", ["", "{", "[]", '{"step": 400}'])
def test_corrupt_state_json_is_refused_not_restarted(
    content: str, interrupted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty or corrupt ``state.json`` beside ``model_*.zip`` used to mean "train again from step 0"
    over the run's work: now one line, nothing changed."""
    run = _copy(interrupted, tmp_path)
    (run / "checkpoint" / "state.json").write_text(content)
    _refused(run, capsys, "state")


def test_missing_state_json_with_models_is_refused(
    interrupted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(interrupted, tmp_path)
    (run / "checkpoint" / "state.json").unlink()
    _refused(run, capsys, "no state.json")


def test_edited_config_is_refused_before_run_json_changes(
    interrupted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(interrupted, tmp_path)
    cfg = run / "config.yaml"
    cfg.write_text(cfg.read_text().replace("CartPole-v1", "Acrobot-v1"))
    _refused(run, capsys, "was edited")


def test_truncated_checkpoint_zip_with_trust_is_one_line(
    interrupted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(interrupted, tmp_path)
    z = run / "checkpoint" / _state(run)["files"]["model"]
    z.write_bytes(z.read_bytes()[:100])
    _refused(run, capsys, "does not match its signature")
    _refused(run, capsys, "cannot restore checkpoint", extra=("--trust-checkpoint",))


def test_read_only_run_folder_is_refused_up_front(
    interrupted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tests may run as root, which ignores permission bits: the check itself is made to see a read-only
    ``checkpoint/``; no step is trained."""
    import equirl.utils.io as eio

    run = _copy(interrupted, tmp_path)
    real = os.access
    monkeypatch.setattr(
        eio.os, "access", lambda p, mode: False if Path(p).name == "checkpoint" else real(p, mode)
    )
    _refused(run, capsys, "not writable")
