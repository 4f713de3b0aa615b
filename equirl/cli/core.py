"""Core subcommands: ``equirl demo``, ``equirl bench symmetrizers`` / ``product``, and the handler of
``equirl runs`` (:func:`runs_command`; :func:`register_runs` adds its parser)."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path
from typing import Any

from equirl.cli.args import bounded_int, nonneg_int, out_dir, out_file


def set_torch_threads(n: int) -> None:
    """Run the rest of this command on ``n`` intra-op torch threads (at least one).

    The CLI's one place for torch's thread count: a command that trains or evaluates calls it once,
    before its work (``equirl demo``, ``pretrain``, ``train``, ``eval``, ``symmetrize``, ``language
    pretrain``: one thread; ``vision pretrain`` /
    ``finetune``: the config's ``threads``). The library never changes it; the benchmarks scope
    theirs with :func:`equirl.bench.threads.torch_threads`.
    """
    import torch

    torch.set_num_threads(max(1, n))


def register(commands: Any, bench: Any) -> None:
    d = commands.add_parser("demo", help="the main job on embedded defaults (no downloads)")
    d.add_argument("--core", action="store_true", help="only the core symmetrizer demonstration")
    d.set_defaults(func=_demo)
    p = bench.add_parser(
        "symmetrizers", help="cost of equirl's symmetrizers vs plain forward and a per-element loop"
    )
    p.add_argument("--json", action="store_true", help="print rows as JSON")
    p.add_argument(
        "--repeats",
        type=bounded_int(0, 1000),
        default=0,
        help="interleaved timing rounds (0: 9; a 95 %% interval needs at least 6)",
    )
    p.add_argument(
        "--breakdown",
        action="store_true",
        help="also split each symmetrized forward into the model's calls and the rest (orbit, average)",
    )
    p.add_argument("--csv", default=None, type=out_file, help="also save the table as CSV here")
    p.add_argument("--plot", default=None, type=out_file, help="also draw the ratios as a PNG here")
    p.add_argument("--overwrite", action="store_true", help="replace --csv / --plot when they exist")
    p.set_defaults(func=_bench_symmetrizers)
    q = bench.add_parser("product", help="product groups and canonicalization vs equitune/equizero (digits)")
    q.add_argument("--out", default=None, type=out_dir, help="folder for product_bench.csv")
    q.add_argument("--groups", nargs="+", default=["C4xZ2", "D4xZ2"], help="product groups to run")
    q.add_argument("--seed", type=nonneg_int, default=0)
    q.set_defaults(func=_bench_product)


def _demo(args: argparse.Namespace, console: Any) -> int:
    if not args.core and importlib.util.find_spec("equirl.rl.demo") is not None:
        return _rl_demo(console)
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


def _rl_demo(console: Any) -> int:
    import time

    from rich.table import Table

    from equirl.rl.demo import DEMO_ENV, DEMO_METHODS, run_demo
    from equirl.utils.runs import tensorboard_command

    set_torch_threads(1)
    t0 = time.perf_counter()
    console.print(
        f"[bold]equirl RL demo[/]: the shipped DQN agent on {DEMO_ENV} (mirror symmetry s ↦ -s, actions 0 ↔ 1)"
    )
    with console.status("evaluating the full and the 15 % agents zero-shot under each method..."):
        res = run_demo(progress_bar=False)
    t = Table(title=f"{DEMO_ENV}: mean return ± std over {res.episodes} episodes (λ untrained = equitune)")
    t.add_column("method", no_wrap=True)
    for k in res.zero_shot:
        t.add_column(f"{k} agent, zero-shot", no_wrap=True)
    if res.finetune is not None:
        t.add_column(f"partial + {res.finetune_steps} steps of {res.finetune_method} finetuning")
    for m in DEMO_METHODS:
        row = [m] + [f"{z[m]['mean_return']:.1f} ± {z[m]['std_return']:.1f}" for z in res.zero_shot.values()]
        if res.finetune is not None:
            ft = res.finetune
            row.append(f"{ft.final_mean:.1f} ± {ft.final_std:.1f}" if m == res.finetune_method else "")
        t.add_row(*row)
    console.print(t)
    if res.auto_reason:
        console.print(f"finetuning: {res.auto_reason}", soft_wrap=True)
    for note in res.notes:
        console.print(f"note: {note}", soft_wrap=True)
    if res.finetune is not None:
        console.print(f"run directory: {res.finetune.run_dir}", soft_wrap=True)
        console.print(f"TensorBoard: {tensorboard_command(res.finetune.run_dir / 'tb')}", soft_wrap=True)
    console.print(f"demo took {time.perf_counter() - t0:.0f} s")
    return 0


def _bench_symmetrizers(args: argparse.Namespace, console: Any) -> int:
    from equirl.bench import core
    from equirl.utils.io import refuse_existing
    from equirl.utils.report import json_rows, write_csv

    refuse_existing([Path(p) for p in (args.csv, args.plot) if p], args.overwrite, "output")  # before timing
    # no progress bar under --json: stdout carries only the rows
    rows = core.bench_rows(
        rounds=args.repeats or 9, console=None if args.json else console, breakdown=args.breakdown
    )
    if args.csv:
        write_csv(args.csv, rows, core.CSV_COLUMNS)
    if args.plot:
        core.symmetrizer_plot(rows, args.plot)
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


def register_runs(commands: Any) -> None:
    """Add ``equirl runs [DIR] [--json]`` (handled by :func:`runs_command`) to ``commands``."""
    p = commands.add_parser("runs", help="list run directories: status, steps, best and last return")
    p.add_argument("dir", nargs="?", default="runs", help="folder of run directories (default runs/)")
    p.add_argument("--json", action="store_true", help="print the run.json of each run as a JSON list")
    p.set_defaults(func=runs_command)


def runs_command(args: argparse.Namespace, console: Any) -> int:
    """``equirl runs DIR``: one row per run directory of ``DIR`` (:func:`equirl.rl.lifecycle.list_runs`).

    A ``run.json`` that cannot be read is listed as ``unreadable (reason)``; a field with a bad value
    shows ``?``; every text from the files is printed through :func:`equirl.utils.io.printable` (escape
    sequences escaped) and never as rich markup; the resume hint is made from the run folder's path
    (``equirl train --resume DIR``), never read from the file. A missing ``DIR``, or a file, is a
    one-line error (exit 2) -- except the default ``runs/`` before any run made it, which holds no runs.
    """
    from pathlib import Path

    from rich.markup import escape

    from equirl.cli.output import make_table
    from equirl.rl.lifecycle import list_runs
    from equirl.utils.io import printable

    if args.dir == "runs" and not Path("runs").exists():  # the default, before the first run
        if args.json:
            console.print_json("[]")
        else:
            console.print(
                "no runs yet: `equirl train CONFIG` makes them in runs/", soft_wrap=True, highlight=False
            )
        return 0
    runs = list_runs(args.dir, nested=True)
    if args.json:
        console.print_json(json.dumps(runs, default=str))
        return 0

    def text(v: Any, limit: int = 300) -> str:
        return escape(printable(v, limit))

    def count(v: Any) -> str:
        return "?" if v is None else str(v)

    def ret(e: Any) -> str:
        return f"{e['mean_return']:.1f} @ {e['timestep']}" if isinstance(e, dict) else "-"

    rows = []
    for r in runs:
        name = text(Path(r["run_dir"]).name)
        if r["status"] == "unreadable":
            rows.append((name, text(f"unreadable ({r.get('error')})", 400), "", "", ""))
            continue
        rows.append(
            (
                name,
                text(r["status"]),
                f"{count(r.get('steps_done'))}/{count(r.get('total_timesteps'))}",
                ret(r.get("best")),
                ret(r.get("final") or r.get("last_eval")),
            )
        )
    cols = ("run", "status", "steps", "best return @ step", "last return @ step")
    console.print(make_table(f"runs in {text(args.dir)}", cols, rows))
    bad = [r for r in runs if r.get("invalid")]
    if bad:
        console.print(
            f"{len(bad)} run.json file(s) hold invalid values (shown as ?), e.g. "
            f"{text(Path(bad[0]['run_dir']).name)}: {text(', '.join(bad[0]['invalid']))}",
            soft_wrap=True,
            highlight=False,
        )
    stale = [r for r in runs if r["status"] in ("stale", "interrupted", "failed")]
    if stale:
        console.print(
            f"resume one with: {text(stale[-1]['resume_command'], 1000)}", soft_wrap=True, highlight=False
        )
    return 0
