"""Argument shapes shared by the subcommands."""

from __future__ import annotations

import argparse
from typing import Any

from equirl.errors import ConfigError
from equirl.registry import canonical_method


def method_arg(name: str) -> str:
    """argparse ``type=`` for a method: its canonical name (aliases such as ``plain`` or ``λ`` are
    accepted); pair it with ``choices=`` from :func:`equirl.registry.method_names`."""
    try:
        return canonical_method(name)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_config_args(parser: Any, config_help: str = "YAML config", required: bool = True) -> None:
    """The ``CONFIG [--set KEY=VALUE ...]`` pair of every config-driven command (``args.config``,
    ``args.overrides``); ``required=False`` makes ``CONFIG`` optional (``None`` when absent)."""
    parser.add_argument("config", help=config_help, **({} if required else {"nargs": "?", "default": None}))
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value (repeatable), e.g. --set train.epochs=2",
    )
