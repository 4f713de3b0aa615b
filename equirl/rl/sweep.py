"""Sweeps: a grid of ordinary equirl runs (env x method x seed x any config key), run by Ray Tune.

A sweep file (YAML)::

    config: dqn-CartPole-v1        # the base run config: a shipped name or a path (relative: to the sweep file, else cwd)
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
      CartPole-v1: {min: 0, max: 500, threshold: 475}   # the env spec's scores)

``config`` may also be a list: one base config per entry (typically one per env, each with its own
hyperparameters), each entry a name / path or a mapping ``{config, timesteps, eval, set, label}`` whose
values override the sweep-wide ones for that entry (``label`` names the entry's trials, to tell apart two
entries of one env); the grid is crossed with every entry::

    config:
      - {config: dqn-CartPole-v1, timesteps: 30000}
      - {config: dqn-Acrobot-v1, timesteps: 20000, set: {hyperparams.gradient_steps: 1}}

Every grid point is a *trial*: an ordinary run (:func:`equirl.rl.train.run_training`) into the sweep's
output folder, in the usual run-directory layout, named ``{env}__{exp}__{seed}__{time}`` where ``exp`` is
the method plus the other grid values (``equitune+hyperparams.learning_rate-0.001``). ``{env}__{exp}__{seed}``
is the trial's stable name. A sweep expands to at most :data:`MAX_TRIALS` trials (counted before anything
is expanded).

Each trial also has a *fingerprint*: the SHA-256 of the canonical JSON of its resolved run config (every
key but ``out``). A run directory's fingerprint is the one its sweep recorded in it
(``sweep_trial.json``), else the one of its ``config.yaml``. A sweep run again into the same folder
finds, per trial, the newest run directory of that name *with the trial's fingerprint*: it skips it when
finished and resumes it (:func:`equirl.rl.train.resume_training`) when interrupted / stale / failed. A
trial whose settings changed (another budget, hyperparameter, base config...) matches no directory: it
runs anew, into a new run directory beside the old ones, which are never touched, resumed or reported
(:func:`equirl.rl.sweep_report.sweep_report` aggregates only the run directories whose fingerprint is a
trial's of the current ``sweep.json``). A trial that fails is recorded (``sweep.json``, the summary),
never fatal to the sweep.

``sweep.json`` keeps the history: it holds the current sweep (its settings, its fingerprint, its trials
with theirs, the last session's outcomes) and, under ``history``, every earlier sweep run into the folder
with other settings (appended, oldest first, with the time it was replaced). A ``sweep.json`` that cannot be
read is never overwritten: the sweep refuses, with one line.

Executors: ``ray`` (Ray Tune; one CPU per trial, torch at one thread inside each trial; local by default,
a running cluster with ``address="auto"`` or ``$RAY_ADDRESS``) or ``serial`` (the trials one after another
in this process: tests, and the baseline of the wall-time comparison).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml

from equirl.config import FieldError, Range, from_dict, load_yaml, parse_yaml, to_dict
from equirl.errors import CheckpointError, ConfigError, EquirlError
from equirl.registry import BASE, canonical_method
from equirl.rl.config import MAX_TIMESTEPS, RLConfig, load_rl_config
from equirl.rl.lifecycle import effective_status, read_run
from equirl.rl.spec import Score, load_spec
from equirl.rl.zoo import absolute_agent_path
from equirl.utils.io import check_output_path, finite_or_none, printable, read_json, write_json

__all__ = [
    "MAX_TRIALS",
    "Score",
    "SweepBase",
    "SweepBaseEntry",
    "SweepFile",
    "SweepResult",
    "SweepSpec",
    "Trial",
    "TrialOutcome",
    "check_ray_address",
    "check_scores",
    "expand_trials",
    "find_trial_dir",
    "load_sweep",
    "read_manifest",
    "run_fingerprint",
    "run_sweep",
    "run_trial",
    "sweep_bases",
    "sweep_fingerprint",
    "trial_dirs",
    "trial_fingerprint",
]

log = logging.getLogger(__name__)

#: grid keys with a meaning of their own (every other key is a dotted config key)
_AXES = ("env", "method", "seed")
_EXECUTORS = ("ray", "serial")
#: the most trials a sweep may expand to (checked arithmetically, before anything is expanded)
MAX_TRIALS = 10_000
#: seconds to wait for a Ray cluster (``--address``) to answer
RAY_CONNECT_TIMEOUT = 20.0
#: written into every run directory a sweep trial ran in: the trial's name and fingerprint
TRIAL_FILE = "sweep_trial.json"

_S = TypeVar("_S")


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", s).strip("-") or "x"


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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


# -- the sweep file's schema ------------------------------------------------------------------------
# Types and bounds are declared in the annotations and checked by equirl.config.from_dict (one line per
# error, naming the dotted key); what no type can say (grid values and ranges, the trial cap, method
# names, min < max) is checked in __post_init__, and what needs the base configs in load_sweep.

#: a trial budget: a positive number of env steps (at most the run config's own limit)
Timesteps = Annotated[int, Range(ge=1, le=MAX_TIMESTEPS)]


@dataclass(frozen=True)
class SweepBaseEntry:
    """One mapping entry of a sweep file's ``config`` list (see :class:`SweepBase`); ``None`` for
    ``eval`` / ``set`` is read as empty."""

    config: str
    timesteps: Timesteps | None = None
    eval: dict[str, Any] | None = None
    set: dict[str, Any] | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        if not self.config.strip():
            raise FieldError("config", self.config, "must name a run config (a shipped name or a path)")
        if self.label is not None and not self.label:
            raise FieldError("label", self.label, "must be a non-empty string (or left out)")

    def base(self) -> SweepBase:
        return SweepBase(self.config, self.timesteps, dict(self.eval or {}), dict(self.set or {}), self.label)


@dataclass(frozen=True)
class SweepFile:
    """A sweep file as written (see the module docstring). ``__post_init__`` resolves it: ``config``
    becomes the name or a list of :class:`SweepBase`, ``grid`` key -> list of values (ranges expanded,
    after their length and the grid's trial count are checked arithmetically against
    :data:`MAX_TRIALS`), method names canonical, ``scores`` env -> ``{min, max, threshold}`` floats.
    ``None`` for ``grid`` / ``eval`` / ``set`` / ``scores`` is read as empty."""

    config: str | list[Any]
    grid: dict[str, Any] | None = None
    timesteps: Timesteps | None = None
    eval: dict[str, Any] | None = None
    set: dict[str, Any] | None = None
    baseline: str = BASE
    scores: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "config", _bases(self.config))
        grid = {str(k): _values(str(k), v) for k, v in (self.grid or {}).items()}
        _check_count(self.config, grid)  # before anything else is resolved
        if "method" in grid:
            grid["method"] = [_method("grid.method", m) for m in grid["method"]]
        object.__setattr__(self, "grid", grid)
        object.__setattr__(self, "baseline", _method("baseline", self.baseline))
        object.__setattr__(self, "scores", _scores(self.scores))


def _entry(cls: type[_S], data: Any, where: str) -> _S:
    """``from_dict(cls, data, where)`` for one entry of a list or mapping; a missing key is named with
    the entry (``config[0]: missing required key: config``)."""
    try:
        return from_dict(cls, data, where)
    except FieldError:
        raise
    except ConfigError as exc:
        msg = str(exc)
        if msg.startswith("missing required key") and f"{where}." not in msg:
            raise ConfigError(f"{where}: {msg}") from None
        raise


def _method(key: str, name: Any) -> str:
    """A method name (or alias) made canonical; one line naming ``key`` otherwise."""
    try:
        return canonical_method(str(name))
    except ConfigError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _values(key: str, raw: Any) -> list[Any]:
    key = printable(key, 100)  # for messages: the key comes from the file
    if isinstance(raw, Mapping) and set(raw) == {"range"}:
        r = raw["range"]
        if not (isinstance(r, list) and 1 <= len(r) <= 3 and all(_is_int(v) for v in r)):
            raise ConfigError(
                f"grid.{key}: range must be [stop], [start, stop] or [start, stop, step] integers"
            )
        if len(r) == 3 and r[2] == 0:
            raise ConfigError(f"grid.{key}: the step of range {r} must not be 0")
        try:  # a range's length is arithmetic: nothing is expanded before the count is checked
            n = len(range(*r))
        except OverflowError:
            n = MAX_TRIALS + 1
        if n > MAX_TRIALS:
            raise ConfigError(
                f"grid.{key}: range {r} gives {n:,} values; a sweep has at most {MAX_TRIALS:,} trials"
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


def _scores(scores: Any) -> dict[str, dict[str, float]]:
    """``scores`` of a sweep: env -> :class:`Score` (as plain floats); ``None`` is empty."""
    if scores is None:
        return {}
    if not isinstance(scores, Mapping):
        raise ConfigError(
            f"scores: expected a mapping of env ids to {{min, max, threshold}}, got {printable(repr(scores), 100)}"
        )
    return {str(env): asdict(_entry(Score, s, f"scores.{printable(env, 100)}")) for env, s in scores.items()}


def check_scores(scores: Any, where: str) -> dict[str, dict[str, float]]:
    """A sweep's ``scores`` (of a sweep file, its ``sweep.json`` or the report's options): per env a
    :class:`Score` (finite ``min``, ``max``, ``threshold`` with ``min < max``), as plain floats; one-line
    :class:`~equirl.errors.ConfigError` naming ``where`` and the dotted key otherwise."""
    try:
        return _scores(scores)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {printable(exc, 1000)}") from None


def load_sweep(path: str | Path) -> SweepSpec:
    """Read a sweep file, a path or a shipped sweep's name (``smoke``: ``configs/sweeps/smoke.yaml``),
    through the :class:`SweepFile` schema; one-line :class:`~equirl.errors.ConfigError` naming the file
    and the dotted key on any problem: unknown keys, wrong types, values out of range, ``scores`` with
    ``min >= max``, a ``baseline`` that is none of the sweep's methods, more than :data:`MAX_TRIALS`
    trials (counted before anything is expanded). The file is read by :func:`equirl.config.load_yaml`
    only (strict YAML: size, depth and alias limits)."""
    from equirl.assets import find_config

    path = find_config(path, section="sweeps")
    data = load_yaml(path)  # the strict loader bounds size, depth and alias expansion
    try:
        sweep = from_dict(SweepFile, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {printable(exc, 1000)}") from None
    spec = SweepSpec(
        config=sweep.config,
        grid=sweep.grid or {},
        timesteps=sweep.timesteps,
        eval=dict(sweep.eval or {}),
        set=dict(sweep.set or {}),
        baseline=sweep.baseline,
        scores=sweep.scores or {},
        source=str(path),
    )
    if "baseline" in data:
        methods = _methods(spec)
        if spec.baseline not in methods:
            raise ConfigError(
                f"{path}: baseline {spec.baseline} is not a method of the sweep, so nothing would be "
                f"compared with it (the sweep's methods: {', '.join(methods)})"
            )
    return spec


def _methods(spec: SweepSpec) -> list[str]:
    """The methods of a sweep's trials: the grid's ``method`` values, else those of its base configs."""
    if "method" in spec.grid:
        return [str(m) for m in spec.grid["method"]]
    methods = []
    for b in sweep_bases(spec):
        fixed = [f"{k}={json.dumps(v)}" for k, v in b.set.items()]
        m = load_rl_config(_resolve_base(b.config, spec.source), fixed).method
        if m not in methods:
            methods.append(m)
    return methods


def _bases(raw: str | list[Any]) -> str | list[SweepBase]:
    """``config`` of a sweep file: one name / path, or a list of entries, each a name / path or a
    :class:`SweepBaseEntry` mapping (see the module docstring)."""
    if isinstance(raw, str):
        if not raw.strip():
            raise FieldError("config", raw, "must name a run config (a shipped name or a path)")
        return raw
    if not raw:
        raise FieldError("config", raw, "must list at least one base config (a shipped name or a path)")
    bases = []
    for i, entry in enumerate(raw):
        if isinstance(entry, str):
            bases.append(_entry(SweepBaseEntry, {"config": entry}, f"config[{i}]").base())
        elif isinstance(entry, Mapping):
            bases.append(_entry(SweepBaseEntry, entry, f"config[{i}]").base())
        else:
            raise ConfigError(
                f"config[{i}]: expected a run config's name / path or a mapping with a config key, "
                f"got {printable(repr(entry), 100)}"
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
    :param fingerprint: :func:`trial_fingerprint` of ``cfg`` (set by :func:`expand_trials`).
    """

    name: str
    env: str
    method: str
    seed: int
    exp: str
    variant: str
    point: dict[str, Any]
    cfg: RLConfig
    fingerprint: str = ""


