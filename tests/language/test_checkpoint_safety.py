"""Language checkpoints are read as weights only: a pickled payload is refused and never run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from equirl.cli import main
from equirl.errors import CheckpointError
from equirl.language.train import load_checkpoint
from tests.helpers import Payload


def _crafted(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    run.mkdir()
    blob = {"format": "equirl.language.seq2seq/1", "config": Payload(marker), "state_dict": {}, "metrics": {}}
    torch.save(blob, run / "model.pt")
    return run, marker


def test_pickled_payload_is_refused(tmp_path: Path) -> None:
    run, marker = _crafted(tmp_path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(run)
    assert "\n" not in str(err.value) and "pickled Python objects" in str(err.value)
    assert not marker.exists()


def test_cli_eval_refuses_payload(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, marker = _crafted(tmp_path)
    assert main(["language", "eval", str(run), "--limit", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pickled Python objects" in err, err
    assert not marker.exists()
