"""The core CLI: demo, bench JSON shape, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from equirl.bench.core import bench_rows
from equirl.cli import main
from equirl.demo import core_demo_rows


def test_core_demo_restores_the_symmetry() -> None:
    rows = core_demo_rows()
    assert {r["method"] for r in rows} == {"base", "equitune", "equizero", "lambda"}
    for r in rows:
        if r["method"] == "base":
            assert r["error"] > 1e-2
        else:
            assert r["error"] < 1e-5


def test_cli_demo_core_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--core"]) == 0
    assert "equitune" in capsys.readouterr().out


def test_bench_rows_have_the_documented_keys() -> None:
    rows = bench_rows(models=("mlp",), groups=("Z2", "D4"), batches=(1, 3), rounds=1, min_time=0.0)
    assert len(rows) == 4
    for r in rows:
        assert {"model", "group", "batch", "base_ms", "loop_ms", "equirl_ms", "loop_x", "equirl_x"} <= set(r)
        assert r["base_ms"] > 0 and r["equirl_ms"] > 0 and r["equirl_x"] > 0
        assert r["clock"] == "cpu"  # one thread: the thread's CPU time
        assert r["orbit_x"] is None  # nothing to fold in an MLP


def test_bench_times_the_folded_cnn_beside_its_stacked_orbit() -> None:
    """Where the CNN's orbit is folded into its kernels (batch 16 and up), the stacked-orbit path is timed
    beside it in the same rounds (``orbit_x``); below that batch there is no second path."""
    rows = bench_rows(models=("cnn",), groups=("Z2",), batches=(1, 16), rounds=1, min_time=0.0)
    by_batch = {r["batch"]: r for r in rows}
    assert by_batch[1]["orbit_x"] is None and by_batch[1]["orbit_ms"] is None
    assert by_batch[16]["orbit_x"] > 0 and by_batch[16]["orbit_ms"] > 0


def test_unknown_command_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2


def test_bench_json_is_parseable(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import equirl.bench.core as b

    monkeypatch.setattr(
        b,
        "bench_rows",
        lambda **kw: [
            {
                "model": "mlp",
                "group": "Z2",
                "batch": 1,
                "base_ms": 1.0,
                "loop_ms": 2.0,
                "equirl_ms": 1.5,
                "loop_x": 2.1,
                "equirl_x": 1.4,
                "equirl_x_lo": 1.3,
                "equirl_x_hi": 1.5,
                "calls_x": None,
                "outside_x": None,
                "split_base_ms": None,
                "orbit_ms": None,
                "orbit_x": None,
                "order": 2,
                "clock": "cpu",
            }
        ],
    )
    assert main(["bench", "symmetrizers", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["equirl_ms"] == 1.5 and set(rows[0]) == {
        "model",
        "group",
        "batch",
        "base_ms",
        "loop_ms",
        "equirl_ms",
        "loop_x",
        "equirl_x",
        "equirl_x_lo",
        "equirl_x_hi",
        "calls_x",
        "outside_x",
        "split_base_ms",
        "orbit_ms",
        "orbit_x",
    }


def test_sigterm_unwinds_like_ctrl_c(tmp_path: Path) -> None:
    """A terminated CLI process removes its partial run directory (atomic_dir cleans up on unwinding)."""
    script = (
        "import os, signal, sys\n"
        "from equirl.cli import main\n"
        "from equirl.utils.io import atomic_dir\n"
        "import equirl.cli.core as core\n"
        "def fake(args, console):\n"
        f"    with atomic_dir({str(tmp_path / 'run')!r}) as d:\n"
        "        (d / 'half.txt').write_text('x')\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return 0\n"
        "core._demo = fake\n"
        "sys.exit(main(['demo']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 130, proc.stderr
    assert list(tmp_path.iterdir()) == []
