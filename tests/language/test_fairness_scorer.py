"""Hub text classifiers as fairness scorers: the scored label must be one of the model's own labels."""

from __future__ import annotations

from pathlib import Path

import pytest

from equirl.errors import ConfigError, EquirlError
from equirl.language.fairness import hf_text_scorer


def _classifier(folder: Path, id2label: dict[int, str] | None = None) -> Path:
    """A tiny local GPT-2 text classifier (labels ``LABEL_0`` / ``LABEL_1`` unless ``id2label``)."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from equirl.language.tokenizer import tiny_tokenizer

    tok = tiny_tokenizer()
    tok.pad_token = tok.eos_token
    extra = {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}} if id2label else {}
    cfg = GPT2Config(
        vocab_size=len(tok),
        n_layer=1,
        n_embd=16,
        n_head=2,
        n_positions=64,
        num_labels=2,
        pad_token_id=tok.eos_token_id,
        **extra,
    )
    GPT2ForSequenceClassification(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_classifier_without_the_label_is_refused_naming_its_labels(tmp_path: Path) -> None:
    folder = _classifier(tmp_path / "clf")
    with pytest.raises(
        ConfigError, match=r"no label 'POSITIVE' \(its labels: LABEL_0, LABEL_1\).*scorer_label"
    ):
        hf_text_scorer(str(folder))
    scores = hf_text_scorer(str(folder), "label_1")(["she was kind", "he was rude"])  # case-insensitive
    assert len(scores) == 2 and all(0.0 < s < 1.0 for s in scores)  # real probabilities, not 0


def test_named_label_scores_its_probability(tmp_path: Path) -> None:
    folder = _classifier(tmp_path / "clf", {0: "NEGATIVE", 1: "POSITIVE"})
    pos = hf_text_scorer(str(folder))(["she was kind"])
    neg = hf_text_scorer(str(folder), "NEGATIVE")(["she was kind"])
    assert pos[0] + neg[0] == pytest.approx(1.0, abs=1e-5)


def test_gpt2_fairness_cli_names_the_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from equirl.cli import main

    folder = _classifier(tmp_path / "clf")
    capsys.readouterr()  # save_pretrained's own progress bars
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"model: tiny\nprompts: ['The man worked as']\nmax_new_tokens: 2\ndo_sample: false\nscorer: {folder}\n"
    )
    assert main(["language", "gpt2-fairness", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "LABEL_0, LABEL_1" in err[0]
    assert issubclass(ConfigError, EquirlError)
