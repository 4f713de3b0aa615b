"""Run directories named like CleanRL's: ``{env}__{exp}__{seed}__{time}``."""

from __future__ import annotations

import re
import time
from pathlib import Path

__all__ = ["run_name"]


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", s).strip("-") or "x"


def run_name(env: str, exp: str, seed: int, when: float | None = None) -> str:
    """``{env}__{exp}__{seed}__{unix time}`` with path-unsafe characters replaced (``ALE/Pong-v5`` -> ``ALE-Pong-v5``)."""
    return f"{_slug(env)}__{_slug(exp)}__{seed}__{int(when if when is not None else time.time())}"


def unique_run_dir(root: str | Path, name: str) -> Path:
    """``root/name``, suffixed ``-1``, ``-2``... if it exists already."""
    root = Path(root)
    cand, i = root / name, 0
    while cand.exists():
        i += 1
        cand = root / f"{name}-{i}"
    return cand
