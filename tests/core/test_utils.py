"""Strict configs, overrides, atomic writes and run names."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from equirl.config import apply_overrides, from_dict, load_config, to_dict
from equirl.errors import ConfigError
from equirl.utils.io import atomic_dir, atomic_write_text
from equirl.utils.runs import run_name, unique_run_dir


@dataclass
class Train:
    steps: int = 100
    lr: float = 1e-3
    methods: list[str] = field(default_factory=lambda: ["equitune"])


@dataclass
class Exp:
    env: str = "CartPole-v1"
    seed: int | None = None
    train: Train = field(default_factory=Train)


def test_load_config_with_overrides(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("env: Acrobot-v1\ntrain:\n  steps: 5\n  lr: 1e-4\n")
    cfg = load_config(Exp, p, ["train.steps=50", "seed=3", "train.methods=[equizero, lambda]"])
    assert (cfg.env, cfg.seed, cfg.train.steps, cfg.train.lr) == ("Acrobot-v1", 3, 50, 1e-4)
    assert cfg.train.methods == ["equizero", "lambda"]
    assert from_dict(Exp, to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        ("env: [unclosed\n", [], "malformed YAML"),
        ("- a\n- b\n", [], "must contain a mapping"),
        ("envv: x\n", [], "unknown key envv"),
        ("train:\n  stepz: 3\n", [], "unknown key train.stepz"),
        ("train:\n  steps: many\n", [], "train.steps: expected an integer"),
        ("", ["train.steps"], "must look like key=value"),
        ("", ["env=[1, 2]"], "env: expected a string"),
        ("", ["__import__('os')=1"], "unknown key"),
    ],
)
def test_config_errors_are_one_line(tmp_path: Path, text: str, overrides: list[str], message: str) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")) as exc:
        load_config(Exp, p, overrides)
    assert "\n" not in str(exc.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(Exp, tmp_path / "nope.yaml")


def test_overrides_do_not_mutate_input() -> None:
    base = {"train": {"steps": 1}}
    apply_overrides(base, ["train.steps=2"])
    assert base == {"train": {"steps": 1}}


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path) -> None:
    p = tmp_path / "model.txt"
    atomic_write_text(p, "old")

    def boom(_: Path) -> None:
        raise RuntimeError("disk on fire")

    from equirl.utils.io import atomic_write

    with pytest.raises(RuntimeError):
        atomic_write(p, boom)
    assert p.read_text() == "old"
    assert [f.name for f in tmp_path.iterdir()] == ["model.txt"]


def test_atomic_dir_leaves_nothing_half_written(tmp_path: Path) -> None:
    with pytest.raises(ValueError), atomic_dir(tmp_path / "run") as d:
        (d / "config.yaml").write_text("a: 1")
        raise ValueError("crash mid-run")
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(tmp_path / "run") as d:
        (d / "config.yaml").write_text("a: 1")
    assert (tmp_path / "run" / "config.yaml").read_text() == "a: 1"
    with pytest.raises(FileExistsError), atomic_dir(tmp_path / "run"):
        pass


def test_run_names(tmp_path: Path) -> None:
    name = run_name("ALE/Pong-v5", "equizero", 3, when=1700000000)
    assert name == "ALE-Pong-v5__equizero__3__1700000000"
    (tmp_path / name).mkdir()
    assert unique_run_dir(tmp_path, name).name == f"{name}-1"