def _fingerprint(data: Any) -> str:
    """SHA-256 of the canonical JSON of a run config as plain data (every key but ``out``)."""
    if isinstance(data, Mapping):
        data = {k: v for k, v in data.items() if k != "out"}
    text = json.dumps(
        finite_or_none(data), sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str
    )  # keys as text: a crafted config.yaml with int and str keys cannot break the sort
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def trial_fingerprint(cfg: RLConfig) -> str:
    """The fingerprint of a resolved run config: SHA-256 of its canonical JSON without ``out`` (read
    back through YAML, as a run directory's ``config.yaml`` is, so both give the same digest)."""
    return _fingerprint(parse_yaml(yaml.safe_dump(to_dict(cfg), sort_keys=False), "run config"))


def run_fingerprint(run_dir: str | Path) -> str | None:
    """The fingerprint of a run directory: the one a sweep recorded in it (:data:`TRIAL_FILE`), else
    that of its ``config.yaml``; ``None`` when neither can be read."""
    d = Path(run_dir)
    if (d / TRIAL_FILE).is_file():
        try:
            fp = read_json(d / TRIAL_FILE, "sweep trial record").get("fingerprint")
        except (ConfigError, AttributeError):
            fp = None
        if isinstance(fp, str) and re.fullmatch(r"[0-9a-f]{64}", fp):
            return fp
    try:
        return _fingerprint(load_yaml(d / "config.yaml"))
    except ConfigError:
        return None


