"""Support for the property-based fuzzer (tests/test_fuzz.py): the in-process CLI runner with its
wall-clock deadline, the per-example workspace, file snapshots, crafted payloads and the contract check.

The contract every ``equirl`` entry point keeps, checked by :func:`contract_problems`:

* exit 0 with a valid result, or exit 2 with exactly ONE line on stderr, starting with ``error: ``;
  no traceback (an exception escaping :func:`equirl.cli.main` is one), no ANSI codes; never another exit
  code (130 is for Ctrl-C only; the fuzzer never sends one);
* stderr lines ``warning: ...`` only with exit 0;
* no marker file is ever created (crafted pickles, YAML tags and configs that would run code never run);
* no pre-existing file is changed or removed unless the command was given ``--overwrite`` (files under
  the command's own output folder excepted: a resumed run directory, a sweep's ``report/``), and nothing
  is created outside the working folder (a symlink pointing out of it is not followed for writing).

Each example runs in a fresh folder ``ROOT`` (a :class:`tempfile.TemporaryDirectory`)::

    ROOT/MARKER                   what payloads create (must never exist)
    ROOT/outside/                 files outside the working folder (symlink targets)
    ROOT/d1/d2/cwd/              the working folder (cwd): `../../etc` still lands inside ROOT
    ROOT/d1/d2/cwd/files/        fixture files the generated inputs point at

Set ``FUZZ_COLLECT=/path/file.jsonl`` to record every violation (one JSON object a line) instead of
failing at the first one: how the long profile collects the full list for the maintainers.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import pickle
import re
import shutil
import signal
import tempfile
import time
import traceback
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
AGENT_ZIP = REPO / "agents" / "dqn" / "CartPole-v1" / "CartPole-v1.zip"

#: seconds one example may run (SIGALRM); FUZZ_DEADLINE_S overrides
DEADLINE_S = float(os.environ.get("FUZZ_DEADLINE_S", "30"))
MARKER_NAME = "MARKER"
_ANSI = re.compile(r"\x1b\[")


# --- running the CLI in-process ----------------------------------------------------------------------


class Hang(BaseException):
    """The example ran past its deadline (a BaseException: the CLI's ``except Exception`` must not
    swallow it)."""


@dataclasses.dataclass
class Result:
    argv: list[str]
    code: Any
    out: str
    err: str
    seconds: float
    exc: str | None = None  # a traceback that escaped main (a bug: the user would see it)
    hang: bool = False


def _on_alarm(signum: int, frame: Any) -> None:
    raise Hang("deadline")


@contextlib.contextmanager
def _fd_capture(fd: int) -> Iterator[list[str]]:
    """Capture what is written to file descriptor ``fd`` itself (C code, subprocesses), not only
    ``sys.stdout`` / ``sys.stderr``."""
    box: list[str] = []
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield box
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            box.append(tmp.read().decode("utf-8", "replace"))


def run_cli(argv: Sequence[str], deadline_s: float = DEADLINE_S) -> Result:
    """``equirl.cli.main(argv)`` in this process, as if it were a fresh one: stdout / stderr captured
    (Python level and file-descriptor level), logging unconfigured (main's ``basicConfig`` binds to the
    captured stderr), Python's default warning filters, a SIGALRM deadline."""
    from equirl.cli import main

    argv = list(argv)
    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_term = signal.getsignal(signal.SIGTERM)
    saved_alarm = signal.signal(signal.SIGALRM, _on_alarm)
    code: Any = None
    exc_text = None
    hang = False
    t0 = time.perf_counter()
    root.handlers[:] = []
    try:
        with (
            warnings.catch_warnings(),
            _fd_capture(1) as fd_out,
            _fd_capture(2) as fd_err,
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            warnings.resetwarnings()  # a fresh interpreter's filters (what a user sees)
            warnings.simplefilter("default")
            for cat in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.simplefilter("ignore", cat)
            signal.setitimer(signal.ITIMER_REAL, deadline_s)
            try:
                code = main(argv)
            except SystemExit as exc:
                code = exc.code
            except Hang:
                hang = True
            except KeyboardInterrupt:  # never sent by the fuzzer
                code = "KeyboardInterrupt escaped main"
            except Exception:  # escaped main: the user would see a traceback
                exc_text = traceback.format_exc()
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
    except Hang:  # fired in the narrow window after main returned
        hang = True
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, saved_alarm)
        signal.signal(signal.SIGTERM, saved_term)
        for h in root.handlers:
            if h not in saved_handlers:
                with contextlib.suppress(Exception):
                    h.close()
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    seconds = time.perf_counter() - t0
    return Result(
        argv,
        code,
        out.getvalue() + fd_out[0],
        err.getvalue() + fd_err[0],
        seconds,
        exc_text,
        hang or seconds > deadline_s,
    )


