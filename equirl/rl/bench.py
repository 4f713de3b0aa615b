"""``equirl bench rl``: zero-shot returns, sample efficiency and training wall time.

* ``zero-shot`` -- base / equitune / equizero / λ (untrained λ = equitune) on the RL-zoo agents (when
  ``../shared/data`` is present) and on the shipped full and partial agents;
* ``efficiency`` -- env steps for plain vs equivariant (default equitune) DQN to reach a threshold (CartPole 475, Acrobot -80)
  when finetuning the same partial agent, per seed;
* ``walltime`` -- seconds of ``learn`` for plain vs equitune DQN from scratch on CartPole.

Tables are printed, and saved as CSV (plus matplotlib plots) under ``--out``.
"""

from __future__ import annotations

import csv
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["run_rl_bench"]

log = logging.getLogger(__name__)

THRESHOLDS = {"CartPole-v1": 475.0, "Acrobot-v1": -80.0}


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    from equirl.utils.io import atomic_write

    if not rows:
        return

    def w(p: Path) -> None:
        with open(p, "w", newline="", encoding="utf-8") as f:
            wr = csv.DictWriter(f, fieldnames=list(rows[0]))
            wr.writeheader()
            wr.writerows(rows)

    atomic_write(path, w)


def _agents() -> list[tuple[str, str, Path]]:
    from equirl.rl.agents import agent_dir
    from equirl.utils.shared import shared_data_dir

    out: list[tuple[str, str, Path]] = []
    shared = shared_data_dir()
    if shared is not None:
        for env in ("CartPole-v1", "Acrobot-v1"):
            p = shared / "rl-zoo" / "dqn" / f"{env}_1"
            if p.is_dir():
                out.append(("zoo", env, p))
    for env in ("CartPole-v1", "Acrobot-v1", "equirl/GridWorld-v0"):
        d = agent_dir(env)
        slug = env.replace("/", "_")
        for kind, name in (("ours", f"{slug}.zip"), ("ours-partial", f"{slug}_partial.zip")):
            if (d / name).is_file():
                out.append((kind, env, d / name))
    return out


def zero_shot(seeds: int, episodes: int) -> list[dict[str, Any]]:
    from equirl.rl.evaluation import evaluate_methods

    rows = []
    for kind, env, path in _agents():
        res = evaluate_methods(
            path, env, ["base", "equitune", "equizero", "lambda"], episodes=episodes, seeds=seeds
        )
        for m, r in res.items():
            rows.append(
                {
                    "agent": kind,
                    "env": env,
                    "method": m,
                    "mean_return": round(r["mean_return"], 2),
                    "std_return": round(r["std_return"], 2),
                    "episodes": r["episodes"],
                }
            )
    return rows


def efficiency(
    seeds: int, budget: int, envs: tuple[str, ...] = ("CartPole-v1", "Acrobot-v1"), method: str = "equitune"
) -> list[dict[str, Any]]:
    from equirl.rl.agents import agent_path
    from equirl.rl.config import load_rl_config
    from equirl.rl.train import run_training
    from equirl.utils.shared import repo_root

    rows = []
    for env in envs:
        try:
            start = agent_path(env, partial=True)
        except Exception as exc:
            log.warning("skipping %s: %s", env, exc)
            continue
        base_cfg = repo_root() / "configs" / "rl" / f"{env}.yaml"
        for m in ("base", method):
            for seed in range(seeds):
                with tempfile.TemporaryDirectory() as tmp:
                    cfg = load_rl_config(
                        base_cfg,
                        [
                            f"method={m}",
                            f"init_from={start}",
                            f"seed={seed}",
                            f"timesteps={budget}",
                            "partial_fraction=0",
                            f"out={tmp}",
                            f"eval.freq={max(budget // 8, 500)}",
                            "eval.episodes=5",
                            "hyperparams.exploration_initial_eps=0.1",
                            "hyperparams.learning_starts=500",
                            "freeze_backbone=false",
                        ],
                    )
                    res = run_training(cfg, None, progress=False)
                reached = next(
                    (t for t, r in zip(res.timesteps, res.results) if np.mean(r) >= THRESHOLDS[env]), None
                )
                rows.append(
                    {
                        "env": env,
                        "method": m,
                        "seed": seed,
                        "steps_to_threshold": reached if reached is not None else -1,
                        "final_return": round(res.final_mean, 2),
                        "budget": budget,
                        "curve": ";".join(
                            f"{t}:{np.mean(r):.1f}" for t, r in zip(res.timesteps, res.results)
                        ),
                    }
                )
    return rows