def _check_count(config: str | list[SweepBase], grid: Mapping[str, list[Any]], where: str = "") -> None:
    """Refuse a sweep of more than :data:`MAX_TRIALS` trials (the count is a product: nothing expanded)."""
    total = (1 if isinstance(config, str) else len(config)) * math.prod(len(v) for v in grid.values())
    if total > MAX_TRIALS:
        raise ConfigError(f"{where}the grid gives {total:,} trials; a sweep has at most {MAX_TRIALS:,}")


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
    """Every grid point as a :class:`Trial` with its validated config and fingerprint (``out``: the
    sweep folder); at most :data:`MAX_TRIALS`, counted before anything is expanded."""
    import itertools

    _check_count(spec.config, spec.grid)
    keys = list(spec.grid)
    trials: list[Trial] = []
    for b in sweep_bases(spec):  # an override the sweep's own value would silently replace
        for k in b.set:
            why = (
                "the sweep sets it from --out"
                if k == "out"
                else "the grid sets it"
                if k in spec.grid
                else "the sweep's timesteps set it"
                if k == "timesteps" and b.timesteps is not None
                else "the eval section sets it"
                if k.startswith("eval.") and k[5:] in b.eval
                else None
            )
            if why is not None:
                raise ConfigError(f"{spec.source}: set.{printable(k, 80)} would be ignored: {why}")
    for b, combo in itertools.product(sweep_bases(spec), itertools.product(*(spec.grid[k] for k in keys))):
        base = _resolve_base(b.config, spec.source)
        fixed = [f"{k}={json.dumps(v)}" for k, v in b.set.items()]
        if b.timesteps is not None:
            fixed.append(f"timesteps={b.timesteps}")
        fixed += [f"eval.{k}={json.dumps(v)}" for k, v in b.eval.items()]
        fixed.append(f"out={json.dumps(str(Path(out).resolve()))}")
        point = dict(zip(keys, combo))
        try:
            cfg = load_rl_config(base, [*fixed, *(f"{k}={json.dumps(v)}" for k, v in point.items())])
        except ConfigError as exc:  # which sweep and which grid point, not only the key
            where = ", ".join(f"{k}={json.dumps(v)}" for k, v in point.items())
            raise ConfigError(
                f"{spec.source}: grid point {printable(where, 200)}: {printable(exc, 600)}"
            ) from None
        # init_from as run_training stores it (a shipped agents/... name resolved), so a trial's fingerprint
        # matches its run's config.yaml; the symmetry file made absolute for Ray workers elsewhere
        cfg = replace(cfg, init_from=absolute_agent_path(cfg.init_from), symmetry=_absolute(cfg.symmetry))
        labels = [_slug(b.label)] if b.label else []
        variant = "+".join(labels + [_label(k, point[k]) for k in sorted(point) if k not in _AXES])
        exp = _slug(cfg.method + (f"+{variant}" if variant else ""))
        name = f"{_slug(cfg.env)}__{exp}__{cfg.seed}"
        trials.append(
            Trial(name, cfg.env, cfg.method, cfg.seed, exp, variant, point, cfg, trial_fingerprint(cfg))
        )
    for sym in dict.fromkeys(t.cfg.symmetry or t.env for t in trials):  # unknown envs: before anything runs
        load_spec(sym)
    seen: dict[str, Trial] = {}
    for t in trials:
        if t.name in seen:
            pts = [", ".join(f"{k}={json.dumps(v)}" for k, v in x.point.items()) for x in (seen[t.name], t)]
            raise ConfigError(
                f"{spec.source}: two grid points give the same trial {t.name} ({printable(pts[0], 150)} and "
                f"{printable(pts[1], 150)}: repeated or equivalent values, or two base configs of one env)"
            )
        seen[t.name] = t
    return trials


