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
    "printable",
    "read_json",
    "read_text",
    "write_json",
]

#: the largest text file (config, spec, state, JSON) equirl parses
MAX_TEXT_BYTES = 16 * 2**20
#: the deepest nesting a parsed JSON / YAML document may have
MAX_DEPTH = 64


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
    try:
        return _check_output_path(p, what, kind)
    except OSError as exc:  # a name too long for the file system, a loop of links...
        shown = printable(str(p), 80)
        raise ConfigError(f"{what} {shown}: {(exc.strerror or str(exc)).lower()}") from None


def _check_output_path(p: Path, what: str, kind: str) -> Path:
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


def _size_error(p: Path, what: str, limit: int) -> ConfigError:
    return ConfigError(f"{what} {p} is larger than {limit // 2**20} MiB: refused (not a file equirl writes)")


def read_text(path: str | Path, what: str = "file", limit: int = MAX_TEXT_BYTES) -> str:
    """The UTF-8 text of ``path``, with one-line :class:`ConfigError` messages naming ``what`` and the
    path: missing, a directory, unreadable, larger than ``limit`` bytes, or not UTF-8."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{what} {p} is a directory, not a file")
    if not p.is_file():
        raise ConfigError(f"{what} not found: {p}")
    try:
        if p.stat().st_size > limit:
            raise _size_error(p, what, limit)
        with open(p, "rb") as fh:
            raw = fh.read(limit + 1)
    except PermissionError:
        raise ConfigError(f"cannot read {what} {p}: permission denied") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {p}: {exc.strerror or exc}") from None
    if len(raw) > limit:
        raise _size_error(p, what, limit)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {p} is not UTF-8 text (a binary file?)") from None


def parse_json(text: str, what: str = "JSON") -> Any:
    """Parse JSON text (no NaN / Infinity constants, nesting at most :data:`MAX_DEPTH`) with one-line
    :class:`ConfigError` messages."""
    # a cheap bound before parsing: the json module recurses once per nesting level
    if text.count("[") + text.count("{") > MAX_DEPTH and _bracket_depth(text) > MAX_DEPTH:
        raise ConfigError(f"{what} is nested deeper than {MAX_DEPTH} levels: refused")

    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        return json.loads(text, parse_constant=no_constant)
    except (ValueError, RecursionError) as exc:
        raise ConfigError(
            f"corrupt {what} (truncated or not JSON): {str(exc).splitlines()[0][:200]}"
        ) from None


def _bracket_depth(text: str) -> int:
    """The deepest bracket nesting of JSON text, ignoring brackets inside strings."""
    depth = deepest = 0
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def read_json(path: str | Path, what: str = "file") -> Any:
    """A JSON file read through :func:`read_text` and :func:`parse_json`: every failure (missing,
    too large, not UTF-8, truncated, nested too deep) is one :class:`ConfigError` line naming ``what``
    and the path."""
    p = Path(path)
    return parse_json(read_text(p, what), f"{what} {p}")


_CONTROL = {i: f"\\x{i:02x}" for i in [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)] if i != 0x0A}


def printable(value: Any, limit: int = 300) -> str:
    r"""``value`` as text safe for a terminal: control characters (ESC and the like) escaped, one line,
    at most ``limit`` characters -- for anything printed from a file.

    Example::

        >>> printable("ok\x1b[2J")
        'ok\\x1b[2J'
    """
    text = str(value).translate(_CONTROL).replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 1] + "…"


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


def replace_dir(new: str | Path, final: str | Path) -> None:
    """Move the finished folder ``new`` onto ``final`` (an older one the user asked to replace), then
    delete the older one; if the move fails, the older folder is put back."""
    new, final = Path(new), Path(final)
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    os.replace(final, old)
    try:
        os.replace(new, final)
    except OSError:
        os.replace(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)


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


# --- existing artefacts are never clobbered unless the user says so -----------------------------------


def refuse_existing(paths: list[Path] | tuple[Path, ...], overwrite: bool, what: str = "output") -> None:
    """Raise a one-line :class:`ConfigError` when any of ``paths`` exists and ``overwrite`` is false;
    call it before any work starts, so a refused command has done (and lost) nothing.

    :param paths: the files a command would write.
    :param overwrite: the user asked to replace them (``--overwrite``).
    :param what: how the message names them.
    """
    if overwrite:
        return
    found = [p for p in paths if Path(p).exists() or Path(p).is_symlink()]
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise ConfigError(f"{what} {found[0]} already exists{more}: pass --overwrite to replace it")


def remove_file(path: str | Path) -> None:
    """Remove the file (or link) ``path`` if it is there; a folder is never removed."""
    p = Path(path)
    if p.is_symlink() or p.is_file():
        p.unlink()


def remove_dir(path: str | Path) -> None:
    """Remove the folder ``path`` (one equirl made) and the files or links directly in it, if it is
    there; a link is removed, never followed, and a folder that still holds a sub-folder is left."""
    p = Path(path)
    if p.is_symlink() or not p.is_dir():
        remove_file(p)
        return
    for child in p.iterdir():
        remove_file(child)
    with contextlib.suppress(OSError):
        p.rmdir()


# --- paths named inside state files --------------------------------------------------------------------


def contained(root: str | Path, name: str, what: str = "state file") -> Path:
    """``root / name`` when ``name`` is a plain relative path that stays inside ``root`` without
    following a symlink; otherwise a one-line :class:`CheckpointError` (a crafted state file must never
    make equirl read, write or delete outside its folder).

    Example::

        >>> contained("/runs/a/checkpoint", "../../../etc/passwd")
        Traceback (most recent call last):
        ...
        equirl.errors.CheckpointError: state file names '../../../etc/passwd', a path outside /runs/a/checkpoint: refused
    """
    from equirl.errors import CheckpointError

    root = Path(root)
    rel = Path(str(name))
    if not str(name) or rel.is_absolute() or ".." in rel.parts or "\x00" in str(name):
        raise CheckpointError(f"{what} names {printable(repr(str(name)))}, a path outside {root}: refused")
    p = root
    for part in rel.parts:
        p = p / part
        if p.is_symlink():
            raise CheckpointError(f"{what}: {p} is a symbolic link: refused (links are not followed)")
    return p


def check_no_symlinks(root: str | Path, what: str = "run folder") -> None:
    """Raise a one-line :class:`CheckpointError` when ``root`` is, or contains, a symbolic link (equirl
    writes into run folders: a link could send those writes anywhere)."""
    from equirl.errors import CheckpointError

    root = Path(root)
    if root.is_symlink():
        raise CheckpointError(f"{what} {root} is a symbolic link: refused (links are not followed)")
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in [*dirnames, *filenames]:
            p = Path(dirpath) / name
            if p.is_symlink():
                raise CheckpointError(
                    f"{what} {root} holds a symbolic link {p}: refused (links are not followed)"
                )


def check_writable_tree(root: str | Path, what: str = "run folder") -> None:
    """Raise a one-line :class:`ConfigError` when ``root`` or a folder in it cannot be written (checked
    before a resumed run trains, so no step is trained that could not be saved)."""
    root = Path(root)
    for dirpath, _dirnames, _ in os.walk(root, followlinks=False):
        if not os.access(dirpath, os.W_OK | os.X_OK):
            raise ConfigError(f"{what} {root}: {dirpath} is not writable")


# --- files equirl writes for itself and may read back with code in them --------------------------------


#: where the signing key lives (overridden by ``$EQUIRL_SIGNING_KEY``, a file path)
def _key_path() -> Path:
    env = os.environ.get("EQUIRL_SIGNING_KEY")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "equirl" / "signing.key"


def signing_key() -> bytes:
    """This user's secret key for :func:`file_digest`, created (mode 0600) on first use.

    Checkpoint files equirl writes (model zips, replay buffers, RNG / env state) can only be restored by
    unpickling; they are signed with this key when written, and a resume unpickles only files whose
    signature verifies -- so a run folder crafted elsewhere, or edited, never runs code (the way Jupyter
    trusts only notebooks it signed itself).
    """
    from equirl.errors import ConfigError

    p = _key_path()
    try:
        key = _read_or_make_key(p)
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"cannot use the signing key {printable(p, 200)} ({why}): equirl signs the checkpoints it writes "
            "with it; set EQUIRL_SIGNING_KEY to a file path you can write"
        ) from None
    if len(key) < 32:
        raise ConfigError(
            f"the signing key {printable(p, 200)} holds {len(key)} bytes, fewer than 32 (empty or truncated): "
            "remove it and equirl makes a new one (runs signed with the old one then need --trust-checkpoint)"
        )
    return key


def _read_or_make_key(p: Path) -> bytes:
    import secrets

    try:
        return p.read_bytes()
    except FileNotFoundError:
        pass
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".signing.", dir=p.parent)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32))
        with contextlib.suppress(FileExistsError):  # whole or not at all; the first process wins
            os.link(tmp, p)
    finally:
        os.unlink(tmp)
    return p.read_bytes()


def digest_bytes(data: bytes) -> str:
    """The HMAC-SHA256 of ``data`` under :func:`signing_key`, as hex."""
    import hashlib
    import hmac

    return hmac.new(signing_key(), data, hashlib.sha256).hexdigest()


def file_digest(path: str | Path) -> str:
    """The HMAC-SHA256 of a file's bytes under :func:`signing_key`, as hex."""
    import hashlib
    import hmac

    mac = hmac.new(signing_key(), digestmod=hashlib.sha256)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(2**20), b""):
            mac.update(chunk)
    return mac.hexdigest()


