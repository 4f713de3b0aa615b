"""Locating the optional shared data folder (``$EQUIRL_SHARED_DATA``, else ``shared/data`` beside the
source checkout or the current folder). It is a developer's and CI's fixture, never a user's need."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["shared_data_dir"]


def shared_data_dir() -> Path | None:
    """The shared data folder if present: ``$EQUIRL_SHARED_DATA``, else ``../shared/data`` next to the
    source checkout or the current working folder; ``None`` when absent."""
    env = os.environ.get("EQUIRL_SHARED_DATA")
    cands = [Path(env)] if env else []
    checkout = Path(__file__).resolve().parents[2]
    cands += [checkout.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    for c in cands:
        if c.is_dir():
            return c
    return None
