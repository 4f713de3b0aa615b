"""Helpers shared by several test modules."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class Payload:
    """Unpickling it opens (creates) ``marker``: the stand-in for arbitrary code in a crafted checkpoint.

    :param marker: the file whose existence shows the payload ran.
    """

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.marker, "w"))
