"""Argument shapes shared by the subcommands."""

from __future__ import annotations

from typing import Any


def add_config_args(parser: Any, config_help: str = "YAML config") -> None:
    """The ``CONFIG [--set KEY=VALUE ...]`` pair of every config-driven command (``args.config``,
    ``args.overrides``)."""
    parser.add_argument("config", help=config_help)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value (repeatable), e.g. --set train.epochs=2",
    )
