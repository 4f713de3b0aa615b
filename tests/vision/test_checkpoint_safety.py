"""Vision checkpoints are read as weights only: a pickled payload is refused and never run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from equirl.cli import main
from equirl.errors import CheckpointError
from equirl.vision import SmallCNN, load_cnn, save_cnn
from tests.helpers import Payload


def _crafted(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    model = SmallCNN(image_size=8, width=4, hidden=8)
    blob = {
        "format": "x",
        "hparams": model.hparams,
        "state_dict": model.state_dict(),
        "meta": Payload(marker),
    }
    path = tmp_path / "cnn.pt"
    torch.save(blob, path)
    return path, marker


def test_round_trip_still_loads(tmp_path: Path) -> None:
    model = SmallCNN(image_size=8, width=4, hidden=8)
    save_cnn(model, tmp_path / "ok.pt", meta={"group": "C4", "acc": [0.5]})
    loaded, meta = load_cnn(tmp_path / "ok.pt")
    assert meta == {"group": "C4", "acc": [0.5]}
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))


def test_pickled_payload_is_refused(tmp_path: Path) -> None:
    path, marker = _crafted(tmp_path)
    with pytest.raises(CheckpointError) as err:
        load_cnn(path)
    assert "\n" not in str(err.value) and "pickled Python objects" in str(err.value)
    assert not marker.exists()


def test_cli_eval_refuses_payload(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, marker = _crafted(tmp_path)
    assert main(["vision", "eval", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pickled Python objects" in err, err
    assert not marker.exists()
