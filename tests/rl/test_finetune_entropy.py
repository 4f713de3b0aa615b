"""A SAC / TQC agent loaded for finetuning keeps the entropy coefficient it had learned when the config says
``auto`` (as ``SAC.load`` would continue; an agent trained with a fixed coefficient starts from that one),
starts from x with ``auto_<x>``, and keeps a fixed one fixed."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from stable_baselines3 import SAC

import equirl.rl  # noqa: F401  (registers the aliases)
from equirl.registry import BASE, EQUITUNE, LAMBDA
from equirl.rl.build import load_pretrained

ENV = "Pendulum-v1"
LEARNED = 0.0614  # a trained agent's coefficient, far from SB3's start of 1.0


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plain SB3 SAC zip (``MlpPolicy``, as any user's or zoo agent) whose coefficient has been learned."""
    model = SAC("MlpPolicy", ENV, policy_kwargs={"net_arch": [8]}, seed=0, device="cpu")
    with torch.no_grad():
        model.log_ent_coef.fill_(math.log(LEARNED))
    path = tmp_path_factory.mktemp("sac") / "agent.zip"
    model.save(path)
    return path


def _coef(model: SAC) -> float:
    log_coef = getattr(model, "log_ent_coef", None)
    return (log_coef.exp() if log_coef is not None else model.ent_coef_tensor).item()


@pytest.mark.parametrize("method", [BASE, EQUITUNE, LAMBDA])
@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({}, LEARNED),
        ({"ent_coef": "auto"}, LEARNED),
        ({"ent_coef": "auto_0.5"}, 0.5),
        ({"ent_coef": 0.3}, 0.3),
    ],
)
def test_entropy_coefficient_on_finetune(agent: Path, method: str, given: dict, expected: float) -> None:
    model = load_pretrained(agent, ENV, method=method, learning_starts=0, **given)
    assert _coef(model) == pytest.approx(expected, rel=1e-6)
    # still learned: the coefficient's optimizer updates the carried tensor in place
    if getattr(model, "log_ent_coef", None) is not None:
        assert model.ent_coef_optimizer.param_groups[0]["params"][0] is model.log_ent_coef
        before = model.log_ent_coef.item()
        model.learn(64)
        assert model.log_ent_coef.item() != before


def test_an_agent_with_a_fixed_coefficient_starts_auto_from_it(tmp_path: Path) -> None:
    model = SAC("MlpPolicy", ENV, policy_kwargs={"net_arch": [8]}, ent_coef=0.02, seed=0, device="cpu")
    model.save(tmp_path / "fixed.zip")
    tuned = load_pretrained(tmp_path / "fixed.zip", ENV, method=EQUITUNE, learning_starts=0, ent_coef="auto")
    assert _coef(tuned) == pytest.approx(0.02, rel=1e-6)


def test_tqc_keeps_its_learned_coefficient(tmp_path: Path) -> None:
    contrib = pytest.importorskip("sb3_contrib")
    model = contrib.TQC(
        "MlpPolicy", ENV, policy_kwargs={"net_arch": [8], "n_quantiles": 5}, seed=0, device="cpu"
    )
    with torch.no_grad():
        model.log_ent_coef.fill_(math.log(LEARNED))
    model.save(tmp_path / "tqc.zip")
    for method in (BASE, EQUITUNE):
        tuned = load_pretrained(tmp_path / "tqc.zip", ENV, method=method, algo="tqc", learning_starts=0)
        assert type(tuned).__name__ == "TQC" and _coef(tuned) == pytest.approx(LEARNED, rel=1e-6)
