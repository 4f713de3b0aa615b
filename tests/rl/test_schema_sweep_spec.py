"""Sweep files and env symmetry specs go through the schema layer (equirl.config.from_dict): wrong types,
values out of range and unknown keys are one-line errors naming the dotted key; every shipped file passes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from equirl.config import from_dict, load_yaml
from equirl.errors import ConfigError, SymmetryError
from equirl.rl.spec import EXACT_ATOL, SpecFile, parse_spec
from equirl.rl.sweep import Score, SweepFile, check_scores, load_sweep

ROOT = Path(__file__).resolve().parents[2]
SWEEPS = sorted((ROOT / "configs" / "sweeps").glob("*.yaml"))
SPECS = sorted((ROOT / "envs").glob("*.yaml")) + sorted((ROOT / "envs" / "variants").glob("*.yaml"))

SWEEP = {
    "config": "dqn-CartPole-v1",
    "timesteps": 400,
    "grid": {"method": ["base", "equitune"], "seed": [0, 1]},
}
SPEC: dict[str, Any] = {
    "env": "CartPole-v1",
    "group": "flip",
    "observation": {
        "type": "signed_permutation",
        "generators": [{"src": [0, 1, 2, 3], "signs": [-1, -1, -1, -1]}],
    },
    "actions": {"n": 2, "generators": [{"swap": [[0, 1]]}]},
    "verify": {
        "method": "state",
        "attribute": "state",
        "generators": [{"src": [0, 1, 2, 3], "signs": [-1] * 4}],
    },
}


def _patched(base: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """``base`` (deep-copied through YAML) with the dotted ``key`` set to ``value``."""
    data = yaml.safe_load(yaml.safe_dump(base))
    node = data
    *parents, last = key.split(".")
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return data


# --- every shipped file passes --------------------------------------------------------------------------


def test_there_are_shipped_files() -> None:
    assert len(SWEEPS) >= 5 and len(SPECS) >= 10


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_every_shipped_sweep_file_passes_the_schema(path: Path) -> None:
    sweep = from_dict(SweepFile, load_yaml(path))
    assert sweep.grid and all(isinstance(v, list) and v for v in sweep.grid.values())
    spec = load_sweep(path)
    assert spec.grid == sweep.grid and spec.baseline == sweep.baseline


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_every_shipped_spec_passes_the_schema(path: Path) -> None:
    data = load_yaml(path)
    spec = from_dict(SpecFile, data)
    assert spec.env == data["env"] and spec.verify.atol >= EXACT_ATOL
    sym = parse_spec(data, source=str(path))
    assert sym.env_id == data["env"] and parse_spec(sym.to_dict()).obs_generators == sym.obs_generators


# --- sweep files ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "pattern"),
    [
        # wrong types
        ("timesteps", "many", r"timesteps: expected an integer, got 'many'"),
        ("timesteps", True, r"timesteps: expected an integer, got True"),
        ("grid", [1, 2], r"grid: expected a mapping"),
        ("baseline", 3, r"baseline: expected a string, got 3"),
        ("eval", "often", r"eval: expected a mapping, got 'often'"),
        ("config", [{"config": "dqn-CartPole-v1", "set": [1]}], r"config\[0\]\.set: expected a mapping"),
        ("config", [{"config": "dqn-CartPole-v1", "label": 7}], r"config\[0\]\.label: expected a string"),
        (
            "scores",
            {"CartPole-v1": {"min": 0, "max": 1, "threshold": True}},
            r"scores\.CartPole-v1\.threshold",
        ),
        # out of range
        ("timesteps", 0, r"timesteps = 0: must lie in \[1, 1000000000\]"),
        ("timesteps", 10**12, r"timesteps = 1000000000000: must lie in \[1, 1000000000\]"),
        (
            "config",
            [{"config": "dqn-CartPole-v1", "timesteps": -5}],
            r"config\[0\]\.timesteps = -5: must lie in",
        ),
        ("scores", {"CartPole-v1": {"min": 1, "max": 1, "threshold": 1}}, r"scores\.CartPole-v1\.min = 1\.0"),
        ("grid", {"seed": {"range": [0, 10**6]}}, r"grid\.seed: range .* gives 1,000,000 values"),
        # unknown keys
        ("budget", 5, r"unknown key budget; allowed: baseline, config, eval, grid, scores, set, timesteps"),
        (
            "config",
            [{"config": "dqn-CartPole-v1", "seeds": 3}],
            r"unknown key config\[0\]\.seeds; allowed in config\[0\]",
        ),
        (
            "scores",
            {"CartPole-v1": {"min": 0, "max": 1, "threshold": 1, "x": 0}},
            r"unknown key scores\.CartPole",
        ),
        # rules
        ("baseline", "nosuch", r"baseline: unknown method 'nosuch'"),
        ("config", [], r"config = \[\]: must list at least one base config"),
    ],
)
def test_the_sweep_schema_refuses_with_one_line(tmp_path: Path, key: str, value: Any, pattern: str) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(_patched(SWEEP, key, value)))
    with pytest.raises(ConfigError, match=pattern) as exc:
        load_sweep(path)
    assert "\n" not in str(exc.value) and str(exc.value).startswith(f"{path}: ")


def test_the_sweep_schema_resolves_the_file() -> None:
    data = {
        **SWEEP,
        "config": ["dqn-CartPole-v1", {"config": "dqn-Acrobot-v1", "timesteps": 300.0, "eval": None}],
        "grid": {"method": ["plain", "λ"], "seed": {"range": [3, 9, 2]}},
        "baseline": "none",
        "scores": {"CartPole-v1": {"min": 0, "max": 500, "threshold": "475"}},
        "set": None,
    }
    sweep = from_dict(SweepFile, data)
    assert [(b.config, b.timesteps, b.eval) for b in sweep.config] == [
        ("dqn-CartPole-v1", None, {}),
        ("dqn-Acrobot-v1", 300, {}),
    ]
    assert sweep.grid == {"method": ["base", "lambda"], "seed": [3, 5, 7]} and sweep.baseline == "base"
    assert sweep.scores == {"CartPole-v1": {"min": 0.0, "max": 500.0, "threshold": 475.0}}


def test_check_scores_is_the_score_schema() -> None:
    assert check_scores({"X-v0": {"min": -1, "max": 1, "threshold": 0}}, "w") == {
        "X-v0": {"min": -1.0, "max": 1.0, "threshold": 0.0}
    }
    assert check_scores(None, "w") == {}
    for scores, pattern in (
        (
            {"X-v0": {"min": 0, "max": float("inf"), "threshold": 0}},
            r"^w: scores\.X-v0\.max = inf: must be a finite",
        ),
        ({"X-v0": {"min": "low", "max": 1, "threshold": 0}}, r"^w: scores\.X-v0\.min: expected a number"),
        ({"X-v0": [0, 1, 0]}, r"^w: scores\.X-v0: expected a section"),
        ([1], r"^w: scores: expected a mapping"),
    ):
        with pytest.raises(ConfigError, match=pattern) as exc:
            check_scores(scores, "w")
        assert "\n" not in str(exc.value)
    assert from_dict(Score, {"min": 0, "max": 1, "threshold": 2}).threshold == 2.0  # no bound on threshold


# --- env symmetry specs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "pattern"),
    [
        # wrong types
        ("env", 5, r"env: expected a string, got 5"),
        ("verify.atol", "loose", r"verify\.atol: expected a number, got 'loose'"),
        ("actions.n", 2.5, r"actions\.n: expected an integer, got 2\.5"),
        ("actions.generators", {"swap": [[0, 1]]}, r"actions\.generators: expected a list"),
        ("observation.generators.0", [0, 1], r"observation\.generators\[0\]: expected a section"),
        (
            "observation.generators.0.src",
            [0, 1, "2", 3],
            r"observation\.generators\[0\]\.src\[2\]: expected an integer",
        ),
        ("verify.generators.0.signs", "minus", r"verify\.generators\[0\]\.signs: expected a list"),
        ("actions.generators.0.swap", [[0, 1, 1]], r"actions\.generators\[0\]\.swap\[0\]: expected 2 values"),
        # out of range / not an allowed value
        ("verify.atol", 0, r"verify\.atol = 0\.0: must be > 0"),
        ("verify.atol", float("inf"), r"verify\.atol = inf: must be a finite number"),
        ("actions.n", 0, r"actions\.n = 0: must be >= 1"),
        (
            "verify.method",
            "exact",
            r"verify\.method = 'exact': must be one of state, obs, mujoco, minatar, statistical-frames, none",
        ),
        (
            "observation.type",
            "fourier",
            r"observation\.type = 'fourier': must be one of signed_permutation, image",
        ),
        (
            "observation.generators.0.signs",
            [1, 0, 1, 1],
            r"observation\.generators\[0\]\.signs = \[1, 0, 1, 1\]",
        ),
        ("verify.generators.0.src", [0, 1, 2, 2], r"verify\.generators\[0\]\.src = .*not a bijection"),
        # unknown keys
        (
            "colour",
            "red",
            r"unknown key colour; allowed: actions, description, env, group, notes, observation",
        ),
        (
            "observation.flip",
            True,
            r"unknown key observation\.flip; allowed in observation: generators, layout",
        ),
        ("verify.tolerance", 1, r"unknown key verify\.tolerance; allowed in verify: atol, attribute"),
        ("observation.generators.0.sign", [1], r"unknown key observation\.generators\[0\]\.sign; allowed in"),
        ("actions.generators.0.rotate", 1, r"unknown key actions\.generators\[0\]\.rotate"),
        # rules after the types
        (
            "observation.generators.0",
            {"signs": [1]},
            r"missing required key: observation\.generators\[0\]\.src",
        ),
        ("verify.atol", 0.1, r"verify\.atol = 0\.1: above 1e-5 .*give verify\.reason"),
        ("verify.attribute", "_state", r"verify\.attribute = '_state': must name a public attribute"),
        (
            "actions.generators.0",
            {"perm": [1, 0, 2]},
            r"actions\.generators\[0\]: action permutation \[1, 0, 2\] has 3 entries but actions\.n is 2",
        ),
    ],
)
def test_the_spec_schema_refuses_with_one_line(key: str, value: Any, pattern: str) -> None:
    data = _patched(SPEC, key, value)
    with pytest.raises(SymmetryError, match=pattern) as exc:
        parse_spec(data, source="mine.yaml")
    assert "\n" not in str(exc.value) and str(exc.value).startswith("symmetry spec ")
    assert "(mine.yaml)" in str(exc.value) or str(exc.value).startswith("symmetry spec mine.yaml: ")


def test_a_spec_file_on_disk_names_its_path(tmp_path: Path) -> None:
    from equirl.rl.spec import load_spec

    p = tmp_path / "cp.yaml"
    p.write_text(yaml.safe_dump(_patched(SPEC, "verify.atol", -1)))
    with pytest.raises(
        SymmetryError, match=rf"^symmetry spec CartPole-v1 \({p}\): verify\.atol = -1\.0: must be > 0$"
    ):
        load_spec(p)
