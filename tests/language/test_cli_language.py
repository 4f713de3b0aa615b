"""``equirl language ...`` commands: happy paths on tiny settings, one-line errors with exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from equirl.cli import main


def _cfg(tmp_path: Path, text: str) -> str:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return str(p)


TINY = """
name: t
data: {split: add_jump, limit: 48}
model: {cell: gru, embedding: 8, hidden: 8}
train: {epochs: 1, batch_size: 16, eval_examples: 16}
"""


def test_pretrain_and_eval_tiny(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["language", "pretrain", _cfg(tmp_path, TINY), "--out", str(run)]) == 0
    assert (run / "model.pt").is_file() and (run / "metrics.json").is_file() and any((run / "tb").iterdir())
    code = main(
        ["language", "eval", str(run), "--limit", "16", "--methods", "plain,equitune,equizero,lambda"]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "equizero" in out and "exact_match" in out
    ft = [
        "language",
        "eval",
        str(run),
        "--limit",
        "16",
        "--methods",
        "plain,equitune,equizero,lambda",
        "--finetune-epochs",
        "1",
        "--finetune-lr",
        "5e-4",
    ]
    assert main(ft) == 0
    assert capsys.readouterr().out.count("True") == 4  # every method finetuned, plain included
    assert main(["language", "eval", str(run), "--methods", "magic"]) == 2


@pytest.mark.parametrize(
    "bad",
    [
        "model: {cell: transformer}\n",
        "data: {split: nope}\n",
        "train: {epochs: many}\n",
        "unknown_key: 1\n",
        "model: [1, 2\n",
    ],
)
def test_bad_configs_exit_2(tmp_path: Path, bad: str) -> None:
    assert main(["language", "pretrain", _cfg(tmp_path, bad)]) == 2


def test_eval_errors(tmp_path: Path) -> None:
    assert main(["language", "eval", str(tmp_path / "missing")]) == 2
    junk = tmp_path / "model.pt"
    junk.write_bytes(b"not a checkpoint")
    assert main(["language", "eval", str(junk)]) == 2


def test_scan_generate_cli(tmp_path: Path) -> None:
    assert main(["language", "scan-generate", "--out", str(tmp_path), "--order", "canonical"]) == 0
    assert (tmp_path / "template_split" / "tasks_test_template_around_right.txt").is_file()


def test_gpt2_hub_offline_is_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    cfg = _cfg(tmp_path, "model: gpt2\nprompts: ['The man worked as']\n")
    assert main(["language", "gpt2-generate", cfg]) == 2


def test_gpt2_bad_config(tmp_path: Path) -> None:
    assert main(["language", "gpt2-generate", _cfg(tmp_path, "method: magic\n")]) == 2
    assert main(["language", "gpt2-generate", _cfg(tmp_path, "variant: GPT5\n")]) == 2


@pytest.mark.slow
def test_gpt2_generate_tiny_offline(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, f"model: tiny\nprompts: ['The man worked as']\nmax_new_tokens: 3\nout: {tmp_path}\n")
    assert main(["language", "gpt2-generate", cfg]) == 0
    assert (tmp_path / "generations.jsonl").is_file()
    assert main(["language", "gpt2-fairness", cfg]) == 0