def read_signed(path: str | Path, digest: str | None, trust: bool, what: str = "checkpoint file") -> bytes:
    """The bytes of a file equirl wrote for itself, only when ``digest`` (from the state file beside it)
    is its signature under this user's key -- or ``trust`` (``--trust-checkpoint``) says to skip the
    check. Otherwise a one-line :class:`CheckpointError`: the file would be unpickled, and a file this
    installation did not sign may run code.
    """
    import hmac

    from equirl.errors import CheckpointError

    p = Path(path)
    if p.is_symlink():
        raise CheckpointError(f"{what} {p} is a symbolic link: refused (links are not followed)")
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{what} {p} is missing") from None
    if trust:
        return data
    if not isinstance(digest, str) or not hmac.compare_digest(digest_bytes(data), digest):
        why = "is not signed" if not digest else "does not match its signature"
        raise CheckpointError(
            f"{what} {p} {why} (edited, written by an older equirl, or made elsewhere): refused, restoring it "
            "would unpickle it; pass --trust-checkpoint only if you trust this run folder"
        )
    return data


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, as hex (a content fingerprint: not a signature)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(2**20), b""):
            h.update(chunk)
    return h.hexdigest()


def config_fingerprint(text: str) -> str:
    """The SHA-256 of a resolved config's text (``run.json`` keeps it; a resume or a rerun compares)."""
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def trusted_loads(blob: bytes) -> Any:
    """Unpickle bytes that :func:`read_signed` verified (or that the user trusts): the one place equirl
    runs :func:`pickle.loads` unrestricted."""
    import pickle

    return pickle.loads(blob)


