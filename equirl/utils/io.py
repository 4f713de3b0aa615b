"""Atomic file writes (nothing already saved is lost when a write fails half-way), output paths
checked before any work starts, and JSON without NaN."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from equirl.errors import ConfigError

__all__ = [
    "atomic_dir",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_output_path",
    "finite_or_none",
    "json_dumps",
    "write_json",
]


def check_output_path(path: str | Path, what: str = "output folder", kind: str = "dir") -> Path:
    """Check, before any work, that ``path`` can be created or written: one-line :class:`ConfigError`
    when it (or a folder above it) is a file, when a file output is a folder, or when the nearest existing
    folder is not writable.

    :param path: the output folder (``kind="dir"``) or file (``kind="file"``).
    :param what: how the message names it (``out``, ``--csv``...).
    :returns: ``path`` as a :class:`~pathlib.Path` (nothing is created).

    Example::

        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "a-file"
        >>> _ = f.write_text("x")
        >>> check_output_path(f / "runs", "out")
        Traceback (most recent call last):
        ...
        equirl.errors.ConfigError: out .../a-file/runs: .../a-file is a file, not a folder
    """
    p = Path(path)
    if p.exists():
        if kind == "dir" and not p.is_dir():
            raise ConfigError(f"{what} {p} is a file, not a folder")
        if kind == "file" and p.is_dir():
            raise ConfigError(f"{what} {p} is a directory, not a file")
    parent = p if kind == "dir" else p.parent
    for up in [parent, *parent.parents]:
        if up.exists() or up.is_symlink():
            if not up.is_dir():
                raise ConfigError(f"{what} {p}: {up} is a file, not a folder")
            if not os.access(up, os.W_OK | os.X_OK):
                raise ConfigError(f"{what} {p}: {up} is not writable")
            break
    if kind == "file" and p.exists() and not os.access(p, os.W_OK):
        raise ConfigError(f"{what} {p} is not writable")
    return p


def finite_or_none(obj: Any) -> Any:
    """``obj`` made JSON data, recursively: NaN / infinite floats (also NumPy scalars) become ``None``,
    other NumPy scalars Python numbers, paths strings, mapping keys strings."""
    if isinstance(obj, Mapping):
        return {str(k): finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and type(obj).__module__ == "numpy" and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, float) or type(obj).__name__.startswith("float"):
        try:
            value = float(obj)
        except (TypeError, ValueError):
            return obj
        return value if math.isfinite(value) else None
    return obj


def json_dumps(obj: Any, **kwargs: Any) -> str:
    """:func:`json.dumps` that never writes ``NaN`` / ``Infinity`` (not JSON): they become ``null``.

    Example::

        >>> json_dumps({"mean": float("nan"), "n": [1.5, float("inf")]})
        '{"mean": null, "n": [1.5, null]}'
    """
    return json.dumps(finite_or_none(obj), allow_nan=False, **kwargs)


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` atomically as indented JSON, NaN / inf as ``null`` (see :func:`json_dumps`)."""
    atomic_write_text(path, json_dumps(data, indent=2) + "\n")


def atomic_write(path: str | Path, writer: Callable[[Path], Any]) -> Path:
    """Call ``writer(tmp_path)`` and move the result onto ``path`` in one rename.

    ``writer`` receives a temporary path in the same folder (so the rename is atomic); if it raises,
    the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        writer(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda p: p.write_bytes(data))


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Build a directory under a temporary name and rename it to ``path`` only on success.

    On an exception the partial directory is removed, so no half-written run directory is left.

    Example::

        >>> import tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> with atomic_dir(root / "run") as d:
        ...     _ = (d / "config.yaml").write_text("a: 1")
        >>> (root / "run" / "config.yaml").exists()
        True
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} already exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
