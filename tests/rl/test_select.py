"""``method: auto``: the candidate with the best validation return is picked, ties go to the cheaper one
(base first), the validation seeds are disjoint from the evaluation seeds, and the choice is saved."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from equirl.cli import main
from equirl.errors import ConfigError
from equirl.registry import AUTO, PSEUDO_METHODS, canonical_method, get_method, method_names
from equirl.rl.select import VALIDATION_SEED, parse_candidate, select_method

CARTPOLE = "agents/dqn/CartPole-v1/CartPole-v1.zip"


class _Fake:
    """A known return per candidate label (plus seed-dependent noise of ±noise), recording the seeds."""

    def __init__(self, means: dict[str, float], noise: float = 1.0) -> None:
        self.means = means
        self.noise = noise
        self.seeds: set[int] = set()

    def __call__(self, method: str, kw: dict[str, Any], seed: int, episodes: int) -> list[float]:
        from equirl.rl.select import candidate_label

        self.seeds.add(seed)
        m = self.means[candidate_label(method, kw)]
        return [m + self.noise * (1 if (seed // 1000 + e) % 2 else -1) for e in range(episodes)]


def test_auto_picks_the_known_best() -> None:
    fake = _Fake({"base": 100.0, "equitune": 200.0, "equizero(proxy=max_value)": 60.0})
    choice = select_method(
        "agent",
        "CartPole-v1",
        ["base", "equitune", "equizero:proxy=max_value"],
        episodes=4,
        seeds=3,
        evaluator=fake,
    )
    assert (choice.method, choice.method_kwargs) == ("equitune", {})
    assert "auto picked equitune" in choice.reason and "\n" not in choice.reason
    assert [r["chosen"] for r in choice.table] == [False, True, False]
    # validation seeds are disjoint from evaluate_methods' (1000·s for s < 50) and the runs' (seed + 10_000/20_000)
    assert fake.seeds == {VALIDATION_SEED, VALIDATION_SEED + 1000, VALIDATION_SEED + 2000}
    assert min(fake.seeds) > 1000 * 50 + 20_000


def test_auto_tie_goes_to_the_cheaper_base() -> None:
    # equitune is better by less than the best's standard error: keep the agent as it is
    fake = _Fake({"base": 100.0, "equitune": 100.3, "equizero": 99.8}, noise=5.0)
    choice = select_method("agent", "CartPole-v1", ["equitune", "equizero", "base"], evaluator=fake)
    assert choice.method == "base"
    assert "kept as it is" in choice.reason
    tied = {r["label"]: r["tied"] for r in choice.table}
    assert tied == {"equitune": True, "equizero": True, "base": True}


def test_auto_choice_saved_as_json_and_markdown(tmp_path: Path) -> None:
    fake = _Fake({"base": -100.0, "equizero(proxy=action_gap)": -80.0}, noise=0.0)
    choice = select_method("a", "Acrobot-v1", ["base", ("equizero", {"proxy": "action_gap"})], evaluator=fake)
    path = choice.save(tmp_path)
    data = json.loads(path.read_text())
    assert data["method"] == "equizero" and data["method_kwargs"] == {"proxy": "action_gap"}
    assert len(data["candidates"]) == 2 and data["reason"] == choice.reason
    md = (tmp_path / "auto_choice.md").read_text()
    assert "| equizero(proxy=action_gap) | -80.00" in md and choice.reason in md


def test_parse_candidate_and_errors() -> None:
    assert parse_candidate("equi-zero:proxy=max_value,tie_atol=0") == (
        "equizero",
        {"proxy": "max_value", "tie_atol": 0},
    )
    assert parse_candidate("plain") == ("base", {})
    for bad, msg in (("auto", "own candidate"), ("equizero:proxy", "key=value"), ("nope", "unknown method")):
        with pytest.raises(ConfigError, match=msg):
            parse_candidate(bad)
    with pytest.raises(ConfigError, match="proxy"):
        parse_candidate("equizero:proxy=bogus")
    with pytest.raises(ConfigError, match="positive"):
        select_method("a", "CartPole-v1", ["base"], episodes=0, evaluator=_Fake({"base": 0.0}))


def test_auto_is_a_pseudo_method_of_the_registry() -> None:
    assert canonical_method("AUTO") == AUTO and get_method(AUTO).pseudo
    assert AUTO in PSEUDO_METHODS and AUTO not in method_names() and AUTO in method_names(pseudo=True)
    from equirl import symmetrize
    from equirl.actions import rotation_action
    from equirl.errors import EquirlError

    with pytest.raises(EquirlError, match="select_method"):
        symmetrize(lambda x: x, rotation_action(4), method=AUTO)


def test_auto_on_the_shipped_cartpole_agent_avoids_the_max_value_proxy() -> None:
    """The real case: equizero with max_value drops the shipped agent from 500 to ~60."""
    choice = select_method(CARTPOLE, "CartPole-v1", ["equizero:proxy=max_value", "base"], episodes=1, seeds=1)
    assert choice.method == "base"
    rows = {r["label"]: r["mean_return"] for r in choice.table}
    assert rows["base"] == 500.0 and rows["equizero(proxy=max_value)"] < 200


def test_cli_eval_auto(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["eval", "--agent", CARTPOLE, "--env", "CartPole-v1", "--method", "auto", "base"]
    argv += ["--candidates", "equizero:proxy=max_value", "base", "--episodes", "1", "--out", str(tmp_path)]
    assert main([*argv, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["auto"]["choice"] == "base" and res["auto"]["mean_return"] == res["base"]["mean_return"]
    assert json.loads((tmp_path / "auto_choice.json").read_text())["method"] == "base"


def test_train_method_auto_resolves_and_saves_the_choice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = {
        "env": "CartPole-v1",
        "timesteps": 60,
        "method": "auto",
        "method_kwargs": {"candidates": ["equizero:proxy=max_value", "base"], "episodes": 1, "seeds": 1},
        "init_from": CARTPOLE,
        "hyperparams": {"learning_starts": 20, "buffer_size": 500, "train_freq": 4},
        "eval": {"freq": 0, "final_episodes": 1},
        "log": {"equi_freq": 0, "tensorboard": False},
        "out": str(tmp_path / "runs"),
    }
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(p), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "auto picked base" in out
    (run,) = (tmp_path / "runs").iterdir()
    assert json.loads((run / "auto_choice.json").read_text())["method"] == "base"
    assert (run / "auto_choice.md").is_file()
    assert yaml.safe_load((run / "config.yaml").read_text())["method"] == "base"
