"""Sweeps: grid expansion, stable trial names, resumable runs, failures recorded, the report."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from equirl.errors import ConfigError
from equirl.registry import BASE, EQUITUNE
from equirl.rl.lifecycle import read_run
from equirl.rl.sweep import expand_trials, find_trial_dir, load_sweep, run_sweep
from equirl.rl.sweep_report import sweep_report

ROOT = Path(__file__).resolve().parents[2]

TINY = {
    "config": "dqn-CartPole-v1",
    "timesteps": 400,
    "eval": {"freq": 200, "episodes": 2, "final_episodes": 2},
    "set": {
        "hyperparams.learning_starts": 100,
        "hyperparams.train_freq": 50,
        "hyperparams.gradient_steps": 2,
        "hyperparams.buffer_size": 1000,
        "log.tensorboard": False,
    },
    "grid": {"method": [BASE, EQUITUNE], "seed": {"range": [0, 2]}},
}


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    p = tmp_path / "sweep.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_grid_expands_to_stable_trial_names(tmp_path: Path) -> None:
    data = {**TINY, "grid": {**TINY["grid"], "hyperparams.learning_rate": [1e-3, 2e-3]}}
    spec = load_sweep(_write(tmp_path, data))
    trials = expand_trials(spec, tmp_path / "out")
    assert len(trials) == 2 * 2 * 2
    names = [t.name for t in trials]
    assert names == [t.name for t in expand_trials(spec, tmp_path / "out")]  # stable
    t = trials[0]
    assert t.name == "CartPole-v1__base+hyperparams.learning_rate-0.001__0"
    assert t.cfg.hyperparams.learning_rate == 1e-3
    assert t.cfg.timesteps == 400 and t.cfg.eval.freq == 200 and t.cfg.hyperparams.buffer_size == 1000
    assert Path(t.cfg.out) == (tmp_path / "out").resolve()
    assert {tr.seed for tr in trials} == {0, 1}


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"grdi": {}}, "unknown key grdi"),
        ({"config": None}, "config: expected a string or a list, got None"),
        ({"grid": {"seed": []}}, "grid.seed: no values"),
        ({"grid": {"seed": {"range": ["a"]}}}, "range must be"),
        ({"grid": {"method": ["nope"]}}, "nope"),
        ({"timesteps": -1}, "timesteps"),
        ({"config": []}, r"config = \[\]: must list at least one base config"),
        ({"config": [{"timesteps": 5}]}, r"missing required key: config\[0\]\.config"),
        ({"config": [{"config": "dqn-CartPole-v1", "budget": 5}]}, r"unknown key config\[0\]\.budget"),
        (
            {"config": [{"config": "dqn-CartPole-v1", "timesteps": 0}]},
            r"config\[0\]\.timesteps = 0: must lie in \[1, 1000000000\]",
        ),
        (
            {"config": ["dqn-CartPole-v1", "dqn-CartPole-v1"]},
            r"sweep\.yaml: two grid points give the same trial",
        ),
        # an override the sweep's own value would replace without a word
        (
            {"set": {**TINY["set"], "out": "elsewhere"}},
            r"set\.out would be ignored: the sweep sets it from --out",
        ),
        ({"set": {**TINY["set"], "seed": 5}}, r"set\.seed would be ignored: the grid sets it"),
        ({"set": {**TINY["set"], "timesteps": 9}}, r"set\.timesteps would be ignored: the sweep's timesteps"),
        # a grid value of the wrong type: the sweep file and the grid point are named, not only the key
        ({"grid": {"seed": [0, "0"]}}, r"sweep\.yaml: grid point seed=\"0\": seed: expected an integer"),
        (
            {"grid": {"method": ["base"], "hyperparams.learning_rate": [-1.0]}},
            r"sweep\.yaml: grid point hyperparams\.learning_rate=-1\.0, method=\"base\": "
            r"hyperparams\.learning_rate = -1\.0: must be > 0",
        ),
    ],
)
def test_bad_sweep_files_are_one_line_errors(tmp_path: Path, patch: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        spec = load_sweep(_write(tmp_path, {**TINY, **patch}))
        expand_trials(spec, tmp_path)


def test_several_base_configs_cross_the_grid_with_their_own_overrides(tmp_path: Path) -> None:
    data = {
        **TINY,
        "config": [
            {"config": "dqn-CartPole-v1", "timesteps": 600, "eval": {"freq": 300}},
            {"config": "dqn-Acrobot-v1", "set": {"hyperparams.gradient_steps": 1}},
        ],
    }
    trials = expand_trials(load_sweep(_write(tmp_path, data)), tmp_path / "out")
    assert len(trials) == 2 * 2 * 2
    by_env: dict[str, list[Any]] = {}
    for t in trials:
        by_env.setdefault(t.env, []).append(t.cfg)
    assert set(by_env) == {"CartPole-v1", "Acrobot-v1"}
    for cfg in by_env["CartPole-v1"]:  # the entry's budget / eval win over the sweep's
        assert cfg.timesteps == 600 and cfg.eval.freq == 300 and cfg.eval.episodes == 2
        assert cfg.hyperparams.gradient_steps == 2  # the sweep-wide set
    for cfg in by_env["Acrobot-v1"]:
        assert cfg.timesteps == 400 and cfg.eval.freq == 200
        assert cfg.hyperparams.gradient_steps == 1 and cfg.hyperparams.buffer_size == 1000
        assert cfg.hyperparams.learning_rate == 6.3e-4  # from the Acrobot config itself


def test_labels_tell_two_entries_of_one_env_apart(tmp_path: Path) -> None:
    data = {
        **TINY,
        "config": [
            {"config": "dqn-CartPole-v1", "label": "full", "set": {"hyperparams.learning_rate": 1e-3}},
            {"config": "dqn-CartPole-v1", "label": "partial"},
        ],
    }
    trials = expand_trials(load_sweep(_write(tmp_path, data)), tmp_path / "out")
    assert len({t.name for t in trials}) == len(trials) == 2 * 2 * 2
    assert {t.variant for t in trials} == {"full", "partial"}
    assert trials[0].name == "CartPole-v1__base+full__0" and trials[0].cfg.hyperparams.learning_rate == 1e-3
    with pytest.raises(ConfigError, match="label = '': must be a non-empty string"):
        load_sweep(_write(tmp_path, {**TINY, "config": [{"config": "dqn-CartPole-v1", "label": ""}]}))


@pytest.mark.parametrize(
    "name",
    sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "configs" / "sweeps").glob("*.yaml")),
)
def test_shipped_sweeps_expand(tmp_path: Path, name: str) -> None:
    """Every shipped sweep expands to uniquely named trials with validated configs and existing agents."""
    trials = expand_trials(load_sweep(name), tmp_path)
    assert trials and len({t.name for t in trials}) == len(trials)
    assert all(Path(t.cfg.init_from).is_file() for t in trials if t.cfg.init_from)
    if name in (
        "dqn-scratch",
        "dqn-finetune",
    ):  # the paper's grid: 4 envs x 4 methods x 10 seeds, no early stopping
        assert len(trials) == 160 and {t.seed for t in trials} == set(range(10))
        assert all(t.cfg.eval.stop_at is None and t.cfg.eval.at_start for t in trials)
        if name == "dqn-finetune":
            assert all(t.cfg.init_from and Path(t.cfg.init_from).is_file() for t in trials)
    if name.endswith("-finetune") and trials[0].cfg.algo != "dqn":
        # the actor-critic comparisons: base, the symmetrizers and the augmentation baseline (the locomotion
        # sweep adds the mirror loss and leaves out equizero), >= 5 seeds, from step 0
        assert {"base", "equitune", "lambda", "augment"} <= {x.method for x in trials}
        assert len({x.seed for x in trials}) >= 5 and all(
            x.cfg.eval.at_start and x.cfg.init_from for x in trials
        )


def test_bad_config_key_fails_before_anything_runs(tmp_path: Path) -> None:
    spec = load_sweep(_write(tmp_path, {**TINY, "grid": {"hyperparams.no_such_key": [1]}}))
    with pytest.raises(ConfigError):
        run_sweep(spec, tmp_path / "out", executor="serial")
    assert not (tmp_path / "out").exists()


def test_serial_sweep_is_resumable_and_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = load_sweep(_write(tmp_path, TINY))
    out = tmp_path / "out"
    import equirl.rl.train as train

    real = train.run_training

    def flaky(cfg: Any, **kw: Any) -> Any:  # one trial fails; the sweep goes on
        if cfg.method == EQUITUNE and cfg.seed == 1:
            raise RuntimeError("boom")
        return real(cfg, **kw)

    monkeypatch.setattr(train, "run_training", flaky)
    res = run_sweep(spec, out, executor="serial")
    assert [o.action for o in res.outcomes] == ["ran", "ran", "ran", "failed"]
    assert "boom" in (res.outcomes[3].error or "")
    for o in res.outcomes[:3]:
        assert read_run(Path(o.run_dir or ""))["status"] == "finished"
    manifest = json.loads((out / "sweep.json").read_text())
    assert [t["name"] for t in manifest["trials"]] == [o.name for o in res.outcomes]
    assert manifest["last_session"]["outcomes"][3]["action"] == "failed"

    # a second session: the finished trials are skipped, the missing one runs, an interrupted one resumes
    monkeypatch.setattr(train, "run_training", real)
    d = find_trial_dir(out, res.outcomes[0].name)
    assert d is not None
    info = json.loads((d / "run.json").read_text())
    (d / "run.json").write_text(json.dumps({**info, "status": "interrupted"}))
    mtimes = {o.name: Path(o.run_dir or "").stat().st_mtime for o in res.outcomes[1:3]}
    time.sleep(0.01)
    res2 = run_sweep(spec, out, executor="serial")
    assert [o.action for o in res2.outcomes] == ["resumed", "skipped", "skipped", "ran"]
    assert all(o.status == "finished" for o in res2.outcomes)
    assert res2.outcomes[0].run_dir == str(d)  # resumed in place
    assert {o.name: Path(o.run_dir or "").stat().st_mtime for o in res2.outcomes[1:3]} == mtimes
    assert len([p for p in out.iterdir() if (p / "run.json").is_file()]) == 4
    res3 = run_sweep(spec, out, executor="serial")
    assert res3.count("skipped") == 4

    rep = sweep_report(out, reps=200)
    rows = {r["method"]: r for r in rep.groups}
    assert set(rows) == {BASE, EQUITUNE}
    for r in rows.values():
        assert r["seeds"] == 2
        assert r["iqm_final_low"] <= r["iqm_final"] <= r["iqm_final_high"]
        assert r["mean_final_low"] <= r["mean_final"] <= r["mean_final_high"]
        assert 0.0 <= r["mean_auc"] <= 1.0
        assert r["iqm_auc_low"] <= r["iqm_auc"] <= r["iqm_auc_high"]
        assert r["threshold"] == 475.0
        assert r["km_median_steps"] is None and r["reached"] == 0  # 400 steps never solve CartPole
    assert 0.0 <= rows[EQUITUNE]["p_improve"] <= 1.0 and "p_improve" not in rows[BASE]
    assert (
        rows[EQUITUNE]["final_vs_base"] in ("above", "below", "overlap") and rows[BASE]["final_vs_base"] == ""
    )
    hp = out / "report" / "hparams"  # TensorBoard's HParams view: one entry per run
    assert len([d for d in hp.iterdir() if d.is_dir()]) == 4
    assert {a["method"] for a in rep.aggregate} == {BASE, EQUITUNE}
    names = {p.name for p in rep.files}
    assert {"groups.csv", "groups.md", "aggregate.csv", "runs.csv", "profiles.png", "intervals.png"} <= names
    assert "curves_CartPole-v1.png" in names
    summary = (out / "report" / "summary.md").read_text()  # the printed tables, as Markdown
    assert "| IQM final [95% CI] |" in summary and "| IQM AUC [95% CI] |" in summary
    assert summary.count("\n| CartPole-v1 |") == 2
    md = (out / "report" / "groups.md").read_text()
    assert md.startswith("| env | method |") and "iqm_final_low" in md


def test_report_of_a_folder_without_runs_is_a_one_line_error(tmp_path: Path) -> None:
    from equirl.errors import EquirlError

    with pytest.raises(EquirlError, match="no finished run"):
        sweep_report(tmp_path)


def test_smoke_sweep_on_local_ray(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """configs/sweeps/smoke.yaml on a local Ray (2 CPUs): every trial finished, a report with IQM and
    CIs, and a second run into the same folder reruns nothing."""
    ray = pytest.importorskip("ray")
    from equirl.cli import main

    out = tmp_path / "smoke"
    smoke = str(ROOT / "configs" / "sweeps" / "smoke.yaml")
    try:
        assert main(["sweep", smoke, "--out", str(out), "--cpus", "2", "--reps", "200"]) == 0
    finally:
        ray.shutdown()
    spec = load_sweep(smoke)
    trials = expand_trials(spec, out)
    assert len(trials) == 4
    for t in trials:
        d = find_trial_dir(out, t.name)
        assert d is not None and read_run(d)["status"] == "finished"
        assert (d / "model.zip").is_file() and (d / "evaluations.json").is_file()
    groups = (out / "report" / "groups.csv").read_text()
    assert "iqm_final_low" in groups and "iqm_final_high" in groups
    assert "IQM final [95% CI]" in capsys.readouterr().out
    mtimes = {p.name: (p / "run.json").stat().st_mtime for p in out.iterdir() if (p / "run.json").is_file()}
    res = run_sweep(spec, out)  # Ray is not even started: nothing to run
    assert res.count("skipped") == 4 and not ray.is_initialized()
    assert {
        p.name: (p / "run.json").stat().st_mtime for p in out.iterdir() if (p / "run.json").is_file()
    } == mtimes


@pytest.mark.slow
def test_the_efficiency_benchmark_on_ray(tmp_path: Path) -> None:
    """``bench rl --parts efficiency --jobs 2`` runs its sweep on Ray (one torch thread per trial) with
    the same rows as in-process (the runs are deterministic per seed)."""
    ray = pytest.importorskip("ray")
    from equirl.bench import rl as bench

    try:
        spec = bench.efficiency_sweep(1, 300, envs=("CartPole-v1",), eval_freq=100, eval_episodes=2)
        serial = bench.efficiency(spec, jobs=1, runs_dir=tmp_path / "serial")
        parallel = bench.efficiency(spec, jobs=2, runs_dir=tmp_path / "ray")
    finally:
        ray.shutdown()
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in serial]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in parallel] == strip
    assert len(strip) == 2


def test_auc_carries_an_early_stop_to_the_budget_and_compare_reads_intervals() -> None:
    import numpy as np

    from equirl.rl.sweep_report import RunData, auc, compare
    from equirl.utils.stats import Interval

    score = {"min": 0.0, "max": 100.0, "threshold": 90.0}
    full = RunData(
        "E", BASE, "", 0, 100, np.array([0.0, 50.0, 100.0]), np.array([0.0, 100.0, 100.0]), 100.0, 100.0
    )
    stopped = RunData("E", BASE, "", 0, 100, np.array([0.0, 50.0]), np.array([0.0, 100.0]), 100.0, 100.0)
    assert auc(full, score) == pytest.approx(0.75)  # 25 (ramp) + 50 (flat), over 100 steps
    assert auc(stopped, score) == pytest.approx(auc(full, score))
    overshoot = RunData("E", BASE, "", 0, 100, np.array([0.0, 128.0]), np.array([100.0, 100.0]), 100.0, 100.0)
    assert auc(overshoot, score) == pytest.approx(1.0)  # a run past its budget (whole rollouts) stays <= 1
    assert compare(Interval(5.0, 4.0, 6.0), Interval(2.0, 1.0, 3.0)) == "above"
    assert compare(Interval(2.0, 1.0, 3.0), Interval(5.0, 4.0, 6.0)) == "below"
    assert compare(Interval(3.0, 2.0, 4.5), Interval(5.0, 4.0, 6.0)) == "overlap"


def test_early_stopping_and_the_step_zero_evaluation(tmp_path: Path) -> None:
    """eval.stop_at ends the run at the first evaluation reaching it (run.json says so); eval.at_start
    puts the starting model's return at step 0 of the curve."""
    from equirl.rl.config import load_rl_config
    from equirl.rl.train import run_training

    over = [f"{k}={json.dumps(v)}" for k, v in TINY["set"].items()]
    cfg = load_rl_config(
        "dqn-CartPole-v1",
        [*over, "timesteps=1000", "eval.freq=200", "eval.episodes=1", "eval.final_episodes=1",
         "eval.stop_at=0", "eval.at_start=true", f"out={json.dumps(str(tmp_path))}"],
    )  # fmt: skip
    res = run_training(cfg)
    info = read_run(res.run_dir)
    assert info["status"] == "finished" and info["stopped_early"] is True
    assert res.timesteps[0] == 0 and res.timesteps[1] == 200  # step 0, then the first periodic one
    assert res.steps == 200 < cfg.timesteps
    with pytest.raises(ConfigError, match="stop_at"):
        load_rl_config("dqn-CartPole-v1", ["eval.freq=0", "eval.stop_at=1"])


