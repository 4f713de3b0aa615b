"""The shipped agents in ``agents/`` (zoo-like layout) and exporting a run there.

Layout: ``agents/{algo}/{env}/`` with ``{env}.zip`` (fully trained), ``{env}_partial.zip`` (a
checkpoint after ``partial_fraction`` of the budget), ``config.yaml`` (the resolved run config) and
``eval.json`` (the measured evaluation returns). ``{env}`` replaces ``/`` by ``_``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from equirl.assets import asset_path
from equirl.errors import CheckpointError
from equirl.utils.io import atomic_write, atomic_write_text, json_dumps

__all__ = ["ShippedAgent", "agent_dir", "agent_path", "export_agent", "shipped_agents"]


def _slug(env_id: str) -> str:
    return env_id.replace("/", "_")


class ShippedAgent(NamedTuple):
    """One agent zip of ``agents/``: its algorithm, env id (from ``eval.json``), path and whether it is
    the partial checkpoint."""

    algo: str
    env: str
    path: Path
    partial: bool


def shipped_agents(root: str | Path | None = None) -> list[ShippedAgent]:
    """Every agent under ``root`` (default: the shipped ``agents/``), full then partial, of every
    algorithm; a folder without ``eval.json`` (or without its ``env``) is skipped."""
    base = Path(root) if root is not None else asset_path("agents")
    found: list[ShippedAgent] = []
    for d in sorted(p for p in base.glob("*/*") if (p / "eval.json").is_file()):
        env = json.loads((d / "eval.json").read_text()).get("env")
        if not env:
            continue
        for partial in (False, True):
            z = d / f"{d.name}{'_partial' if partial else ''}.zip"
            if z.is_file():
                found.append(ShippedAgent(d.parent.name, str(env), z, partial))
    return found


def agent_dir(env_id: str, algo: str = "dqn", root: str | Path | None = None) -> Path:
    """``{root}/{algo}/{env}`` (default root: the shipped ``agents/``)."""
    base = Path(root) if root is not None else asset_path("agents")
    return base / algo / _slug(env_id)


def agent_path(env_id: str, algo: str = "dqn", partial: bool = False, root: str | Path | None = None) -> Path:
    """The shipped agent zip for ``env_id`` (raises :class:`CheckpointError` when absent)."""
    base = Path(root) if root is not None else asset_path("agents")
    p = base / algo / _slug(env_id) / f"{_slug(env_id)}{'_partial' if partial else ''}.zip"
    if not p.is_file():
        raise CheckpointError(f"no shipped agent {p} (run `equirl pretrain configs/rl/... --export agents`)")
    return p


def _copier(src: Path) -> Callable[[Path], object]:
    def copy(dst: Path) -> object:
        return shutil.copyfile(src, dst)

    return copy


def export_agent(run_dir: str | Path, root: str | Path) -> Path:
    """Copy a pretraining run into ``{root}/{algo}/{env}/`` (each file written atomically)."""
    import yaml

    run = Path(run_dir)
    cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    env_id, algo = str(cfg["env"]), str(cfg.get("algo", "dqn"))
    dest = Path(root) / algo / _slug(env_id)
    dest.mkdir(parents=True, exist_ok=True)
    for src, name in (
        (run / "model.zip", f"{_slug(env_id)}.zip"),
        (run / "model_partial.zip", f"{_slug(env_id)}_partial.zip"),
    ):
        if src.is_file():
            atomic_write(dest / name, _copier(src))
    atomic_write_text(dest / "config.yaml", (run / "config.yaml").read_text(encoding="utf-8"))
    evals = json.loads((run / "evaluations.json").read_text(encoding="utf-8"))
    final = evals["evaluations"][-1] if evals["evaluations"] else {}
    atomic_write_text(
        dest / "eval.json",
        json_dumps(
            {
                "env": env_id,
                "algo": algo,
                "final": final,
                "train_seconds": evals.get("train_seconds"),
                "source_run": run.name,
            },
            indent=2,
        ),
    )
    return dest
