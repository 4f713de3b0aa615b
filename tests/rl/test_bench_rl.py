"""The RL sample-efficiency benchmark pairs the plain and equivariant arms seed by seed (the runs
themselves are slow and live in ``equirl bench rl``; here the job function is replaced)."""

from __future__ import annotations

from typing import Any

import pytest

from equirl.bench import rl as bench


def test_efficiency_is_a_sweep_pairing_arms_per_seed_from_first_seed(tmp_path: Any) -> None:
    from equirl.rl.sweep import expand_trials

    spec = bench.efficiency_sweep(3, 5000, envs=("CartPole-v1",), method="lambda", first_seed=5)
    trials = expand_trials(spec, tmp_path)
    assert sorted((t.method, t.seed) for t in trials) == sorted(
        (m, s) for s in (5, 6, 7) for m in ("base", "lambda")
    )
    for t in trials:  # both arms: the same partial agent, early stopping at the threshold, step-0 evaluation
        assert t.cfg.init_from and t.cfg.init_from.endswith("CartPole-v1_partial.zip")
        assert t.cfg.eval.stop_at == bench.threshold("CartPole-v1") == 475.0 and t.cfg.eval.at_start
        assert t.cfg.timesteps == 5000 and t.cfg.hyperparams.exploration_initial_eps == 0.1
    rows = [
        {"env": "CartPole-v1", "method": m, "seed": s, "reached": True, "budget": 5000,
         "steps_to_threshold": 1000 * (s + 1) * (2 if m == "base" else 1)}
        for s in (5, 6, 7) for m in ("base", "lambda")
    ]  # fmt: skip
    summary = {r["method"]: r for r in bench.efficiency_summary(rows, "lambda")}
    assert summary["base"]["median_steps"] == 2 * 7000
    assert summary["lambda"]["median_steps"] == 7000
    assert summary["lambda"]["ratio_vs_base"] == pytest.approx(0.5)


def test_efficiency_runs_are_run_directories_and_rows(tmp_path: Any) -> None:
    """A tiny real benchmark in-process: rows from the run directories, curves from step 0."""
    spec = bench.efficiency_sweep(1, 300, envs=("CartPole-v1",), eval_freq=100, eval_episodes=1)
    rows = bench.efficiency(spec, runs_dir=tmp_path)
    assert [(r["method"], r["seed"]) for r in rows] == [("base", 0), ("equitune", 0)]
    for r in rows:
        steps = [int(p.split(":")[0]) for p in r["curve"].split(";")]
        # (CartPole's config collects 256 env steps per rollout, so a 300-step budget ends at 512)
        assert steps[0] == 0 and steps == sorted(steps) and steps[-1] <= 512
        assert r["reached"] == (r["steps_to_threshold"] >= 0)
    assert len([d for d in tmp_path.iterdir() if (d / "run.json").is_file()]) == 2
    again = bench.efficiency(spec, runs_dir=tmp_path)
    assert again == rows  # a rerun reads the finished runs (nothing reruns)


def test_zero_shot_covers_every_algorithm_with_intervals(tmp_path: Any) -> None:
    """The zero-shot part takes the shipped agents of every algorithm (not only DQN), full and partial,
    and reports each method's mean return inside its bootstrap interval; its plot is written."""
    from equirl.rl.agents import shipped_agents

    agents = bench._agents()
    ours = [(algo, kind, env, path) for algo, kind, env, path in agents if kind != "zoo"]
    assert len(ours) == len(shipped_agents()) and {"dqn", "ppo", "sac"} <= {a[0] for a in ours}
    assert {a[1] for a in ours} == {"ours", "ours-partial"}
    # through the bench's entry point, as `equirl bench rl --parts zero-shot --envs Pendulum-v1` runs it
    (table,) = bench.run_rl_bench(tmp_path, ["zero-shot"], seeds=2, episodes=2, envs=["Pendulum-v1"])
    rows = table.rows
    assert {r["env"] for r in rows} == {"Pendulum-v1"}
    assert {(r["algo"], r["agent"]) for r in rows if r["agent"] != "zoo"} == {
        ("sac", "ours"),
        ("sac", "ours-partial"),
    }
    for r in rows:
        assert r["episodes"] == 4 and r["ci95_low"] <= r["mean_return"] <= r["ci95_high"]
    assert any(r["ci95_high"] > r["ci95_low"] for r in rows)  # a real interval, not a point
    assert (tmp_path / "zero_shot.png").stat().st_size > 0
    assert (tmp_path / "zero_shot.csv").read_text().count("Pendulum-v1") == len(rows)


def test_shipped_agents_lists_every_zip_with_its_env(tmp_path: Any) -> None:
    """agents/{algo}/{env}/ folders with eval.json: full then partial, env from eval.json; others skipped."""
    import json

    from equirl.rl.agents import shipped_agents

    d = tmp_path / "ppo" / "equirl_GridWorld-v0"
    d.mkdir(parents=True)
    (d / "eval.json").write_text(json.dumps({"env": "equirl/GridWorld-v0"}))
    for name in ("equirl_GridWorld-v0.zip", "equirl_GridWorld-v0_partial.zip"):
        (d / name).write_bytes(b"")
    (tmp_path / "sac" / "NoEval-v0").mkdir(parents=True)  # no eval.json: not an agent folder
    (tmp_path / "sac" / "NoEval-v0" / "NoEval-v0.zip").write_bytes(b"")
    got = shipped_agents(tmp_path)
    assert [(a.algo, a.env, a.path.name, a.partial) for a in got] == [
        ("ppo", "equirl/GridWorld-v0", "equirl_GridWorld-v0.zip", False),
        ("ppo", "equirl/GridWorld-v0", "equirl_GridWorld-v0_partial.zip", True),
    ]


def test_zero_shot_skips_agents_whose_env_cannot_run_here(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A wheel installed with [rl] only has no minatar / ale-py: the zero-shot part skips those agents with
    a warning naming what to install, unless they were asked for by name."""
    import equirl.rl.envs as envs_mod
    from equirl.errors import EquirlError

    real = envs_mod.prepare_env

    def missing(env_id: str) -> None:
        if env_id.startswith("MinAtar/"):
            raise EquirlError(
                f"cannot run {env_id}: minatar is not installed (pip install 'equirl[minatar]')"
            )
        real(env_id)

    monkeypatch.setattr(envs_mod, "prepare_env", missing)
    with caplog.at_level("WARNING", logger="equirl.bench.rl"):
        agents = bench._agents()
    assert agents and not any(a[2].startswith("MinAtar/") for a in agents)
    assert "pip install 'equirl[minatar]'" in caplog.text
    asked = bench._agents(["MinAtar/Breakout-v1"])
    assert asked and {a[2] for a in asked} == {"MinAtar/Breakout-v1"}


def test_zero_shot_of_an_unknown_env_is_one_line(tmp_path: Any) -> None:
    from equirl.errors import SymmetryError

    with pytest.raises(SymmetryError) as err:
        list(bench.run_rl_bench(tmp_path / "out", ["zero-shot"], envs=["Nope-v0"]))
    assert "Nope-v0" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()
