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


def _saved(tmp_path: Path, edit: dict[str, torch.Tensor]) -> Path:
    from equirl.language.config import ModelConfig, PretrainConfig
    from equirl.language.train import build_model, save_checkpoint

    cfg = PretrainConfig(model=ModelConfig(cell="gru", embedding=8, hidden=8))
    model = build_model(cfg.model)
    path = save_checkpoint(tmp_path / "model.pt", model, cfg, {})
    blob = torch.load(path, weights_only=True)
    blob["state_dict"].update(edit)
    torch.save(blob, path)
    return path


def test_weights_that_do_not_fit_name_the_key_and_both_shapes(tmp_path: Path) -> None:
    path = _saved(tmp_path, {"out.weight": torch.zeros(5, 8)})
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert "out.weight" in msg and "[5, 8]" in msg and "\n" not in msg


def test_non_finite_seq2seq_weights_are_refused(tmp_path: Path) -> None:
    from equirl.language.config import ModelConfig
    from equirl.language.train import build_model

    w = build_model(ModelConfig(cell="gru", embedding=8, hidden=8)).state_dict()["out.weight"].clone()
    w[0, 0] = float("inf")
    with pytest.raises(CheckpointError, match=r"'out.weight' holds NaN or inf values"):
        load_checkpoint(_saved(tmp_path, {"out.weight": w}))


def test_empty_word_sets_are_named(tmp_path: Path) -> None:
    from equirl.errors import ConfigError, SymmetryError
    from equirl.language.config import Gpt2RunConfig
    from equirl.language.gpt2 import word_swap_symmetry
    from equirl.language.tokenizer import tiny_tokenizer

    with pytest.raises(ConfigError, match="attributes .*names no word set"):
        Gpt2RunConfig(attributes=[])
    with pytest.raises(SymmetryError, match="the word sets are empty"):
        word_swap_symmetry(tiny_tokenizer(), {})
