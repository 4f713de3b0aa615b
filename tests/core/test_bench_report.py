"""The benchmarks' shared output layer: tables that never cut a name at 80 columns, atomic CSV, JSON
rows, PNG plots, silent-by-default progress, and a thread count that is restored."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console
from rich.text import Text

from equirl.bench.core import bench_rows, symmetrizer_table
from equirl.bench.product import product_table
from equirl.bench.threads import torch_threads
from equirl.errors import ConfigError
from equirl.utils.report import BenchTable, Column, json_rows, progress, save_plot, write_csv


def render(table: Any, width: int = 80) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None, legacy_windows=False)
    console.print(table)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert all(len(line) <= width for line in out.splitlines()), out
    return out


PRODUCT_METHODS = [
    "plain model",
    "equitune (full product)",
    "equizero (entropy)",
    "multigroup",
    "canonicalize (prior)",
    "multigroup (untrained scorer)",
    "canonicalize (untrained scorer)",
]


def product_rows() -> list[dict[str, Any]]:
    return [
        {
            "group": group,
            "regime": regime,
            "method": m,
            "accuracy": 97.21,
            "model_passes": 5.021,
            "scorer_passes": 16,
            "ms_per_100": 123.45,
            "train_s": 10.35,
            "equiv_error": 1.23e-07,
        }
        for group in ("C4xZ2", "D4xZ2")
        for regime in ("zero-shot", "finetuned")
        for m in PRODUCT_METHODS
    ]


def test_product_table_keeps_every_name_and_number_whole_at_80_columns() -> None:
    rows = product_rows()
    out = render(product_table(rows))
    for m in PRODUCT_METHODS:
        assert m in out
    for value in ("97.21", "5.021", "123.45", "10.35", "1.23e-07", "D4xZ2"):
        assert value in out
    # too wide for one table: split into column groups that repeat the key columns
    groups = 1 + out.count("(continued)")
    assert groups > 1
    assert out.count("canonicalize (untrained scorer)") == 2 * 2 * groups
    assert out.count("acc %") == 1 and out.count("equiv.") == 1  # each metric column once
    assert product_table(rows).row_count == len(rows)


def test_a_table_that_fits_is_not_split() -> None:
    out = render(product_table(product_rows()), width=200)
    assert "(continued)" not in out
    assert out.count("canonicalize (untrained scorer)") == 2 * 2


def test_long_names_survive_and_brackets_are_not_markup() -> None:
    names = [
        "equizero-nll (sequence) [C4 verbs]",
        "lambda-equitune (λ finetuned on 3000 ex.) [verbs]",
        "equitune over C4^2 (head finetuned, 100 steps)",
    ]
    rows = [
        {"split": "addprim_jump", "cell": "lstm", "method": n, "mean": 12.34, "std": 1.5, "seeds": 3}
        for n in names
    ]
    out = render(BenchTable(rows, "SCAN exact match", keys=3))
    for n in names:
        assert n in out
    assert "addprim_jump" in out


def test_rl_env_names_survive_at_80_columns() -> None:
    envs = ["equirl/GridWorld-v0", "LunarLander-v3", "CartPole-v1"]
    rows = [
        {
            "env": e,
            "method": m,
            "seed": 0,
            "steps_to_threshold": -1,
            "reached": False,
            "start_return": -109.2,
            "best_return": 246.49,
            "budget": 50000,
            "eval_freq": 1000,
            "eval_episodes": 10,
            "seconds": 1234.5,
        }
        for e in envs
        for m in ("base", "equitune", "lambda")
    ]
    out = render(BenchTable(rows, "sample efficiency", keys=3))
    groups = 1 + out.count("(continued)")
    for e in envs:
        assert out.count(e) == 3 * groups
    for value in ("-109.2", "246.49", "50000", "1234.5", "False"):
        assert value in out


def test_symmetrizer_table_markup_column_and_note() -> None:
    rows = [
        {"model": "cnn", "group": g, "batch": b, "base_ms": 1.0, "loop_ms": 9.0, "equirl_ms": e, "order": o}
        for g, o in (("Z2", 2), ("D4", 8))
        for b, e in ((1, 1.5), (256, 100.0))
    ]
    table = symmetrizer_table(rows)
    goals = [Text.from_markup(row[-1]).plain for row in table.cells()]
    assert goals == ["ok", "over", "ok", "over"]  # Z2: 0.75 at batch 1, 50 at 256; D4: 0.19, 12.5
    out = render(table)
    assert "[green]" not in out and "goal: equirl" in out
    assert "12.50" in out  # equirl / |G| of D4 at batch 256


def test_symmetrizer_table_prefers_the_paired_ratios() -> None:
    """``equirl_x`` (the median of each round's ratio) is shown when present, not ``equirl_ms / base_ms``."""
    row = {"model": "mlp", "group": "D4", "batch": 32, "base_ms": 1.0, "loop_ms": 9.0, "equirl_ms": 9.0}
    row |= {"loop_x": 9.5, "equirl_x": 8.16, "order": 8, "clock": "cpu"}
    out = render(symmetrizer_table([row]))
    assert "1.02" in out and "8.16" in out and "cpu clock" in out
    table = symmetrizer_table([row])
    goal = table.cells()[0][[c.key for c in table.columns].index("goal")]
    assert Text.from_markup(goal).plain == "ok"  # no interval in the row: the median decides


def test_symmetrizer_goal_reads_the_interval_of_the_ratio() -> None:
    """ok: the whole 95 % interval is within 1.05·|G|; over: all of it above; ≈: it holds the goal."""
    base = {"model": "cnn", "group": "C4", "base_ms": 1.0, "loop_ms": 5.0, "equirl_ms": 4.0, "order": 4}
    rows = [
        base | {"batch": 32, "equirl_x": 4.0, "equirl_x_lo": 3.9, "equirl_x_hi": 4.1},  # ok
        base | {"batch": 64, "equirl_x": 4.1, "equirl_x_lo": 4.0, "equirl_x_hi": 4.4},  # ≈ (4.2 inside)
        base | {"batch": 256, "equirl_x": 4.6, "equirl_x_lo": 4.3, "equirl_x_hi": 4.8},  # over
    ]
    table = symmetrizer_table(rows)
    names = [c.key for c in table.columns]
    cells = [dict(zip(names, row)) for row in table.cells()]
    assert [Text.from_markup(c["goal"]).plain for c in cells] == ["ok", "≈", "over"]
    assert [c["per_order_ci"] for c in cells] == ["[0.97, 1.02]", "[1.00, 1.10]", "[1.07, 1.20]"]


def test_symmetrizer_goal_at_batch_one_and_from_the_csv(tmp_path: Path) -> None:
    """Batch 1 must be strictly below 0.8·|G| (an interval inside (0.8, 1.05]·|G| is over there); rows read
    back from the benchmark's CSV (strings, "" for no interval) get the same verdicts and cells."""
    from equirl.bench.core import CSV_COLUMNS

    base = {"model": "mlp", "group": "Z2", "base_ms": 1.0, "loop_ms": 3.0, "equirl_ms": 2.0, "order": 2}
    rows = [
        base | {"batch": 1, "equirl_x": 1.8, "equirl_x_lo": 1.7, "equirl_x_hi": 1.9},  # over at batch 1
        base | {"batch": 1, "equirl_x": 1.5, "equirl_x_lo": 1.4, "equirl_x_hi": 1.58},  # ok
        base | {"batch": 1, "equirl_x": 1.6, "equirl_x_lo": 1.5, "equirl_x_hi": 1.7},  # ≈ (1.6 inside)
        base | {"batch": 32, "equirl_x": 2.0, "equirl_x_lo": None, "equirl_x_hi": None},  # no interval: ok
    ]
    for r in rows:
        r |= {"loop_x": 3.0, "calls_x": None, "outside_x": None, "split_base_ms": None, "clock": "cpu"}
    path = write_csv(tmp_path / "s.csv", rows, CSV_COLUMNS)
    with open(path, encoding="utf-8", newline="") as fh:
        back = list(csv.DictReader(fh))

    def verdicts(table: BenchTable) -> list[str]:
        names = [c.key for c in table.columns]
        return [Text.from_markup(dict(zip(names, row))["goal"]).plain for row in table.cells()]

    assert verdicts(symmetrizer_table(rows)) == ["over", "ok", "≈", "ok"]
    assert symmetrizer_table(back).cells() == symmetrizer_table(rows).cells()


def test_breakdown_splits_a_forward_and_leaves_no_hook_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    import equirl.bench.core as core

    models: list[torch.nn.Module] = []
    real_mlp = core.mlp
    monkeypatch.setattr(core, "mlp", lambda: models.append(real_mlp()) or models[-1])
    rows = bench_rows(models=("mlp",), groups=("D4",), batches=(16,), rounds=3, min_time=0.0, breakdown=True)
    r = rows[0]
    assert r["calls_x"] > 0 and r["outside_x"] > -0.5 * r["calls_x"] and r["split_base_ms"] > 0
    assert not models[0]._forward_hooks and not models[0]._forward_pre_hooks
    plain = bench_rows(models=("mlp",), groups=("D4",), batches=(16,), rounds=1, min_time=0.0)
    assert plain[0]["calls_x"] is None and plain[0]["outside_x"] is None and plain[0]["split_base_ms"] is None


def test_bench_rows_give_an_interval_from_six_rounds() -> None:
    rows = bench_rows(models=("mlp",), groups=("Z2",), batches=(2,), rounds=6, min_time=0.0)
    r = rows[0]
    assert r["equirl_x_lo"] <= r["equirl_x"] <= r["equirl_x_hi"]
    few = bench_rows(models=("mlp",), groups=("Z2",), batches=(2,), rounds=5, min_time=0.0)
    assert few[0]["equirl_x_lo"] is None and few[0]["equirl_x_hi"] is None


def test_symmetrizer_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from equirl.bench.core import symmetrizer_plot

    rows = [
        {"model": m, "group": g, "batch": b, "base_ms": 1.0, "loop_ms": 3.0, "equirl_ms": 2.0, "order": 2}
        for m in ("mlp", "cnn")
        for g in ("Z2",)
        for b in (1, 32)
    ]
    path = symmetrizer_plot(rows, tmp_path / "s.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_symmetrizer_benchmark_table_in_the_docs_matches_the_csv() -> None:
    """The results page's before → after table of ``equirl / (|G| · base)`` is the committed CSV, rounded."""
    import csv
    import re

    root = Path(__file__).resolve().parents[2]
    with open(root / "docs/results/core/symmetrizers_before_after.csv", encoding="utf-8") as fh:
        rows = {(r["model"], r["group"], int(r["batch"])): r for r in csv.DictReader(fh)}
    text = (root / "docs/results/index.md").read_text(encoding="utf-8")
    section = text[text.index("## The cost of symmetrizing") :]
    section = section[: section.index("\n## ", 1)]
    names = {"MLP 4-256-256-2": "mlp", "NatureCNN 4×84×84": "cnn"}
    seen = 0
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or cells[0] not in names:
            continue
        for batch, cell in zip((1, 32, 256), cells[2:]):
            row = rows[(names[cells[0]], cells[1], batch)]
            before, after = re.findall(r"[0-9]+\.[0-9]+", cell)
            assert (before, after) == (f"{float(row['before_x']):.2f}", f"{float(row['after_x']):.2f}"), cell
            seen += 1
    assert seen == len(rows) == 18


def test_empty_table_says_nothing_to_run() -> None:
    assert "zero-shot returns: nothing to run" in render(BenchTable([], "zero-shot returns"))


def test_column_formats() -> None:
    col = Column("acc", fmt=lambda r: f"{r['acc']:.1f} ± {r['std']:.1f}")
    assert col.cell({"acc": 91.234, "std": 0.5}) == "91.2 ± 0.5"
    assert Column("x", fmt=".3f").cell({"x": 1 / 3}) == "0.333"
    assert Column("x").cell({}) == ""


def test_write_csv_is_atomic_and_ordered(tmp_path: Path) -> None:
    rows = [{"b": 1, "a": 0.123456, "skip": "x"}, {"a": 2.0, "b": 3, "extra": True}]
    path = write_csv(tmp_path / "sub" / "t.csv", rows, ["a", "b", "extra"], float_format=".4f")
    assert path == tmp_path / "sub" / "t.csv"
    got = list(csv.reader(path.open(newline="")))
    assert got == [["a", "b", "extra"], ["0.1235", "1", ""], ["2.0000", "3", "True"]]
    assert [p.name for p in path.parent.iterdir()] == ["t.csv"]  # no temporary left behind
    # default columns: every key, first seen first
    write_csv(tmp_path / "u.csv", rows)
    assert (tmp_path / "u.csv").read_text().splitlines()[0] == "b,a,skip,extra"
    assert write_csv(tmp_path / "none.csv", []) is None and not (tmp_path / "none.csv").exists()


def test_write_csv_failure_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    write_csv(path, [{"a": 1}])

    class Bad:
        def __format__(self, spec: str) -> str:
            raise RuntimeError("boom")

        def __str__(self) -> str:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_csv(path, [{"a": 2}, {"a": Bad()}])
    assert path.read_text().splitlines() == ["a", "1"]
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]


def test_json_rows() -> None:
    rows = [{"a": 1, "b": 2.5, "c": "x"}]
    assert json.loads(json_rows(rows, ["a", "b"])) == [{"a": 1, "b": 2.5}]
    assert json.loads(json_rows(rows)) == rows


def test_save_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")

    def draw(fig: Any) -> None:
        ax = fig.subplots()
        ax.plot([0, 1], [1, 0], label="line")
        ax.legend()

    path = save_plot(tmp_path / "p.png", draw, (3, 2))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_progress_is_silent_without_a_console(capsys: pytest.CaptureFixture[str]) -> None:
    with progress(None, "work", 3) as step:
        for _ in range(3):
            step()
        step(0, "relabelled")
    assert capsys.readouterr() == ("", "")


def test_progress_bar_on_a_terminal_is_transient() -> None:
    buf = io.StringIO()
    console = Console(file=buf, width=80, force_terminal=True, color_system=None)
    with progress(console, "work", 2) as step:
        step(0, "first half")
        step()
        step()
    out = buf.getvalue()
    assert "first half" in out and "2/2" in out  # drawn while running...
    assert out.endswith("\x1b[2K")  # ...and the line erased at the end


def test_progress_writes_nothing_to_a_file() -> None:
    buf = io.StringIO()
    with progress(Console(file=buf, width=80), "work", 1) as step:
        step()
    assert buf.getvalue() == ""


def test_torch_threads_restores_the_count() -> None:
    before = torch.get_num_threads()
    with torch_threads(2):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(2):
        raise RuntimeError
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before
    with pytest.raises(ConfigError), torch_threads(0):
        pass


def test_bench_rows_leave_the_thread_count_alone() -> None:
    torch.set_num_threads(2)
    try:
        rows = bench_rows(models=("mlp",), groups=("Z2",), batches=(1,), rounds=1, min_time=0.0)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
    assert rows[0]["order"] == 2 and rows[0]["base_ms"] > 0
