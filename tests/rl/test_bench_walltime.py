"""The wall-time part of ``equirl bench rl``: every (config, method) pair timed, stock SB3 among them, on
tiny budgets (the real tables live in ``docs/results/rl/``)."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path
from typing import Any

import pytest

from equirl.bench import rl as bench
from equirl.errors import ConfigError

HAS_MINATAR = importlib.util.find_spec("minatar") is not None
HAS_ALE = importlib.util.find_spec("ale_py") is not None

MINATAR = pytest.param(
    "dqn-MinAtar-Breakout-v1",
    marks=pytest.mark.skipif(not HAS_MINATAR, reason="minatar not installed (pip install 'equirl[minatar]')"),
)


def _check_rows(rows: list[dict[str, Any]], configs: list[str], methods: tuple[str, ...], steps: int) -> None:
    assert [(r["config"], r["method"]) for r in rows] == [(c, m) for c in configs for m in methods]
    for r in rows:
        assert r["steps"] == steps and r["group_order"] == 2 and r["learning_starts"] == 10
        assert r["steps_per_second"] > 0 and r["wall_seconds"] > 0 and r["cpu_seconds"] > 0
        assert r["updates"] > 0  # learning started inside the timed steps
        assert r["wall_ratio_vs_sb3"] > 0 and r["cpu_ratio_vs_base"] > 0
        # stock SB3's policy for the sb3 arm, equirl's for the others
        assert r["policy"].startswith("Equi") == (r["method"] != bench.SB3), r
        if r["method"] == bench.SB3:
            assert r["wall_ratio_vs_sb3"] == r["cpu_ratio_vs_sb3"] == 1.0
        # stock SB3's share in its Q-networks' forward calls, the same for every arm of a config, and the
        # ratio 1 + (|G| - 1) f of the arms that symmetrize, at linear forward cost
        f, b = r["sb3_forward_share"], r["sb3_backward_share"]
        assert 0 < f < 1 and 0 < b < 1
        assert f == next(x["sb3_forward_share"] for x in rows if x["config"] == r["config"])
        if r["method"] in (bench.SB3, "base"):
            assert r["linear_vs_sb3"] == ""
        else:
            assert r["linear_vs_sb3"] == pytest.approx(1 + (r["group_order"] - 1) * (f + b), abs=2e-3)
        if r["method"] == "base":
            assert r["wall_ratio_vs_base"] == r["cpu_ratio_vs_base"] == 1.0


@pytest.mark.parametrize("config", ["dqn-CartPole-v1", MINATAR])
def test_walltime_rows_per_config_and_method_with_stock_sb3(config: str) -> None:
    rows = bench.walltime(50, configs=["dqn-CartPole-v1", config], learning_starts=10)
    configs = list(dict.fromkeys(["dqn-CartPole-v1", config]))
    _check_rows(rows, configs, bench.WALLTIME_METHODS, 50)
    assert bench.WALLTIME_METHODS[0] == bench.SB3 and "equitune" in bench.WALLTIME_METHODS


def test_walltime_ratios_are_paired_with_an_interval_from_six_rounds() -> None:
    """Each ratio is the median of the rounds' own ratios; with 6 rounds it has a 95 % interval around it."""
    rows = bench.walltime(30, repeats=6, methods=(bench.SB3, "equitune"), configs=["dqn-CartPole-v1"])
    eq = next(r for r in rows if r["method"] == "equitune")
    assert eq["wall_ratio_vs_sb3_lo"] <= eq["wall_ratio_vs_sb3"] <= eq["wall_ratio_vs_sb3_hi"]
    sb3 = next(r for r in rows if r["method"] == bench.SB3)
    assert sb3["wall_ratio_vs_sb3_lo"] == sb3["wall_ratio_vs_sb3_hi"] == 1.0
    one = bench.walltime(30, repeats=1, methods=(bench.SB3, "equitune"), configs=["dqn-CartPole-v1"])
    assert all(r["wall_ratio_vs_sb3_lo"] == r["wall_ratio_vs_sb3_hi"] == "" for r in one)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_ALE, reason="ale-py not installed (pip install ale-py)")
