"""What a sweep report may claim from the runs it has: no interval or comparison from a single seed, a
seed counted once, a baseline that exists, column labels that name it, missing trials named."""

from __future__ import annotations

from pathlib import Path

import pytest

from equirl.cli import main
from equirl.registry import BASE, EQUITUNE
from equirl.rl.sweep_report import MIN_SEEDS, sweep_report
from tests.rl.helpers import finished_run


def _run(root: Path, method: str, seed: int, returns: list[float], stamp: int = 1) -> Path:
    return finished_run(root / f"CartPole-v1__{method}__{seed}__{stamp}", method, seed, returns)


def _groups(root: Path, **kw: object) -> dict[str, dict[str, object]]:
    rep = sweep_report(root, reps=200, plots=False, hparams=False, **kw)  # type: ignore[arg-type]
    return {g["method"]: g for g in rep.groups}


def test_one_seed_per_arm_gives_no_interval_and_no_verdict(tmp_path: Path) -> None:
    _run(tmp_path, BASE, 0, [10.0, 10.5])
    _run(tmp_path, EQUITUNE, 0, [9.0, 8.0])
    g = _groups(tmp_path)
    eq = g[EQUITUNE]
    assert eq["seeds"] == 1 < MIN_SEEDS
    assert eq["iqm_final"] == 8.0 and eq["iqm_final_low"] is None and eq["iqm_final_high"] is None
    assert "no CI" in str(eq["iqm_final_ci"]) and "[" not in str(eq["iqm_final_ci"])
    # a zero-width bootstrap interval over one seed would have said "below"
    assert eq["final_vs_base"] == "too few seeds" and eq["auc_vs_base"] == "too few seeds"
    assert eq["p_improve_ci"] == "too few seeds" and "p_improve" not in eq


def test_two_seeds_per_arm_compare_as_before(tmp_path: Path) -> None:
    for seed, (b, e) in enumerate([(10.0, 30.0), (11.0, 31.0)]):
        _run(tmp_path, BASE, seed, [b, b])
        _run(tmp_path, EQUITUNE, seed, [e, e])
    eq = _groups(tmp_path)[EQUITUNE]
    assert eq["seeds"] == 2 and eq["final_vs_base"] == "above"
    low, high = eq["iqm_final_low"], eq["iqm_final_high"]
    assert isinstance(low, float) and isinstance(high, float) and low <= eq["iqm_final"] <= high  # type: ignore[operator]
    assert eq["p_improve"] == 1.0


def test_the_same_seed_twice_counts_once_and_is_named(tmp_path: Path) -> None:
    older = _run(tmp_path, BASE, 0, [10.0, 10.0], stamp=1)
    _run(tmp_path, BASE, 0, [50.0, 50.0], stamp=2)  # a second `equirl train` of the same config
    _run(tmp_path, BASE, 1, [20.0, 20.0])
    rep = sweep_report(tmp_path, reps=200, plots=False, hparams=False)
    (g,) = rep.groups
    assert g["seeds"] == 2 and sorted(r["final"] for r in rep.runs) == [20.0, 50.0]  # the newest kept
    (p,) = rep.problems
    assert p["status"] == "duplicate seed" and p["run_dir"] == str(older)


def test_the_baseline_must_exist_and_labels_the_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for seed in (0, 1):
        _run(tmp_path, BASE, seed, [10.0 + seed, 10.0 + seed])
        _run(tmp_path, EQUITUNE, seed, [30.0 + seed, 30.0 + seed])
    assert (
        main(["sweep", "report", str(tmp_path), "--baseline", "nosuch", "--no-plots", "--reps", "100"]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--baseline nosuch" in err[0] and "base, equitune" in err[0]
    rep = sweep_report(tmp_path, baseline=EQUITUNE, reps=200, plots=False, hparams=False)
    headers = [c.title for t in rep.tables() for c in t.columns]
    assert "P(> equitune) [95% CI]" in headers and "final vs equitune" in headers
    assert not any("> base" in h for h in headers)
    rows = {g["method"]: g for g in rep.groups}
    assert rows[BASE]["final_vs_base"] == "below" and rows[EQUITUNE]["final_vs_base"] == ""


def test_runs_without_a_step_zero_evaluation_are_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for seed in (0, 1):
        _run(tmp_path, BASE, seed, [500.0, 500.0])  # evaluations at 100 and 200 of 200
    with caplog.at_level("WARNING"):
        rep = sweep_report(tmp_path, reps=200, plots=False, hparams=False)
    assert "no evaluation at step 0 (the first at step 100)" in caplog.text and "eval.at_start" in caplog.text
    # the maximum score from the first evaluation on: the half before it counts as the minimum
    assert [r["auc"] for r in rep.runs] == [0.5, 0.5]


def test_the_report_can_go_to_another_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A sweep folder one may not write to (a colleague's, a read-only mount) is reported elsewhere."""
    sweep = tmp_path / "sweep"
    for seed in (0, 1):
        _run(sweep, BASE, seed, [10.0, 20.0])
    elsewhere = tmp_path / "my report"
    argv = ["sweep", "report", str(sweep), "--out", str(elsewhere), "--no-plots", "--reps", "100"]
    assert main(argv) == 0
    assert "report written to" in capsys.readouterr().out
    assert (elsewhere / "groups.csv").is_file() and (elsewhere / "summary.md").is_file()
    assert not (sweep / "report").exists()


def test_an_interrupted_sweep_says_how_to_continue_the_sweep(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from equirl.errors import RunInterrupted
    from equirl.rl import sweep as sweep_mod

    def interrupted(*args: object, **kwargs: object) -> None:
        raise RunInterrupted(
            "interrupted at step 300 of 600 (checkpoint saved); resume: equirl train --resume X"
        )

    monkeypatch.setattr(sweep_mod, "run_sweep", interrupted)
    sweep_file = Path(__file__).resolve().parents[2] / "configs" / "sweeps" / "smoke.yaml"
    assert main(["sweep", str(sweep_file), "--out", str(tmp_path / "s"), "--executor", "serial"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"equirl sweep {sweep_file} --out {tmp_path / 's'}" in err[0]
    assert "train --resume" not in err[0]