def pickle_bytes(obj: Any) -> bytes:
    """``obj`` pickled (with cloudpickle, which also handles the lambdas of env factories)."""
    import cloudpickle

    return bytes(cloudpickle.dumps(obj))


def atomic_copy(src: str | Path, dst: str | Path) -> Path:
    """Copy the file ``src`` onto ``dst`` atomically."""
    return atomic_write(dst, lambda p: shutil.copyfile(src, p))


def atomic_write_stream(path: str | Path, writer: Callable[[Any], Any]) -> Path:
    """:func:`atomic_write` for writers that take an open binary file (``model.save(fh)``)."""

    def write(p: Path) -> None:
        with open(p, "wb") as fh:
            writer(fh)

    return atomic_write(path, write)


# --- pickles from files equirl did not write: an allowlist, and a structure bound ----------------------

#: the most values a pickle from an untrusted file may expand to (shared references counted each time:
#: a tuple of tuples sharing one another is tiny on disk and never finishes hashing)
MAX_PICKLE_NODES = 2_000_000
#: the largest pickle from an untrusted file equirl parses
MAX_PICKLE_BYTES = 256 * 2**20

#: errors an unpickler raises on malformed input (the CLI maps them to one line)
UNPICKLING_ERRORS: tuple[type[BaseException], ...]


