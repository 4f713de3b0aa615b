"""``equirl bench symmetrizers``: the cost of symmetrizing, measured side by side.

For each model, group and batch size it times, in interleaved rounds on one thread:

* ``base`` -- one forward of the model (the un-symmetrized baseline);
* ``equirl`` -- :class:`~equirl.symmetrizers.EquiTune` as it runs by default, paired with ``base`` in each
  round, so that a slow spell of a shared machine hits both sides of a ratio alike: for the CNN on
  batches of 16 and more the group is folded into the kernels (:mod:`equirl.symmetrizers.fold`), otherwise
  the stacked orbit goes through the model in one batched call per chunk;
* ``orbit`` -- where ``equirl`` folds, the same symmetrizer with ``fold=False`` (the stacked orbit), in the
  same rounds with a ``base`` forward of its own: the fold's gain, side by side;
* ``loop``  -- the per-element reference (``|G|`` forwards of batch ``B`` plus transforms), in rounds of
  its own after those, each paired with a ``base`` forward of its own (the loop's full-size calls, run
  between a base forward and its symmetrized pair, made a batch-256 NatureCNN base forward fault its
  pages in again and read 30 % slow);
* with ``--breakdown``, as many rounds again that time the model's calls inside a stacked-orbit forward
  (forward hooks), to split its cost into the calls and the rest (the orbit, the average, the chunk loop).

It reports median times and the median over rounds of each round's ratio to its ``base``, with a
distribution-free 95 % interval of ``equirl``'s (:func:`equirl.utils.stats.median_ci`, from 6 rounds
on): the cost goal reads ``ok`` when the whole interval is within it, ``over`` when all of it is above,
and ``≈`` (within the noise) otherwise. The models: an MLP 4-256-256-2 (CartPole-sized Q-network) and a
NatureCNN-sized network on 4×84×84 frames (Atari Q-network).

On one torch thread the clock is the thread's CPU time (``clock="cpu"``): the work done, not the time
another process held the core. Before timing, one large block is allocated and freed, which raises
glibc's ``mmap`` threshold to what a long-running process reaches after its first big batch: otherwise
the first cells fault in and zero fresh pages for every multi-megabyte temporary, of the plain model
as much as of the symmetrizer, and the ratios would depend on the order of the cells.

:func:`bench_rows` measures (on one torch thread by default, restored afterwards);
:func:`symmetrizer_table` shows the rows, :func:`symmetrizer_plot` draws them; the CLI prints them, as
a table or as JSON.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from equirl.actions import GroupAction, image_action, permutation_action, signed_permutation_action
from equirl.bench.threads import torch_threads
from equirl.groups import cyclic, dihedral, flip
from equirl.registry import BASE
from equirl.symmetrizers import EquiTune
from equirl.utils.report import BenchTable, Column, Step, progress
from equirl.utils.stats import median_ci

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from rich.console import Console

__all__ = ["CSV_COLUMNS", "JSON_COLUMNS", "bench_rows", "symmetrizer_plot", "symmetrizer_table"]

#: the keys of a row in ``--json`` output (``*_x``: median over rounds of the ratio to ``base``;
#: ``equirl_x_lo`` / ``equirl_x_hi``: its 95 % interval, ``None`` with fewer than 6 rounds; ``calls_x`` /
#: ``outside_x``: with ``breakdown``, the part of a symmetrized forward spent inside the model's calls and
#: the rest -- the orbit, the average, the chunk loop -- over the base forward timed in those rounds,
#: ``split_base_ms`` (that base forward's median), else ``None``; ``orbit_ms`` / ``orbit_x``: where
#: ``equirl`` folds the group into the kernels, the stacked-orbit path, else ``None``)
JSON_COLUMNS = (
    "model", "group", "batch", "base_ms", "loop_ms", "equirl_ms", "loop_x", "equirl_x",
    "equirl_x_lo", "equirl_x_hi", "calls_x", "outside_x", "split_base_ms", "orbit_ms", "orbit_x",
)  # fmt: skip
#: the columns of the CSV (``--csv``)
CSV_COLUMNS = (*JSON_COLUMNS, "order", "clock")
#: the clocks :func:`bench_rows` takes
CLOCKS = {"cpu": time.thread_time, "wall": time.perf_counter}


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 2))


def nature_cnn(n_actions: int = 4) -> nn.Module:
    """The DQN Nature network (Mnih et al., 2015) on 4×84×84 frames."""
    return nn.Sequential(
        nn.Conv2d(4, 32, 8, stride=4), nn.ReLU(),
        nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
        nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(3136, 512), nn.ReLU(), nn.Linear(512, n_actions),
    )  # fmt: skip


def _vector_actions(group: str) -> tuple[GroupAction[Any], GroupAction[Any] | None]:
    """Group actions on the MLP's 4 features: Z2 negates them (CartPole), C4/D4 permute them like the
    corners of a square (outputs invariant)."""
    if group == "Z2":
        return (signed_permutation_action(flip(), [[0, 1, 2, 3]], signs=[[-1, -1, -1, -1]]),
                permutation_action(flip(), [[1, 0]]))  # fmt: skip
    if group == "C4":
        return signed_permutation_action(cyclic(4), [[3, 0, 1, 2]]), None
    return signed_permutation_action(dihedral(4), [[3, 0, 1, 2], [3, 2, 1, 0]]), None


def _image_actions(group: str) -> tuple[GroupAction[Any], GroupAction[Any] | None]:
    """Z2: left-right mirror with actions 2↔3 swapped (Breakout); C4/D4: invariant outputs."""
    if group == "Z2":
        return image_action(flip()), permutation_action(flip(), [[0, 1, 3, 2]])
    return image_action(cyclic(4) if group == "C4" else dihedral(4)), None


def _time(fn: Callable[[], Any], inner: int, clock: Callable[[], float] = time.perf_counter) -> float:
    t0 = clock()
    for _ in range(inner):
        fn()
    return (clock() - t0) / inner


def _warm_allocator() -> None:
    """Allocate and free one 24 MiB block: glibc then serves blocks up to that size from its heap
    instead of fresh ``mmap`` pages (its threshold only rises, to at most 32 MiB)."""
    block = torch.empty(6 << 20)
    del block


def bench_rows(
    models: tuple[str, ...] = ("mlp", "cnn"),
    groups: tuple[str, ...] = ("Z2", "C4", "D4"),
    batches: tuple[int, ...] = (1, 32, 256),
    rounds: int = 9,
    min_time: float = 0.05,
    threads: int | None = 1,
    console: Console | None = None,
    clock: str | None = None,
    breakdown: bool = False,
) -> list[dict[str, Any]]:
    """Measure and return rows ``{"model", "group", "batch", "base_ms", "loop_ms", "equirl_ms",
    "loop_x", "equirl_x", "equirl_x_lo", "equirl_x_hi", "calls_x", "outside_x", "order", "clock"}``.

    :param rounds: interleaved rounds; the median per method (and per ratio) is reported, with a 95 %
        interval of the ratio's median from 6 rounds on.
    :param min_time: seconds each timed block should last at least (sets the inner repeat count).
    :param threads: torch threads while timing (restored afterwards; ``None``: as they are).
    :param console: show a transient progress bar there (``None``: silent).
    :param clock: ``"cpu"`` (this thread's CPU time: all of torch's work on one thread) or ``"wall"``;
        default ``"cpu"`` on one thread, ``"wall"`` otherwise.
    :param breakdown: after the timed rounds, as many rounds again that split a symmetrized forward
        into the time inside the model's calls (forward hooks on the model) and the rest (``calls_x``,
        ``outside_x``, medians over rounds of each part over that round's base forward).
    """
    if clock is None:
        clock = "cpu" if threads == 1 else "wall"
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {sorted(CLOCKS)}, got {clock!r}")
    torch.manual_seed(0)
    _warm_allocator()
    total = len(models) * len(groups) * len(batches)
    with torch_threads(threads), progress(console, "benchmarking", total) as step:
        return _measure(models, groups, batches, rounds, min_time, step, clock, breakdown)


def _measure(
    models: Sequence[str],
    groups: Sequence[str],
    batches: Sequence[int],
    rounds: int,
    min_time: float,
    step: Step,
    clock: str = "wall",
    breakdown: bool = False,
) -> list[dict[str, Any]]:
    now = CLOCKS[clock]
    rows: list[dict[str, Any]] = []
    for model_name in models:
        model = (mlp() if model_name == "mlp" else nature_cnn()).eval()
        for group in groups:
            in_act, out_act = _vector_actions(group) if model_name == "mlp" else _image_actions(group)
            sym = EquiTune(model, in_act, out_act).eval()
            unfolded = (
                EquiTune(model, in_act, out_act, fold=False).eval() if sym._folded is not None else None
            )
            for batch in batches:
                step(0, f"benchmarking {model_name} {group} batch {batch}")
                shape = (batch, 4) if model_name == "mlp" else (batch, 4, 84, 84)
                x = torch.randn(shape)
                fns: dict[str, Callable[[], Any]] = {
                    BASE: functools.partial(model, x),
                    "loop": functools.partial(sym.forward_loop, x),
                    "equirl": functools.partial(sym, x),
                }
                if unfolded is not None and batch >= sym.fold_min_batch:
                    fns["orbit"] = functools.partial(unfolded, x)
                with torch.inference_mode():
                    for f in fns.values():  # warm up (allocator, caches)
                        f()
                    once = _time(fns["loop"], 1, now)
                    inner = {
                        k: max(1, int(min_time / max(once / (1 if k != BASE else in_act.group.order), 1e-6)))
                        for k in fns
                    }
                    paired: list[str] = [k for k in ("equirl", "orbit") if k in fns]
                    # base / equirl rounds first, then base / loop rounds: the loop's |G| full-size
                    # calls must not run between a base forward and its paired symmetrized one (after
                    # them, a batch-256 NatureCNN base forward faulted its pages in again, 30 % slower)
                    samples: dict[str, list[float]] = {k: [] for k in fns}
                    bases: dict[str, list[float]] = {k: [] for k in paired}
                    loop_base: list[float] = []
                    for _ in range(rounds):
                        for k in paired:
                            bases[k].append(_time(fns[BASE], inner[BASE], now))
                            samples[k].append(_time(fns[k], inner[k], now))
                    for _ in range(rounds):
                        loop_base.append(_time(fns[BASE], inner[BASE], now))
                        samples["loop"].append(_time(fns["loop"], inner["loop"], now))
                samples[BASE] = bases["equirl"]
                row: dict[str, Any] = {"model": model_name, "group": group, "batch": batch}
                row["orbit_ms"] = row["orbit_x"] = None
                row.update({f"{k}_ms": 1e3 * statistics.median(v) for k, v in samples.items()})
                pairs: list[tuple[str, list[float]]] = [("loop", loop_base), *bases.items()]
                for k, base_times in pairs:  # paired ratios
                    ratios = [t / max(b, 1e-12) for t, b in zip(samples[k], base_times)]
                    row[f"{k}_x"] = statistics.median(ratios)
                    if k == "equirl":
                        ci = median_ci(ratios)
                        row["equirl_x_lo"], row["equirl_x_hi"] = ci if ci is not None else (None, None)
                row["calls_x"] = row["outside_x"] = row["split_base_ms"] = None
                if breakdown:
                    with torch.inference_mode():
                        split = _split(model, fns, inner[BASE], rounds, now, paired[-1])
                    row["calls_x"], row["outside_x"], row["split_base_ms"] = split
                row["order"] = in_act.group.order
                row["clock"] = clock
                rows.append(row)
                step()
    return rows


def _split(
    model: nn.Module,
    fns: Mapping[str, Callable[[], Any]],
    inner: int,
    rounds: int,
    now: Callable[[], float],
    key: str = "equirl",
) -> tuple[float, float, float]:
    """``(calls, outside, base ms)``: medians over rounds of the time one symmetrized forward (``fns[key]``:
    the stacked orbit's, which calls the model as a whole) spends inside the model's calls, and outside
    them, each over that round's base forward (timed without the hooks, right before), and of that base
    forward."""
    spent, start = [0.0], [0.0]

    def pre(*_: Any) -> None:
        start[0] = now()

    def post(*_: Any) -> None:
        spent[0] += now() - start[0]

    calls, outside, bases = [], [], []
    for _ in range(rounds):
        base = max(_time(fns[BASE], inner, now), 1e-12)
        bases.append(base)
        hooks = [model.register_forward_pre_hook(pre), model.register_forward_hook(post)]
        try:
            spent[0] = 0.0
            total = _time(fns[key], 1, now)
        finally:
            for h in hooks:
                h.remove()
        calls.append(spent[0] / base)
        outside.append((total - spent[0]) / base)
    return statistics.median(calls), statistics.median(outside), 1e3 * statistics.median(bases)


def symmetrizer_table(rows: Sequence[dict[str, Any]]) -> BenchTable:
    """The rows of :func:`bench_rows` as ratios to the base forward, with the cost goal per row."""

    def goal(r: Mapping[str, Any]) -> str:
        G, one = int(r["order"]), int(r["batch"]) == 1
        limit = (0.8 if one else 1.05) * G  # batch 1: strictly below 0.8 (which also meets 1.05)
        lo, hi = _num(r.get("equirl_x_lo")), _num(r.get("equirl_x_hi"))
        if lo is None or hi is None:  # no interval (few rounds, older rows): the median decides
            lo = hi = _ratio(r, "equirl")
        if hi < limit or (hi == limit and not one):
            return "[green]ok[/]"
        return "[red]over[/]" if lo > limit or (lo == limit and one) else "[yellow]≈[/]"

    def interval(r: Mapping[str, Any]) -> str:
        lo, hi, G = _num(r.get("equirl_x_lo")), _num(r.get("equirl_x_hi")), int(r["order"])
        return "" if lo is None or hi is None else f"[{lo / G:.2f}, {hi / G:.2f}]"

    def ratio(key: str, per_order: bool = False) -> Callable[[Any], str]:
        return lambda r: f"{_ratio(r, key) / (int(r['order']) if per_order else 1):.2f}"

    def share(key: str) -> Callable[[Any], str]:
        def cell(r: Mapping[str, Any]) -> str:
            value = _num(r.get(key))
            return "" if value is None else f"{value / int(r['order']):.2f}"

        return cell

    columns = [
        Column("model"),
        Column("group"),
        Column("order", "|G|"),
        Column("batch"),
        Column("base_ms", "base ms", lambda r: f"{float(r['base_ms']):.3f}"),
        Column("loop_x", "loop ×", ratio("loop"), "right"),
        Column("equirl_x", "equirl ×", ratio("equirl"), "right"),
        *(
            [Column("orbit_x", "orbit / |G|", share("orbit_x"), "right")]
            if any(_num(r.get("orbit_x")) is not None for r in rows)
            else []
        ),
        Column("per_order", "equirl / |G|", ratio("equirl", per_order=True), "right"),
        Column("per_order_ci", "95 % CI", interval, "right"),
        *(
            [
                Column("calls_x", "in calls / |G|", share("calls_x"), "right"),
                Column("outside_x", "outside / |G|", share("outside_x"), "right"),
            ]
            if any(_num(r.get("calls_x")) is not None for r in rows)
            else []
        ),
        Column("goal", "goal", goal, "right", markup=True),
    ]
    clocks = sorted({str(r.get("clock", "wall")) for r in rows})
    return BenchTable(
        rows,
        f"equitune cost on one thread ({'/'.join(clocks) or 'wall'} clock; median ms; ratios to the plain "
        "forward, median over rounds)",
        columns,
        keys=2,
        note="goal: equirl ≤ 1.05·|G| × plain at every batch, < 0.8·|G| × plain at batch 1; ok: the 95 % CI "
        "is within it, over: above it, ≈: it holds the goal (within the noise)",
    )


def _num(value: Any) -> float | None:
    """A number of a row, as :func:`bench_rows` gives it or as read back from its CSV (``""``: none)."""
    return None if value is None or value == "" else float(value)


def _ratio(r: Mapping[str, Any], key: str) -> float:
    """``key``'s time over the plain forward's: the paired median (``{key}_x``) where the row has it,
    else the ratio of the median times (rows from before the paired ratios)."""
    paired = _num(r.get(f"{key}_x"))
    return paired if paired is not None else float(r[f"{key}_ms"]) / float(r["base_ms"])


def symmetrizer_plot(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Bars of ``equirl / (|G| · plain)`` per model and group, one per batch size (whiskers: the 95 %
    interval where the rows have one), with the 1.05 goal."""
    from equirl.utils.report import save_plot

    cells = list(dict.fromkeys((r["model"], r["group"]) for r in rows))
    batches = sorted({int(r["batch"]) for r in rows})
    by_key = {(r["model"], r["group"], int(r["batch"])): r for r in rows}

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot(1, 1, 1)
        width = 0.8 / max(1, len(batches))
        for j, b in enumerate(batches):
            xs, hs, below, above = [], [], [], []
            for i, (m, g) in enumerate(cells):
                r = by_key.get((m, g, b))
                if r is not None:
                    xs.append(i + (j - (len(batches) - 1) / 2) * width)
                    G = int(r["order"])
                    h = _ratio(r, "equirl") / G
                    hs.append(h)
                    lo, hi = _num(r.get("equirl_x_lo")), _num(r.get("equirl_x_hi"))
                    if lo is None or hi is None:  # no interval (few rounds)
                        lo = hi = h * G
                    below.append(max(0.0, h - lo / G))
                    above.append(max(0.0, hi / G - h))
            ax.bar(xs, hs, width, yerr=[below, above], capsize=2, label=f"batch {b}")
        ax.axhline(1.05, color="k", linestyle="--", linewidth=1, label="goal 1.05")
        ax.axhline(1.0, color="grey", linewidth=0.5)
        ax.set_xticks(range(len(cells)), [f"{m} {g}" for m, g in cells])
        ax.set_ylabel("equirl time / (|G| × plain time)")
        ax.set_title("cost of equitune per group element (one thread)")
        ax.legend(fontsize="small", ncol=len(batches) + 1, loc="upper center", bbox_to_anchor=(0.5, -0.1))

    return save_plot(path, draw, (7, 4.2))
