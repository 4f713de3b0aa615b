"""Run directories named like CleanRL's: ``{env}__{exp}__{seed}__{time}``."""

from __future__ import annotations

import re
import shutil
import sys
import time
from pathlib import Path

__all__ = ["run_name", "tensorboard_command", "unique_run_dir"]


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


def tensorboard_command(logdir: str | Path) -> str:
    """A ``tensorboard --logdir`` command line that runs as printed: the bare name when it is on ``PATH``
    and belongs to this Python's environment, else the script's full path beside this interpreter."""
    script = Path(sys.executable).parent / "tensorboard"
    on_path = shutil.which("tensorboard")
    if on_path is not None and (not script.exists() or Path(on_path).resolve() == script.resolve()):
        exe = "tensorboard"
    elif script.exists():
        exe = str(script)
    else:
        return f"pip install tensorboard, then: tensorboard --logdir {logdir}"
    return f"{exe} --logdir {logdir}"