def _unpickling_errors() -> tuple[type[BaseException], ...]:
    import pickle

    return (pickle.UnpicklingError,)


UNPICKLING_ERRORS = _unpickling_errors()


class RefusedGlobal(Exception):
    """A pickle referenced a global outside the allowlist (its text: ``module.name``)."""


class RefusedStructure(RefusedGlobal):
    """A pickle broke a structural limit or is malformed (its text says how, as ``a pickle that ...``)."""


def refusal(exc: RefusedGlobal) -> str:
    """What a refused pickle does, for a message: ``uses os.system, which could run code`` or the
    structural reason."""
    if isinstance(exc, RefusedStructure):
        return f"is {exc}"
    return f"is a pickle that uses {exc}, which could run code"


def check_pickle_structure(blob: bytes, limit: int = MAX_PICKLE_NODES, persistent: bool = False) -> None:
    """Refuse a pickle before loading it when it would expand to more than ``limit`` values, uses
    persistent ids or out-of-band buffers, or is not a pickle at all -- by reading its opcodes
    (:func:`pickletools.genops`), never running them.

    Shared references (memo gets) count their full size each time they are used, so a document of
    nested tuples that share one another -- whose hash would never finish -- is refused here.

    :param persistent: allow persistent ids (torch's ``data.pkl`` names its tensor storages so).
    :raises RefusedGlobal: what broke the limit.
    """
    import pickletools

    if len(blob) > MAX_PICKLE_BYTES:
        raise RefusedStructure(f"a pickle larger than {MAX_PICKLE_BYTES // 2**20} MiB")
    mark = object()
    stack: list[Any] = []
    memo: dict[Any, list[int]] = {}

    def pop_mark() -> int:
        total = 0
        while stack:
            item = stack.pop()
            if item is mark:
                return total
            total += item[0]
        raise RefusedStructure("a malformed pickle (no mark)")

    def pop() -> list[int]:
        if not stack or stack[-1] is mark:
            raise RefusedStructure("a malformed pickle (stack underflow)")
        return stack.pop()  # type: ignore[no-any-return]

    def top() -> list[int]:
        if not stack or stack[-1] is mark:
            raise RefusedStructure("a malformed pickle (stack underflow)")
        return stack[-1]  # type: ignore[no-any-return]

    def grow(cell: list[int], n: int) -> None:
        cell[0] += n
        if cell[0] > limit:
            raise RefusedStructure(f"a pickle that expands to more than {limit:,} values")

    try:
        for op, arg, _pos in pickletools.genops(blob):
            name = op.name
            if name in ("PROTO", "FRAME", "STOP"):
                continue
            if name in ("PERSID", "BINPERSID") and persistent:
                if name == "BINPERSID":
                    pop()
                stack.append([1])
                continue
            if name in ("PERSID", "BINPERSID", "NEXT_BUFFER", "READONLY_BUFFER"):
                raise RefusedStructure(f"a pickle with {name} (external objects)")
            if name == "MARK":
                stack.append(mark)
            elif name in ("TUPLE", "LIST", "DICT", "FROZENSET", "OBJ", "INST"):
                cell = [1]
                grow(cell, pop_mark())
                stack.append(cell)
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                cell = [1]
                for _ in range(int(name[-1])):
                    grow(cell, pop()[0])
                stack.append(cell)
            elif name == "APPEND":
                x = pop()
                grow(top(), x[0])
            elif name in ("APPENDS", "SETITEMS", "ADDITEMS"):
                n = pop_mark()
                grow(top(), n)
            elif name == "SETITEM":
                v, k = pop(), pop()
                grow(top(), k[0] + v[0])
            elif name == "BUILD":
                st = pop()
                grow(top(), st[0])
            elif name == "POP":
                stack.pop()
            elif name == "POP_MARK":
                pop_mark()
            elif name == "DUP":
                stack.append(top())
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[arg] = top()
            elif name == "MEMOIZE":
                memo[len(memo)] = top()
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                if arg not in memo:
                    raise RefusedStructure("a malformed pickle (memo)")
                cell = memo[arg]
                grow(cell, 0)
                stack.append([cell[0]])  # a use of a shared value counts its whole size again
            elif name == "STACK_GLOBAL":
                pop(), pop()
                stack.append([1])
            elif name == "REDUCE" or name == "NEWOBJ":
                args = pop()
                pop()
                stack.append([1 + args[0]])
            elif name == "NEWOBJ_EX":
                kw, args = pop(), pop()
                pop()
                stack.append([1 + args[0] + kw[0]])
            else:  # a constant, an empty container, a global, an extension code
                stack.append([1])
    except RefusedStructure:
        raise
    except Exception as exc:  # pickletools' own errors on a malformed stream
        why = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise RefusedStructure(f"a malformed pickle ({why})") from None


