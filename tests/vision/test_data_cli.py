"""Image-folder loading, digits, checkpoints and the ``equirl vision`` commands."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from equirl.cli import main
from equirl.errors import CheckpointError, EquirlError
from equirl.vision import SmallCNN, load_cnn, load_digits, load_image_folder, save_cnn, split_dataset


def _folder(root: Path, size: int = 6) -> None:
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / c / f"{i}.png")


def test_image_folder_roundtrip(tmp_path: Path) -> None:
    _folder(tmp_path)
    ds = load_image_folder(tmp_path)
    assert ds.classes == ["cat", "dog"]
    assert ds.images.shape == (6, 3, 6, 6) and ds.images.dtype == torch.float32
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    raw = np.asarray(Image.open(tmp_path / "cat" / "0.png"), dtype=np.float32) / 255
    assert torch.allclose(ds.images[0], torch.from_numpy(raw).permute(2, 0, 1))
    grey = load_image_folder(tmp_path, size=8, mode="L")
    assert grey.images.shape == (6, 1, 8, 8)


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(EquirlError, match="not found"):
        load_image_folder(tmp_path / "missing")
    with pytest.raises(EquirlError, match="no class sub-folders"):
        load_image_folder(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"not an image")
    with pytest.raises(EquirlError, match="cannot read image"):
        load_image_folder(tmp_path)


def test_digits_and_split() -> None:
    ds = load_digits(16)
    assert ds.images.shape == (1797, 1, 16, 16)
    assert float(ds.images.min()) >= 0 and float(ds.images.max()) <= 1
    tr, te = split_dataset(ds, 500, seed=0)
    assert len(tr) == 1297 and len(te) == 500
    _tr2, te2 = split_dataset(ds, 500, seed=0)
    assert torch.equal(te.labels, te2.labels)


def test_checkpoint_roundtrip_and_errors(tmp_path: Path) -> None:
    net = SmallCNN(1, 10, 8, 4, 8).eval()
    p = save_cnn(net, tmp_path / "m.pt", {"note": "x"})
    net2, meta = load_cnn(p)
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(net(x), net2(x)) and meta["note"] == "x"
    assert [f.name for f in tmp_path.iterdir()] == ["m.pt"]  # no temp files left
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError):
        load_cnn(tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_cnn(tmp_path / "none.pt")


def _pretrain(tmp_path: Path) -> Path:
    ck = tmp_path / "cnn.pt"
    rc = main(
        [
            "vision",
            "pretrain",
            "configs/vision/pretrain_digits.yaml",
            "--set",
            f"out={ck}",
            "--set",
            "data.size=8",
            "--set",
            "train.steps=20",
            "--set",
            "model.width=4",
            "--set",
            "model.hidden=8",
        ]
    )
    assert rc == 0 and ck.is_file()
    return ck


def test_cli_pretrain_finetune_eval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ck = _pretrain(tmp_path)
    out = tmp_path / "lam.pt"
    rc = main(
        [
            "vision",
            "finetune",
            "configs/vision/finetune_lambda.yaml",
            "--set",
            f"checkpoint={ck}",
            "--set",
            f"out={out}",
            "--set",
            "data.size=8",
            "--set",
            "train.steps=5",
            "--set",
            "n_train=100",
        ]
    )
    assert rc == 0 and out.is_file()
    ft = tmp_path / "eq.pt"
    rc = main(
        [
            "vision",
            "finetune",
            "configs/vision/finetune_equitune.yaml",
            "--set",
            f"checkpoint={ck}",
            "--set",
            f"out={ft}",
            "--set",
            "data.size=8",
            "--set",
            "train.steps=3",
            "--set",
            "n_train=50",
        ]
    )
    assert rc == 0
    capsys.readouterr()
    assert main(["vision", "eval", str(out)]) == 2  # digits default size 16 vs an 8x8 checkpoint
    cfg = tmp_path / "data.yaml"
    cfg.write_text("data:\n  size: 8\n")
    assert main(["vision", "eval", str(out), "--config", str(cfg)]) == 0
    assert "random" in capsys.readouterr().out
    assert (
        main(["vision", "eval", str(ck), "--method", "equizero", "--group", "mirror", "--config", str(cfg)])
        == 0
    )


@pytest.mark.parametrize(
    "argv,msg",
    [
        (["--set", "bogus=1"], "unknown key bogus"),
        (["--set", "group=rot45"], "unknown image group"),
        (["--set", "method=best"], "unknown method 'best'; choose one of base, equitune"),
        (["--set", "n_train=abc"], "expected an integer"),
        (["--set", "method=equitune", "--set", "train_backbone=false"], "no λ to train"),
        (["--set", "checkpoint=/nonexistent/x.pt"], "checkpoint not found"),
    ],
)
def test_cli_bad_finetune_configs(argv: list[str], msg: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["vision", "finetune", "configs/vision/finetune_lambda.yaml", *argv])
    assert rc == 2
    err = " ".join(capsys.readouterr().err.split())
    assert msg in err


def test_cli_bad_pretrain_configs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  size: 10\n")
    assert main(["vision", "pretrain", str(bad)]) == 2
    assert "multiple of 4" in capsys.readouterr().err
    bad.write_text("data: [1, 2\n")
    assert main(["vision", "pretrain", str(bad)]) == 2
    assert "malformed YAML" in capsys.readouterr().err
    assert main(["vision", "pretrain", str(tmp_path / "missing.yaml")]) == 2
    bad.write_text("data:\n  source: folder\n")
    assert main(["vision", "pretrain", str(bad)]) == 2
    assert "data.root is required" in " ".join(capsys.readouterr().err.split())


def test_cli_finetune_canonicalize_roundtrip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``method: canonicalize`` trains the scorer; the saved checkpoint reloads to the same predictions."""
    from equirl.vision.train import load_finetuned

    ck = _pretrain(tmp_path)
    out = tmp_path / "can.pt"
    argv = ["vision", "finetune", "configs/vision/finetune_canonicalize.yaml", "--set", f"checkpoint={ck}"]
    argv += ["--set", f"out={out}", "--set", "data.size=8", "--set", "train.steps=5", "--set", "n_train=64"]
    assert main(argv) == 0 and out.is_file()
    assert "canonicalizer" in capsys.readouterr().out
    model = load_finetuned(out)
    x = torch.randn(5, 1, 8, 8)
    first = model(x)
    torch.testing.assert_close(load_finetuned(out)(x), first)
    cfg = tmp_path / "data.yaml"
    cfg.write_text("data:\n  size: 8\n")
    assert main(["vision", "eval", str(out), "--config", str(cfg)]) == 0
    capsys.readouterr()
    # a plain checkpoint has no canonicalizer to load: a one-line error, not a random scorer
    assert main(["vision", "eval", str(ck), "--method", "canonicalize", "--config", str(cfg)]) == 2
    assert "no canonicalizer weights" in capsys.readouterr().err
