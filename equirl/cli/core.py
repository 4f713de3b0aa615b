"""Core subcommands: ``equirl demo`` and ``equirl bench symmetrizers``."""

from __future__ import annotations

import argparse
import importlib.util
from typing import Any


def register(commands: Any, bench: Any) -> None:
    d = commands.add_parser("demo", help="the main job on embedded defaults (no downloads)")
    d.add_argument("--core", action="store_true", help="only the core symmetrizer demonstration")
    d.set_defaults(func=_demo)
    p = bench.add_parser(
        "symmetrizers", help="cost of equirl's symmetrizers vs plain forward and a per-element loop"
    )
    p.add_argument("--json", action="store_true", help="print rows as JSON")
    p.add_argument("--repeats", type=int, default=0, help="interleaved timing rounds (0: 5)")
    p.add_argument("--csv", default=None, help="also save the table as CSV here")
    p.set_defaults(func=_bench_symmetrizers)
    q = bench.add_parser("product", help="product groups and canonicalization vs equitune/equizero (digits)")
    q.add_argument("--out", default=None, help="folder for product_bench.csv")
    q.add_argument("--groups", nargs="+", default=["C4xZ2", "D4xZ2"], help="product groups to run")
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=_bench_product)


def _demo(args: argparse.Namespace, console: Any) -> int:
    if not args.core and importlib.util.find_spec("equirl.rl.demo") is not None:
        from equirl.rl.demo import run_demo

        return int(run_demo(console) or 0)
    from equirl.demo import run_core_demo

    return run_core_demo(console)


def _bench_symmetrizers(args: argparse.Namespace, console: Any) -> int:
    from equirl.bench import core
    from equirl.bench.report import json_rows, write_csv

    # no progress bar under --json: stdout carries only the rows
    rows = core.bench_rows(rounds=args.repeats or 5, console=None if args.json else console)
    if args.csv:
        write_csv(args.csv, rows, core.CSV_COLUMNS)
    if args.json:
        console.print_json(json_rows(rows, core.JSON_COLUMNS))
    else:
        console.print(core.symmetrizer_table(rows))
    return 0


def _bench_product(args: argparse.Namespace, console: Any) -> int:
    from equirl.bench.product import product_table, run_product_bench

    rows = run_product_bench(out_dir=args.out, groups=tuple(args.groups), seed=args.seed, console=console)
    console.print(product_table(rows))
    return 0
