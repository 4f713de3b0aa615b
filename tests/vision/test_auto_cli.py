"""``method: auto`` for image classifiers (pick the method by validation accuracy): the choice on a constructed case, the choice and
evidence files of ``equirl vision finetune`` / ``eval``, and the one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from equirl.cli import main
from equirl.registry import AUTO, BASE, EQUITUNE, EQUIZERO
from equirl.vision.select import select_classifier_method


class _TopEdge(nn.Module):
    """Class 1 iff the top row (corners excluded) holds a bright pixel: right only on upright images."""

    def forward(self, x: Tensor) -> Tensor:
        top = x[:, 0, 0, 1:-1].sum(-1)
        return torch.stack([torch.zeros_like(top), 10.0 * top - 1.0], dim=-1)


class _Total(nn.Module):
    """Class 1 iff the image holds a bright pixel anywhere: already invariant to every rotation."""

    def forward(self, x: Tensor) -> Tensor:
        s = x.flatten(1).sum(-1)
        return torch.stack([torch.zeros_like(s), 10.0 * s - 1.0], dim=-1)


def _edge_data(n: int = 200) -> tuple[Tensor, Tensor]:
    """Upright images: class 1 has one bright pixel on the top edge (not a corner), class 0 is blank."""
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 2
    x = torch.zeros(n, 1, 8, 8)
    cols = torch.randint(1, 7, (n,), generator=gen)
    x[labels == 1, 0, 0, cols[labels == 1]] = 1.0
    return x, labels


def test_auto_picks_the_known_best_on_a_constructed_case(tmp_path: Path) -> None:
    x, y = _edge_data()
    # base is right on blank images and on the quarter of marked ones turned back upright (~62 %);
    # equitune (mean logit 9/4 - 1 > 0) and equizero (the marked view is the confident one) are exact
    choice = select_classifier_method(_TopEdge(), "rot90", x, y, candidates=(BASE, EQUITUNE, EQUIZERO))
    assert choice.val_accuracy[EQUITUNE] == 1.0 and choice.val_accuracy[EQUIZERO] == 1.0
    assert choice.val_accuracy[BASE] < 0.8
    assert choice.method == EQUITUNE  # tied with equizero: the earlier (cheaper) candidate wins
    assert choice.reason.startswith(f"auto picked {EQUITUNE} (100.0 %") and "\n" not in choice.reason
    # an already invariant classifier: every candidate ties, and the tie goes to base
    same = select_classifier_method(_Total(), "rot90", x, y, candidates=(BASE, EQUITUNE, EQUIZERO))
    assert same.method == BASE and set(same.val_accuracy.values()) == {1.0}
    assert "kept as it is" not in same.reason  # base is the best outright here, not merely tied
    jp, mp = choice.save(tmp_path / "m.auto_choice.json")
    data = json.loads(jp.read_text())
    assert data["method"] == EQUITUNE and data["reason"] == choice.reason and data["n_val"] == 40
    rows = {r["method"]: r for r in data["candidates"]}
    assert rows[EQUITUNE]["chosen"] and rows[EQUIZERO]["tied"] and not rows[BASE]["tied"]
    md = mp.read_text()
    assert mp.name == "m.auto_choice.md" and f"| {EQUITUNE} | 100.0 | yes | **yes** |" in md
    assert choice.reason in md


def _pretrain(tmp_path: Path) -> Path:
    ck = tmp_path / "cnn.pt"
    argv = ["vision", "pretrain", "configs/vision/pretrain_digits.yaml", "--set", f"out={ck}"]
    for kv in ("data.size=8", "train.steps=30", "model.width=4", "model.hidden=8"):
        argv += ["--set", kv]
    assert main(argv) == 0 and ck.is_file()
    return ck


@pytest.mark.slow
def test_cli_finetune_and_eval_auto(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from equirl.vision.train import auto_choice_path, load_finetuned

    ck = _pretrain(tmp_path)
    out = tmp_path / "auto.pt"
    argv = ["vision", "finetune", "configs/vision/finetune_lambda.yaml", "--set", f"checkpoint={ck}"]
    for kv in (f"out={out}", f"method={AUTO}", "data.size=8", "train.steps=5", "n_train=100"):
        argv += ["--set", kv]
    capsys.readouterr()
    assert main(argv) == 0 and out.is_file()
    printed = capsys.readouterr().out
    jp = auto_choice_path(out)
    assert jp == tmp_path / "auto.auto_choice.json" and jp.is_file() and jp.with_suffix(".md").is_file()
    data = json.loads(jp.read_text())
    accs = {r["method"]: r["val_accuracy"] for r in data["candidates"]}
    assert len(accs) == 5 and data["n_val"] == 20
    assert accs[data["method"]] >= max(accs.values()) - data["tolerance"]  # tied with the best
    assert [r["method"] for r in data["candidates"] if r["chosen"]] == [data["method"]]
    assert data["reason"] in " ".join(printed.split()) or data["reason"] in printed
    # the saved model is the chosen method, with its fitted weights
    model = load_finetuned(out)
    assert type(model).__name__ != "SmallCNN" or data["method"] == BASE
    # eval --method auto on the plain checkpoint: fits on the training split, evaluates on the test split
    cfg = tmp_path / "data.yaml"
    cfg.write_text("data:\n  size: 8\n")
    res = tmp_path / "choice"
    argv = ["vision", "eval", str(ck), "--method", AUTO, "--config", str(cfg), "--n-train", "60"]
    assert main([*argv, "--out", str(res)]) == 0
    printed = capsys.readouterr().out
    data = json.loads((res / "auto_choice.json").read_text())
    assert (res / "auto_choice.md").is_file() and data["n_val"] == 12
    assert "auto picked" in printed and f"auto → {data['method']}" in printed and "random" in printed


def test_eval_auto_refuses_to_replace_a_saved_choice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    res = tmp_path / "choice"
    res.mkdir()
    (res / "auto_choice.md").write_text("an earlier choice")
    argv = ["vision", "eval", str(tmp_path / "any.pt"), "--method", AUTO, "--out", str(res)]
    assert main(argv) == 2  # before the checkpoint is even read
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "auto_choice.md" in err[0] and "--overwrite" in err[0]
    assert (res / "auto_choice.md").read_text() == "an earlier choice"
    assert main(["vision", "eval", str(tmp_path / "any.pt"), "--overwrite"]) == 2  # --overwrite needs --out


@pytest.fixture(scope="module")
def small_cnn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _pretrain(tmp_path_factory.mktemp("cnn"))


def test_eval_auto_overwrite_replaces_the_choice(small_cnn: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "data.yaml"
    cfg.write_text("data:\n  size: 8\n")
    res = tmp_path / "choice"
    res.mkdir()
    (res / "auto_choice.json").write_text("{}")
    argv = ["vision", "eval", str(small_cnn), "--method", AUTO, "--config", str(cfg), "--n-train", "20"]
    assert main([*argv, "--out", str(res), "--overwrite"]) == 0
    assert json.loads((res / "auto_choice.json").read_text())["method"]


def test_finetune_overwrite_removes_a_stale_auto_choice(
    small_cnn: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from equirl.vision.train import auto_choice_files

    out = tmp_path / "m.pt"
    out.write_bytes(b"an earlier model")
    stale = auto_choice_files(out)
    for f in stale:
        f.write_text("the choice of the earlier (auto) model")
    argv = ["vision", "finetune", "configs/vision/finetune_lambda.yaml", "--set", f"checkpoint={small_cnn}"]
    for kv in (f"out={out}", "method=lambda", "data.size=8", "train.steps=2", "n_train=20"):
        argv += ["--set", kv]
    capsys.readouterr()
    assert main(argv) == 2 and all(f.is_file() for f in stale)  # not without --overwrite
    assert "m.pt already exists" in capsys.readouterr().err
    out.unlink()  # even with out gone, the stale choice is not silently kept beside a new model
    assert main(argv) == 2 and all(f.is_file() for f in stale)
    assert "m.auto_choice.json (method auto's choice" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0 and out.is_file()
    assert not any(f.exists() for f in stale)
