"""The CLI's output: one-line plain errors, tables that keep names whole, progress only on terminals."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from equirl.cli.output import make_console, make_table, print_error, progress_bar

ROOT = Path(__file__).resolve().parents[2]


def test_long_error_is_one_plain_line_when_stderr_is_a_pipe(tmp_path: Path) -> None:
    missing = tmp_path / ("a_long_folder_name_" * 12) / "config.yaml"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "equirl", "language", "gpt2-generate", str(missing)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.endswith("\n")
    assert "\x1b" not in proc.stderr
    assert proc.stderr.startswith("error: ") and str(missing) in proc.stderr


def test_print_error_collapses_lines_and_keeps_markup_literal() -> None:
    buf = io.StringIO()
    print_error(Console(file=buf, width=40), "first [bold]line[/]\nsecond line " + "x" * 100)
    assert buf.getvalue() == "error: first [bold]line[/] second line " + "x" * 100 + "\n"
    tty = io.StringIO()
    print_error(Console(file=tty, width=40, force_terminal=True), "long " * 30)
    assert tty.getvalue().count("\n") == 1  # soft wrap: the terminal wraps, rich does not


def test_piped_console_is_wide_and_plain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    captured = io.StringIO()
    monkeypatch.setattr(sys, "stdout", captured)
    console = make_console()
    assert not console.is_terminal and console.width >= 160
    console.print("[bold]" + "word " * 60 + "[/]")
    out = captured.getvalue()
    assert out.count("\n") == 1 and "\x1b" not in out


def test_80_column_table_keeps_names_whole() -> None:
    names = ["equirl/GridWorld-v0-with-a-long-suffix", "ALE/MsPacmanNoFrameskip-v4", "λ-equitune (finetuned)"]
    rows = [(n, "signed_permutation", "exact (sets state)", "C2xZ2", "123.4 ± 5.6") for n in names]
    buf = io.StringIO()
    Console(file=buf, width=80).print(
        make_table("t", ["name", "observation action", "check-symmetry", "group", "return"], rows)
    )
    out = buf.getvalue()
    assert all(n in out for n in names)
    assert "…" not in out and max(len(ln) for ln in out.splitlines()) <= 80


def test_envs_and_eval_tables_on_an_80_column_console() -> None:
    pytest.importorskip("gymnasium")
    import argparse

    from equirl.cli.rl import _envs
    from equirl.rl.spec import list_specs

    buf = io.StringIO()
    _envs(argparse.Namespace(json=False), Console(file=buf, width=80))
    out = buf.getvalue()
    assert all(s.env_id in out for s in list_specs())
    assert "…" not in out


def test_progress_bar_is_silent_off_terminal_and_transient_on_one() -> None:
    buf = io.StringIO()
    with progress_bar(Console(file=buf), "work") as progress:
        for i in range(5):
            progress(i + 1, 5)
    assert buf.getvalue() == ""
    tty = io.StringIO()
    with progress_bar(Console(file=tty, force_terminal=True, width=80), "work") as progress:
        for i in range(5):
            progress(i + 1, 5)
    assert "work" in tty.getvalue()  # drawn while running, then erased (transient)
