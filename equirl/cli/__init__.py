"""The ``equirl`` command line. It owns the console; the library only logs.

Subcommands come from modules listed in :data:`COMMAND_MODULES`; each defines
``register(commands, bench)`` adding its parsers to the top-level subcommands and to ``equirl bench``.
A handler is ``func(args, console) -> int``. Errors a user can cause (:class:`~equirl.errors.EquirlError`,
missing files) are printed as one line, without a traceback, with exit code 2: plain text (no colour, no
wrapping) when stderr is not a terminal. Output is never hard-wrapped at 80 columns when stdout is not
a terminal (see :func:`equirl.cli.output.make_console`).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import signal
import sys
from collections.abc import Sequence

from equirl import __version__
from equirl.cli.output import make_console, print_error
from equirl.errors import EquirlError

#: modules contributing subcommands (a missing optional module is skipped)
COMMAND_MODULES = ("equirl.cli.core", "equirl.cli.rl", "equirl.cli.language", "equirl.cli.vision")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="equirl",
        description="Make pretrained models equivariant: equitune, equizero and λ-equitune for RL, language, vision.",
    )
    parser.add_argument("--version", action="version", version=f"equirl {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    bench_parser = commands.add_parser("bench", help="benchmarks that print tables (and save CSV/plots)")
    bench = bench_parser.add_subparsers(dest="bench", metavar="BENCH")
    bench_parser.set_defaults(func=lambda args, console: _missing_sub(bench_parser))
    for name in COMMAND_MODULES:
        if importlib.util.find_spec(name) is None:
            continue
        importlib.import_module(name).register(commands, bench)
    return parser


def _missing_sub(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _interrupt_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    # a terminated run unwinds like Ctrl-C, so atomic writers remove their partial files
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    console = make_console()
    err = make_console(stderr=True)
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args, console) or 0)
    except EquirlError as exc:
        print_error(err, str(exc))
        return 2
    except FileNotFoundError as exc:
        print_error(err, f"file not found: {exc.filename or exc}")
        return 2
    except KeyboardInterrupt as exc:  # RunInterrupted carries the resume command
        print_error(err, str(exc) or "interrupted", prefix="")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
