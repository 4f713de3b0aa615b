"""The ``equirl`` command line. It owns the console; the library only logs.

Subcommands come from modules listed in :data:`COMMAND_MODULES`; each defines
``register(commands, bench)`` adding its parsers to the top-level subcommands and to ``equirl bench``.
A handler is ``func(args, console) -> int``. Errors a user can cause (:class:`~equirl.errors.EquirlError`,
missing files, bad flags) are printed as one line, without a traceback, with exit code 2: plain text (no
colour, no wrapping) when stderr is not a terminal. Argument errors are one line too (:class:`Parser`).
OS, zip, pickle, YAML and torch-load errors that escape the library are mapped to one line as a last
resort (:func:`last_resort_message`); the library should raise an ``EquirlError`` where the input enters. Output is never hard-wrapped at 80 columns when stdout is not
a terminal (see :func:`equirl.cli.output.make_console`).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import re
import signal
import sys
import zipfile
from collections.abc import Sequence
from typing import Any, NoReturn

from equirl import __version__
from equirl.cli.args import subcommand_required
from equirl.cli.output import make_console, print_error
from equirl.errors import EquirlError
from equirl.utils.io import UNPICKLING_ERRORS, printable
from equirl.utils.progress import STATUS

#: modules contributing subcommands (a missing optional module is skipped)
COMMAND_MODULES = (
    "equirl.cli.core",
    "equirl.cli.rl",
    "equirl.cli.sweep",
    "equirl.cli.language",
    "equirl.cli.vision",
)


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are ONE line (``error: ...`` and where to find help), exit 2.

    Sub-parsers made with ``add_subparsers().add_parser`` are of this class too."""

    def error(self, message: str) -> NoReturn:
        line = printable(" ".join(message.split()), 500)  # an argument echoed back is the user's text
        self.exit(2, f"error: {line} (see `{self.prog} --help`)\n")


#: torch's messages for unreadable checkpoint files (its weights-only message is 12-16 lines long)
_TORCH_LOAD = re.compile(r"PytorchStreamReader|Weights only load failed|invalid load key|central directory")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _first_line(exc: BaseException) -> str:
    text = _ANSI.sub("", str(exc)).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    unsupported = [ln for ln in lines if "Unsupported global" in ln or "Unsupported operand" in ln]
    return (unsupported or lines or [type(exc).__name__])[0][:300]


#: import names whose distribution is named otherwise (the rest match after ``_`` -> ``-``)
_IMPORT_TO_DIST = {
    "cv2": "opencv-python-headless",
    "PIL": "pillow",
    "sklearn": "scikit-learn",
    "Box2D": "box2d",
}


def missing_extra(module: str) -> str | None:
    """The ``equirl[extra]`` that installs the (top-level) ``module``, read from equirl's own package
    metadata (pyproject's optional dependencies): ``ray`` -> ``dist``."""
    import importlib.metadata as md
    import re as _re

    top = module.split(".")[0]
    want = _IMPORT_TO_DIST.get(top, top).lower().replace("_", "-")
    try:
        reqs = md.requires("equirl") or []
    except md.PackageNotFoundError:
        return None
    for req in reqs:
        name = _re.split(r"[\s\[<>=!;~]", req, maxsplit=1)[0].lower().replace("_", "-")
        extra = _re.search(r"extra\s*==\s*['\"]([\w-]+)['\"]", req)
        if name == want and extra:
            return extra.group(1)
    return None


