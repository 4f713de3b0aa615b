"""Argument shapes shared by the subcommands."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

from equirl.errors import ConfigError
from equirl.registry import canonical_method

__all__ = [
    "add_config_args",
    "bounded_float",
    "bounded_int",
    "existing_dir",
    "finite_float",
    "int_list",
    "method_arg",
    "nonneg_int",
    "out_dir",
    "out_file",
    "positive_float",
    "positive_int",
]

#: the largest count a flag takes: anything above is a typo (an extra zero, a unit slip)
MAX_COUNT = 1_000_000_000


def bounded_int(lo: int = 0, hi: int = MAX_COUNT) -> Callable[[str], int]:
    """argparse ``type=`` for an integer in ``[lo, hi]`` (one-line error naming the value and the range)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"{text!r} must be >= {lo}")
        if value > hi:
            raise argparse.ArgumentTypeError(f"{text!r} must be <= {hi}")
        return value

    return parse


#: argparse ``type=`` for counts that must be at least one (``--episodes``, ``--jobs``...)
positive_int = bounded_int(1)
#: argparse ``type=`` for counts that may be zero (``--seed``, ``--limit``, ``--repeats``...)
nonneg_int = bounded_int(0)


def bounded_float(
    lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False
) -> Callable[[str], float]:
    """argparse ``type=`` for a finite float within optional bounds (open with ``lo_open``/``hi_open``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} must be a finite number")
        if lo is not None and (value < lo or (lo_open and value == lo)):
            raise argparse.ArgumentTypeError(f"{text!r} must be {'>' if lo_open else '>='} {lo:g}")
        if hi is not None and (value > hi or (hi_open and value == hi)):
            raise argparse.ArgumentTypeError(f"{text!r} must be {'<' if hi_open else '<='} {hi:g}")
        return value

    return parse


#: argparse ``type=`` for any finite float (no NaN / inf)
finite_float = bounded_float()
#: argparse ``type=`` for a finite float > 0 (learning rates)
positive_float = bounded_float(0.0, lo_open=True)


def int_list(lo: int = 0) -> Callable[[str], str]:
    """argparse ``type=`` for a comma list of integers >= ``lo`` (kept as the text, e.g. ``--seeds 0,1,2``)."""

    def parse(text: str) -> str:
        parts = [p.strip() for p in text.split(",") if p.strip()]
        try:
            values = [int(p) for p in parts]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of integers") from None
        if not values or min(values) < lo:
            raise argparse.ArgumentTypeError(f"{text!r} must list integers >= {lo}")
        return text

    return parse


def existing_dir(text: str) -> str:
    """argparse ``type=`` for an input folder that must exist."""
    import os

    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"folder not found: {text}")
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text} is a file, not a folder")
    return text


def _output(kind: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        from equirl.utils.io import check_output_path

        try:
            check_output_path(text, "", kind)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc).strip()) from None
        return text

    return parse


#: argparse ``type=`` for an output folder: refused when it (or a folder above) is a file, or not writable
out_dir = _output("dir")
#: argparse ``type=`` for an output file: refused when it is a folder, under a file, or not writable
out_file = _output("file")


def method_arg(name: str) -> str:
    """argparse ``type=`` for a method: its canonical name (aliases such as ``plain`` or ``λ`` are
    accepted); pair it with ``choices=`` from :func:`equirl.registry.method_names`."""
    try:
        return canonical_method(name)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def algo_arg(name: str) -> str:
    """argparse ``type=`` for an RL algorithm of :data:`equirl.rl.algos.ALGOS` (read when the option is
    given: the table lives in the torch-importing RL package, building the parser imports nothing)."""
    from equirl.errors import EquirlError
    from equirl.rl.algos import get_algo

    try:
        return get_algo(name.strip().lower()).name
    except EquirlError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_config_args(
    parser: Any,
    config_help: str = "YAML config",
    required: bool = True,
    example: str = "train.epochs=2",
) -> None:
    """The ``CONFIG [--set KEY=VALUE ...]`` pair of every config-driven command (``args.config``,
    ``args.overrides``); ``required=False`` makes ``CONFIG`` optional (``None`` when absent); ``example``:
    a ``--set`` of that command's configs, shown in its help."""
    parser.add_argument("config", help=config_help, **({} if required else {"nargs": "?", "default": None}))
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a config value (repeatable), e.g. --set {example}",
    )


def subcommand_required(parser: argparse.ArgumentParser) -> Callable[[Any, Any], int]:
    """The handler of a command group called without its subcommand: its help on stdout, then one
    ``error:`` line (exit 2) naming the subcommands."""

    def handler(args: Any, console: Any) -> int:
        parser.print_help()
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        names = ", ".join(sorted(actions[0].choices)) if actions else ""
        raise ConfigError(f"`{parser.prog}` needs a subcommand{': ' + names if names else ''}")

    return handler
