"""Bad inputs to ``equirl sweep`` / ``sweep report`` / ``bench rl``: exit status 2 and ONE stderr line
naming the cause; a sweep rerun with other settings never reports its old results as new ones."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from equirl.cli import main
from equirl.errors import ConfigError, EquirlError
from equirl.registry import BASE, EQUITUNE
from equirl.rl.lifecycle import read_run
from equirl.rl.sweep import MAX_TRIALS, find_trial_dir, load_sweep, run_sweep, trial_dirs
from equirl.rl.sweep_report import sweep_report
from tests.rl.helpers import finished_run

ROOT = Path(__file__).resolve().parents[2]

TINY: dict[str, Any] = {
    "config": "dqn-CartPole-v1",
    "timesteps": 200,
    "eval": {"freq": 100, "episodes": 1, "final_episodes": 1},
    "set": {
        "hyperparams.learning_starts": 50,
        "hyperparams.train_freq": 50,
        "hyperparams.gradient_steps": 1,
        "hyperparams.buffer_size": 500,
        "log.tensorboard": False,
    },
    "baseline": BASE,
    "grid": {"method": [BASE], "seed": [0]},
}


def _write(tmp_path: Path, data: dict[str, Any], name: str = "sweep.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    return err


def _tree(root: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in root.rglob("*")
        if p.is_file()
    }


# --- 1: a sweep rerun with other settings ---------------------------------------------------------------


def test_changed_settings_run_anew_and_old_results_are_not_reported(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = run_sweep(load_sweep(_write(tmp_path, TINY)), out, executor="serial")
    assert [o.action for o in first.outcomes] == ["ran"]
    old_dir = Path(first.outcomes[0].run_dir or "")
    old_files = _tree(old_dir)
    old_manifest = json.loads((out / "sweep.json").read_text())

    time.sleep(1.1)  # a new run directory name (its time stamp)
    changed = {**TINY, "timesteps": 300}
    second = run_sweep(load_sweep(_write(tmp_path, changed)), out, executor="serial")
    (o,) = second.outcomes
    assert o.action == "ran" and o.status == "finished"  # not "skipped" from the old folder
    assert second.changed == [o.name]
    new_dir = Path(o.run_dir or "")
    assert new_dir != old_dir and new_dir.name.startswith(o.name + "__")
    assert read_run(new_dir)["total_timesteps"] == 300
    assert _tree(old_dir) == old_files  # the old run is untouched
    assert len(trial_dirs(out, o.name)) == 2

    manifest = json.loads((out / "sweep.json").read_text())
    assert manifest["sweep"]["timesteps"] == 300
    assert manifest["fingerprint"] != old_manifest["fingerprint"]
    assert manifest["trials"][0]["fingerprint"] != old_manifest["trials"][0]["fingerprint"]
    (earlier,) = manifest["history"]  # the old settings are kept, not silently rewritten
    assert earlier["sweep"]["timesteps"] == 200 and earlier["fingerprint"] == old_manifest["fingerprint"]

    rep = sweep_report(out, reps=100, plots=False, hparams=False)
    (run,) = rep.runs  # only the run of the current settings
    assert run["budget"] == 300
    assert [(p["run_dir"], p["status"]) for p in rep.problems] == [(str(old_dir), "outdated")]

    third = run_sweep(load_sweep(_write(tmp_path, changed)), out, executor="serial")
    assert [o.action for o in third.outcomes] == ["skipped"] and third.outcomes[0].run_dir == str(new_dir)
    assert third.changed == []
    # back to the first settings: the first run directory is that trial's again
    back = run_sweep(load_sweep(_write(tmp_path, TINY)), out, executor="serial")
    assert [o.action for o in back.outcomes] == ["skipped"] and back.outcomes[0].run_dir == str(old_dir)
    assert len(json.loads((out / "sweep.json").read_text())["history"]) == 2
    assert find_trial_dir(out, o.name, None) is not None


def test_an_unreadable_sweep_json_is_refused_and_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "sweep.json").write_text('{"sweep": {"time')
    before = (out / "sweep.json").read_bytes()
    code = main(
        ["sweep", str(_write(tmp_path, TINY)), "--out", str(out), "--executor", "serial", "--no-report"]
    )
    assert code == 2
    err = _one_line(capsys)
    assert "sweep.json" in err and "corrupt" in err
    assert (out / "sweep.json").read_bytes() == before and list(out.iterdir()) == [out / "sweep.json"]


# --- 2 and 3: Ray addresses ---------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_ray_address_is_one_line_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ray = pytest.importorskip("ray")

    def no_init(*a: Any, **k: Any) -> None:
        raise AssertionError("ray.init must not be reached: it retries for ever")

    monkeypatch.setattr(ray, "init", no_init)
    address = f"127.0.0.1:{_closed_port()}"
    out = tmp_path / "out"
    t0 = time.perf_counter()
    code = main(["sweep", str(_write(tmp_path, TINY)), "--out", str(out), "--address", address])
    assert code == 2 and time.perf_counter() - t0 < 20
    err = _one_line(capsys)
    assert f"cannot reach the Ray cluster at {address}" in err
    assert not out.exists()  # nothing written before the cluster answered


def test_check_ray_address_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ray")
    import equirl.rl.sweep as sweep

    seen = {}

    def silent(addr: tuple[str, int], timeout: float) -> Any:
        seen["timeout"] = timeout
        raise TimeoutError("timed out")

    monkeypatch.setattr(socket, "create_connection", silent)
    with pytest.raises(EquirlError, match=r"10\.1\.2\.3:6379: no answer within 20 s"):
        sweep.check_ray_address("10.1.2.3:6379")
    assert seen["timeout"] == sweep.RAY_CONNECT_TIMEOUT == 20.0


def test_a_local_sweep_always_starts_its_own_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never the cluster a dead ``ray start --head`` left in /tmp/ray/ray_current_cluster:
    ``ray.init(address="local")`` (Ray's failure would be a 30-line traceback)."""
    ray = pytest.importorskip("ray")
    import equirl.rl.sweep as sweep

    calls: list[dict[str, Any]] = []

    def fake_init(**kwargs: Any) -> None:
        calls.append(kwargs)
        raise ValueError(
            "When connecting to an existing cluster, num_cpus and num_gpus must not be provided."
        )

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", fake_init)
    with pytest.raises(EquirlError, match="cannot start a local Ray") as info:
        sweep._ray_init(2, None)
    assert "\n" not in str(info.value)
    assert calls[0]["address"] == "local" and calls[0]["num_cpus"] == 2


