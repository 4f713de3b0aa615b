"""The report of a sweep folder: per env x method (x other grid values) over seeds, with intervals.

Per run (a finished run directory):

* **final** -- the mean return of the final evaluation (of ``model.zip``; the last entry of
  ``evaluations.json``); **best** -- the best mean return of the periodic evaluations (``run.json``).
* **AUC** -- the area under the evaluation curve, normalised per env: the trapezoid over the evaluation
  timesteps of ``(mean return - min) / (max - min)``, divided by the budget (``timesteps``), with the
  env's score range ``[min, max]`` (the env spec's ``scores``, or the sweep's). 1 = the maximum
  score from step 0, 0 = the minimum throughout. The steps before a run's first evaluation count as
  the minimum score (the report warns when a run has no evaluation at step 0: ``eval.at_start``).
  A run stopped early (``eval.stop_at``) keeps its last evaluation up to the budget.
* **steps to threshold** -- the first evaluation timestep whose mean return reaches the env's
  threshold; a run that never reaches it is *censored* at its last step (it is not counted as taking
  the budget). Per group the report gives the Kaplan--Meier median (``>budget`` when over half the
  runs never reach it) and the restricted mean up to the budget (RMST), with the number that reached it.

Per group: the IQM and the mean of the final return, the best return and the AUC over seeds with 95 %
bootstrap intervals; ``final_vs_base`` / ``auc_vs_base`` say ``above`` / ``below`` when the method's IQM
interval and the baseline's do not overlap, ``overlap`` when they do; and the
probability of improvement over the baseline method (the same env and other grid values): the chance
that a seed of the method ends with a higher final return than a seed of the baseline (ties count half).
Across envs, per method: IQM / mean of the normalised final score and the IQM of the AUC with stratified
bootstrap intervals
(seeds resampled within each env) and the probability of improvement averaged over envs.

TensorBoard's HParams view (``{dir}/report/hparams/``): every run's resolved config as hyperparameters,
its final / best return and AUC as metrics (``tensorboard --logdir {dir}``).

Written to ``{dir}/report/``: ``summary.md`` (the printed tables), ``groups.csv`` / ``.md``,
``aggregate.csv`` / ``.md``, ``runs.csv``,
``curves_{env}.png`` (IQM learning curves with 95 % bands), ``profiles.png`` (performance profiles: the
fraction of runs whose normalised final score exceeds tau) and ``intervals.png`` (IQM and mean with
their intervals).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from equirl.errors import ConfigError, EquirlError
from equirl.registry import BASE
from equirl.rl.lifecycle import list_runs
from equirl.rl.spec import env_scores
from equirl.utils.io import atomic_write_text, check_no_symlinks, printable, read_json, remove_file
from equirl.utils.report import BenchTable, Column, save_plot, write_csv
from equirl.utils.stats import (
    Interval,
    iqm,
    kaplan_meier,
    probability_of_improvement,
    stratified_bootstrap_ci,
)

__all__ = ["SweepReport", "load_sweep_runs", "sweep_report"]

log = logging.getLogger(__name__)


@dataclass
class RunData:
    """One finished run, as the report reads it."""

    env: str
    method: str
    variant: str
    seed: int
    budget: int
    steps: np.ndarray  # evaluation timesteps
    returns: np.ndarray  # mean return per evaluation (the final one last)
    final: float
    best: float | None
    run_dir: str = ""

    @property
    def group(self) -> tuple[str, str, str]:
        return (self.env, self.method, self.variant)


def _manifest(root: Path) -> dict[str, Any]:
    """``root/sweep.json`` (``{}`` when there is none; one-line :class:`ConfigError` when unreadable)."""
    from equirl.rl.sweep import read_manifest

    return read_manifest(root) or {}


def _sweep_scores(root: Path) -> dict[str, dict[str, float]]:
    from equirl.rl.sweep import check_scores

    sweep = _manifest(root).get("sweep") or {}
    return check_scores(sweep.get("scores"), str(root / "sweep.json"))


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and bool(np.isfinite(v))


def _read_evaluations(d: Path) -> tuple[np.ndarray, np.ndarray]:
    """The evaluation timesteps and mean returns of run directory ``d`` (one-line :class:`ConfigError`
    naming ``evaluations.json`` when it is missing, truncated or malformed)."""
    p = d / "evaluations.json"
    ev = read_json(p, "evaluations")
    evals = ev.get("evaluations") if isinstance(ev, dict) else None
    if not isinstance(evals, list):
        raise ConfigError(f"evaluations {p} has no list of evaluations")
    for i, e in enumerate(evals):
        if not (isinstance(e, dict) and _finite(e.get("timestep")) and _finite(e.get("mean_return"))):
            raise ConfigError(f"evaluations {p}: entry {i} lacks a finite timestep and mean_return")
    steps = np.asarray([e["timestep"] for e in evals], dtype=np.float64)
    return steps, np.asarray([e["mean_return"] for e in evals], dtype=np.float64)


def load_sweep_runs(root: str | Path) -> tuple[list[RunData], list[dict[str, Any]]]:
    """The finished runs of a sweep folder and the others (``run.json`` entries: failed, stale,
    ``unreadable`` (a corrupt ``run.json`` or ``evaluations.json``: ``error`` says which), ``outdated``).

    With a ``sweep.json`` whose trials have fingerprints (:mod:`equirl.rl.sweep`), a run counts only
    when it is its trial's run directory of the current settings (the newest of the trial's name and
    fingerprint): a run of the same trial with other settings is ``outdated``, a run of no trial of the
    sweep ``not in the sweep``; both are left out of the report. Runs are grouped by the trial names of
    ``sweep.json`` when present (their ``variant``), else by env and method.

    :raises ConfigError: ``root`` does not exist or is not a folder; ``sweep.json`` is unreadable.
    """
    from equirl.rl.sweep import find_trial_dir

    root = Path(root)
    if not root.exists():
        raise ConfigError(f"sweep folder {root} does not exist")
    if not root.is_dir():
        raise ConfigError(f"{root} is a file, not a sweep folder (give the --out folder of `equirl sweep`)")
    index = {t["name"]: t for t in _manifest(root).get("trials", [])}
    fingerprinted = bool(index) and all(isinstance(t.get("fingerprint"), str) for t in index.values())
    current: dict[str, dict[str, Any]] = {}  # run directory name -> its trial
    if fingerprinted:
        for name, t in index.items():
            d = find_trial_dir(root, name, t["fingerprint"])
            if d is not None:
                current[d.name] = t
    runs, other = [], []
    if fingerprinted:  # a trial of sweep.json with no run directory: not run yet, or deleted
        found = {t["name"] for t in current.values()}
        other += [
            {"run_dir": str(root / name), "status": "missing", "error": "a trial of sweep.json without a run"}
            for name in sorted(set(index) - found)
        ]
    for info in list_runs(root):
        d = Path(info["run_dir"])
        named = next((t for n, t in index.items() if d.name.startswith(n + "__")), None)
        if fingerprinted:
            trial = current.get(d.name)
            if trial is None:
                why = (
                    ("outdated", "run with other settings than the sweep's current ones")
                    if named is not None
                    else ("not in the sweep", "no trial of sweep.json")
                )
                other.append({**info, "status": why[0], "error": why[1]})
                continue
        else:
            trial = named
        if info["status"] != "finished":
            other.append(info)
            continue
        if (
            not isinstance(info.get("env"), str)
            or not isinstance(info.get("method"), str)
            or info.get("seed") is None
        ):
            other.append(
                {**info, "status": "unreadable", "error": f"{d / 'run.json'} lacks env, method or seed"}
            )
            continue
        try:
            steps, rets = _read_evaluations(d)
        except ConfigError as exc:
            other.append({**info, "status": "unreadable", "error": str(exc)})
            continue
        if not steps.size:
            other.append({**info, "status": "no evaluations"})
            continue
        best = (info.get("best") or {}).get("mean_return")
        runs.append(
            RunData(
                env=str(info["env"]),
                method=str(info["method"]),
                variant=str(trial.get("variant") or "") if trial else "",
                seed=int(info["seed"]),
                budget=int(info.get("total_timesteps") or steps[-1]),
                steps=steps,
                returns=rets,
                final=float(rets[-1]),
                best=None if best is None else float(best),
                run_dir=str(d),
            )
        )
    # one run per seed and group: a second run of the same seed (two `equirl train` of one config into
    # one folder) would be counted as another seed; the newest is kept
    kept: dict[tuple[tuple[str, str, str], int], RunData] = {}
    for r in runs:  # oldest first (run folders sort by name; the time comes last in a name)
        old = kept.get((r.group, r.seed))
        if old is not None:
            other.append(
                {
                    "run_dir": old.run_dir,
                    "status": "duplicate seed",
                    "error": f"seed {r.seed} again in {r.run_dir}",
                }
            )
        kept[(r.group, r.seed)] = r
    return list(kept.values()), other


def _counts(other: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for o in other:
        counts[str(o.get("status"))] += 1
    return dict(counts)


def _normalise(x: np.ndarray | float, score: dict[str, float]) -> Any:
    return (np.asarray(x, dtype=np.float64) - score["min"]) / (score["max"] - score["min"])


def auc(run: RunData, score: dict[str, float]) -> float:
    """The normalised area under the evaluation curve (see the module docstring)."""
    s, y = run.steps, _normalise(run.returns, score)
    if s[-1] < run.budget:  # stopped early (eval.stop_at): the last evaluation is carried to the budget
        s, y = np.append(s, float(run.budget)), np.append(y, y[-1])
    # SB3 ends a run at a whole rollout, so it may overshoot the budget (PPO: n_envs x n_steps): the
    # span is then the steps actually run, and a curve at the maximum score all along still gives 1
    span = max(float(run.budget), float(s[-1]))
    if s.size == 1:
        return float(y[0] * s[0] / span)
    return float(np.sum((y[1:] + y[:-1]) / 2.0 * np.diff(s)) / span)


def compare(method: Interval, baseline: Interval) -> str:
    """``above`` / ``below`` when the two 95 % intervals do not overlap, else ``overlap``."""
    if method.low > baseline.high:
        return "above"
    if method.high < baseline.low:
        return "below"
    return "overlap"


def steps_to_threshold(run: RunData, threshold: float) -> tuple[float, bool]:
    """``(step, True)`` at the first evaluation reaching ``threshold``, else ``(last step, False)``."""
    hit = np.nonzero(run.returns >= threshold)[0]
    return (float(run.steps[hit[0]]), True) if hit.size else (float(run.steps[-1]), False)


#: the fewest seeds (runs) a group needs for an interval and a comparison: a bootstrap over one seed is a
#: zero-width "interval" that would call any difference significant
MIN_SEEDS = 2


def _ci_text(i: Interval | None, fmt: str = ".1f", n: int = MIN_SEEDS) -> str:
    if i is None:
        return ""
    if n < MIN_SEEDS:
        return f"{i.value:{fmt}} (1 seed: no CI)"
    return f"{i.value:{fmt}} [{i.low:{fmt}}, {i.high:{fmt}}]"


def _interval_fields(prefix: str, i: Interval, n: int, fmt: str) -> dict[str, Any]:
    """``{prefix}``, ``{prefix}_low`` / ``_high`` (``None`` with fewer than :data:`MIN_SEEDS` seeds) and
    ``{prefix}_ci`` (the text) of a row."""
    few = n < MIN_SEEDS
    return {
        prefix: i.value,
        f"{prefix}_low": None if few else i.low,
        f"{prefix}_high": None if few else i.high,
        f"{prefix}_ci": _ci_text(i, fmt, n),
    }


@dataclass
class SweepReport:
    """The report's rows, tables and files."""

    groups: list[dict[str, Any]]
    aggregate: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    problems: list[dict[str, Any]]
    files: list[Path] = field(default_factory=list)
    #: the method the comparisons are against
    baseline: str = BASE

    def tables(self) -> list[BenchTable]:
        """The group and aggregate tables (rich renderables)."""
        b = self.baseline
        g = BenchTable(
            self.groups,
            "sweep: per env and method (final return over seeds; 95 % bootstrap CIs)",
            [
                "env",
                "method",
                Column("variant"),
                Column("seeds"),
                Column("iqm_final", "IQM final [95% CI]", lambda r: r["iqm_final_ci"]),
                Column("mean_final", "mean final [95% CI]", lambda r: r["mean_final_ci"]),
                Column("iqm_best", "IQM best [95% CI]", lambda r: r.get("iqm_best_ci", "")),
                Column("iqm_auc", "IQM AUC (norm.) [95% CI]", lambda r: r.get("iqm_auc_ci", "")),
                Column("km_median_steps", "steps to thr. (KM median)", lambda r: r["steps_text"]),
                Column("p_improve", f"P(> {b}) [95% CI]", lambda r: r["p_improve_ci"]),
                Column("final_vs_base", f"final vs {b}", lambda r: r.get("final_vs_base", "")),
                Column("auc_vs_base", f"AUC vs {b}", lambda r: r.get("auc_vs_base", "")),
            ],
            keys=2,
        )
        a = BenchTable(
            self.aggregate,
            "sweep: across envs (normalised final score and AUC; stratified bootstrap 95 % CIs)",
            [
                "method",
                Column("variant"),
                Column("envs"),
                Column("runs"),
                Column("iqm", "IQM [95% CI]", lambda r: r["iqm_ci"]),
                Column("mean", "mean [95% CI]", lambda r: r["mean_ci"]),
                Column("iqm_auc", "IQM AUC [95% CI]", lambda r: r["iqm_auc_ci"]),
                Column("p_improve", f"P(> {b}) [95% CI]", lambda r: r["p_improve_ci"]),
            ],
            keys=1,
        )
        return [g, a]


