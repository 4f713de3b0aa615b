"""Core subcommands: ``equirl demo`` and ``equirl bench symmetrizers``."""

from __future__ import annotations

import argparse
from typing import Any


def register(commands: Any, bench: Any) -> None:
    p = bench.add_parser("symmetrizers", help="cost of equirl's symmetrizers vs plain forward and a per-element loop")
    p.add_argument("--json", action="store_true", help="print rows as JSON")
    p.add_argument("--repeats", type=int, default=0, help="timing repeats (0: automatic)")
    p.add_argument("--csv", default=None, help="also save the table as CSV here")
    p.set_defaults(func=_bench_symmetrizers)


def _bench_symmetrizers(args: argparse.Namespace, console: Any) -> int:
    from equirl.bench import run_symmetrizer_bench

    return run_symmetrizer_bench(args, console)