def last_resort_message(exc: BaseException) -> str | None:
    """One line for an error the library let escape, naming the path where known (``None``: a bug, let
    its traceback show)."""
    if isinstance(exc, ModuleNotFoundError) and exc.name and not exc.name.startswith("equirl"):
        extra = missing_extra(exc.name)
        if extra is not None:
            return (
                f"this needs the optional package {exc.name.split('.')[0]!r}, which is not installed: "
                f"pip install 'equirl[{extra}]'"
            )
        return f"a package equirl needs is not installed: {exc.name} ({_first_line(exc)})"
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        if isinstance(exc, PermissionError):
            return f"permission denied{where} (unreadable or read-only)"
        if isinstance(exc, IsADirectoryError):
            return f"is a directory, not a file{where}"
        if isinstance(exc, NotADirectoryError):
            return f"a folder in this path is a file{where}"
        return f"{exc.strerror or _first_line(exc)}{where}"
    if isinstance(exc, zipfile.BadZipFile):
        return f"corrupt zip file (truncated, or not a zip): {_first_line(exc)}"
    if isinstance(exc, EOFError):
        return f"unexpected end of file (a truncated or corrupt file?): {_first_line(exc)}"
    if isinstance(exc, UnicodeDecodeError):
        return f"a file is not UTF-8 text (a binary file?): {exc.reason} at byte {exc.start}"
    if isinstance(exc, UNPICKLING_ERRORS) or (isinstance(exc, RuntimeError) and _TORCH_LOAD.search(str(exc))):
        return f"cannot load a checkpoint (corrupt, or not a weights-only file): {_first_line(exc)}"
    import yaml

    if isinstance(exc, yaml.YAMLError):
        return f"malformed YAML: {_first_line(exc)}"
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="equirl",
        description="Make pretrained models equivariant: equitune, equizero and λ-equitune for RL, language, vision.",
    )
    parser.add_argument("--version", action="version", version=f"equirl {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    bench_parser = commands.add_parser("bench", help="benchmarks that print tables (and save CSV/plots)")
    bench = bench_parser.add_subparsers(dest="bench", metavar="BENCH")
    bench_parser.set_defaults(func=subcommand_required(bench_parser))
    for name in COMMAND_MODULES:
        if importlib.util.find_spec(name) is None:
            continue
        importlib.import_module(name).register(commands, bench)
    return parser


def _interrupt_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


class _Warnings:
    """Python warnings (gymnasium's, SB3's...) and logged warnings of one command, each printed as one
    plain line (``warning: ...``, ANSI codes stripped). They are held back for the command's first
    :data:`HOLD_S` seconds: a command refused in that time prints only its one error line, and a command
    that runs longer gets them then (or at its end).

    :param err: the stderr console.
    """

    HOLD_S = 10.0

    def __init__(self, err: Any) -> None:
        import threading

        self.err, self.lock = err, threading.Lock()
        self.held: list[str] = []
        self.released = False
        self.timer = threading.Timer(self.HOLD_S, self.release)
        self.timer.daemon = True

    def show(
        self, message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None
    ) -> None:
        self.add(f"{getattr(category, '__name__', 'Warning')}: {message}")

    def add(self, text: str) -> None:
        """Print ``text`` as a warning line now, or hold it (see the class docstring)."""
        with self.lock:
            if self.released:
                print_error(self.err, text, prefix="warning: ")
            else:
                self.held.append(text)

    def release(self) -> None:
        with self.lock:
            self.released = True
            for text in dict.fromkeys(self.held):
                print_error(self.err, text, prefix="warning: ")
            self.held.clear()

    def drop(self) -> None:
        with self.lock:
            self.released = True
            self.held.clear()

    def __enter__(self) -> _Warnings:
        import warnings

        self.old = warnings.showwarning
        warnings.showwarning = self.show
        self.timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        import warnings

        self.timer.cancel()
        warnings.showwarning = self.old


class _LogLines(logging.Handler):
    """Log records of a command as one plain line each: warnings and errors through :class:`_Warnings`
    (``warning: message``), ``-v`` / ``-vv`` records as ``info: logger: message``."""

    def __init__(self, held: _Warnings, err: Any, level: int) -> None:
        super().__init__(min(level, logging.INFO))
        self.held, self.err, self.shown = held, err, level

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a malformed log call: its format string
            text = str(record.msg)
        if record.name == STATUS and record.levelno == logging.INFO:
            # what is happening now, for a person at a terminal (like a progress bar): a plain line; in a
            # pipe or a log file only warnings and the one error line go to stderr
            if self.err.is_terminal:
                print_error(self.err, text, prefix="")
            return
        if record.levelno < self.shown:
            return
        if record.levelno >= logging.WARNING:
            self.held.add(text)
        else:
            print_error(self.err, f"{record.name}: {text}", prefix=f"{record.levelname.lower()}: ")


def main(argv: Sequence[str] | None = None) -> int:
    # a terminated run unwinds like Ctrl-C, so atomic writers remove their partial files
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    console = make_console()
    err = make_console(stderr=True)
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    if not getattr(args, "func", None):
        parser.print_help()
        print_error(err, "give a command (see above), e.g. `equirl demo`")
        return 2
    root = logging.getLogger()
    old_level = root.level
    with _Warnings(err) as held:
        handler = _LogLines(held, err, level)
        root.addHandler(handler)
        root.setLevel(min(level, old_level) if root.handlers[:-1] else level)
        logging.getLogger(STATUS).setLevel(logging.INFO)
        try:
            return _run(args, console, err, held)
        finally:
            root.removeHandler(handler)
            root.setLevel(old_level)


def _run(args: argparse.Namespace, console: Any, err: Any, held: _Warnings) -> int:
    """Run the chosen subcommand: its exit code, errors as one line (see the module docstring)."""
    try:
        code = int(args.func(args, console) or 0)
    except EquirlError as exc:
        held.drop()
        print_error(err, str(exc))
        return 2
    except FileNotFoundError as exc:
        held.drop()
        print_error(err, f"file not found: {exc.filename or exc}")
        return 2
    except Exception as exc:  # last resort: OS, zip, pickle, YAML, torch-load errors
        message = last_resort_message(exc)
        if message is None:
            held.release()
            raise
        held.drop()
        print_error(err, message)
        return 2
    except KeyboardInterrupt as exc:  # RunInterrupted carries the resume command
        held.release()
        print_error(err, str(exc) or "interrupted", prefix="")
        return 130
    held.release()
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