def test_walltime_on_atari_frames() -> None:
    """ALE Breakout: stock SB3's CnnPolicy vs equirl's NatureCNN policies on the same 4 stacked frames."""
    methods = (bench.SB3, "base", "equitune")
    rows = bench.walltime(40, methods=methods, configs=["dqn-ALE-Breakout-v5"], learning_starts=10)
    _check_rows(rows, ["dqn-ALE-Breakout-v5"], methods, 40)
    assert [r["policy"] for r in rows] == ["CnnPolicy", "EquiCnnDQNPolicy", "EquiCnnDQNPolicy"]


def test_network_share_counts_the_q_networks_forward_and_backward_passes() -> None:
    """The shares of a run spent in the Q-networks' forward calls and in the loss's backward pass; the hooks
    are gone afterwards, and an algorithm without Q-networks (SAC) has none."""
    from stable_baselines3 import DQN, SAC

    model = DQN("MlpPolicy", "CartPole-v1", learning_starts=10, seed=0, device="cpu")
    shares = bench.network_share(model, 60)
    assert shares is not None
    f, b = shares
    assert 0 < f < 1 and 0 < b < 1 and f + b < 1
    assert not model.policy.q_net._forward_hooks and not model.policy.q_net._forward_pre_hooks
    assert (
        "zero_grad" not in vars(model.policy.optimizer)
        and not model.policy.optimizer._optimizer_step_pre_hooks
    )
    assert bench.network_share(SAC("MlpPolicy", "Pendulum-v1", learning_starts=5, device="cpu"), 10) is None


def test_walltime_csv_name_depends_on_the_configs() -> None:
    assert bench.walltime_csv_name(["dqn-CartPole-v1"]) == "walltime.csv"
    assert bench.walltime_csv_name(["configs/rl/dqn-CartPole-v1.yaml"]) == "walltime.csv"
    pixels = bench.walltime_csv_name(["dqn-MinAtar-Breakout-v1", "dqn-ALE-Breakout-v5"])
    assert pixels == "walltime_dqn-MinAtar-Breakout-v1+dqn-ALE-Breakout-v5.csv"


def test_step_budgets_one_for_all_or_one_per_config() -> None:
    two = ["dqn-MinAtar-Breakout-v1", "configs/rl/dqn-ALE-Breakout-v5.yaml"]
    assert bench.walltime_budgets(300, two) == bench.walltime_budgets([300], two) == [300, 300]
    runs = bench.walltime_runs([*two, "dqn-MinAtar-Breakout-v1"], [3000, 600, 5])
    assert [(name, n) for name, _, n in runs] == [
        ("dqn-MinAtar-Breakout-v1", 3000),
        ("dqn-ALE-Breakout-v5", 600),
    ]
    with pytest.raises(ConfigError, match="3 step budgets for 2 configs"):
        bench.walltime_budgets([1, 2, 3], two)


def test_walltime_refuses_bad_configs_and_methods_before_timing() -> None:
    with pytest.raises(ConfigError, match="nosuch"):
        bench.walltime(10, configs=["nosuch"])
    with pytest.raises(ConfigError, match="from scratch"):
        bench.walltime(10, configs=["dqn-CartPole-v1-finetune-equizero"])
    with pytest.raises(ConfigError, match="unknown methods canonicalize"):
        bench.walltime(10, methods=("sb3", "canonicalize"))


def test_learning_starts_is_replaced_or_kept() -> None:
    ((_, cfg),) = bench.load_walltime_configs(["dqn-MinAtar-Breakout-v1"], 7)
    assert cfg.hyperparams.learning_starts == 7
    ((_, cfg),) = bench.load_walltime_configs(["dqn-MinAtar-Breakout-v1"], None)
    assert cfg.hyperparams.learning_starts == 5000


def test_cli_writes_the_named_table(tmp_path: Path) -> None:
    from equirl.cli import main

    out = tmp_path / "bench"
    argv = ["bench", "rl", "--parts", "walltime", "--walltime-steps", "20", "--walltime-learning-starts", "5"]
    assert main([*argv, "--walltime-steps", "20", "30", "--out", str(out)]) == 2  # two budgets, one config
    assert not out.exists()
    assert main([*argv, "--walltime-csv", "cp.csv", "--out", str(out)]) == 0
    with (out / "cp.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == list(bench.WALLTIME_METHODS)
    assert {r["learning_starts"] for r in rows} == {"5"} and not (out / "walltime.csv").exists()
    assert main([*argv, "--walltime-csv", "../x.csv", "--out", str(out)]) == 2
