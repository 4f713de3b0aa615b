"""Bad inputs of the vision, language and env-spec commands: exit 2, ONE stderr line naming the cause,
nothing saved overwritten unless ``--overwrite`` (and nothing imported from an env id unless opted in)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from equirl.cli import main

ROOT = Path(__file__).resolve().parents[1]
VPRE = str(ROOT / "configs" / "vision" / "pretrain_digits.yaml")
VFT = str(ROOT / "configs" / "vision" / "finetune_lambda.yaml")
LANG = str(ROOT / "configs" / "language" / "scan_lstm_add_jump.yaml")
GPT2 = str(ROOT / "configs" / "language" / "gpt2_tiny.yaml")
CARTPOLE_SPEC = (ROOT / "envs" / "CartPole-v1.yaml").read_text()


def one_line_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI; assert exit 2 and exactly one non-empty stderr line; return that line."""
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert code == 2, f"exit {code}: {err}"
    assert len(lines) == 1 and lines[0].strip(), f"not one line: {err!r}"
    assert "Traceback" not in err
    return lines[0]


def _image_folder(root: Path, classes: list[str], n: int = 4, empty: tuple[str, ...] = ()) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        if c in empty:
            continue
        for i in range(n):
            Image.fromarray((rng.random((8, 8)) * 255).astype(np.uint8)).save(root / c / f"{i}.png")
    return root


def _cnn(path: Path, num_classes: int = 10, meta: dict | None = None) -> Path:
    from equirl.vision.models import SmallCNN, save_cnn

    save_cnn(SmallCNN(1, num_classes, image_size=8, width=2, hidden=4), path, meta)
    return path


# --- 1. outputs are never overwritten unless --overwrite -------------------------------------------


def test_guard_a_vision_pretrain_refuses_existing_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cnn.pt"
    out.write_bytes(b"a saved checkpoint")
    line = one_line_error(["vision", "pretrain", VPRE, "--set", f"out={out}"], capsys)
    assert "already exists" in line and "--overwrite" in line and "cnn.pt" in line
    assert out.read_bytes() == b"a saved checkpoint"