def trial_dirs(out: str | Path, name: str) -> list[Path]:
    """The run directories of trial ``name`` in ``out`` (``{name}__{time}[-k]`` holding a ``run.json``),
    oldest first (by ``run.json``'s modification time)."""
    pat = re.compile(re.escape(name) + r"__\d+(-\d+)?$")
    root = Path(out)
    cands = [d for d in root.iterdir() if d.is_dir() and pat.match(d.name)] if root.is_dir() else []
    cands = [d for d in cands if (d / "run.json").is_file() and not d.is_symlink()]
    return sorted(cands, key=lambda d: ((d / "run.json").stat().st_mtime, d.name))


def find_trial_dir(out: str | Path, name: str, fingerprint: str | None = None) -> Path | None:
    """The newest run directory of trial ``name`` in ``out`` (``{name}__{time}[-k]``), if any; with a
    ``fingerprint``, the newest whose :func:`run_fingerprint` is that one (a directory of the same name
    run with other settings is not this trial's)."""
    cands = trial_dirs(out, name)
    if fingerprint is not None:
        cands = [d for d in cands if run_fingerprint(d) == fingerprint]
    return cands[-1] if cands else None


def _status(d: Path) -> str:
    """The effective status of run directory ``d`` (``unreadable``: its ``run.json`` is corrupt)."""
    try:
        return effective_status(read_run(d), d)
    except (CheckpointError, ConfigError):
        return "unreadable"