def _safe_dtype(*args: Any, **kwargs: Any) -> Any:
    """``numpy.dtype`` for unpickling, refusing object dtypes (an object array's bytes would be read as
    pointers: a crafted one crashes the interpreter)."""
    import numpy as np

    dt = np.dtype(*args, **kwargs)
    if dt.hasobject:
        raise RefusedStructure("a pickle of numpy object arrays")
    return dt


def restricted_loads(blob: bytes, resolve: Callable[[str, str], Any]) -> Any:
    """Unpickle ``blob`` from an untrusted file: :func:`check_pickle_structure` first, then an
    unpickler whose every global goes through ``resolve(module, name)`` (which returns the object or
    raises :class:`RefusedGlobal`); numpy dtypes that hold objects are refused.

    :raises RefusedGlobal: a global outside the allowlist or a structural limit.
    """
    import pickle

    check_pickle_structure(blob)

    class _Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            obj = resolve(module, name)
            if module in ("numpy", "numpy.core.multiarray", "numpy._core.multiarray") and name == "dtype":
                return _safe_dtype
            return obj

    import io as _io

    return _Unpickler(_io.BytesIO(blob)).load()


def find_global(module: str, name: str) -> Any:
    """The object ``module.name`` (for a ``resolve`` function that has allowed it)."""
    import importlib

    return getattr(importlib.import_module(module), name)


# --- torch weights ------------------------------------------------------------------------------------

#: the largest tensor file equirl reads from an untrusted source
MAX_WEIGHTS_BYTES = 4 * 2**30


def _not_a_checkpoint(head: bytes, label: str) -> str | None:
    """Why bytes starting with ``head`` cannot be a torch checkpoint (``None``: they may be one). torch
    writes a zip archive (``PK``), older versions a pickle (``0x80``); anything else -- a text file, an
    empty file -- would otherwise reach the unpickler and be reported as "pickled Python objects"."""
    if head[:2] == b"PK" or head[:1] == b"\x80":
        return None
    if not head:
        return f"corrupt checkpoint {label}: the file is empty (not a torch checkpoint)"
    if _looks_like_text(head):
        return f"{label} is a text file, not a torch checkpoint (not a zip archive; the wrong file?)"
    return f"corrupt checkpoint {label}: not a torch checkpoint (neither a zip archive nor a pickle)"