@pytest.mark.slow
def test_a_stale_cluster_file_does_not_break_a_local_sweep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real local Ray, with Ray's temporary folder (``$RAY_TMPDIR``) holding a cluster file that names a
    dead head node: the sweep starts its own Ray and finishes."""
    import shutil
    import tempfile

    ray = pytest.importorskip("ray")
    temp = Path(tempfile.mkdtemp(prefix="eqr", dir="/tmp"))  # Ray's socket paths must stay short
    try:
        (temp / "ray").mkdir()
        (temp / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{_closed_port()}")
        monkeypatch.setenv("RAY_TMPDIR", str(temp))
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
        try:
            res = run_sweep(load_sweep(_write(tmp_path, TINY)), tmp_path / "out", cpus=1)
        finally:
            ray.shutdown()
        assert [o.status for o in res.outcomes] == ["finished"]
    finally:
        shutil.rmtree(temp, ignore_errors=True)


# --- 4: the report ------------------------------------------------------------------------------------


def _fake_run(root: Path, name: str, seed: int, returns: list[float]) -> Path:
    return finished_run(root / name, BASE, seed, returns)


def test_report_lists_a_truncated_evaluations_file_and_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "sweep"
    _fake_run(root, "CartPole-v1__base__0__1", 0, [10.0, 20.0])
    bad = _fake_run(root, "CartPole-v1__base__1__1", 1, [30.0, 40.0])
    text = (bad / "evaluations.json").read_text()
    (bad / "evaluations.json").write_text(text[: len(text) // 2])
    assert main(["sweep", "report", str(root), "--no-plots", "--reps", "100"]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    out = " ".join(captured.out.split())
    assert "unreadable" in out and str(bad / "evaluations.json") in out.replace(" ", "")
    rep = sweep_report(root, reps=100, plots=False, hparams=False)
    assert [g["seeds"] for g in rep.groups] == [1]
    assert rep.problems[0]["status"] == "unreadable" and "evaluations.json" in rep.problems[0]["error"]


@pytest.mark.parametrize(
    ("what", "pattern"), [("missing", r"sweep folder .*nosuchdir does not exist"), ("file", r"is a file")]
)
def test_report_of_a_missing_folder_or_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], what: str, pattern: str
) -> None:
    target = tmp_path / "nosuchdir"
    if what == "file":
        target.write_text("x")
    assert main(["sweep", "report", str(target)]) == 2
    import re

    assert re.search(pattern, _one_line(capsys))


# --- 5, 6, 9: the sweep file --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patch", "pattern"),
    [
        ({"baseline": EQUITUNE}, r"baseline equitune is not a method of the sweep.*methods: base"),
        (
            {"grid": {"method": [BASE, "lambda"], "seed": [0]}, "baseline": "equizero"},
            r"baseline equizero .*methods: base, lambda",
        ),
        (
            {"scores": {"CartPole-v1": {"min": 500, "max": 0, "threshold": 475}}},
            r"scores\.CartPole-v1\.min = 500\.0: must be less than max \(0\)",
        ),
        ({"scores": {"CartPole-v1": {"min": 0, "max": 0, "threshold": 0}}}, r"must be less than max"),
        ({"scores": {"CartPole-v1": {"min": 0, "max": ".nan", "threshold": 1}}}, r"scores\.CartPole-v1\.max"),
        (
            {"scores": {"CartPole-v1": {"min": 0, "max": 500}}},
            r"missing required key: scores\.CartPole-v1\.threshold",
        ),
        ({"grid": {"seed": {"range": [0, 10**9]}}}, r"range .* gives 1,000,000,000 values.*at most 10,000"),
        ({"grid": {"seed": {"range": [0, 10**30]}}}, r"at most 10,000"),
        ({"grid": {"seed": {"range": [0, 10, 0]}}}, r"step .* must not be 0"),
        ({"grid": {"seed": {"range": [True, 3]}}}, r"range must be"),
        (
            {"grid": {"seed": {"range": [0, 200]}, "hyperparams.gamma": {"range": [0, 100]}}},
            r"the grid gives 20,000 trials",
        ),
    ],
)
def test_bad_sweep_files_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], patch: dict[str, Any], pattern: str
) -> None:
    import re

    data = {**TINY, **patch}
    if isinstance(data.get("scores"), dict):  # YAML's .nan, not a string
        text = yaml.safe_dump(data).replace("'.nan'", ".nan")
        path = tmp_path / "sweep.yaml"
        path.write_text(text)
    else:
        path = _write(tmp_path, data)
    out = tmp_path / "out"
    t0 = time.perf_counter()
    assert main(["sweep", str(path), "--out", str(out), "--executor", "serial"]) == 2
    assert time.perf_counter() - t0 < 10
    assert re.search(pattern, _one_line(capsys))
    assert not out.exists()


def test_the_trial_cap_is_checked_before_expanding(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from equirl.rl.sweep import SweepSpec, expand_trials

    spec = SweepSpec(
        config="dqn-CartPole-v1", grid={"seed": list(range(MAX_TRIALS)), "method": [BASE, EQUITUNE]}
    )
    with pytest.raises(ConfigError, match="20,000 trials"):
        expand_trials(spec, tmp_path)


@pytest.mark.parametrize("kind", ["deep", "aliases"])
def test_deep_or_aliased_sweep_files_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    if kind == "deep":
        text = "config: dqn-CartPole-v1\ngrid:\n  hyperparams.x: " + "[" * 5000 + "]" * 5000 + "\n"
    else:
        levels = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
        levels += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 8)]
        text = "config: dqn-CartPole-v1\n" + "\n".join(levels) + "\ngrid:\n  hyperparams.x: [*a7]\n"
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "--executor", "serial"]) == 2
    assert str(path) in _one_line(capsys)


def test_sweep_files_are_read_only_through_the_strict_loaders() -> None:
    """YAML only through equirl.config.load_yaml / parse_yaml, JSON only through read_json."""
    for rel in (
        "equirl/rl/sweep.py",
        "equirl/rl/sweep_report.py",
        "equirl/cli/sweep.py",
        "equirl/bench/rl.py",
    ):
        src = (ROOT / rel).read_text()
        assert "yaml.safe_load(" not in src and "yaml.load(" not in src, rel
        assert "json.loads(" not in src and "json.load(" not in src, rel


# --- 8: bench rl --jobs --------------------------------------------------------------------------------


def test_bench_rl_honours_jobs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from equirl.bench import rl as bench

    seen: list[int] = []

    def fake(out: Path, sweep: str, cpus: int, timesteps: int | None) -> list[dict[str, Any]]:
        seen.append(cpus)
        return [{"executor": "ray", "workers": cpus}]

    monkeypatch.setattr(bench, "sweep_walltime", fake)
    for jobs in (1, 3):
        list(bench.run_rl_bench(tmp_path / f"b{jobs}", ["sweep-walltime"], jobs=jobs, sweep="smoke"))
    assert seen == [1, 3]