def _record_trial(d: Path, trial: Trial) -> None:
    """Write :data:`TRIAL_FILE` into the trial's run directory (once; a failure is only logged)."""
    if not trial.fingerprint or (d / TRIAL_FILE).exists():
        return
    try:
        write_json(d / TRIAL_FILE, {"trial": trial.name, "fingerprint": trial.fingerprint})
    except OSError as exc:
        log.warning("could not write %s: %s", d / TRIAL_FILE, exc)


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

    The trial's run directory is the newest of its name *and fingerprint*
    (:func:`find_trial_dir`): a directory of the same name with other settings is left alone and the
    trial runs anew, into a new directory.

    :param callbacks: extra SB3 callbacks.
    """
    from equirl.rl.train import resume_training, run_training

    t0 = time.perf_counter()
    fp = trial.fingerprint or None
    d = find_trial_dir(out, trial.name, fp)
    action = "ran"
    try:
        if d is not None:
            status = _status(d)
            if status == "finished":
                return TrialOutcome(trial.name, "skipped", status, str(d))
            action = "resumed"
            res = resume_training(d, callbacks=callbacks)
        else:
            res = run_training(trial.cfg, exp_name=trial.exp, callbacks=callbacks)
            _record_trial(Path(res.run_dir), trial)
        return TrialOutcome(
            trial.name, action, "finished", str(res.run_dir), res.final_mean, time.perf_counter() - t0
        )
    except Exception as exc:  # recorded, not fatal to the sweep (Ctrl-C / RunInterrupted still stop it)
        d = find_trial_dir(out, trial.name, fp)
        status = _status(d) if d is not None else "failed"
        msg = " ".join(str(exc).split())[:300] or type(exc).__name__
        log.warning("trial %s failed: %s", trial.name, msg)
        return TrialOutcome(
            trial.name,
            "failed",
            status if status not in ("running", "finished") else "failed",
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
    """A sweep session: the outcome of every trial, in grid order, and its wall time.

    :param changed: the trials whose earlier run directories were run with other settings (they ran
        anew, beside those directories, which were left alone).
    """

    out: Path
    outcomes: list[TrialOutcome]
    seconds: float
    executor: str
    changed: list[str] = field(default_factory=list)

    def count(self, action: str) -> int:
        """How many trials had ``action`` (``skipped``, ``ran``, ``resumed``, ``failed``)."""
        return sum(o.action == action for o in self.outcomes)


def _first_line(exc: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", str(exc)).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return printable(lines[0] if lines else type(exc).__name__, 200)


def _cluster_endpoint(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a Ray cluster address (``auto``: the running cluster Ray's own files name;
    ``ray://host:port``: the Ray client server); ``None`` when it cannot be worked out here (Ray then
    says what is wrong).

    :raises EquirlError: ``auto`` and no cluster is running.
    """
    import ray._private.services as services
    from ray._common.network_utils import parse_address

    addr = address.removeprefix("ray://")
    if address == "auto":
        try:
            addr = services.canonicalize_bootstrap_address_or_die("auto")
        except (ConnectionError, ValueError) as exc:
            raise EquirlError(
                f"--address auto: no running Ray cluster found ({_first_line(exc)}); start one with "
                "`ray start --head`, or give HOST:PORT"
            ) from None
    parsed = parse_address(addr)
    if parsed is None or not parsed[0] or not parsed[1].isdigit() or not 0 < int(parsed[1]) < 65536:
        raise EquirlError(
            f"--address {printable(address, 100)} is not a Ray cluster address: give HOST:PORT (the head's "
            "GCS port, 6379 by default), ray://HOST:PORT or auto"
        )
    return parsed[0], int(parsed[1])


