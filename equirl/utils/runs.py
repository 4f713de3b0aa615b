"""Run directories named like CleanRL's: ``{env}__{exp}__{seed}__{time}``; the fields of a ``run.json``
checked before anything shows them."""

from __future__ import annotations

import math
import re
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

__all__ = [
    "RUN_STATUSES",
    "clean_run_info",
    "resume_command",
    "run_name",
    "tensorboard_command",
    "unique_run_dir",
]

#: the statuses equirl writes into ``run.json``
RUN_STATUSES = ("running", "interrupted", "failed", "finished")


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


def _count(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def _text(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _evaluation(v: Any) -> dict[str, Any] | None:
    """An evaluation entry (``best``, ``last_eval``, ``final``) when it has a whole ``timestep`` and a
    finite ``mean_return``, else ``None``."""
    if not isinstance(v, dict):
        return None
    ret, step = v.get("mean_return"), v.get("timestep")
    if isinstance(ret, bool) or not isinstance(ret, (int, float)) or not math.isfinite(ret):
        return None
    if _count(step) is None:
        return None
    return v


#: the fields of ``run.json`` and how each is checked (a value that fails becomes ``None``)
_FIELDS: dict[str, Any] = {
    "steps_done": _count,
    "total_timesteps": _count,
    "seed": _count,
    "pid": lambda v: v if _count(v) and v < 2**31 else None,
    "env": _text,
    "method": _text,
    "command": _text,
    "host": _text,
    "error": _text,
    "started_at": _text,
    "updated_at": _text,
    "ended_at": _text,
    "best": _evaluation,
    "last_eval": _evaluation,
    "final": _evaluation,
}


def clean_run_info(info: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``info`` (a ``run.json``) with every known field checked: a count that is not a whole number >= 0,
    a text that is not text, an evaluation without a finite return becomes ``None``, an unknown status
    ``unknown``; the resume command is not kept (see :func:`resume_command`).

    :returns: the checked fields and the names of those that were invalid.
    """
    out = dict(info)
    bad = []
    for key, check in _FIELDS.items():
        if key in out and out[key] is not None:
            value = check(out[key])
            if value is None:
                bad.append(key)
            out[key] = value
    if out.get("status") not in RUN_STATUSES:
        if "status" in out:
            bad.append("status")
        out["status"] = "unknown"
    out.pop("resume_command", None)
    return out, bad


def resume_command(run_dir: str | Path, command: Any = None) -> str:
    """The command that resumes run directory ``run_dir``, made here from its path (never the text of
    its ``run.json``, which anyone could have edited): ``equirl pretrain --resume DIR`` for a pretraining
    run, else ``equirl train --resume DIR``; the path quoted for a shell where it needs to be."""
    verb = "pretrain" if command == "pretrain" else "train"
    return f"equirl {verb} --resume {shlex.quote(str(run_dir))}"