def _kill_ray_node(head: Any, marker: str) -> None:
    """Stop the node started by ``ray start --head --block`` (its process group), then any process of
    that node left behind (its command line names the node's unique temp dir); other Ray instances on
    the machine are left alone (unlike ``ray stop``)."""
    import os
    import signal

    import psutil

    try:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=20)
    except (ProcessLookupError, TimeoutError, Exception):
        head.kill()
    for p in psutil.process_iter(["cmdline"]):
        if marker in " ".join(p.info.get("cmdline") or []):
            with contextlib.suppress(psutil.Error):
                p.kill()


@pytest.mark.slow
def test_sweep_on_a_two_process_local_cluster(tmp_path: Path) -> None:
    """``ray start --head`` in one process, ``equirl sweep --address`` in another (the driver): the
    trials run on that node, every trial finishes, and the driver leaves the cluster running."""
    import shutil
    import socket
    import subprocess
    import sys
    import tempfile

    ray = pytest.importorskip("ray")
    ray_cli = Path(sys.executable).parent / "ray"
    if not ray_cli.is_file():
        pytest.skip("the `ray` command is not installed beside this Python")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp = tempfile.mkdtemp(prefix="eqr", dir="/tmp")  # short: Ray's socket paths must stay < 108 chars
    head = subprocess.Popen(
        [str(ray_cli), "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
         f"--temp-dir={temp}", "--block"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        address = f"127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:  # wait for the head's GCS
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.time() < deadline and head.poll() is None, "ray start --head did not come up"
            time.sleep(0.5)
        out = tmp_path / "out"
        code = subprocess.run(
            [sys.executable, "-m", "equirl", "sweep", str(ROOT / "configs" / "sweeps" / "smoke.yaml"),
             "--out", str(out), "--address", address, "--no-plots", "--reps", "200"],
            capture_output=True,
            text=True,
            timeout=300,
        )  # fmt: skip
        assert code.returncode == 0, code.stderr[-2000:]
        spec = load_sweep(ROOT / "configs" / "sweeps" / "smoke.yaml")
        for t in expand_trials(spec, out):
            d = find_trial_dir(out, t.name)
            assert d is not None and read_run(d)["status"] == "finished"
        assert head.poll() is None  # the cluster outlives the sweep's driver
        assert "4 ran" in code.stdout
    finally:
        _kill_ray_node(head, temp)
        shutil.rmtree(temp, ignore_errors=True)
        assert not ray.is_initialized()