def check_ray_address(address: str, timeout: float = RAY_CONNECT_TIMEOUT) -> None:
    """Check, before Ray tries (Ray retries a cluster it cannot reach for ever), that the cluster at
    ``address`` accepts a connection within ``timeout`` seconds; one-line :class:`EquirlError` naming
    the address otherwise."""
    import socket

    try:
        endpoint = _cluster_endpoint(address)
    except (ImportError, AttributeError):  # another Ray version: ray.init's own error (caught) then
        return
    if endpoint is None:
        return
    host, port = endpoint
    where = address if address == f"{host}:{port}" else f"{address} ({host}:{port})"
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            speaks_grpc = _speaks_http2(sock, min(timeout, 5.0))
    except TimeoutError:
        raise EquirlError(
            f"cannot reach the Ray cluster at {where}: no answer within {timeout:g} s "
            "(is `ray start --head` running there, and the port open?)"
        ) from None
    except OSError as exc:
        reason = (exc.strerror or str(exc) or type(exc).__name__).lower()
        raise EquirlError(
            f"cannot reach the Ray cluster at {where}: {reason} (is `ray start --head` running there?)"
        ) from None
    if not speaks_grpc:
        raise EquirlError(
            f"{where} answers, but not as a Ray head (it does not speak gRPC): give the head's GCS port "
            "(6379 by default; `ray status` on the head shows it)"
        )


def _speaks_http2(sock: Any, timeout: float) -> bool:
    """Whether the server on ``sock`` answers HTTP/2's connection preface with a SETTINGS frame, as a
    gRPC server (a Ray head's GCS) does; an HTTP/1 or other service does not (Ray would retry it for
    ever)."""
    sock.settimeout(timeout)
    try:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        head = b""
        while len(head) < 9:
            chunk = sock.recv(9 - len(head))
            if not chunk:
                break
            head += chunk
    except OSError:
        return False
    return len(head) == 9 and head[3] == 0x04  # frame type 4: SETTINGS


#: how long connecting the driver to a cluster that accepted the TCP connection may take
RAY_INIT_TIMEOUT = 60.0


def _init_within(init: Callable[[], Any], address: str, timeout: float | None = None) -> None:
    """Run ``init`` (``ray.init`` to a cluster) in a thread, waiting at most ``timeout`` seconds: a
    service that accepts connections but is not a Ray head makes Ray retry for ever."""
    import threading

    limit = RAY_INIT_TIMEOUT if timeout is None else timeout
    box: dict[str, BaseException] = {}

    def run() -> None:
        try:
            init()
        except BaseException as exc:  # reported below, in the caller's thread
            box["error"] = exc

    th = threading.Thread(target=run, name="equirl-ray-init", daemon=True)
    th.start()
    th.join(limit)
    if th.is_alive():
        raise EquirlError(
            f"no Ray cluster answered at {printable(address, 100)} within {limit:g} s: is that the head's GCS "
            "port (6379 by default; `ray status` on the head shows it)?"
        )
    if "error" in box:  # Ray's errors are tracebacks of several lines
        raise EquirlError(f"cannot connect to the Ray cluster at {address}: {_first_line(box['error'])}")


