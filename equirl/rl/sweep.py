"""Sweeps: a grid of ordinary equirl runs (env x method x seed x any config key), run by Ray Tune.

A sweep file (YAML)::

    config: CartPole-v1        # the base run config: a shipped name or a path (relative: to the sweep file, else cwd)
    timesteps: 20000           # the budget of every trial
    eval: {freq: 2000, episodes: 5, final_episodes: 10}   # the evaluation schedule
                               # (stop_at: R ends a trial at its first evaluation >= R; off by default)
    set: {hyperparams.learning_starts: 500}                # fixed overrides (dotted keys)
    baseline: base             # the method the report compares against
    grid:
      method: [base, equitune]
      seed: {range: [0, 10]}   # 0..9 (like Python's range: [start, stop] or [start, stop, step])
      hyperparams.learning_rate: [1.0e-3, 2.3e-3]
    scores:                    # per-env score range and threshold for the report (defaults: see
      CartPole-v1: {min: 0, max: 500, threshold: 475}   # equirl.rl.sweep_report.DEFAULT_SCORES)

``config`` may also be a list: one base config per entry (typically one per env, each with its own
hyperparameters), each entry a name / path or a mapping ``{config, timesteps, eval, set, label}`` whose
values override the sweep-wide ones for that entry (``label`` names the entry's trials, to tell apart two
entries of one env); the grid is crossed with every entry::

    config:
      - {config: CartPole-v1, timesteps: 30000}
      - {config: Acrobot-v1, timesteps: 20000, set: {hyperparams.gradient_steps: 1}}

Every grid point is a *trial*: an ordinary run (:func:`equirl.rl.train.run_training`) into the sweep's
output folder, in the usual run-directory layout, named ``{env}__{exp}__{seed}__{time}`` where ``exp`` is
the method plus the other grid values (``equitune+hyperparams.learning_rate-0.001``). ``{env}__{exp}__{seed}``
is the trial's stable name: a sweep run again into the same folder finds each trial's directory, skips
the finished ones and resumes the interrupted / stale / failed ones with
:func:`equirl.rl.train.resume_training`. A trial that fails is recorded (``sweep.json``, the summary),
never fatal to the sweep.

Executors: ``ray`` (Ray Tune; one CPU per trial, torch at one thread inside each trial; local by default,
a running cluster with ``address="auto"`` or ``$RAY_ADDRESS``) or ``serial`` (the trials one after another
in this process: tests, and the baseline of the wall-time comparison).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from equirl.config import load_yaml
from equirl.errors import ConfigError, EquirlError
from equirl.registry import BASE, canonical_method
from equirl.rl.config import RLConfig, load_rl_config
from equirl.rl.lifecycle import effective_status, read_run
from equirl.utils.io import write_json

__all__ = [
    "SweepBase",
    "SweepResult",
    "SweepSpec",
    "Trial",
    "TrialOutcome",
    "expand_trials",
    "find_trial_dir",
    "load_sweep",
    "run_sweep",
    "run_trial",
    "sweep_bases",
]

log = logging.getLogger(__name__)

#: grid keys with a meaning of their own (every other key is a dotted config key)
_AXES = ("env", "method", "seed")
_EXECUTORS = ("ray", "serial")


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", s).strip("-") or "x"


@dataclass
class SweepBase:
    """One base config of a sweep, with its own overrides of the sweep-wide values.

    :param config: the run config (shipped name or path).
    :param timesteps: the budget of its trials (``None``: the sweep's, else the config's).
    :param eval: evaluation-schedule overrides (on top of the sweep's).
    :param set: dotted overrides (on top of the sweep's).
    :param label: a name for this entry's trials (the first part of their variant), to tell apart two
        entries of one env (e.g. a full and a partially trained agent).
    """

    config: str
    timesteps: int | None = None
    eval: dict[str, Any] = field(default_factory=dict)
    set: dict[str, Any] = field(default_factory=dict)
    label: str | None = None


@dataclass
class SweepSpec:
    """A parsed sweep file (see the module docstring).

    :param config: the base run config (shipped name or path), or several (:class:`SweepBase`).
    :param grid: key -> values (``env``, ``method``, ``seed`` and dotted config keys).
    :param timesteps: the budget of each trial (``None``: the base config's).
    :param eval: ``freq`` / ``episodes`` / ``final_episodes`` overrides.
    :param set: fixed dotted overrides for every trial.
    :param baseline: the method the report compares against.
    :param scores: per env ``{min, max, threshold}`` for the report.
    :param source: the sweep file (for relative paths).
    """

    config: str | list[SweepBase]
    grid: dict[str, list[Any]]
    timesteps: int | None = None
    eval: dict[str, Any] = field(default_factory=dict)
    set: dict[str, Any] = field(default_factory=dict)
    baseline: str = BASE
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    source: str | None = None


def _values(key: str, raw: Any) -> list[Any]:
    if isinstance(raw, Mapping) and set(raw) == {"range"}:
        r = raw["range"]
        if not (isinstance(r, list) and 1 <= len(r) <= 3 and all(isinstance(v, int) for v in r)):
            raise ConfigError(
                f"grid.{key}: range must be [stop], [start, stop] or [start, stop, step] integers"
            )
        vals: list[Any] = list(range(*r))
    elif isinstance(raw, list):
        vals = list(raw)
    else:
        vals = [raw]
    if not vals:
        raise ConfigError(f"grid.{key}: no values")
    if len({json.dumps(v, sort_keys=True) for v in vals}) != len(vals):
        raise ConfigError(f"grid.{key}: repeated values")
    return vals


def load_sweep(path: str | Path) -> SweepSpec:
    """Read a sweep file, a path or a shipped sweep's name (``smoke``: ``configs/sweeps/smoke.yaml``);
    one-line :class:`~equirl.errors.ConfigError` on any problem."""
    from equirl.assets import find_config

    path = find_config(path, section="sweeps")
    data = load_yaml(path)
    known = {"config", "grid", "timesteps", "eval", "set", "baseline", "scores"}
    extra = sorted(set(data) - known)
    if extra:
        raise ConfigError(
            f"{path}: unknown sweep keys {', '.join(extra)} (known: {', '.join(sorted(known))})"
        )
    bases = _bases(path, data.get("config"))
    grid_raw = data.get("grid") or {}
    if not isinstance(grid_raw, Mapping):
        raise ConfigError(f"{path}: `grid` must map keys to lists of values")
    grid = {str(k): _values(str(k), v) for k, v in grid_raw.items()}
    if "method" in grid:
        grid["method"] = [canonical_method(str(m)) for m in grid["method"]]
    timesteps = _timesteps(path, "timesteps", data.get("timesteps"))
    for k in ("eval", "set", "scores"):
        if not isinstance(data.get(k) or {}, Mapping):
            raise ConfigError(f"{path}: `{k}` must be a mapping")
    return SweepSpec(
        config=bases,
        grid=grid,
        timesteps=timesteps,
        eval=dict(data.get("eval") or {}),
        set=dict(data.get("set") or {}),
        baseline=canonical_method(str(data.get("baseline", BASE))),
        scores={str(k): dict(v) for k, v in (data.get("scores") or {}).items()},
        source=str(path),
    )


def _timesteps(path: Path | str, key: str, value: Any) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"{path}: {key} must be a positive integer, not {value!r}")
    return value


def _bases(path: Path | str, raw: Any) -> str | list[SweepBase]:
    """``config`` of a sweep file: one name / path, or a list of entries (see the module docstring)."""
    need = f"{path}: `config` (a run config's shipped name or path, or a list of them) is required"
    if isinstance(raw, str):
        return raw
    if not isinstance(raw, list) or not raw:
        raise ConfigError(need)
    bases = []
    for i, entry in enumerate(raw):
        if isinstance(entry, str):
            bases.append(SweepBase(entry))
            continue
        where = f"{path}: config[{i}]"
        if not isinstance(entry, Mapping) or not isinstance(entry.get("config"), str):
            raise ConfigError(f"{where} must be a config name / path or a mapping with a `config` key")
        extra = sorted(set(entry) - {"config", "timesteps", "eval", "set", "label"})
        if extra:
            raise ConfigError(
                f"{where}: unknown keys {', '.join(extra)} (known: config, eval, label, set, timesteps)"
            )
        if entry.get("label") is not None and not (isinstance(entry["label"], str) and entry["label"]):
            raise ConfigError(f"{where}.label must be a non-empty string")
        for k in ("eval", "set"):
            if not isinstance(entry.get(k) or {}, Mapping):
                raise ConfigError(f"{where}.{k} must be a mapping")
        bases.append(
            SweepBase(
                entry["config"],
                _timesteps(where, "timesteps", entry.get("timesteps")),
                dict(entry.get("eval") or {}),
                dict(entry.get("set") or {}),
                entry.get("label"),
            )
        )
    return bases


def sweep_bases(spec: SweepSpec) -> list[SweepBase]:
    """The sweep's base configs, each with the sweep-wide budget / evaluation / overrides merged in."""
    entries = [SweepBase(spec.config)] if isinstance(spec.config, str) else spec.config
    return [
        SweepBase(
            b.config,
            b.timesteps if b.timesteps is not None else spec.timesteps,
            {**spec.eval, **b.eval},
            {**spec.set, **b.set},
            b.label,
        )
        for b in entries
    ]


@dataclass
class Trial:
    """One grid point.

    :param name: the stable trial name ``{env}__{exp}__{seed}`` (the run directory's prefix).
    :param exp: the method plus the other grid values.
    :param variant: the grid values other than env / method / seed (``""``: none).
    :param point: the grid point (key -> value).
    :param cfg: the resolved run config.
    """

    name: str
    env: str
    method: str
    seed: int
    exp: str
    variant: str
    point: dict[str, Any]
    cfg: RLConfig


def _label(key: str, value: Any) -> str:
    return f"{key}-{value if isinstance(value, (str, int, float)) else json.dumps(value)}"


def _resolve_base(config: str, source: str | None) -> str:
    p = Path(config)
    if p.is_file():
        return str(p.resolve())
    if source is not None and not p.is_absolute():
        q = Path(source).parent / p
        if q.is_file():
            return str(q.resolve())
    return config  # a shipped name (load_rl_config resolves it, or says it does not exist)


def _absolute(path: str | None) -> str | None:
    """A relative path that exists from here, made absolute (Ray workers may run elsewhere)."""
    if path and Path(path).exists() and not Path(path).is_absolute():
        return str(Path(path).resolve())
    return path


def expand_trials(spec: SweepSpec, out: str | Path) -> list[Trial]:
    """Every grid point as a :class:`Trial` with its validated config (``out``: the sweep folder)."""
    import itertools

    keys = list(spec.grid)
    trials: list[Trial] = []
    for b, combo in itertools.product(sweep_bases(spec), itertools.product(*(spec.grid[k] for k in keys))):
        base = _resolve_base(b.config, spec.source)
        fixed = [f"{k}={json.dumps(v)}" for k, v in b.set.items()]
        if b.timesteps is not None:
            fixed.append(f"timesteps={b.timesteps}")
        fixed += [f"eval.{k}={json.dumps(v)}" for k, v in b.eval.items()]
        fixed.append(f"out={json.dumps(str(Path(out).resolve()))}")
        point = dict(zip(keys, combo))
        cfg = load_rl_config(base, [*fixed, *(f"{k}={json.dumps(v)}" for k, v in point.items())])
        cfg = replace(cfg, init_from=_absolute(cfg.init_from), symmetry=_absolute(cfg.symmetry))
        labels = [_slug(b.label)] if b.label else []
        variant = "+".join(labels + [_label(k, point[k]) for k in sorted(point) if k not in _AXES])
        exp = _slug(cfg.method + (f"+{variant}" if variant else ""))
        name = f"{_slug(cfg.env)}__{exp}__{cfg.seed}"
        trials.append(Trial(name, cfg.env, cfg.method, cfg.seed, exp, variant, point, cfg))
    names = [t.name for t in trials]
    if len(set(names)) != len(names):
        raise ConfigError(
            "two grid points give the same trial name (repeated or equivalent values, or two base configs of one env)"
        )
    return trials


def find_trial_dir(out: str | Path, name: str) -> Path | None:
    """The newest run directory of trial ``name`` in ``out`` (``{name}__{time}[-k]``), if any."""
    pat = re.compile(re.escape(name) + r"__\d+(-\d+)?$")
    root = Path(out)
    cands = [d for d in root.iterdir() if d.is_dir() and pat.match(d.name)] if root.is_dir() else []
    cands = [d for d in cands if (d / "run.json").is_file()]
    return max(cands, key=lambda d: (d / "run.json").stat().st_mtime) if cands else None


@dataclass
class TrialOutcome:
    """What happened to one trial in this sweep session.

    :param action: ``skipped`` (already finished), ``ran``, ``resumed`` or ``failed``.
    :param status: the run's status afterwards (``finished``, ``failed``, ``interrupted``...).
    :param error: the failure, one line.
    """

    name: str
    action: str
    status: str
    run_dir: str | None = None
    final_mean: float | None = None
    seconds: float = 0.0
    error: str | None = None


def run_trial(trial: Trial, out: str | Path, callbacks: list[Any] | None = None) -> TrialOutcome:
    """Run, resume or skip one trial (never raises for a failed run: the outcome says ``failed``).

    :param callbacks: extra SB3 callbacks.
    """
    from equirl.rl.train import resume_training, run_training

    t0 = time.perf_counter()
    d = find_trial_dir(out, trial.name)
    action = "ran"
    try:
        if d is not None:
            status = effective_status(read_run(d))
            if status == "finished":
                return TrialOutcome(trial.name, "skipped", status, str(d))
            action = "resumed"
            res = resume_training(d, callbacks=callbacks)
        else:
            res = run_training(trial.cfg, exp_name=trial.exp, callbacks=callbacks)
        return TrialOutcome(
            trial.name, action, "finished", str(res.run_dir), res.final_mean, time.perf_counter() - t0
        )
    except Exception as exc:  # recorded, not fatal to the sweep (Ctrl-C / RunInterrupted still stop it)
        d = find_trial_dir(out, trial.name)
        status = effective_status(read_run(d)) if d is not None else "failed"
        msg = " ".join(str(exc).split())[:300] or type(exc).__name__
        log.warning("trial %s failed: %s", trial.name, msg)
        return TrialOutcome(
            trial.name,
            "failed",
            status if status != "running" else "failed",
            None if d is None else str(d),
            seconds=time.perf_counter() - t0,
            error=f"{type(exc).__name__}: {msg}",
        )


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """torch at one thread for the duration (restored after: the serial executor runs in the caller)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _ray_trial(config: dict[str, Any], trials: list[Trial], out: str) -> None:
    """The Ray Tune trainable: trial ``config["i"]`` in a worker process (torch at one thread there)."""
    import torch
    from ray import tune

    torch.set_num_threads(1)
    outcome = run_trial(trials[int(config["i"])], out)
    tune.report({k: v for k, v in vars(outcome).items() if v is not None})


@dataclass
class SweepResult:
    """A sweep session: the outcome of every trial, in grid order, and its wall time."""

    out: Path
    outcomes: list[TrialOutcome]
    seconds: float
    executor: str

    def count(self, action: str) -> int:
        """How many trials had ``action`` (``skipped``, ``ran``, ``resumed``, ``failed``)."""
        return sum(o.action == action for o in self.outcomes)


def _ray_init(cpus: int | None, address: str | None) -> bool:
    """Connect to ``address`` (a cluster) or start a local Ray with ``cpus`` CPUs (default: all cores),
    unless Ray is up already; trial processes keep their working directory.

    :returns: whether Ray was started here (the caller shuts it down then).
    """
    try:
        import ray
    except ImportError:
        raise EquirlError('Ray is not installed: pip install "equirl[dist]" (or --executor serial)') from None
    if ray.is_initialized():
        return False
    runtime_env = {"env_vars": {"RAY_CHDIR_TO_TRIAL_DIR": "0", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}}
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
    else:
        ray.init(
            num_cpus=cpus or os.cpu_count() or 1,
            include_dashboard=False,
            runtime_env=runtime_env,
            log_to_driver=False,
        )
    return True


#: set in this process while a sweep runs on Ray (restored after): usage statistics would try the
#: network. (Tune's result loggers stay on in the driver: its result grid reads their files.)
_RAY_DRIVER_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}


@contextlib.contextmanager
def _driver_env(address: str | None = None) -> Iterator[None]:
    """:data:`_RAY_DRIVER_ENV` for the duration, where the user has not set the variables. With an
    ``address`` also ``RAY_AUTH_MODE=token``: ``ray start`` (Ray >= 2.5x) turns token authentication on
    for a cluster, and a driver only sends its token (``~/.ray/auth_token``, ``$RAY_AUTH_TOKEN``) when
    that variable says so; a cluster without authentication accepts such a driver too."""
    wanted = {**_RAY_DRIVER_ENV, **({"RAY_AUTH_MODE": "token"} if address else {})}
    added = {k: v for k, v in wanted.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def _run_ray(trials: list[Trial], out: Path, cpus: int | None, address: str | None) -> list[TrialOutcome]:
    with _driver_env(address):
        return _run_tune(trials, out, cpus, address)


def _run_tune(trials: list[Trial], out: Path, cpus: int | None, address: str | None) -> list[TrialOutcome]:
    import ray
    from ray import tune

    started = _ray_init(cpus, address)
    try:
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(_ray_trial, trials=trials, out=str(out)), {"cpu": 1}),
            param_space={"i": tune.grid_search(list(range(len(trials))))},
            tune_config=tune.TuneConfig(
                reuse_actors=True,  # one worker process per CPU: torch / SB3 imported once, not per trial
                trial_name_creator=lambda tr: trials[int(tr.config["i"])].name,
                trial_dirname_creator=lambda tr: f"{trials[int(tr.config['i'])].name}_{tr.trial_id}",
            ),
            run_config=tune.RunConfig(
                name=f"tune-{int(time.time())}",
                storage_path=str(out / ".tune"),
                verbose=0,
                failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
            ),
        )
        grid = tuner.fit()
        by_name: dict[str, TrialOutcome] = {}
        for k in range(len(grid)):
            r = grid[k]
            m = r.metrics or {}
            i = (r.config or {}).get("i")
            if "name" in m and "action" in m:
                fields = {k: m[k] for k in TrialOutcome.__dataclass_fields__ if k in m}
                by_name[m["name"]] = TrialOutcome(**fields)
            elif i is not None:  # the worker itself died (out of memory, killed)
                t = trials[int(i)]
                err = f"{type(r.error).__name__}: {r.error}" if r.error is not None else "no result"
                by_name[t.name] = TrialOutcome(t.name, "failed", "failed", error=err[:300])
        return [
            by_name.get(t.name) or TrialOutcome(t.name, "failed", "failed", error="no result from Ray")
            for t in trials
        ]
    finally:
        if started:
            ray.shutdown()


def run_sweep(
    spec: SweepSpec,
    out: str | Path,
    executor: str = "ray",
    cpus: int | None = None,
    address: str | None = None,
    on_trial: Callable[[TrialOutcome], None] | None = None,
) -> SweepResult:
    """Run every trial of ``spec`` into ``out`` (resumable: see the module docstring) and write
    ``out/sweep.json`` (the sweep, its trials and this session's outcomes).

    :param executor: ``ray`` or ``serial``.
    :param cpus: CPUs of the local Ray instance (default: all cores); one trial per CPU.
    :param address: a running Ray cluster (``auto``; default ``$RAY_ADDRESS``, else a local instance).
    :param on_trial: called with each outcome (serial executor only: Ray reports at the end).
    """
    if executor not in _EXECUTORS:
        raise ConfigError(f"executor must be one of {', '.join(_EXECUTORS)}, not {executor!r}")
    out = Path(out).resolve()
    trials = expand_trials(spec, out)  # validation errors before anything runs
    out.mkdir(parents=True, exist_ok=True)
    manifest = {
        "sweep": asdict(spec),
        "trials": [
            {
                "name": t.name,
                "env": t.env,
                "method": t.method,
                "seed": t.seed,
                "exp": t.exp,
                "variant": t.variant,
                "point": t.point,
                "timesteps": t.cfg.timesteps,
            }
            for t in trials
        ],
    }
    write_json(out / "sweep.json", manifest)
    t0 = time.perf_counter()
    done: dict[str, TrialOutcome] = {}
    for t in trials:  # finished trials are skipped here, without starting anything
        d = find_trial_dir(out, t.name)
        if d is not None and effective_status(read_run(d)) == "finished":
            done[t.name] = TrialOutcome(t.name, "skipped", "finished", str(d))
    todo = [t for t in trials if t.name not in done]
    log.info("sweep %s: %d trials, %d finished already", out, len(trials), len(done))
    if not todo:
        outcomes = [done[t.name] for t in trials]
    elif executor == "serial":
        outcomes = []
        with _one_thread():
            for t in trials:
                o = done.get(t.name) or run_trial(t, out)
                outcomes.append(o)
                if on_trial is not None:
                    on_trial(o)
    else:
        ran = _run_ray(todo, out, cpus, address or os.environ.get("RAY_ADDRESS") or None)
        by_name = {**done, **{o.name: o for o in ran}}
        outcomes = [by_name[t.name] for t in trials]
    seconds = time.perf_counter() - t0
    manifest["last_session"] = {
        "executor": executor,
        "seconds": seconds,
        "outcomes": [vars(o) for o in outcomes],
    }
    write_json(out / "sweep.json", manifest)
    return SweepResult(out, outcomes, seconds, executor)


def dump_spec(spec: SweepSpec) -> str:
    """The sweep as YAML (for logs)."""
    return yaml.safe_dump({k: v for k, v in asdict(spec).items() if k != "source"}, sort_keys=False)
