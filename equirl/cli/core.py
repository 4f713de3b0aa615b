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
    return _core_demo(console)


def _core_demo(console: Any) -> int:
    from rich.table import Table

    from equirl.demo import core_demo_rows

    console.print(
        "[bold]equirl core demo[/]: a model M is G-equivariant when M(g·x) = g·M(x) for every g in G.\n"
        "Below, random (untrained) networks: the plain one breaks the symmetry, the symmetrizers restore it.\n"
    )
    table = Table(title="max |M(g·x) - g·M(x)| over all g and a batch of random inputs")
    table.add_column("symmetry", no_wrap=True)
    table.add_column("method", no_wrap=True)
    for col in ("equivariance error", "same argmax as plain"):
        table.add_column(col)
    for r in core_demo_rows():
        ok = r["error"] < 1e-5
        table.add_row(r["symmetry"], r["method"], f"[{'green' if ok else 'red'}]{r['error']:.2e}[/]",
                      f"{100 * r['agree']:.0f}%")  # fmt: skip
    console.print(table)
    console.print(
        "equitune averages g⁻¹·M(g·x) over the group; equizero keeps the element with the best proxy "
        "(max Q-value, min entropy); λ-equitune learns the weights. Try: [bold]equirl bench symmetrizers[/]."
    )
    return 0


def _bench_symmetrizers(args: argparse.Namespace, console: Any) -> int:
    from equirl.bench import run_symmetrizer_bench

    return run_symmetrizer_bench(args, console)


def _bench_product(args: argparse.Namespace, console: Any) -> int:
    from equirl.bench_product import product_table, run_product_bench

    with console.status("training the digits CNN and the canonicalizer, then evaluating..."):
        rows = run_product_bench(out_dir=args.out, groups=tuple(args.groups), seed=args.seed)
    console.print(product_table(rows))
    return 0