def _ray_init(cpus: int | None, address: str | None) -> bool:
    """Connect to ``address`` (a cluster, checked first by :func:`check_ray_address`) or start a local
    Ray with ``cpus`` CPUs (default: all cores), unless Ray is up already; trial processes keep their
    working directory.

    A local sweep always starts its own Ray (``address="local"``): never a cluster that ``ray start``
    left named in Ray's temporary folder (``/tmp/ray/ray_current_cluster``), dead or alive.

    :returns: whether Ray was started here (the caller shuts it down then).
    :raises EquirlError: Ray is not installed, the cluster cannot be reached or refuses the driver, or
        the local Ray does not start (one line).
    """
    try:
        import ray
    except ImportError:
        raise EquirlError('Ray is not installed: pip install "equirl[dist]" (or --executor serial)') from None
    if ray.is_initialized():
        return False
    runtime_env = {"env_vars": {"RAY_CHDIR_TO_TRIAL_DIR": "0", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}}
    if address:
        check_ray_address(address)
        _init_within(
            lambda: ray.init(
                address=address, runtime_env=runtime_env, log_to_driver=False, logging_level=logging.ERROR
            ),
            address,
        )
    else:
        try:
            ray.init(
                address="local",
                num_cpus=cpus or os.cpu_count() or 1,
                include_dashboard=False,
                runtime_env=runtime_env,
                log_to_driver=False,
            )
        except Exception as exc:
            raise EquirlError(
                f"cannot start a local Ray (or use --executor serial): {_first_line(exc)}"
            ) from None
    return True


#: set in this process while a sweep runs on Ray (restored after): usage statistics would try the
#: network. (Tune's result loggers stay on in the driver: its result grid reads their files.)
_RAY_DRIVER_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_BACKEND_LOG_LEVEL": "fatal"}


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


def _run_ray(
    trials: list[Trial], out: Path, cpus: int | None, address: str | None, ready: Callable[[], None]
) -> list[TrialOutcome]:
    with _driver_env(address):
        return _run_tune(trials, out, cpus, address, ready)


def _run_tune(
    trials: list[Trial], out: Path, cpus: int | None, address: str | None, ready: Callable[[], None]
) -> list[TrialOutcome]:
    import ray
    from ray import tune

    started = _ray_init(cpus, address)
    try:
        ready()  # the sweep folder is written only once Ray is up
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


def sweep_fingerprint(spec: SweepSpec, trials: list[Trial]) -> str:
    """The fingerprint of a sweep: SHA-256 of its settings (without the file's path) and of its trials'
    names and fingerprints (a base config edited in place changes it too)."""
    settings = {k: v for k, v in asdict(spec).items() if k != "source"}
    return _fingerprint({"sweep": settings, "trials": [[t.name, t.fingerprint] for t in trials]})


def _manifest_entry(t: Trial) -> dict[str, Any]:
    return {
        "name": t.name,
        "env": t.env,
        "method": t.method,
        "seed": t.seed,
        "exp": t.exp,
        "variant": t.variant,
        "point": t.point,
        "timesteps": t.cfg.timesteps,
        "fingerprint": t.fingerprint,
    }


def read_manifest(out: str | Path) -> dict[str, Any] | None:
    """``out/sweep.json`` (``None`` when there is none); one-line :class:`ConfigError` when it cannot be
    read or is not a sweep manifest (it is never overwritten then)."""
    p = Path(out) / "sweep.json"
    if not p.exists():
        return None
    data = read_json(p, "sweep manifest")
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("sweep", {}), dict)
        or not isinstance(data.get("trials", []), list)
        or not all(isinstance(t, dict) and isinstance(t.get("name"), str) for t in data.get("trials", []))
        or not isinstance(data.get("history", []), list)
    ):
        raise ConfigError(
            f"{p} is not a sweep manifest equirl wrote (move it away to start a new sweep there)"
        )
    return data