def torch_load_weights(src: str | Path | bytes, what: str | None = None) -> Any:
    """``torch.load(..., weights_only=True)`` of a file (or bytes) from an untrusted source -- the one
    place equirl reads torch files. Before torch sees it: its size against RAM, its first bytes (a text
    or empty file is named as such), its zip members' declared sizes (zip bombs) and its pickle's
    structure (:func:`check_pickle_structure`). Every failure is one :class:`~equirl.errors.CheckpointError`
    line naming ``what`` (default: the path): a pickled Python object is refused, never run.
    """
    import io as _io
    import pickle
    import zipfile

    import torch

    from equirl.errors import CheckpointError, checkpoint_load_error

    label = what or str(src)
    if isinstance(src, bytes):
        blob = src
    else:
        p = Path(src)
        try:
            size = p.stat().st_size
            ram = total_ram_bytes()
            if size > MAX_WEIGHTS_BYTES or (ram is not None and size > ram // 2):
                raise CheckpointError(f"checkpoint {label} is {size / 2**30:.1f} GiB: too large to load here")
            blob = p.read_bytes()
        except OSError as exc:
            raise checkpoint_load_error(label, exc) from None
    why = _not_a_checkpoint(blob[:4096], label)
    if why is not None:
        raise CheckpointError(why)
    if blob[:2] == b"PK":
        try:
            with zipfile.ZipFile(_io.BytesIO(blob)) as z:
                check_zip_members(z, f"checkpoint {label}")
                for info in z.infolist():
                    if info.filename.endswith("data.pkl"):
                        check_pickle_structure(z.read(info), persistent=True)
        except RefusedGlobal as exc:
            raise CheckpointError(f"checkpoint {label} is refused: it holds {exc}") from None
        except (zipfile.BadZipFile, EOFError, ValueError) as exc:
            raise checkpoint_load_error(label, exc) from None
    try:
        return torch.load(_io.BytesIO(blob), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower() and "weights_only" not in str(exc):
            raise checkpoint_load_error(label, exc) from None  # a corrupt pickle, not a refused one
        raise CheckpointError(
            f"{label} holds pickled Python objects, not only tensors; not loaded (weights only)"
        ) from None
    except Exception as exc:  # torch raises many types for corrupt files
        raise checkpoint_load_error(label, exc) from None


def _looks_like_text(blob: bytes) -> bool:
    head = blob[:4096]
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return b"\x00" not in head


def torch_save_bytes(obj: Any) -> bytes:
    """``obj`` (tensors and plain containers) as the bytes ``torch.save`` writes."""
    import io as _io

    import torch

    buf = _io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


# --- zip archives from untrusted sources --------------------------------------------------------------

#: a member larger than this, compressed more than :data:`MAX_ZIP_RATIO` times, is a zip bomb
ZIP_BOMB_BYTES = 64 * 2**20
MAX_ZIP_RATIO = 100
MAX_ZIP_MEMBERS = 10_000


def check_zip_members(z: Any, what: str = "zip") -> None:
    """Refuse a zip archive whose members would not fit in memory or look like a zip bomb, from the
    sizes its directory declares (nothing is decompressed).

    :raises CheckpointError: in one line.
    """
    from equirl.errors import CheckpointError

    infos = z.infolist()
    if len(infos) > MAX_ZIP_MEMBERS:
        raise CheckpointError(f"{what} has {len(infos)} members: refused (a checkpoint has a few)")
    total = 0
    for info in infos:
        total += info.file_size
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > ZIP_BOMB_BYTES and ratio > MAX_ZIP_RATIO:
            raise CheckpointError(
                f"{what}: member {printable(info.filename, 80)} would expand {ratio:.0f}x to "
                f"{info.file_size / 2**20:.0f} MiB: refused (a zip bomb?)"
            )
    ram = total_ram_bytes()
    if total > MAX_WEIGHTS_BYTES or (ram is not None and total > ram // 2):
        raise CheckpointError(
            f"{what} would expand to {total / 2**30:.1f} GiB, more than this machine can hold: refused"
        )


def total_ram_bytes() -> int | None:
    """The machine's physical memory in bytes (``None`` when it cannot be read)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