def test_guard_a_vision_pretrain_overwrite_replaces(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cnn.pt"
    out.write_bytes(b"old")
    argv = ["vision", "pretrain", VPRE, "--set", f"out={out}", "--overwrite"]
    for kv in ("data.size=8", "train.steps=2", "model.width=2", "model.hidden=4", "data.n_test=50"):
        argv += ["--set", kv]
    assert main(argv) == 0
    assert out.read_bytes()[:2] == b"PK"  # a torch checkpoint now


def test_guard_a_vision_finetune_refuses_out_equal_to_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ck = _cnn(tmp_path / "cnn.pt")
    before = ck.read_bytes()
    line = one_line_error(
        ["vision", "finetune", VFT, "--set", f"checkpoint={ck}", "--set", f"out={ck}"], capsys
    )
    assert "input checkpoint" in line and "--overwrite" in line
    assert ck.read_bytes() == before
    other = tmp_path / "other.pt"
    other.write_bytes(b"keep me")
    line = one_line_error(
        ["vision", "finetune", VFT, "--set", f"checkpoint={ck}", "--set", f"out={other}"], capsys
    )
    assert "already exists" in line and other.read_bytes() == b"keep me"


def test_guard_a_vision_finetune_overwrite_accepts_out_equal_to_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ck = _cnn(tmp_path / "cnn.pt")
    argv = ["vision", "finetune", VFT, "--set", f"checkpoint={ck}", "--set", f"out={ck}", "--overwrite"]
    for kv in ("data.size=8", "train.steps=2", "n_train=20"):
        argv += ["--set", kv]
    assert main(argv) == 0
    from equirl.vision.models import load_cnn

    assert load_cnn(ck)[1]["method"] == "lambda"


def test_guard_a_language_pretrain_refuses_existing_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.pt").write_bytes(b"previous run")
    line = one_line_error(["language", "pretrain", LANG, "--out", str(run)], capsys)
    assert "already exists" in line and "--overwrite" in line
    assert (run / "model.pt").read_bytes() == b"previous run"
    # --overwrite never deletes a folder that is not a run folder
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("precious")
    line = one_line_error(["language", "pretrain", LANG, "--out", str(other), "--overwrite"], capsys)
    assert "not a language run folder" in line and "notes.txt" in line
    assert (other / "notes.txt").read_text() == "precious"


def test_guard_a_language_pretrain_overwrite_replaces_a_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.pt").write_bytes(b"previous run")
    argv = ["language", "pretrain", LANG, "--out", str(run), "--overwrite", "--no-tensorboard"]
    for kv in (
        "train.epochs=0",
        "data.limit=3",
        "model.hidden=4",
        "model.embedding=4",
        "train.eval_examples=2",
    ):
        argv += ["--set", kv]
    assert main(argv) == 0
    assert (run / "model.pt").read_bytes()[:2] == b"PK" and (run / "metrics.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no temporary folder left


def test_guard_a_gpt2_generate_refuses_existing_generations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "generations.jsonl").write_text("old\n")
    line = one_line_error(["language", "gpt2-generate", GPT2, "--set", f"out={tmp_path}"], capsys)
    assert "generations.jsonl already exists" in line and "--overwrite" in line
    assert (tmp_path / "generations.jsonl").read_text() == "old\n"


# --- 2. class folders ---------------------------------------------------------------------------------


def test_guard_a_vision_pretrain_one_class(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _image_folder(tmp_path / "data", ["cat"])
    argv = ["vision", "pretrain", VPRE, "--set", f"out={tmp_path / 'm.pt'}", "--set", "data.source=folder"]
    argv += ["--set", f"data.root={root}", "--set", "data.size=8", "--set", "data.n_test=1"]
    line = one_line_error(argv, capsys)
    assert "at least 2 classes" in line and "cat" in line
    assert not (tmp_path / "m.pt").exists()


def test_guard_a_vision_pretrain_empty_class_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _image_folder(tmp_path / "data", ["cat", "dog", "emu"], empty=("dog",))
    argv = ["vision", "pretrain", VPRE, "--set", f"out={tmp_path / 'm.pt'}", "--set", "data.source=folder"]
    argv += ["--set", f"data.root={root}", "--set", "data.size=8", "--set", "data.n_test=2"]
    line = one_line_error(argv, capsys)
    assert "dog" in line and "no images" in line


# --- 3. class counts of data vs checkpoint ------------------------------------------------------------


def test_guard_a_vision_eval_class_count_mismatch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ck = _cnn(tmp_path / "cnn.pt", 10, {"classes": [str(i) for i in range(10)]})
    root = _image_folder(tmp_path / "data", ["a", "b", "c"])
    cfg = tmp_path / "data.yaml"
    cfg.write_text(f"data:\n  source: folder\n  root: {root}\n  size: 8\n  mode: L\n  n_test: 4\n")
    line = one_line_error(["vision", "eval", str(ck), "--config", str(cfg)], capsys)
    assert "3 classes" in line and "has 10" in line


def test_guard_a_vision_finetune_one_class_checkpoint_on_digits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ck = _cnn(tmp_path / "one.pt", 1, {"classes": ["a"]})
    argv = ["vision", "finetune", VFT, "--set", f"checkpoint={ck}", "--set", f"out={tmp_path / 'ft.pt'}"]
    argv += ["--set", "data.size=8", "--set", "train.steps=2"]
    line = one_line_error(argv, capsys)
    assert "10 classes" in line and "has 1" in line
    assert not (tmp_path / "ft.pt").exists()


# --- 4. language eval methods, GPT-2 prompts ----------------------------------------------------------


@pytest.mark.parametrize("methods", [",", "", " , "])
def test_guard_a_language_eval_no_methods(
    methods: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = one_line_error(["language", "eval", str(tmp_path / "none.pt"), "--methods", methods], capsys)
    assert "--methods" in line and "base, equitune, equizero, lambda" in line


def test_guard_a_language_library_no_methods() -> None:
    from equirl.errors import ConfigError
    from equirl.language.train import evaluate_checkpoint

    with pytest.raises(ConfigError, match="no method"):
        evaluate_checkpoint("none.pt", [])


@pytest.mark.parametrize("prompts", ['[""]', '["ok", "   "]'])
def test_guard_a_gpt2_empty_prompt(prompts: str, capsys: pytest.CaptureFixture[str]) -> None:
    line = one_line_error(["language", "gpt2-generate", GPT2, "--set", f"prompts={prompts}"], capsys)
    assert "prompts[" in line and "non-empty" in line


# --- 5. declared model sizes checked against RAM before building ----------------------------------------


def _lang_blob(path: Path, hidden: int, embedding: int = 32) -> Path:
    from equirl.config import to_dict
    from equirl.language.config import ModelConfig, PretrainConfig

    cfg = PretrainConfig(model=ModelConfig(hidden=hidden, embedding=embedding))
    blob = {"format": "equirl.language.seq2seq/1", "config": to_dict(cfg), "state_dict": {}, "metrics": {}}
    torch.save(blob, path)
    return path


def test_guard_a_language_checkpoint_too_large(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import equirl.language.seq2seq as seq2seq

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was built before its size was checked")

    monkeypatch.setattr(seq2seq.Seq2Seq, "__init__", never)
    ck = _lang_blob(tmp_path / "huge.pt", hidden=1_000_000, embedding=1_000_000)
    assert ck.stat().st_size < 10_000
    line = one_line_error(["language", "eval", str(ck)], capsys)
    assert "huge.pt" in line and "model.hidden=1000000" in line and "GB of RAM" in line
    # the reported case: hidden=30000 (28.8 GB) on a machine with 16 GB
    monkeypatch.setattr("equirl.utils.io.total_ram_bytes", lambda: 16 * 10**9)
    line = one_line_error(["language", "eval", str(_lang_blob(tmp_path / "h30k.pt", hidden=30_000))], capsys)
    assert "model.hidden=30000" in line and "16.0 GB of RAM" in line


def test_guard_a_language_pretrain_config_too_large(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["language", "pretrain", LANG, "--out", str(tmp_path / "r"), "--set", "model.hidden=1000000"]
    line = one_line_error(argv, capsys)
    assert "model.hidden=1000000" in line and "GB of RAM" in line
    assert not (tmp_path / "r").exists()


def test_guard_a_vision_checkpoint_too_large(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from equirl.vision.models import _FORMAT

    hp = {"in_channels": 1, "num_classes": 10, "image_size": 4096, "width": 100_000, "hidden": 100_000}
    torch.save({"format": _FORMAT, "hparams": hp, "state_dict": {}, "meta": {}}, tmp_path / "vhuge.pt")
    line = one_line_error(["vision", "eval", str(tmp_path / "vhuge.pt")], capsys)
    assert "vhuge.pt" in line and "width=100000" in line and "GB of RAM" in line
    hp = {"in_channels": 1, "num_classes": 10, "image_size": 16, "width": -3, "hidden": 4}
    torch.save({"format": _FORMAT, "hparams": hp, "state_dict": {}, "meta": {}}, tmp_path / "neg.pt")
    line = one_line_error(["vision", "eval", str(tmp_path / "neg.pt")], capsys)
    assert "width=-3" in line and "positive integer" in line


# --- 6. group names -----------------------------------------------------------------------------------


def test_guard_a_unknown_group_names_the_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "hex.yaml"
    spec.write_text(CARTPOLE_SPEC.replace("group: flip", "group: hexagonal"))
    assert "group: hexagonal" in spec.read_text()
    line = one_line_error(["check-symmetry", str(spec)], capsys)
    assert "'hexagonal'" in line and "'he'" not in line and "C<n>" in line and "D<n>" in line


def test_guard_a_group_too_large() -> None:
    from equirl.errors import GroupError
    from equirl.groups import get_group

    with pytest.raises(GroupError, match="'C99999' has 99999 elements"):
        get_group("C99999")
    with pytest.raises(GroupError, match="unknown group 'C4x'"):
        get_group("C4x")
    assert get_group("C4XZ2").order == 8


# --- 7. a text file given as a checkpoint ---------------------------------------------------------------


@pytest.mark.parametrize("family", ["vision", "language"])
def test_guard_a_text_file_is_not_a_checkpoint(
    family: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for i, text in enumerate(["x\n", "this is not a checkpoint\n", "{}\n"]):
        p = tmp_path / f"text{i}.pt"
        p.write_text(text)
        line = one_line_error([family, "eval", str(p)], capsys)
        assert "is a text file, not a torch checkpoint" in line and "pickled" not in line


# --- 8. env spec verify section -------------------------------------------------------------------------


def test_guard_a_spec_misspelt_verify_attribute(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "cp.yaml"
    spec.write_text(CARTPOLE_SPEC.replace("  attribute: state", "  attribute: stat"))
    line = one_line_error(["check-symmetry", str(spec), "--steps", "2"], capsys)
    assert "verify.attribute 'stat'" in line and "state" in line
    spec.write_text(CARTPOLE_SPEC.replace("  attribute: state", "  atribute: state"))
    line = one_line_error(["check-symmetry", str(spec), "--steps", "2"], capsys)
    assert "atribute" in line and "allowed in verify: atol, attribute, generators, method, reason" in line
    spec.write_text(CARTPOLE_SPEC.replace("  attribute: state", "  attribute: __class__"))
    line = one_line_error(["check-symmetry", str(spec), "--steps", "2"], capsys)
    assert "verify.attribute" in line


# --- 9. EQUIRL_ENVS_PATH --------------------------------------------------------------------------------


def test_guard_a_envs_path_is_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "CartPole-v1.yaml"
    f.write_text(CARTPOLE_SPEC)
    monkeypatch.setenv("EQUIRL_ENVS_PATH", str(f))
    line = one_line_error(["envs"], capsys)
    assert "EQUIRL_ENVS_PATH" in line and "is a file, not a folder" in line
    monkeypatch.setenv("EQUIRL_ENVS_PATH", str(tmp_path / "missing"))
    line = one_line_error(["check-symmetry", "CartPole-v1"], capsys)
    assert "EQUIRL_ENVS_PATH" in line and "missing" in line


# --- 10. check-symmetry of an env gymnasium does not know ----------------------------------------------


def test_guard_a_check_symmetry_unknown_gym_env(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "nosuch.yaml"
    spec.write_text(CARTPOLE_SPEC.replace("env: CartPole-v1", "env: NoSuchEnvGuardA-v0"))
    line = one_line_error(["check-symmetry", str(spec), "--steps", "2"], capsys)
    assert "NoSuchEnvGuardA" in line
    line = one_line_error(["check-symmetry", str(spec), "--steps", "2", "--json"], capsys)
    assert "NoSuchEnvGuardA" in line


# --- 11. env ids never import modules unless opted in --------------------------------------------------


def test_guard_a_env_id_with_module_is_not_imported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "imported"
    (tmp_path / "guard_a_evil_mod.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("EQUIRL_ALLOW_ENV_IMPORT", raising=False)
    spec = tmp_path / "evil.yaml"
    spec.write_text(CARTPOLE_SPEC.replace("env: CartPole-v1", 'env: "guard_a_evil_mod:CartPole-v1"'))
    line = one_line_error(["check-symmetry", str(spec), "--steps", "2"], capsys)
    assert "guard_a_evil_mod" in line and "EQUIRL_ALLOW_ENV_IMPORT=1" in line and "pip install" in line
    assert not marker.exists() and "guard_a_evil_mod" not in sys.modules

    from equirl.errors import ConfigError
    from equirl.rl.envs import check_env_id, make_env, make_vec_env

    for make in (make_env, make_vec_env):
        with pytest.raises(ConfigError, match="importing modules from env ids is off"):
            make("guard_a_evil_mod:CartPole-v1")
    assert not marker.exists()
    # the opt-in lets gymnasium import it
    monkeypatch.setenv("EQUIRL_ALLOW_ENV_IMPORT", "1")
    assert check_env_id("guard_a_evil_mod:CartPole-v1") == "guard_a_evil_mod:CartPole-v1"
    make_env("guard_a_evil_mod:CartPole-v1").close()
    assert marker.exists()
    sys.modules.pop("guard_a_evil_mod", None)
