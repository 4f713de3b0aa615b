"""Local Hugging Face folders (GPT-2, its tokenizer, CLIP) are checked before they are read: every
broken one is one line and exit 2, never a traceback, a random model, or a hub message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from equirl.cli import main
from equirl.errors import CheckpointError, ConfigError
from equirl.language.gpt2 import load_gpt2, load_gpt2_tokenizer, tiny_gpt2
from equirl.vision.clip import load_clip


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from equirl.language.tokenizer import default_tokenizer

    d = tmp_path_factory.mktemp("gpt2")
    vocab = len(default_tokenizer())  # what the CLI's default tokenizer needs
    tiny_gpt2(vocab_size=vocab, n_layer=1, n_embd=16, n_head=2, n_positions=32).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.vision.test_clip import _tiny_clip, _tiny_tokenizer

    d = tmp_path_factory.mktemp("clip")
    _tiny_clip().save_pretrained(d)
    _tiny_tokenizer().save_pretrained(d)
    return d


def _copy(src: Path, dst: Path, skip: tuple[str, ...] = ()) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        if f.name not in skip:
            (dst / f.name).write_bytes(f.read_bytes())
    return dst


def _cli_gpt2(tmp_path: Path, capsys: pytest.CaptureFixture[str], *sets: str) -> str:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: tiny\nprompts: ['The man worked as']\nmax_new_tokens: 2\ndo_sample: false\n")
    argv = ["language", "gpt2-generate", str(cfg)]
    for s in sets:
        argv += ["--set", s]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_gpt2_folder_round_trip(gpt2_dir: Path) -> None:
    assert load_gpt2(str(gpt2_dir)).config.n_positions == 32


def test_broken_gpt2_folders_are_one_line(gpt2_dir: Path, clip_dir: Path, tmp_path: Path) -> None:
    trunc = _copy(gpt2_dir, tmp_path / "trunc")
    blob = (trunc / "model.safetensors").read_bytes()
    (trunc / "model.safetensors").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(
        CheckpointError, match=r"cannot load GPT-2 model from folder .*trunc: SafetensorError"
    ):
        load_gpt2(str(trunc))
    with pytest.raises(CheckpointError, match="it has no config.json"):
        load_gpt2(str(_copy(gpt2_dir, tmp_path / "nocfg", skip=("config.json",))))
    with pytest.raises(CheckpointError, match="holds a 'clip' model"):
        load_gpt2(str(clip_dir))
    with pytest.raises(CheckpointError, match="has no weights"):
        load_gpt2(str(_copy(gpt2_dir, tmp_path / "noweights", skip=("model.safetensors",))))


def test_non_finite_gpt2_weights_are_refused(tmp_path: Path) -> None:
    model = tiny_gpt2(vocab_size=300, n_layer=1, n_embd=16, n_head=2, n_positions=32)
    with torch.no_grad():
        model.transformer.h[0].mlp.c_fc.weight[0, 0] = float("nan")
    model.save_pretrained(tmp_path / "nan")
    with pytest.raises(CheckpointError, match=r"'transformer.h.0.mlp.c_fc.weight' holds NaN or inf"):
        load_gpt2(str(tmp_path / "nan"))


def test_clip_folder_checks(gpt2_dir: Path, clip_dir: Path, tmp_path: Path) -> None:
    _, tok = load_clip(str(clip_dir))
    assert len(tok) > 1
    with pytest.raises(CheckpointError, match="holds a 'gpt2' model"):
        load_clip(str(gpt2_dir))  # was: a random CLIP, every weight missing
    from safetensors.torch import load_file, save_file

    part = _copy(clip_dir, tmp_path / "part")
    state = load_file(part / "model.safetensors")
    state.pop("text_projection.weight")
    save_file(state, part / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"lacks weights the model needs \(text_projection.weight"):
        load_clip(str(part))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda d: (d / "vocab.json").write_text("") or (d / "merges.txt").write_text(""), "cannot load"),
        (lambda d: (d / "vocab.json").write_text("{}"), "it has vocab.json"),
    ],
)
def test_broken_tokenizer_folders_are_one_line(tmp_path: Path, make: Any, match: str) -> None:
    d = tmp_path / "tok"
    d.mkdir()
    make(d)
    with pytest.raises(CheckpointError, match=match) as err:
        load_gpt2_tokenizer(d)
    assert "\n" not in str(err.value)


def test_local_paths_are_not_hub_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "file.bin"
    f.write_bytes(b"x")
    for key, name, match in (
        ("model", str(tmp_path / "nosuch"), "not found"),
        ("model", str(f), "is a file, not a model folder"),
        ("tokenizer", str(f), "is a file, not a tokenizer folder"),
        ("tokenizer", "./no/such/tokenizer", "not found"),
    ):
        line = _cli_gpt2(tmp_path, capsys, f"{key}={name}")
        assert match in line and "Hugging Face cache" not in line, line
    with pytest.raises(ConfigError, match="not found"):
        load_gpt2(str(tmp_path / "nosuch"))


def test_scorer_is_checked_before_model_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import equirl.language.gpt2_run as gpt2_run

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("equirl.utils.hub.hub_offline", lambda: True)
    monkeypatch.setattr(gpt2_run, "setup_gpt2", lambda *a, **k: pytest.fail("model work before the check"))
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: tiny\nprompts: ['The man worked as']\nscorer: nosuch-org/nosuch-model\n")
    assert main(["language", "gpt2-fairness", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "text classifier 'nosuch-org/nosuch-model'" in err[0]


def test_max_new_tokens_beyond_positions_is_refused_up_front(
    gpt2_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import equirl.language.gpt2_run as gpt2_run

    monkeypatch.setattr(
        gpt2_run, "generate_continuations", lambda *a, **k: pytest.fail("generation before the check")
    )
    line = _cli_gpt2(tmp_path, capsys, f"model={gpt2_dir}", "max_new_tokens=300")
    assert "more than the model's 32 (n_positions)" in line and "max_new_tokens to at most" in line


def test_cli_model_loading_prints_no_transformers_lines(
    gpt2_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"model: {gpt2_dir}\nprompts: ['The man worked as']\nmax_new_tokens: 2\ndo_sample: false\n"
    )
    capsys.readouterr()
    assert main(["language", "gpt2-generate", str(cfg)]) == 0
    err = capsys.readouterr().err
    assert "Loading weights" not in err and "[transformers]" not in err and "deprecated" not in err
