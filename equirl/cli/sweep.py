"""``equirl sweep SWEEP.yaml`` (a grid of runs on Ray Tune) and ``equirl sweep report DIR``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from equirl.cli.args import bounded_int, out_dir
from equirl.errors import ConfigError

EPILOG = """\
a sweep file names a base config, a grid (env x method x seed x any dotted config key), a budget and an
evaluation schedule: see configs/sweeps/smoke.yaml and docs/rl.md ("Sweeps"). Every trial is an ordinary
run directory in --out; `equirl sweep` again into the same --out skips finished trials and resumes the
interrupted ones; a trial whose settings changed (budget, hyperparameters...) runs anew beside its old
run directory, which is kept and left out of the report (sweep.json keeps the earlier settings under
`history`). `equirl sweep report DIR` (also run at the end of every sweep) writes DIR/report/.

local (default): a Ray instance on this machine, one trial per CPU:
  equirl sweep configs/sweeps/smoke.yaml --out runs/smoke --cpus 4

cluster: start Ray on every machine (equirl installed, --out on a filesystem they all share), then:
  ray start --head --port=6379                  # on the head machine
  ray start --address=HEAD_IP:6379              # on every other machine
  equirl sweep SWEEP.yaml --out /shared/sweep --address auto   # on the head (or set RAY_ADDRESS)
(Ray's token authentication: every machine needs the head's ~/.ray/auth_token; --address connects with
RAY_AUTH_MODE=token unless you set it)
"""


def register(commands: Any, bench: Any) -> None:
    p = commands.add_parser(
        "sweep",
        help="run a grid of trainings (env x method x seed x hyperparameters) on Ray Tune; `sweep report DIR`",
        description="Run a sweep file's grid of trainings on Ray Tune, or (`equirl sweep report DIR`) "
        "report on a sweep folder: IQM / mean with bootstrap CIs, AUC, steps to threshold, plots.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("sweep", metavar="SWEEP.yaml|report", help="a sweep file, or `report`")
    p.add_argument("dir", nargs="?", default=None, help="with `report`: the sweep folder")
    p.add_argument(
        "--out",
        type=out_dir,
        default=None,
        help="sweep folder (default runs/sweep-{file stem}); with `report`: the report's folder (default DIR/report)",
    )
    p.add_argument(
        "--cpus",
        type=bounded_int(1, 4096),
        default=None,
        help="CPUs of the local Ray instance = trials at once (default: all cores)",
    )
    p.add_argument(
        "--address",
        default=None,
        help="a running Ray cluster, HOST:PORT or `auto` (default $RAY_ADDRESS, else a new local Ray);"
        " one that does not answer within 20 s is an error",
    )
    p.add_argument(
        "--executor",
        choices=("ray", "serial"),
        default="ray",
        help="`serial`: the trials one after another in this process, without Ray",
    )
    p.add_argument("--no-report", action="store_true", help="do not report at the end of the sweep")
    p.add_argument("--baseline", default=None, help="method to compare against (default: the sweep's)")
    p.add_argument(
        "--reps", type=bounded_int(100, 1_000_000), default=2000, help="bootstrap replicates (default 2000)"
    )
    p.add_argument("--no-plots", action="store_true", help="no PNG plots")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(func=_sweep)


def _print_report(root: str, args: argparse.Namespace, console: Any, out: str | None = None) -> None:
    from rich.markup import escape

    from equirl.rl.sweep_report import sweep_report
    from equirl.utils.io import printable

    rep = sweep_report(root, baseline=args.baseline, reps=args.reps, plots=not args.no_plots, out=out)
    out = out or str(Path(root) / "report")
    if args.json:
        console.print_json(json.dumps({"groups": rep.groups, "aggregate": rep.aggregate}, default=str))
        return
    for t in rep.tables():
        console.print(t)
    left_out = [p for p in rep.problems if p["status"] in ("outdated", "not in the sweep")]
    for p in rep.problems:
        if p in left_out:
            continue
        what = {"unreadable": "unreadable", "missing": "missing", "duplicate seed": "left out"}.get(
            p["status"], "not finished"
        )
        console.print(
            f"[yellow]{what}[/]: {escape(printable(p['run_dir']))} ({escape(printable(p['status']))}) "
            f"{escape(printable(p['error'], 400))}",
            markup=True,
            highlight=False,
            soft_wrap=True,
        )
    if left_out:
        console.print(
            f"{len(left_out)} run directories left out: run with other settings than the sweep's current "
            f"ones, or of no trial of it (listed in {escape(str(Path(out) / 'problems.csv'))})",
            highlight=False,
            soft_wrap=True,
        )
    console.print(f"report written to {escape(out)}", highlight=False)


def _sweep(args: argparse.Namespace, console: Any) -> int:
    if args.sweep == "report":
        if not args.dir:
            raise ConfigError("equirl sweep report: give the sweep folder (equirl sweep report DIR)")
        _print_report(args.dir, args, console, out=args.out)  # --out: the report's folder here
        return 0
    if args.dir:
        raise ConfigError(f"unexpected argument {args.dir!r} (the sweep folder is --out)")
    from rich.markup import escape

    from equirl.rl.sweep import load_sweep, run_sweep
    from equirl.utils.io import printable

    spec = load_sweep(args.sweep)
    out = args.out or f"runs/sweep-{Path(args.sweep).stem}"
    try:
        res = run_sweep(spec, out, executor=args.executor, cpus=args.cpus, address=args.address)
    except KeyboardInterrupt:  # a trial's own resume hint would continue that trial only
        import shlex

        from equirl.errors import RunInterrupted

        again = f"equirl sweep {shlex.quote(str(args.sweep))} --out {shlex.quote(str(out))}"
        raise RunInterrupted(
            f"sweep interrupted (the running trials checkpointed); continue it with: {again} "
            "(finished trials are skipped, interrupted ones resumed)"
        ) from None
    if not args.json:
        from equirl.cli.output import make_table

        rows = [
            [
                o.name,
                o.action,
                o.status,
                "" if o.final_mean is None else f"{o.final_mean:.1f}",
                escape(printable(o.error or "", 400)),
            ]
            for o in res.outcomes
        ]
        console.print(
            make_table(
                f"sweep {escape(str(args.sweep))} -> {escape(str(res.out))}",
                ["trial", "action", "status", "final", "error"],
                rows,
            )
        )
        counts = ", ".join(f"{res.count(a)} {a}" for a in ("ran", "resumed", "skipped", "failed"))
        console.print(f"{len(res.outcomes)} trials ({counts}) in {res.seconds:.1f} s ({res.executor})")
        if res.changed:
            console.print(
                f"{len(res.changed)} trials had run before with other settings (e.g. {res.changed[0]}): "
                "they ran anew, into new run directories; the old ones are kept, out of the report "
                "(sweep.json keeps the earlier settings under `history`)",
                highlight=False,
                soft_wrap=True,
            )
    if not args.no_report and any(o.status == "finished" for o in res.outcomes):
        _print_report(str(res.out), args, console)
    return 1 if res.count("failed") else 0