def _fmt(v: Any, spec: str = ".1f") -> str:
    return "" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, spec)


def _markdown(rows: list[dict[str, Any]], cols: list[str]) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append(
            "| "
            + " | ".join(
                _fmt(r.get(c), ".4g")
                if isinstance(r.get(c), float)
                else str(r.get(c) if r.get(c) is not None else "")
                for c in cols
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def sweep_report(
    root: str | Path,
    baseline: str | None = None,
    scores: dict[str, dict[str, float]] | None = None,
    reps: int = 2000,
    plots: bool = True,
    hparams: bool = True,
    out: str | Path | None = None,
) -> SweepReport:
    """Compute and write the report of a sweep folder (see the module docstring).

    :param root: the sweep folder (``--out`` of ``equirl sweep``) or any folder of run directories.
    :param baseline: the reference method (default: the sweep's ``baseline``, else ``base``).
    :param scores: per-env ``{min, max, threshold}`` overriding the env specs' ``scores`` and the sweep's.
    :param reps: bootstrap replicates.
    :param plots: also draw the PNG plots.
    :param hparams: also write TensorBoard's HParams view (``report/hparams/``; needs ``tensorboard``).
    :param out: the report's folder (default ``{root}/report``; another one for a read-only sweep folder).
    :raises ConfigError: ``root`` does not exist or is a file; ``sweep.json`` or ``scores`` are malformed.
    :raises EquirlError: no finished run in ``root``.
    """
    from equirl.rl.sweep import check_scores

    root = Path(root)
    runs, other = load_sweep_runs(root)
    if not runs:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(_counts(other).items()))
        bad = next((o for o in other if o["status"] == "unreadable"), None)
        why = f"; {bad['error']}" if bad is not None else ""
        raise EquirlError(f"{root}: no finished run to report on ({kinds or 'no run directories'}){why}")
    given = baseline is not None
    if baseline is None:
        sweep = _manifest(root).get("sweep") or {}
        baseline = str(sweep.get("baseline") or BASE) if isinstance(sweep, dict) else BASE
    methods_run = sorted({r.method for r in runs})
    if given and baseline not in methods_run:
        raise ConfigError(
            f"--baseline {printable(baseline, 60)}: no finished run of that method in {root} "
            f"(methods there: {', '.join(methods_run)})"
        )
    table = {**_sweep_scores(root), **check_scores(scores, "scores")}
    for env in sorted({r.env for r in runs} - set(table)):  # the env specs' scores
        found = env_scores(env)
        if found is not None:
            table[env] = found
    by_group: dict[tuple[str, str, str], list[RunData]] = defaultdict(list)
    for r in sorted(runs, key=lambda r: (r.env, r.method, r.variant, r.seed)):
        by_group[r.group].append(r)
    late = [r for r in runs if r.env in table and r.steps[0] > 0]
    if late:  # the AUC's convention, said where it matters
        log.warning(
            "%d of %d runs have no evaluation at step 0 (the first at step %d): their AUC counts the steps "
            "before it as the minimum score; set eval.at_start: true for a curve from step 0",
            len(late),
            len(runs),
            int(min(r.steps[0] for r in late)),
        )
    missing = sorted({r.env for r in runs if r.env not in table})
    for env in missing:
        log.warning("no score range for %s: AUC, thresholds and normalised scores left out", env)

    group_rows, run_rows = [], []
    intervals: dict[tuple[str, str, str], dict[str, Interval]] = {}
    for (env, method, variant), rs in by_group.items():
        finals = np.asarray([r.final for r in rs])
        score = table.get(env)
        row: dict[str, Any] = {"env": env, "method": method, "variant": variant, "seeds": len(rs)}
        i_iqm = stratified_bootstrap_ci([finals], lambda s: iqm(s[0]), reps=reps)
        i_mean = stratified_bootstrap_ci([finals], lambda s: float(np.mean(s[0])), reps=reps)
        n = len(rs)
        row.update(
            **_interval_fields("iqm_final", i_iqm, n, ".1f"),
            **_interval_fields("mean_final", i_mean, n, ".1f"),
            mean_best=float(np.mean([r.best for r in rs if r.best is not None]))
            if any(r.best is not None for r in rs)
            else None,
        )
        row["steps_text"] = ""
        bests = np.asarray([r.best for r in rs if r.best is not None])
        if bests.size:
            i_best = stratified_bootstrap_ci([bests], lambda s: iqm(s[0]), reps=reps)
            row.update(iqm_best=i_best.value, iqm_best_ci=_ci_text(i_best, ".1f", int(bests.size)))
        intervals[(env, method, variant)] = {"final": i_iqm}
        if score is not None:
            aucs = [auc(r, score) for r in rs]
            i_auc = stratified_bootstrap_ci([np.asarray(aucs)], lambda s: iqm(s[0]), reps=reps)
            i_auc_mean = stratified_bootstrap_ci(
                [np.asarray(aucs)], lambda s: float(np.mean(s[0])), reps=reps
            )
            intervals[(env, method, variant)]["auc"] = i_auc
            row.update(**_interval_fields("iqm_auc", i_auc, n, ".3f"))
            row.update(**_interval_fields("mean_auc", i_auc_mean, n, ".3f"))
            row.pop("mean_auc_ci")
            hits = [steps_to_threshold(r, score["threshold"]) for r in rs]
            budget = max(r.budget for r in rs)
            km = kaplan_meier([h[0] for h in hits], [h[1] for h in hits], horizon=budget)
            row.update(
                threshold=score["threshold"],
                reached=km.events,
                km_median_steps=km.median,
                rmst_steps=km.restricted_mean,
                steps_text=(f"{km.median:.0f}" if km.median is not None else f">{budget}")
                + f" ({km.events}/{km.n} reached)",
            )
        else:
            aucs = [float("nan")] * len(rs)
        base_rs = by_group.get((env, baseline, variant))
        if method != baseline and base_rs and min(n, len(base_rs)) >= MIN_SEEDS:
            poi = probability_of_improvement([finals], [[r.final for r in base_rs]], reps=reps)
            row.update(p_improve=poi.value, p_improve_low=poi.low, p_improve_high=poi.high)
            row["p_improve_ci"] = _ci_text(poi, ".2f")
        elif method != baseline and base_rs:
            row["p_improve_ci"] = "too few seeds"
        else:
            row["p_improve_ci"] = ""
        group_rows.append(row)
        for r, a in zip(rs, aucs):
            run_rows.append(
                {
                    "env": env,
                    "method": method,
                    "variant": variant,
                    "seed": r.seed,
                    "final": r.final,
                    "best": r.best,
                    "auc": a,
                    "budget": r.budget,
                }
            )

    for row in group_rows:  # non-overlapping 95 % IQM intervals against the baseline
        mine = intervals[(row["env"], row["method"], row["variant"])]
        ref = intervals.get((row["env"], baseline, row["variant"]))
        few = min(row["seeds"], len(by_group.get((row["env"], baseline, row["variant"]), []))) < MIN_SEEDS
        for metric in ("final", "auc"):
            if row["method"] != baseline and ref is not None and metric in mine and metric in ref:
                row[f"{metric}_vs_base"] = "too few seeds" if few else compare(mine[metric], ref[metric])
            else:
                row[f"{metric}_vs_base"] = ""

    # across envs: normalised final scores, stratified by env
    agg_rows = []
    methods = sorted({(m, v) for (_, m, v) in by_group})
    for method, variant in methods:
        envs = sorted(e for (e, m, v) in by_group if m == method and v == variant and e in table)
        if not envs:
            continue
        strata = [
            _normalise(np.asarray([r.final for r in by_group[(e, method, variant)]]), table[e]) for e in envs
        ]
        i_iqm = stratified_bootstrap_ci(strata, lambda s: iqm(np.concatenate(s)), reps=reps)
        i_mean = stratified_bootstrap_ci(strata, lambda s: float(np.mean(np.concatenate(s))), reps=reps)
        auc_strata = [
            np.asarray(
                [a["auc"] for a in run_rows if (a["env"], a["method"], a["variant"]) == (e, method, variant)]
            )
            for e in envs
        ]
        i_auc = stratified_bootstrap_ci(auc_strata, lambda s: iqm(np.concatenate(s)), reps=reps)
        fewest = min(int(s.size) for s in strata)  # the bootstrap resamples seeds within each env
        row = {
            "method": method,
            "variant": variant,
            "envs": len(envs),
            "runs": int(sum(s.size for s in strata)),
            **_interval_fields("iqm", i_iqm, fewest, ".3f"),
            **_interval_fields("mean", i_mean, fewest, ".3f"),
            **_interval_fields("iqm_auc", i_auc, fewest, ".3f"),
            "p_improve_ci": "",
        }
        both = [e for e in envs if (e, baseline, variant) in by_group]
        fewest_base = min((len(by_group[(e, baseline, variant)]) for e in both), default=0)
        if method != baseline and both and min(fewest, fewest_base) < MIN_SEEDS:
            row["p_improve_ci"] = "too few seeds"
        elif method != baseline and both:
            poi = probability_of_improvement(
                [[r.final for r in by_group[(e, method, variant)]] for e in both],
                [[r.final for r in by_group[(e, baseline, variant)]] for e in both],
                reps=reps,
            )
            row.update(
                p_improve=poi.value,
                p_improve_low=poi.low,
                p_improve_high=poi.high,
                p_improve_ci=_ci_text(poi, ".2f"),
            )
        agg_rows.append(row)

    problems = [
        {"run_dir": o["run_dir"], "status": o["status"], "error": o.get("error") or ""} for o in other
    ]
    rep = SweepReport(group_rows, agg_rows, run_rows, problems, baseline=baseline)
    out = root / "report" if out is None else Path(out)
    if out.exists() or out.is_symlink():  # a link would send the report's files anywhere
        check_no_symlinks(out, "report folder")
    out.mkdir(parents=True, exist_ok=True)
    gcols = [
        "env", "method", "variant", "seeds", "iqm_final", "iqm_final_low", "iqm_final_high", "mean_final",
        "mean_final_low", "mean_final_high", "iqm_best", "mean_best", "iqm_auc", "iqm_auc_low", "iqm_auc_high",
        "mean_auc", "mean_auc_low", "mean_auc_high", "threshold", "reached", "km_median_steps", "rmst_steps",
        "p_improve", "p_improve_low", "p_improve_high", "final_vs_base", "auc_vs_base",
    ]  # fmt: skip
    acols = ["method", "variant", "envs", "runs", "iqm", "iqm_low", "iqm_high", "mean", "mean_low",
             "mean_high", "iqm_auc", "iqm_auc_low", "iqm_auc_high", "p_improve", "p_improve_low",
             "p_improve_high"]  # fmt: skip
    for name, rows, cols in (("groups", group_rows, gcols), ("aggregate", agg_rows, acols)):
        if rows:
            rep.files.append(write_csv(out / f"{name}.csv", rows, cols) or out)
            rep.files.append(atomic_write_text(out / f"{name}.md", _markdown(rows, cols)))
    rep.files.append(write_csv(out / "runs.csv", run_rows) or out)
    summary = "\n".join(t.markdown() for t in rep.tables())
    rep.files.append(atomic_write_text(out / "summary.md", summary))
    if problems:
        rep.files.append(write_csv(out / "problems.csv", problems) or out)
    else:  # an earlier report's list would be stale
        remove_file(out / "problems.csv")
    if plots:
        rep.files += _plots(out, by_group, table, agg_rows, reps)
    if hparams:
        rep.files += _hparams(out / "hparams", [r for rs in by_group.values() for r in rs], run_rows)
    return rep


def _flat(prefix: str, value: Any, into: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, into)
    elif isinstance(value, (bool, int, float, str)):
        into[prefix] = value
    elif value is not None:
        into[prefix] = json.dumps(value)


def _hparams(folder: Path, runs: list[RunData], run_rows: list[dict[str, Any]]) -> list[Path]:
    """One TensorBoard HParams entry per run (its resolved config; final / best return and AUC as
    metrics) in ``folder/{run}``: ``tensorboard --logdir SWEEP`` shows them beside the runs' curves."""
    from equirl.config import load_yaml

    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard not installed: the tables and plots are the report
        log.warning("tensorboard is not installed: no HParams view written")
        return []
    written = []
    aucs = {(r["env"], r["method"], r["variant"], r["seed"]): r["auc"] for r in run_rows}
    folder.mkdir(parents=True, exist_ok=True)
    writer = SummaryWriter(log_dir=str(folder))
    for r in runs:
        cfg_path = Path(r.run_dir) / "config.yaml"
        hp: dict[str, Any] = {}
        if cfg_path.is_file():
            try:
                _flat("", load_yaml(cfg_path), hp)
            except (ConfigError, RecursionError) as exc:  # the run's settings are left out, not the run
                log.warning("HParams of %s without its config: %s", r.run_dir, exc)
        hp.pop("out", None)
        hp.update(env=r.env, method=r.method, variant=r.variant, seed=r.seed)
        metrics = {"hparam/final_return": r.final}
        if r.best is not None:
            metrics["hparam/best_return"] = r.best
        a = aucs.get((r.env, r.method, r.variant, r.seed))
        if a is not None and np.isfinite(a):
            metrics["hparam/auc"] = float(a)
        name = Path(r.run_dir).name or f"{r.env}__{r.method}__{r.seed}"
        writer.add_hparams(hp, metrics, run_name=name)
        written.append(folder / name)
    writer.close()
    return written


def _curve(rs: list[RunData], reps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    grid = rs[0].steps
    ys = np.stack([np.interp(grid, r.steps, r.returns) for r in rs])  # seeds x steps
    mid, lo, hi = np.empty(grid.size), np.empty(grid.size), np.empty(grid.size)
    for j in range(grid.size):
        i = stratified_bootstrap_ci([ys[:, j]], lambda s: iqm(s[0]), reps=reps)
        mid[j], lo[j], hi[j] = i.value, i.low, i.high
    return grid, mid, lo, hi


def _plots(
    out: Path,
    by_group: dict[tuple[str, str, str], list[RunData]],
    table: dict[str, dict[str, float]],
    agg_rows: list[dict[str, Any]],
    reps: int,
) -> list[Path]:
    files = []
    envs = sorted({e for (e, _, _) in by_group})
    for env in envs:
        keys = [k for k in by_group if k[0] == env]

        def draw_curves(fig: Any, keys: list[tuple[str, str, str]] = keys, env: str = env) -> None:
            ax = fig.add_subplot(111)
            for k in keys:
                x, mid, lo, hi = _curve(by_group[k], min(reps, 500))
                label = k[1] + (f" {k[2]}" if k[2] else "") + f" (n={len(by_group[k])})"
                (line,) = ax.plot(x, mid, label=label)
                ax.fill_between(x, lo, hi, alpha=0.2, color=line.get_color())
            ax.set_xlabel("env steps")
            ax.set_ylabel("evaluation return (IQM over seeds, 95% CI)")
            ax.set_title(env)
            ax.legend(fontsize="small")

        files.append(save_plot(out / f"curves_{env.replace('/', '-')}.png", draw_curves, (7, 4.5)))

    labels = sorted({(m, v) for (e, m, v) in by_group})
    normed: dict[tuple[str, str], np.ndarray] = {}
    for m, v in labels:
        vals = [
            _normalise(r.final, table[e])
            for (e, mm, vv), rs in by_group.items()
            if (mm, vv) == (m, v) and e in table
            for r in rs
        ]
        if vals:
            normed[(m, v)] = np.asarray(vals, dtype=np.float64)
    if normed:

        def draw_profiles(fig: Any) -> None:
            ax = fig.add_subplot(111)
            taus = np.linspace(-0.05, 1.05, 111)
            for (m, v), x in normed.items():
                ax.plot(taus, [(x > t).mean() for t in taus], label=m + (f" {v}" if v else ""))
            ax.set_xlabel("normalised final score τ")
            ax.set_ylabel("fraction of runs with score > τ")
            ax.set_title("performance profiles")
            ax.legend(fontsize="small")

        files.append(save_plot(out / "profiles.png", draw_profiles, (6, 4)))
    if agg_rows:

        def draw_intervals(fig: Any) -> None:
            names = [r["method"] + (f" {r['variant']}" if r["variant"] else "") for r in agg_rows]
            for j, stat in enumerate(("iqm", "mean")):
                ax = fig.add_subplot(1, 2, j + 1)
                for i, r in enumerate(agg_rows):
                    ax.plot([r[f"{stat}_low"], r[f"{stat}_high"]], [i, i], linewidth=6, alpha=0.5)
                    ax.plot([r[stat]], [i], "k|", markersize=14)
                ax.set_yticks(range(len(names)))
                ax.set_yticklabels(names if j == 0 else [])
                ax.set_title(stat.upper() if stat == "iqm" else "mean")
                ax.set_xlabel("normalised final score")

        files.append(save_plot(out / "intervals.png", draw_intervals, (8, 1.2 + 0.5 * len(agg_rows))))
    return files