def walltime(steps: int) -> list[dict[str, Any]]:
    from equirl.rl.config import load_rl_config
    from equirl.rl.train import build_model
    from equirl.utils.shared import repo_root

    rows: list[dict[str, Any]] = []
    for method in ("base", "equitune", "equizero"):
        cfg = load_rl_config(repo_root() / "configs" / "rl" / "CartPole-v1.yaml", [f"method={method}"])
        model = build_model(cfg)
        t0 = time.perf_counter()
        model.learn(steps)
        rows.append(
            {
                "env": "CartPole-v1",
                "method": method,
                "steps": steps,
                "seconds": round(time.perf_counter() - t0, 2),
            }
        )
    base = float(rows[0]["seconds"])
    for r in rows:
        r["ratio_vs_plain"] = round(float(r["seconds"]) / base, 3)
    return rows


def _plot_zero(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(r["agent"], r["env"]) for r in rows})
    methods = ["base", "equitune", "equizero", "lambda"]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(groups)), 4))
    width = 0.2
    for i, m in enumerate(methods):
        vals = [
            next((r["mean_return"] for r in rows if (r["agent"], r["env"]) == g and r["method"] == m), 0)
            for g in groups
        ]
        errs = [
            next((r["std_return"] for r in rows if (r["agent"], r["env"]) == g and r["method"] == m), 0)
            for g in groups
        ]
        ax.bar(np.arange(len(groups)) + (i - 1.5) * width, vals, width, yerr=errs, label=m)
    ax.set_xticks(np.arange(len(groups)), [f"{a}\n{e}" for a, e in groups], fontsize=7)
    ax.set_ylabel("return")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_eff(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = sorted({r["env"] for r in rows})
    fig, axes = plt.subplots(1, len(envs), figsize=(5 * len(envs), 3.5), squeeze=False)
    for ax, env in zip(axes[0], envs):
        for r in rows:
            if r["env"] != env:
                continue
            pts = [tuple(float(v) for v in p.split(":")) for p in r["curve"].split(";") if p]
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                color="C0" if r["method"] == "base" else "C1",
                alpha=0.7,
                label=r["method"] if r["seed"] == 0 else None,
            )
        ax.axhline(THRESHOLDS[env], ls="--", color="grey")
        ax.set_title(env)
        ax.set_xlabel("env steps")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run_rl_bench(args: Any, console: Any) -> int:
    """The ``equirl bench rl`` handler."""
    import torch
    from rich.table import Table

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def show(title: str, rows: list[dict[str, Any]], skip: tuple[str, ...] = ()) -> None:
        if not rows:
            console.print(f"{title}: nothing to run")
            return
        t = Table(title=title)
        cols = [c for c in rows[0] if c not in skip]
        for c in cols:
            t.add_column(c)
        for r in rows:
            t.add_row(*(str(r[c]) for c in cols))
        console.print(t)

    if "zero-shot" in args.parts:
        rows = zero_shot(args.seeds, args.episodes)
        show("zero-shot returns", rows)
        _write_csv(out / "zero_shot.csv", rows)
        if rows:
            _plot_zero(rows, out / "zero_shot.png")
    if "efficiency" in args.parts:
        rows = efficiency(args.seeds, args.budget, tuple(args.envs), args.method)
        show("sample efficiency (steps to threshold, -1 = not reached)", rows, skip=("curve",))
        _write_csv(out / "efficiency.csv", rows)
        if rows:
            _plot_eff(rows, out / "efficiency.png")
            for env in sorted({r["env"] for r in rows}):
                med: dict[str, float] = {}
                for m in ("base", args.method):
                    s = [
                        r["steps_to_threshold"] if r["steps_to_threshold"] >= 0 else r["budget"] * 2
                        for r in rows
                        if r["env"] == env and r["method"] == m
                    ]
                    med[m] = float(np.median(s)) if s else float("nan")
                console.print(
                    f"{env}: median steps {args.method}/plain = "
                    f"{med[args.method] / max(med['base'], 1):.2f} (unreached counted as 2x budget)"
                )
    if "walltime" in args.parts:
        rows = walltime(args.walltime_steps)
        show("training wall time, CartPole-v1", rows)
        _write_csv(out / "walltime.csv", rows)
    console.print(f"results in {out}/")
    return 0
