"""The RL sample-efficiency benchmark pairs the plain and equivariant arms seed by seed (the runs
themselves are slow and live in ``equirl bench rl``; here the job function is replaced)."""

from __future__ import annotations

from typing import Any

import pytest

from equirl.bench import rl as bench


def test_efficiency_pairs_arms_per_seed_from_first_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str, int]] = []

    def fake_job(job: Any) -> dict[str, Any]:
        calls.append((job.env, job.method, job.seed))
        steps = 1000 * (job.seed + 1) * (2 if job.method == "base" else 1)
        return {
            "env": job.env,
            "method": job.method,
            "seed": job.seed,
            "steps_to_threshold": steps,
            "reached": True,
        }

    monkeypatch.setattr(bench, "run_efficiency_job", fake_job)
    rows = bench.efficiency(3, 5000, envs=("CartPole-v1",), method="lambda", first_seed=5)
    assert sorted(calls) == sorted(("CartPole-v1", m, s) for s in (5, 6, 7) for m in ("base", "lambda"))
    assert [(r["method"], r["seed"]) for r in rows] == [(m, s) for s in (5, 6, 7) for m in ("base", "lambda")]
    summary = {r["method"]: r for r in bench.efficiency_summary(rows, "lambda")}
    assert summary["base"]["median_steps"] == 2 * 7000
    assert summary["lambda"]["median_steps"] == 7000
    assert summary["lambda"]["ratio_vs_plain"] == pytest.approx(0.5)