def run_sweep(
    spec: SweepSpec,
    out: str | Path,
    executor: str = "ray",
    cpus: int | None = None,
    address: str | None = None,
    on_trial: Callable[[TrialOutcome], None] | None = None,
) -> SweepResult:
    """Run every trial of ``spec`` into ``out`` (resumable: see the module docstring) and write
    ``out/sweep.json`` (the sweep, its fingerprint, its trials with theirs, this session's outcomes, and
    under ``history`` every earlier sweep of other settings run into ``out``).

    A trial skips or resumes only a run directory of its own fingerprint; one whose settings changed
    runs anew, into a new directory (the old ones are kept and left out of the report).

    :param executor: ``ray`` or ``serial``.
    :param cpus: CPUs of the local Ray instance (default: all cores); one trial per CPU.
    :param address: a running Ray cluster (``auto``; default ``$RAY_ADDRESS``, else a local instance);
        checked before anything is written (:func:`check_ray_address`).
    :param on_trial: called with each outcome (serial executor only: Ray reports at the end).
    :raises ConfigError: a bad sweep, ``out`` not a writable folder, an unreadable ``sweep.json``.
    :raises EquirlError: the Ray cluster cannot be reached.
    """
    if executor not in _EXECUTORS:
        raise ConfigError(f"executor must be one of {', '.join(_EXECUTORS)}, not {executor!r}")
    if executor == "ray" and importlib.util.find_spec("ray") is None:
        raise ConfigError(
            "sweeps run on Ray, which is not installed: pip install 'equirl[dist]', "
            "or pass --executor serial to run the trials one after another"
        )
    out = check_output_path(Path(out).resolve(), "sweep folder --out")
    trials = expand_trials(spec, out)  # validation errors before anything runs
    old = read_manifest(out)  # an unreadable one: refused before anything is written
    done: dict[str, TrialOutcome] = {}
    changed: list[str] = []
    for t in trials:  # finished trials are skipped here, without starting anything
        d = find_trial_dir(out, t.name, t.fingerprint)
        if d is not None and _status(d) == "finished":
            done[t.name] = TrialOutcome(t.name, "skipped", "finished", str(d))
        elif d is None and trial_dirs(out, t.name):
            changed.append(t.name)
    todo = [t for t in trials if t.name not in done]
    ray_address = address or os.environ.get("RAY_ADDRESS") or None
    if executor == "ray" and todo and ray_address:
        with _driver_env(ray_address):  # Ray reads RAY_AUTH_MODE when first imported
            check_ray_address(ray_address)  # before anything is written
    fingerprint = sweep_fingerprint(spec, trials)
    history = list((old or {}).get("history") or [])
    if old is not None and old.get("fingerprint") != fingerprint:
        history.append(
            {
                **{k: old[k] for k in ("sweep", "fingerprint", "trials", "last_session") if k in old},
                "replaced_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
        )
    if changed:
        log.warning(
            "%d trials of %s were run before with other settings: they run anew (the old run directories "
            "are kept, and left out of the report)",
            len(changed),
            out,
        )
    manifest: dict[str, Any] = {
        "sweep": asdict(spec),
        "fingerprint": fingerprint,
        "trials": [_manifest_entry(t) for t in trials],
        "history": history,
    }

    def commit() -> None:  # nothing is written before every check (and Ray) has passed
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "sweep.json", manifest)

    t0 = time.perf_counter()
    log.info("sweep %s: %d trials, %d finished already", out, len(trials), len(done))
    if not todo:
        commit()
        outcomes = [done[t.name] for t in trials]
    elif executor == "serial":
        commit()
        outcomes = []
        with _one_thread():
            for t in trials:
                o = done.get(t.name) or run_trial(t, out)
                outcomes.append(o)
                if on_trial is not None:
                    on_trial(o)
    else:
        ran = _run_ray(todo, out, cpus, ray_address, commit)
        by_name = {**done, **{o.name: o for o in ran}}
        outcomes = [by_name[t.name] for t in trials]
    seconds = time.perf_counter() - t0
    manifest["last_session"] = {
        "executor": executor,
        "seconds": seconds,
        "changed": changed,
        "outcomes": [vars(o) for o in outcomes],
    }
    write_json(out / "sweep.json", manifest)
    return SweepResult(out, outcomes, seconds, executor, changed)