# --- workspace, snapshots ----------------------------------------------------------------------------


@dataclasses.dataclass
class Workspace:
    root: Path
    work: Path
    outside: Path
    files: Path

    @property
    def marker(self) -> Path:
        return self.root / MARKER_NAME


@contextlib.contextmanager
def workspace() -> Iterator[Workspace]:
    """A fresh ROOT (see the module docstring), cwd = ROOT/d1/d2/cwd for the duration."""
    old = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="equirl-fuzz-") as tmp:
        root = Path(tmp).resolve()
        work = root / "d1" / "d2" / "cwd"
        files = work / "files"
        outside = root / "outside"
        files.mkdir(parents=True)
        outside.mkdir()
        (outside / "secret.txt").write_text("outside the working folder\n")
        (outside / "dir").mkdir()
        (outside / "dir" / "keep.txt").write_text("keep\n")
        os.chdir(work)
        try:
            yield Workspace(root, work, outside, files)
        finally:
            os.chdir(old)


def snapshot(root: Path) -> dict[str, tuple[str, str]]:
    """Every entry under ``root`` (links not followed): relative path -> (kind, sha256 / link target)."""
    snap: dict[str, tuple[str, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                snap[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                snap[rel] = ("dir", "")
            elif p.is_file():
                h = hashlib.sha256()
                try:
                    with open(p, "rb") as fh:
                        for block in iter(lambda: fh.read(1 << 20), b""):
                            h.update(block)
                    snap[rel] = ("file", h.hexdigest())
                except OSError as exc:
                    snap[rel] = ("file", f"unreadable {exc}")
            else:
                snap[rel] = ("other", "")
    return snap


def _under(rel: str, prefixes: Sequence[str]) -> bool:
    return any(rel == p or rel.startswith(p.rstrip("/") + "/") for p in prefixes)


def file_problems(
    ws: Workspace,
    before: dict[str, tuple[str, str]],
    after: dict[str, tuple[str, str]],
    argv: Sequence[str],
    code: Any,
    mutable: Sequence[str] = (),
    outputs: Sequence[str] = (),
) -> list[str]:
    """The file half of the contract. ``mutable``: folders (relative to ROOT) the command owns as its
    output (it may change files there, e.g. the run directory it resumes); ``outputs``: paths named on
    the command line (new files may appear under them, wherever they point)."""
    problems = []
    if any(Path(k).name.startswith(MARKER_NAME) for k in after) or ws.marker.exists():
        problems.append("MARKER file created: crafted input ran code")
    overwrite = "--overwrite" in argv
    work = str(ws.work.relative_to(ws.root))
    changed = [k for k, v in before.items() if k in after and after[k] != v and v[0] != "dir"]
    removed = [k for k in before if k not in after]
    if not overwrite:
        bad = [k for k in changed + removed if not _under(k, mutable)]
        if bad:
            problems.append(f"pre-existing files changed/removed without --overwrite: {sorted(bad)[:6]}")
    new = [k for k in after if k not in before]
    escaped = [k for k in new if not _under(k, [work, *outputs])]
    if escaped:
        problems.append(f"files created outside the working folder: {sorted(escaped)[:6]}")
    if code == 2:
        left = [k for k in new if _under(k, [work]) and not _under(k, mutable)]
        if left:
            problems.append(f"refused (exit 2) but left new files behind: {sorted(left)[:6]}")
    return problems


def named_paths(ws: Workspace, tokens: Sequence[str]) -> list[str]:
    """The tokens (and ``key=value`` values) that name a path inside ROOT, resolved, relative to ROOT."""
    out = []
    for tok in tokens:
        for t in {tok, tok.split("=", 1)[-1]}:
            if not t or "\x00" in t or t.startswith("-"):
                continue
            try:
                p = (ws.work / t).resolve()
                out.append(str(p.relative_to(ws.root)))
            except (ValueError, OSError, RuntimeError):
                continue
    return out


# --- the output half of the contract -----------------------------------------------------------------

#: commands whose documented exit status 1 is a result, not an error (docs/rl.md)
EXIT_1_OK = {"check-symmetry": "symmetry not verified", "sweep": "a trial failed"}


def _command(argv: Sequence[str]) -> str:
    return next((a for a in argv if not a.startswith("-")), "")


def output_problems(res: Result, expect_ok: str | None = None) -> list[str]:
    """``expect_ok``: a regex stdout must match on exit 0 (e.g. ``^ok: `` for --dry-run)."""
    if res.hang:
        return [f"HANG: still running after {DEADLINE_S:.0f} s (took {res.seconds:.1f} s)"]
    if res.exc is not None:
        last = [ln for ln in res.exc.strip().splitlines() if ln.strip()][-1]
        return [f"TRACEBACK escaped main: {last[:300]}"]
    problems = []
    code = res.code
    lines = res.err.splitlines()
    if "\x1b" in res.err:
        problems.append("ANSI escape codes on stderr")
    if "\x1b" in res.out:
        problems.append("ANSI escape codes on stdout")
    if "Traceback (most recent call last)" in res.err:
        problems.append("a traceback on stderr")
    if code == 0:
        other = [ln for ln in lines if ln.strip() and not ln.startswith("warning: ")]
        if other:
            problems.append(f"exit 0 with non-warning stderr lines: {other[:3]!r}")
        if expect_ok and not re.search(expect_ok, res.out, re.M):
            problems.append(f"exit 0 without the expected result ({expect_ok!r}) on stdout")
        if "--json" in res.argv and "--help" not in res.argv and "-h" not in res.argv:
            try:
                json.loads(res.out)
            except ValueError:
                problems.append("exit 0 with --json but stdout is not JSON")
    elif code == 2:
        if len(lines) != 1:
            problems.append(f"exit 2 with {len(lines)} stderr lines (want exactly 1)")
        elif not lines[0].startswith("error: "):
            problems.append("exit 2 but the stderr line does not start with 'error: '")
    elif code == 1 and _command(res.argv) in EXIT_1_OK:
        other = [ln for ln in lines if ln.strip() and not ln.startswith("warning: ")]
        if other:
            problems.append(f"exit 1 ({EXIT_1_OK[_command(res.argv)]}) with stderr lines: {other[:3]!r}")
    else:
        problems.append(f"exit code {code!r} (only 0 or 2 allowed)")
    return problems


def check(
    ws: Workspace,
    res: Result,
    before: dict[str, tuple[str, str]],
    *,
    what: str,
    expect_ok: str | None = None,
    mutable: Sequence[str] = (),
    detail: Any = None,
    outputs: Sequence[str] = (),
) -> None:
    """Assert the whole contract for one example (or record it under ``$FUZZ_COLLECT``). ``outputs``:
    command-line tokens; those naming a path inside ROOT may receive new files."""
    stats = os.environ.get("FUZZ_STATS")
    if stats:  # one line per example: what the fuzzer reached (exit codes, first error words)
        with open(stats, "a", encoding="utf-8") as fh:
            first = (res.err.strip().splitlines() or [""])[0][:100]
            fh.write(
                json.dumps(
                    {
                        "test": what,
                        "cmd": res.argv[:2],
                        "exit": repr(res.code),
                        "err": first,
                        "s": round(res.seconds, 2),
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )
    after = snapshot(ws.root)
    named = named_paths(ws, outputs)
    problems = output_problems(res, expect_ok) + file_problems(
        ws, before, after, res.argv, res.code, mutable, named
    )
    if not problems:
        return
    record = {
        "test": what,
        "argv": res.argv,
        "exit": res.code if isinstance(res.code, (int, str, type(None))) else repr(res.code),
        "problems": problems,
        "stderr": res.err[-3000:],
        "stdout": res.out[-500:],
        "traceback": res.exc[-4000:] if res.exc else None,
        "detail": detail,
        "seconds": round(res.seconds, 2),
    }
    collect = os.environ.get("FUZZ_COLLECT")
    if collect:
        with open(collect, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=repr, ensure_ascii=False) + "\n")
        return
    raise AssertionError(
        "contract violated by `equirl "
        + " ".join(res.argv)
        + f"` (exit {res.code!r}, {res.seconds:.1f} s):\n  - "
        + "\n  - ".join(problems)
        + f"\n--- stderr ---\n{res.err[-3000:]}"
        + (f"\n--- traceback ---\n{res.exc[-4000:]}" if res.exc else "")
        + (
            f"\n--- input ---\n{json.dumps(detail, default=repr, ensure_ascii=False)[:3000]}"
            if detail
            else ""
        )
    )


# --- payloads ----------------------------------------------------------------------------------------


class _Payload:
    """Unpickling it runs ``touch MARKER`` (what a crafted checkpoint would do)."""

    def __init__(self, marker: Path) -> None:
        self.cmd = f"touch {marker}"

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (self.cmd,))


class _OpenPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.marker, "w"))


def payload_pickle(marker: Path, protocol: int = 2, kind: str = "system") -> bytes:
    obj = _Payload(marker) if kind == "system" else _OpenPayload(marker)
    return pickle.dumps(obj, protocol=protocol)


def payload_torch(marker: Path) -> bytes:
    """A torch.save file whose unpickling runs the payload."""
    import torch

    buf = io.BytesIO()
    torch.save({"x": _Payload(marker)}, buf)
    return buf.getvalue()


def yaml_payloads(marker: Path) -> list[str]:
    """YAML documents whose unsafe loading runs code."""
    return [
        f"!!python/object/apply:os.system ['touch {marker}']\n",
        f"env: !!python/object/apply:os.system ['touch {marker}']\nalgo: dqn\n",
        f"env: CartPole-v1\nhyperparams: !!python/object/new:os.system ['touch {marker}']\n",
        "env: !!python/name:os.system\n",
        f"env: !!python/object/apply:subprocess.call [['touch', '{marker}']]\n",
        f"? !!python/object/apply:os.system ['touch {marker}']\n: 1\n",
        f"env: !!python/object/apply:builtins.open ['{marker}', 'w']\n",
        "env: !!binary aGVsbG8=\n",
        "env: !!set {a, b}\n",
        "env: !!timestamp 2020-01-01\n",
        "env: !custom tag\n",
        "%YAML 1.1\n%TAG ! tag:yaml.org,2002:python/object/apply:\n---\nenv: !os.system ['touch x']\n",
    ]


def rezip(data: bytes, replace: dict[str, bytes | None], add: dict[str, bytes] | None = None) -> bytes:
    """A zip with members replaced (``None``: removed) and added."""
    src = zipfile.ZipFile(io.BytesIO(data))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if info.filename in replace:
                blob = replace[info.filename]
                if blob is not None:
                    dst.writestr(info.filename, blob)
            else:
                dst.writestr(info, src.read(info.filename))
        for name, blob in (add or {}).items():
            dst.writestr(name, blob)
    return buf.getvalue()


def serialized_payload_data(data_json: bytes, marker: Path, which: int | None) -> bytes:
    """The SB3 ``data`` member with (one / every) ``":serialized:"`` entry replaced by a base64 payload
    pickle."""
    doc = json.loads(data_json)
    b64 = base64.b64encode(payload_pickle(marker, protocol=4)).decode()
    keys = [k for k, v in doc.items() if isinstance(v, dict) and ":serialized:" in v]
    targets = keys if which is None or not keys else [keys[which % len(keys)]]
    for k in targets:
        doc[k][":serialized:"] = b64
    if not keys:
        doc["policy_kwargs"] = {":type:": "<class 'dict'>", ":serialized:": b64}
    return json.dumps(doc).encode()


def deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


def flip_bytes(data: bytes, positions: Sequence[int], xor: int = 0xFF) -> bytes:
    if not data:
        return data
    b = bytearray(data)
    for p in positions:
        b[p % len(b)] ^= xor or 1
    return bytes(b)


# --- JSON-ish mutations ------------------------------------------------------------------------------


def key_paths(d: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path of nested dicts (parents included)."""
    out = []
    if isinstance(d, dict):
        for k, v in d.items():
            out.append((*prefix, k))
            out.extend(key_paths(v, (*prefix, k)))
    return out


def apply_ops(data: dict[str, Any], ops: Sequence[tuple[Any, ...]]) -> dict[str, Any]:
    """Apply ``("set", path, value)``, ``("del", path)``, ``("add", parent, key, value)`` to a deep copy;
    an op whose parent is no longer a mapping is skipped."""
    import copy

    data = copy.deepcopy(data)
    for op in ops:
        kind = op[0]
        if kind == "add":
            path, value = (*op[1], op[2]), op[3]
        elif kind == "set":
            path, value = op[1], op[2]
        else:
            path, value = op[1], None
        node: Any = data
        ok = True
        for k in path[:-1]:
            if not isinstance(node, dict):
                ok = False
                break
            if k not in node or not isinstance(node[k], dict):
                if kind == "del":
                    ok = False
                    break
                node[k] = {} if node.get(k) is None else node[k]
                if not isinstance(node[k], dict):
                    ok = False
                    break
            node = node[k]
        if not ok or not isinstance(node, dict):
            continue
        if kind == "del":
            node.pop(path[-1], None)
        else:
            node[path[-1]] = value
    return data


def finite_or_repr(x: Any) -> Any:
    """JSON-safe rendering for the collected records."""
    if isinstance(x, float) and not math.isfinite(x):
        return repr(x)
    return x


def copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, symlinks=True)
