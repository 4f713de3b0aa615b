"""Running a config: pretraining, finetuning or training from scratch with a symmetrizer.

Each run writes ``{out}/{env}__{method}__{seed}__{time}/``, visible from its first second, holding
``config.yaml`` (resolved), ``run.json`` (status, steps, best / last evaluation, the resume command: see
:mod:`equirl.rl.lifecycle`), ``checkpoint/`` (periodic checkpoints), ``best_model.zip`` (the best model,
confirmed on fresh episodes at the end: see below), ``model.zip`` (final), optionally
``model_partial.zip``, ``evaluations.npz`` + ``evaluations.json`` and ``tb/`` (TensorBoard + CSV). Every
file is written atomically (temporary file in the same folder, then a rename), so a crash never leaves a half-written model; a failure never deletes a
trained model (when the run directory is unwritable the final model goes to
``$TMPDIR/equirl-rescue-{run}-{pid}.zip`` and the error says so).

SIGINT / SIGTERM during training set a flag: the run checkpoints at the next rollout boundary, records
``interrupted`` and raises :class:`~equirl.errors.RunInterrupted` (a second signal stops at once, with a
best-effort checkpoint). :func:`resume_training` continues a run from its last checkpoint. A NaN / inf
training loss, Q-value or parameter stops the run as ``failed`` (:class:`~equirl.errors.NonFiniteError`)
before anything non-finite is saved.

**The reported best is what ``best_model.zip`` scores.** A periodic evaluation plays ``eval.episodes``
episodes (5 by default), and the maximum over many such evaluations is a lucky draw. So each new best of
the periodic evaluations is also kept as a candidate, ``candidates/best_{step}.zip`` (the last
:data:`N_CANDIDATES`: the best periodic evaluations; listed in the checkpoints, so a resumed run keeps
them), and at the end the candidates and the final model are evaluated again on
``eval.confirm_episodes`` fresh episodes (seed ``seed + 30_000``; the periodic evaluations use
``seed + 10_000``, the final one ``seed + 20_000``). The highest mean wins (a tie keeps the best periodic
evaluation); it becomes ``best_model.zip`` and its confirmed figure is the run's ``best`` (``run.json``,
``evaluations.json``, what ``equirl train`` prints); ``candidates/`` is then removed. With
``eval.confirm_episodes: 0`` ``best_model.zip`` is the best periodic evaluation, as reported.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import os
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from stable_baselines3.common.callbacks import BaseCallback

from equirl.config import to_dict
from equirl.errors import (
    CheckpointError,
    ConfigError,
    NonFiniteError,
    RunFinishedError,
    RunInterrupted,
    RunSaveError,
)
from equirl.registry import AUTO, BASE, get_method
from equirl.rl.algos import get_algo
from equirl.rl.build import attach_training_hooks, build_model, make_train_env
from equirl.rl.callbacks import EquiEvalCallback
from equirl.rl.config import RLConfig, load_rl_config
from equirl.rl.evaluation import make_eval_env
from equirl.rl.lifecycle import (
    AUTO_BUFFER_BYTES,
    LOCK_FILE,
    RunRecord,
    effective_status,
    graceful_stop,
    load_checkpoint,
    nonfinite_reason,
    read_run,
    replay_buffer_bytes,
    restore_rng,
    run_lock,
    save_checkpoint,
)
from equirl.rl.zoo import absolute_agent_path
from equirl.utils.io import (
    atomic_copy,
    atomic_write_stream,
    atomic_write_text,
    check_no_symlinks,
    check_output_path,
    check_writable_tree,
    config_fingerprint,
    printable,
    read_text,
    remove_dir,
    remove_file,
    signing_key,
    trusted_loads,
    write_json,
)
from equirl.utils.progress import status
from equirl.utils.runs import resume_command, run_name, unique_run_dir

__all__ = ["RunResult", "check_run", "resume_training", "run_training"]

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a run produced.

    :param run_dir: the run directory.
    :param final_mean: mean return of the final evaluation (of ``model.zip``).
    :param final_std: its standard deviation.
    :param seconds: wall time of ``learn`` (all sessions of a resumed run).
    :param timesteps: evaluation steps; ``results``: returns per evaluation.
    :param best_mean: the mean return of ``best_model.zip``: over ``best_episodes`` fresh episodes when it
        was confirmed (``eval.confirm_episodes``), else its periodic evaluation's (``None``: no periodic
        evaluation).
    :param best_step: the env step of that model.
    :param steps: env steps done.
    :param best_std: the standard deviation of the confirmed returns (``None``: not confirmed).
    :param best_episodes: the fresh episodes of the confirmation (``None``: not confirmed).
    :param best_eval_mean: the confirmed model's return in its evaluation during the run (periodic, or the
        final one when the final model won), over ``best_eval_episodes`` episodes.
    :param best_is_final: the final model won the confirmation (``best_model.zip`` is ``model.zip``).
    """

    run_dir: Path
    final_mean: float
    final_std: float
    seconds: float
    timesteps: list[int]
    results: list[list[float]]
    best_mean: float | None = None
    best_step: int | None = None
    steps: int = 0
    best_std: float | None = None
    best_episodes: int | None = None
    best_eval_mean: float | None = None
    best_eval_episodes: int | None = None
    best_is_final: bool = False


def check_run(cfg: RLConfig, trust_checkpoint: bool = False) -> str:
    """Everything :func:`run_training` checks before it trains -- the config, the output folder, the env
    and its spec, the agent to finetune, the memory the model and its buffer need -- without training
    or writing anything (``equirl train --dry-run``). ``method: auto`` is checked with ``base`` (its
    zero-shot selection is not run).

    :returns: one line describing the run that would start.
    :raises EquirlError: what :func:`run_training` would refuse, in one line.
    """
    check_output_path(cfg.out, "out")
    signing_key()  # checkpoints are signed: a key that cannot be made fails here, not at every checkpoint
    cfg = replace(cfg, init_from=absolute_agent_path(cfg.init_from))  # config.yaml names it from anywhere
    probe = cfg
    if cfg.method == AUTO:
        if not cfg.init_from:
            raise ConfigError("method auto evaluates the candidates on a pretrained agent: set init_from")
        probe = dataclasses.replace(cfg, method=BASE, method_kwargs={})
    model = build_model(probe, trust_checkpoint=trust_checkpoint)
    params = sum(int(p.numel()) for p in model.policy.parameters())
    model.get_env().close()
    start = f"from {cfg.init_from}" if cfg.init_from else "from scratch"
    return (
        f"ok: {cfg.algo} on {cfg.env}, method {cfg.method}, {cfg.timesteps} steps {start}, "
        f"{params:,} parameters; nothing was trained or written"
    )


def run_training(
    cfg: RLConfig,
    progress_bar: bool = False,
    exp_name: str | None = None,
    command: str = "train",
    callbacks: list[Any] | None = None,
    stop: threading.Event | None = None,
    trust_checkpoint: bool = False,
) -> RunResult:
    """Train per ``cfg`` in a new run directory (see the module docstring).

    Periodic evaluations (``cfg.eval``) go through :class:`~equirl.rl.callbacks.EquiEvalCallback`,
    which keeps ``best_model.zip`` beside the final ``model.zip``.

    :param cfg: the validated config.
    :param progress_bar: show SB3's progress bar (``model.learn(progress_bar=True)``).
    :param exp_name: the ``{exp}`` part of the run name (default: the method).
    :param command: the CLI command that resumes the run (``train`` or ``pretrain``).
    :param callbacks: extra SB3 callbacks, called after equirl's.
    :param stop: an event that, once set, stops the run like SIGINT (checkpoint, ``interrupted``).
    :param trust_checkpoint: let SB3 unpickle ``init_from``'s pickled entries (runs any code they hold).
    :raises RunInterrupted: stopped by SIGINT / SIGTERM / ``stop`` (the checkpoint is written).
    :raises NonFiniteError: NaN / inf in the loss, Q-values or parameters (status ``failed``).
    :raises RunSaveError: the final model could not be written to the run directory.
    """
    check_output_path(cfg.out, "out")
    signing_key()  # checkpoints are signed: a key that cannot be made fails here, not at every checkpoint
    cfg = replace(cfg, init_from=absolute_agent_path(cfg.init_from))  # config.yaml names it from anywhere
    # validation errors happen before any directory exists; method auto resolves first (zero-shot)
    auto_choice = None
    if cfg.method == AUTO:
        from equirl.rl.select import resolve_auto

        cfg, auto_choice = resolve_auto(cfg, trust_checkpoint=trust_checkpoint)
    model = build_model(cfg, trust_checkpoint=trust_checkpoint)
    scorer_fit = _fit_scorer(cfg, model) if get_method(cfg.method).learned_scorer else {}
    root = Path(cfg.out)
    run_dir = unique_run_dir(root, run_name(cfg.env, exp_name or cfg.method, cfg.seed))
    run_dir.mkdir(parents=True)
    cfg_text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    atomic_write_text(run_dir / "config.yaml", cfg_text)
    if cfg.init_from:  # the agent's env recipe and statistics, so the run's models load as they trained
        from equirl.rl.zoo import save_agent_env

        save_agent_env(cfg.init_from, cfg.env, run_dir)
    if auto_choice is not None:
        auto_choice.save(run_dir)
    record = RunRecord(
        run_dir,
        {
            "command": command,
            "resume_command": resume_command(run_dir, command),
            "config_sha256": config_fingerprint(cfg_text),
            "env": cfg.env,
            "method": cfg.method,
            "seed": cfg.seed,
            "steps_done": 0,
            "total_timesteps": cfg.timesteps,
            "best": None,
            "last_eval": None,
            "checkpoint": None,
            "final": None,
        },
    )
    with run_lock(run_dir):  # held while it trains: a `--resume` of it meanwhile is refused
        record.update()
        run = _Run(cfg, run_dir, model, record, stop or threading.Event(), fresh=True)
        run.scorer_fit = scorer_fit
        return run.execute(progress_bar, callbacks or [])


def resume_training(
    run_dir: str | Path,
    progress_bar: bool = False,
    callbacks: list[Any] | None = None,
    stop: threading.Event | None = None,
    trust_checkpoint: bool = False,
) -> RunResult:
    """Continue an interrupted, failed or stale run from its last checkpoint, in the same directory: the
    same step counter, exploration and learning-rate schedules, TensorBoard folder and evaluation
    history; the configured ``timesteps`` are reached once in total.

    :param run_dir: the run directory (holding ``run.json``).
    :param progress_bar: show SB3's progress bar.
    :param callbacks: extra SB3 callbacks.
    :param stop: as for :func:`run_training`.
    :param trust_checkpoint: restore checkpoint files that this user's equirl did not sign (they are
        unpickled: only for run folders you trust).
    :raises RunFinishedError: the run has already finished.
    :raises CheckpointError: not a run directory, the run is still running, its config was edited, or
        its checkpoint is corrupt, unsigned or names paths outside the run (checked before anything is
        written).
    """
    import io as _io

    from equirl.rl.algos import get_algo

    run_dir = Path(run_dir)
    check_no_symlinks(run_dir)

    def refuse_finished(info: dict[str, Any]) -> None:
        if effective_status(info) == "finished":
            raise RunFinishedError(
                f"{run_dir} has already finished ({info.get('steps_done')} of {info.get('total_timesteps')} "
                "steps): nothing to resume"
            )

    refuse_finished(read_run(run_dir))  # a run folder, not finished (before a lock file is made in it)
    locked_before = (run_dir / LOCK_FILE).exists()
    with run_lock(run_dir):  # another process training it is refused here
        info = read_run(run_dir)
        refuse_finished(info)
        status = effective_status(info)
        pid, host = info.get("pid"), info.get("host")
        if status == "running" and not locked_before and isinstance(pid, int) and pid != os.getpid():
            # a run that never had a lock (an older equirl trains it?): the pid is all there is to go by
            raise CheckpointError(
                f"{run_dir} is still running (pid {pid}, without a run lock); stop it first"
            )
        if status == "running" and isinstance(host, str) and host != socket.gethostname():
            raise CheckpointError(
                f"{run_dir} is still running on {printable(str(info.get('host')), 100)} "
                f"(pid {info.get('pid')}); stop it first"
            )
        cfg_text = read_text(run_dir / "config.yaml", "run config")
        stored = info.get("config_sha256")
        if stored is not None and stored != config_fingerprint(cfg_text):
            raise CheckpointError(
                f"{run_dir / 'config.yaml'} was edited after the run started: a resume continues the run as it "
                "was configured; start a new run with `equirl train <config>` instead (nothing was changed)"
            )
        cfg = load_rl_config(run_dir / "config.yaml")
        check_writable_tree(run_dir)
        ckpt = load_checkpoint(run_dir, trust=trust_checkpoint)
        if ckpt is None:  # killed before its first checkpoint: start again, in the same directory
            model = build_model(cfg)
            state: dict[str, Any] = {}
            log.warning("%s has no checkpoint: training again from step 0", run_dir)
        else:
            extra = ckpt.extra or {}
            vec = trusted_loads(extra["env"]) if extra.get("env") is not None else None
            exact = vec is not None
            if vec is None:  # a finetuned agent's env is the one it ran in (wrappers, statistics, frames)
                vec = build_model(cfg, trust_checkpoint=trust_checkpoint).get_env() if cfg.init_from else None
                vec = vec if vec is not None else make_train_env(cfg)
            try:
                model = get_algo(cfg.algo).cls.load(
                    _io.BytesIO(ckpt.model_bytes), env=vec, device="cpu", force_reset=not exact
                )
                if ckpt.replay_buffer is not None:
                    model.load_replay_buffer(_io.BytesIO(ckpt.replay_buffer))
            except Exception as exc:  # a trusted (unpickled) file can fail anywhere: another algorithm's
                # model (no ``q_net``), a corrupt one, one of another env...
                raise CheckpointError(
                    f"cannot restore checkpoint {ckpt.model} (corrupt, or it does not fit a {cfg.algo} run "
                    f"on {cfg.env}): "
                    f"{printable(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, 200)}"
                ) from None
            if get_method(cfg.method).training_baseline:  # its hooks are not saved with the model
                attach_training_hooks(model, cfg)
            if extra.get("rng") is not None:
                restore_rng(model, extra["rng"])
            state = ckpt.state
            if cfg.init_from:  # evaluations make the env the agent ran in (from the run's copy of its recipe)
                from equirl.rl.zoo import read_zoo_folder, remember_env, zoo_env

                recipe = zoo_env(
                    read_zoo_folder(run_dir, cfg.env), cfg.env, trust_checkpoint=trust_checkpoint
                )
                remember_env(model, recipe)
        fields = {k: v for k, v in info.items() if k not in ("pid", "host", "ended_at", "error", "status")}
        resumes = [*fields.pop("resumed_at", []), time.strftime("%Y-%m-%dT%H:%M:%S%z")]
        record = RunRecord(run_dir, {**fields, "resumed_at": resumes})
        record.data["steps_done"] = int(model.num_timesteps)
        run = _Run(cfg, run_dir, model, record, stop or threading.Event(), fresh=ckpt is None)
        run.restore(state, ckpt.step if ckpt else 0, str(ckpt.model) if ckpt else None)
        record.update(status="running")
        if ckpt is None:
            run.scorer_fit = _fit_scorer(cfg, model)
        return run.execute(progress_bar, callbacks or [])


def _fit_scorer(cfg: RLConfig, model: Any) -> dict[str, float]:
    if get_method(cfg.method).learned_scorer and cfg.scorer.steps > 0:
        from equirl.rl.canonical import collect_observations, fit_scorer

        obs = collect_observations(model, cfg.env, cfg.scorer.observations, seed=cfg.seed)
        return fit_scorer(model, obs, cfg.scorer.steps, cfg.scorer.lr, target=cfg.scorer.target)
    return {}


def _configure_logger(tb: Path, tensorboard: bool) -> Any:
    """SB3's logger on ``tb``; an existing ``progress.csv`` (a resumed run) is continued, not truncated
    (TensorBoard starts a new events file in the same folder, which it reads as one run)."""
    from stable_baselines3.common.logger import CSVOutputFormat, configure

    csv = tb / "progress.csv"
    old = csv.read_text(encoding="utf-8") if csv.is_file() else ""
    logger = configure(str(tb), ["csv", "tensorboard"] if tensorboard else ["csv"])
    if old.strip():
        for f in logger.output_formats:
            if isinstance(f, CSVOutputFormat):
                f.file.write(old if old.endswith("\n") else old + "\n")
                f.file.flush()
                f.keys = old.splitlines()[0].split(",")
    return logger


def _eval_summary(step: int | None, mean: float | None) -> dict[str, Any] | None:
    if step is None or mean is None or not np.isfinite(mean):
        return None
    return {"timestep": int(step), "mean_return": float(mean)}


#: how many candidates for ``best_model.zip`` a run keeps: the last new bests of its periodic evaluations
N_CANDIDATES = 3
#: the run directory's folder of candidates (``best_{step}.zip``), removed once the best is confirmed
CANDIDATES_DIR = "candidates"
#: the confirmation's evaluation seed is ``cfg.seed`` plus this (periodic: + 10_000, final: + 20_000)
CONFIRM_SEED_OFFSET = 30_000


def _candidate(entry: Any) -> dict[str, Any] | None:
    """A candidate named in a checkpoint's state, when well formed (its step makes its file name, so a
    crafted state file names no other file)."""
    if not isinstance(entry, dict):
        return None
    step, mean, n = entry.get("timestep"), entry.get("mean_return"), entry.get("episodes")
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < 2**62:
        return None
    if isinstance(mean, bool) or not isinstance(mean, (int, float)) or not np.isfinite(mean):
        return None
    episodes = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None
    return {"timestep": step, "mean_return": float(mean), "episodes": episodes}


class _RunEvalCallback(EquiEvalCallback):
    """The run's periodic evaluation: :class:`~equirl.rl.callbacks.EquiEvalCallback`, which writes
    ``best_model.zip`` at each new best, plus a copy of it in ``candidates/best_{step}.zip``; the last
    ``keep`` copies are kept (the ``keep`` best periodic evaluations) and listed in :meth:`state`, which
    every checkpoint stores.

    :param keep: candidates kept (0: none written).
    """

    def __init__(self, *args: Any, keep: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.keep = max(0, int(keep))
        #: ``{timestep, mean_return, episodes}`` of each kept candidate, oldest (lowest score) first
        self.candidates: list[dict[str, Any]] = []

    def candidate_path(self, step: int) -> Path:
        return Path(str(self.best_dir)) / CANDIDATES_DIR / f"best_{int(step)}.zip"

    def state(self) -> dict[str, Any]:
        return {**super().state(), "candidates": [dict(c) for c in self.candidates]}

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        raw = state.get("candidates")
        found = [c for c in map(_candidate, raw if isinstance(raw, list) else []) if c is not None]
        self.candidates = found[-self.keep :] if self.keep else []

    def prune(self) -> None:
        """Remove the candidate files :attr:`candidates` does not list: those a resumed run wrote after
        the checkpoint it continues from (the run writes them again if it gets there again)."""
        d = Path(str(self.best_dir)) / CANDIDATES_DIR
        if self.best_dir is None or not d.is_dir() or d.is_symlink():
            return
        listed = {self.candidate_path(c["timestep"]).name for c in self.candidates}
        for p in d.glob("best_*.zip"):
            if p.name not in listed:
                remove_file(p)

    def _save_best(self) -> None:
        super()._save_best()
        if self.best_dir is None or self.keep == 0:
            return
        step = int(self.num_timesteps)
        try:
            atomic_copy(Path(str(self.best_dir)) / "best_model.zip", self.candidate_path(step))
        except OSError as exc:
            log.warning("candidate for best_model.zip at step %d not written: %s", step, exc)
            return
        entry = {
            "timestep": step,
            "mean_return": float(self.best_mean_reward),
            "episodes": self.n_eval_episodes,
        }
        self.candidates = [*(c for c in self.candidates if c["timestep"] != step), entry]
        for old in self.candidates[: -self.keep]:
            remove_file(self.candidate_path(old["timestep"]))
        self.candidates = self.candidates[-self.keep :]


@dataclass
class _Run:
    """One training session of a run directory (fresh or resumed)."""

    cfg: RLConfig
    run_dir: Path
    model: Any
    record: RunRecord
    stop: threading.Event
    fresh: bool
    scorer_fit: dict[str, float] = field(default_factory=dict)
    ckpt_step: int = -1
    ckpt_path: str | None = None
    partial_saved: bool = False
    seconds_before: float = 0.0
    halted: bool = False
    eval_state: dict[str, Any] = field(default_factory=dict)
    eval_cb: Any = None

    @property
    def command(self) -> str:
        """Made from the folder's path, never read from ``run.json`` (a copied or edited file)."""
        return resume_command(self.run_dir, self.record.data.get("command"))

    @property
    def save_buffer(self) -> bool:
        flag = self.cfg.checkpoint.replay_buffer
        return replay_buffer_bytes(self.model) <= AUTO_BUFFER_BYTES if flag is None else flag

    def restore(self, state: dict[str, Any], step: int, path: str | None) -> None:
        """Take up a checkpoint's run state (``state.json``'s ``state``: not signed, so checked here).

        :raises CheckpointError: a field of the wrong type (one line naming it).
        """
        try:
            if not isinstance(state, dict):
                raise ValueError(f"it is {type(state).__name__}, not a mapping")
            ev = state.get("eval") or {}
            self.eval_state = EquiEvalCallback.parse_state(ev) if ev else {}
            if ev:  # the candidates' own entries are checked one by one when the callback takes them
                self.eval_state["candidates"] = ev.get("candidates")
            self.partial_saved = bool(state.get("partial_saved", False))
            secs = state.get("train_seconds") or 0.0
            if isinstance(secs, bool) or not isinstance(secs, (int, float)) or not 0 <= secs < float("inf"):
                raise ValueError(f"train_seconds is {printable(repr(secs), 60)}, not a number of seconds")
            self.seconds_before = float(secs)
            fit = state.get("scorer_fit") or {}
            if not isinstance(fit, dict) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in fit.values()
            ):
                raise ValueError("scorer_fit is not a mapping of numbers")
            self.scorer_fit = {str(k): float(v) for k, v in fit.items()}
        except ValueError as exc:
            raise CheckpointError(
                f"{self.run_dir / 'checkpoint' / 'state.json'}: malformed run state ({exc}); "
                "was it edited? (the checkpoint was not resumed)"
            ) from None
        self.ckpt_step, self.ckpt_path = (step, path) if path else (-1, None)

    def state(self, seconds: float) -> dict[str, Any]:
        return {
            "eval": self.eval_cb.state() if self.eval_cb is not None else {},
            "partial_saved": self.partial_saved,
            "train_seconds": seconds,
            "scorer_fit": self.scorer_fit,
        }

    def evals(self) -> dict[str, Any]:
        cb = self.eval_cb
        last = None
        if cb is not None and cb.timesteps:
            last = _eval_summary(cb.timesteps[-1], float(np.mean(cb.results[-1])))
        best = _eval_summary(cb.best_step, cb.best_mean_reward) if cb is not None else None
        return {"best": best, "last_eval": last}

    def nonfinite(self, what: str) -> NonFiniteError:
        """The error for a non-finite ``what`` now (status ``failed`` recorded)."""
        step = int(self.model.num_timesteps)
        where = (
            f"last finite checkpoint: {self.ckpt_path} (step {self.ckpt_step})"
            if self.ckpt_path
            else "no checkpoint was written before"
        )
        msg = f"non-finite {what} at step {step} (lower learning_rate?); {where}"
        self.record.update(status="failed", error=msg, steps_done=step, **self.evals())
        return NonFiniteError(msg)

    def check_finite(self, check_q: bool = True) -> None:
        bad = nonfinite_reason(self.model, check_q=check_q)
        if bad is not None:
            raise self.nonfinite(bad)

    def checkpoint(self, exact: bool, seconds: float) -> None:
        """Write a checkpoint of the current model (its parameters checked first)."""
        self.check_finite()
        path = save_checkpoint(self.model, self.run_dir, self.state(seconds), self.save_buffer, exact)
        self.ckpt_step, self.ckpt_path = int(self.model.num_timesteps), str(path)
        self.record.update(
            steps_done=self.ckpt_step,
            checkpoint={"step": self.ckpt_step, "path": str(path.relative_to(self.run_dir))},
            **self.evals(),
        )

    def _rescue(self, exc: OSError) -> RunSaveError:
        """Save the model outside the run directory after ``exc``; the error names where it went."""
        rescue: Path | None = (
            Path(tempfile.gettempdir()) / f"equirl-rescue-{self.run_dir.name}-{os.getpid()}.zip"
        )
        try:
            atomic_write_stream(str(rescue), self.model.save)
        except OSError:
            rescue = None
        reason = exc.strerror or str(exc)
        if exc.filename:
            reason = f"{reason}: {printable(exc.filename, 200)}"
        where = (
            f"the trained model was saved to {rescue}" if rescue else "the model could not be saved anywhere"
        )
        msg = f"could not write to {self.run_dir} ({reason}); {where}"
        with contextlib.suppress(OSError):  # run.json lives in that folder too
            self.record.update(status="failed", error=msg, steps_done=int(self.model.num_timesteps))
        return RunSaveError(msg)

    def save_model(self, name: str) -> None:
        """Save the model as ``run_dir/name`` atomically, parameters checked (rescued on ``OSError``)."""
        self.check_finite()
        try:
            atomic_write_stream(self.run_dir / name, self.model.save)
        except OSError as exc:
            raise self._rescue(exc) from None

    def execute(self, progress_bar: bool, extra: list[Any]) -> RunResult:
        from stable_baselines3.common.callbacks import CallbackList, StopTrainingOnRewardThreshold

        from equirl.rl.callbacks import EquiLoggingCallback

        cfg, model = self.cfg, self.model
        logger = _configure_logger(self.run_dir / "tb", cfg.log.tensorboard)
        model.set_logger(logger)
        n_envs = cfg.n_envs
        self.eval_cb = _RunEvalCallback(
            make_eval_env(model, cfg.env, seed=cfg.seed + 10_000),  # the env as the model sees it
            # callbacks are called once per step of all n_envs envs: the period in env steps stays eval.freq
            eval_freq=max(1, cfg.eval.freq // n_envs) if cfg.eval.freq else 0,
            n_eval_episodes=cfg.eval.episodes,
            seed=cfg.seed + 10_000,
            method=cfg.method,
            best_model_save_path=str(self.run_dir),
            callback_on_new_best=None
            if cfg.eval.stop_at is None
            else StopTrainingOnRewardThreshold(reward_threshold=float(cfg.eval.stop_at)),
            keep=N_CANDIDATES if cfg.eval.confirm_episodes > 0 else 0,
        )
        logging_cb = EquiLoggingCallback(cfg.log.equi_freq)
        if self.eval_state:
            self.eval_cb.set_state(self.eval_state)
        elif cfg.eval.at_start and cfg.eval.freq > 0 and int(model.num_timesteps) == 0:
            from equirl.rl.evaluation import evaluate

            rets = evaluate(model, cfg.env, n_eval_episodes=cfg.eval.episodes, seed=cfg.seed + 10_000)
            self.eval_cb.evaluations_timesteps.append(0)
            self.eval_cb.evaluations_results.append([float(r) for r in rets])
        self.eval_cb.prune()  # a resumed run: only the candidates its checkpoint lists
        t0 = time.perf_counter()
        cbs = [_RunCallback(self, t0), logging_cb, self.eval_cb]
        if get_method(cfg.method).learned_weights and getattr(model.policy, "freeze_backbone", False):
            from equirl.rl.lambda_fit import BestLambdaCallback  # keeps the best λ of the evaluations

            if cfg.eval.freq > 0:
                cbs.append(BestLambdaCallback(self.eval_cb, float(cfg.method_kwargs.get("lambda_reg", 0.0))))
        cbs += extra
        for cb in cbs:  # evaluation / logging schedules count calls since the run's start
            cb.n_calls = int(model.num_timesteps) // n_envs
        callback = CallbackList(cbs)

        def learn_to(target: int) -> None:
            remaining = target - int(model.num_timesteps)
            if remaining > 0 and not self.halted:
                # total = the configured total, so SB3's progress (exploration / lr schedules) continues
                model.learn(
                    remaining,
                    callback=callback,
                    reset_num_timesteps=self.fresh,
                    progress_bar=progress_bar,
                )
                self.fresh = False

        try:
            with graceful_stop(self.stop) as signals:
                # one learn call: SB3's schedules (learning rate, clip range, exploration) then run over
                # the whole budget; model_partial.zip is saved by _RunCallback on the way
                learn_to(cfg.timesteps)
                seconds = self.seconds_before + time.perf_counter() - t0
                if not self.halted and self.stop.is_set():  # a signal after the last rollout
                    self.checkpoint(exact=True, seconds=seconds)
                    self.halted = True
                if self.halted:
                    raise self._interrupted()
                signals.polling = False  # nothing polls the stop event from here: a signal stops at once
                return self._finish(seconds, logger)
        except RunInterrupted:
            raise
        except KeyboardInterrupt:  # a second signal: checkpoint what there is (no exact continuation)
            seconds = self.seconds_before + time.perf_counter() - t0
            try:
                self.checkpoint(exact=False, seconds=seconds)
            except OSError as exc:
                raise self._rescue(exc) from None
            raise self._interrupted() from None
        except (NonFiniteError, RunSaveError):
            raise
        except OSError as exc:  # the disk filled, the folder went away...: the model is saved elsewhere
            raise self._rescue(exc) from None
        except BaseException as exc:
            self.record.update(status="failed", error=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            logger.close()

    def _interrupted(self) -> RunInterrupted:
        step, total = self.ckpt_step, self.cfg.timesteps
        self.record.update(status="interrupted", steps_done=step, **self.evals())
        return RunInterrupted(
            f"interrupted at step {step} of {total} (checkpoint saved); resume: {self.command}"
        )

    def _finish(self, seconds: float, logger: Any) -> RunResult:
        from equirl.rl.evaluation import evaluate

        cfg, model, cb = self.cfg, self.model, self.eval_cb
        self.check_finite()
        status("final evaluation of model.zip: %d episodes", cfg.eval.final_episodes)
        rets = evaluate(model, cfg.env, n_eval_episodes=cfg.eval.final_episodes, seed=cfg.seed + 20_000)
        timesteps = [*cb.timesteps, int(model.num_timesteps)]
        results = [*cb.results, rets]
        model.logger.record(f"equi/final_return/{cfg.method}", float(np.mean(rets)))
        model.logger.dump(int(model.num_timesteps))
        self.save_model("model.zip")  # written before the confirmation, which never changes it
        best = _eval_summary(cb.best_step, cb.best_mean_reward)
        final = _eval_summary(int(model.num_timesteps), float(np.mean(rets)))
        confirmation = self._confirm(rets) if cfg.eval.confirm_episodes > 0 else None
        if confirmation is not None:
            best = confirmation["best"]
        try:
            _save_evals(
                self.run_dir,
                timesteps,
                results,
                seconds,
                cfg,
                self.scorer_fit,
                best=best,
                confirmation=confirmation,
            )
        except OSError as exc:
            raise self._rescue(exc) from None
        if int(model.num_timesteps) < cfg.timesteps:
            log.info("stopped early at step %d: evaluation >= eval.stop_at", int(model.num_timesteps))
        self.record.update(
            status="finished",
            stopped_early=int(model.num_timesteps) < cfg.timesteps,
            steps_done=int(model.num_timesteps),
            final=final,
            best=best,
            last_eval=final,
        )
        if confirmation is not None or not cb.candidates:  # the winner is best_model.zip now
            try:
                remove_dir(self.run_dir / CANDIDATES_DIR)
            except OSError as exc:
                log.warning("%s not removed: %s", self.run_dir / CANDIDATES_DIR, exc)
        log.info("run written to %s", self.run_dir)
        conf = best if best is not None and "episodes" in best else {}  # the confirmed figures
        return RunResult(
            self.run_dir,
            float(np.mean(rets)),
            float(np.std(rets)),
            seconds,
            timesteps,
            results,
            best_mean=None if best is None else best["mean_return"],
            best_step=None if best is None else best["timestep"],
            steps=int(model.num_timesteps),
            best_std=conf.get("std_return"),
            best_episodes=conf.get("episodes"),
            best_eval_mean=conf.get("eval_mean_return"),
            best_eval_episodes=conf.get("eval_episodes"),
            best_is_final=bool(conf.get("final", False)),
        )

    def _confirm(self, final_rets: list[float]) -> dict[str, Any] | None:
        """Evaluate the candidates for ``best_model.zip`` and the final model on
        ``eval.confirm_episodes`` fresh episodes; the highest mean (a tie: the best periodic evaluation)
        is copied onto ``best_model.zip``.

        The candidates are loaded into the live model (``set_parameters``: the run's own architecture)
        and the final parameters put back afterwards; ``model.zip`` is already written.

        :param final_rets: the final evaluation's returns (the final model's figure during the run).
        :returns: ``{"best", "seed", "episodes", "candidates"}`` (``best``: the winner's entry), or
            ``None`` when there is no candidate or ``best_model.zip`` could not be written (it then
            stays the best periodic evaluation).
        """
        from equirl.rl.evaluation import evaluate

        cfg, model, cb = self.cfg, self.model, self.eval_cb
        n, seed = cfg.eval.confirm_episodes, cfg.seed + CONFIRM_SEED_OFFSET
        cands = []
        for c in reversed(cb.candidates):  # the best periodic evaluation first: it wins a tie
            path = cb.candidate_path(c["timestep"])
            if path.is_file():
                cands.append((c, path))
            else:
                log.warning("candidate %s is missing: not confirmed", path)
        if not cands:
            return None
        status(
            "confirming the best model: %d candidates × %d fresh episodes (%s and the final model)",
            len(cands) + 1,
            n,
            f"the {len(cands)} best periodic evaluations"
            if len(cands) > 1
            else "the best periodic evaluation",
        )
        step = int(model.num_timesteps)

        def entry(
            rets: list[float], timestep: int, final: bool, ev_mean: float, ev_n: int | None
        ) -> dict[str, Any]:
            return {
                "timestep": int(timestep),
                "final": final,
                "mean_return": float(np.mean(rets)),
                "std_return": float(np.std(rets)),
                "episodes": n,
                "eval_mean_return": float(ev_mean),
                "eval_episodes": ev_n,
                "returns": [float(r) for r in rets],
            }

        final_entry = entry(
            evaluate(model, cfg.env, n_eval_episodes=n, seed=seed),
            step,
            True,
            float(np.mean(final_rets)),
            len(final_rets),
        )
        entries, files = [], []
        params = copy.deepcopy(model.get_parameters())
        try:
            for c, path in cands:
                try:
                    model.set_parameters(str(path), exact_match=True, device=model.device)
                except Exception as exc:  # whatever is wrong with one candidate (bit rot, an edit: torch's
                    # UnpicklingError, zip or shape errors...) costs that candidate, never the run
                    why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    log.warning(
                        "candidate %s not confirmed: it does not load (%s)", path, printable(why, 200)
                    )
                    continue
                rets = evaluate(model, cfg.env, n_eval_episodes=n, seed=seed)
                entries.append(entry(rets, c["timestep"], False, c["mean_return"], c["episodes"]))
                files.append(path)
        finally:
            model.set_parameters(params, exact_match=True, device=model.device)
        entries.append(final_entry)
        files.append(self.run_dir / "model.zip")
        win = max(range(len(entries)), key=lambda i: entries[i]["mean_return"])  # the first of a tie
        try:
            atomic_copy(files[win], self.run_dir / "best_model.zip")
        except OSError as exc:
            log.warning("best_model.zip not replaced (%s): it stays the best periodic evaluation", exc)
            return None
        best = {k: v for k, v in entries[win].items() if k != "returns"}
        log.info(
            "best model: step %d%s, %.1f ± %.1f over %d fresh episodes",
            best["timestep"],
            " (the final model)" if best["final"] else "",
            best["mean_return"],
            best["std_return"],
            n,
        )
        return {"best": best, "seed": seed, "episodes": n, "candidates": entries}


class _RunCallback(BaseCallback):
    """Checkpoints, ``run.json`` ticks, graceful stops and the non-finite guard of one run.

    The loss check reads the loss scalars SB3's ``train()`` already records (the algorithm's :attr:`~equirl.rl.algos.AlgoSpec.loss_keys`: ``train/loss``
    for DQN / QR-DQN / PPO, the actor / critic / entropy losses for A2C / SAC / TD3; the mean over that
    call's gradient steps, so one NaN / inf step shows) at the start of the next
    rollout and at the end of training: one float test per ``train()`` call, no extra forward pass
    and no patching of the optimizer; ``name_to_value`` is only cleared by a dump, which happens
    inside rollouts, after our check. Parameters and Q-values are checked at evaluations and before
    every save.
    """

    def __init__(self, run: _Run, t0: float) -> None:
        super().__init__(0)
        self.run = run
        self.t0 = t0
        self.freq = run.cfg.checkpoint.every(run.cfg.timesteps)
        self._ckpt_failed = False  # a periodic checkpoint failed already (said once)

    def _seconds(self) -> float:
        return self.run.seconds_before + time.perf_counter() - self.t0

    def _check_loss(self) -> None:
        values = self.model.logger.name_to_value
        for key in get_algo(self.run.cfg.algo).loss_keys:
            loss = values.get(key)
            if loss is not None and not np.isfinite(loss):
                what = "training loss" if key == "train/loss" else f"training loss {key}"
                raise self.run.nonfinite(f"{what} ({loss})")

    def _on_rollout_start(self) -> None:
        self._check_loss()
        run, n = self.run, int(self.model.num_timesteps)
        if run.halted:
            return
        if run.stop.is_set():
            run.checkpoint(exact=True, seconds=self._seconds())
            run.halted = True
        elif self.freq and n > run.ckpt_step and n // self.freq > max(run.ckpt_step, 0) // self.freq:
            try:
                run.checkpoint(exact=True, seconds=self._seconds())
            except OSError as exc:  # said once: a full disk fails every later one the same way
                (log.debug if self._ckpt_failed else log.warning)(
                    "checkpoint at step %d not written (%s); training goes on from the last one written",
                    n,
                    exc,
                )
                self._ckpt_failed = True

    def _on_step(self) -> bool:
        run = self.run
        if run.halted:
            return False
        run.record.tick(self.num_timesteps)
        frac = run.cfg.partial_fraction
        if (
            frac > 0
            and not run.partial_saved
            and self.num_timesteps >= max(1, round(run.cfg.timesteps * frac))
        ):
            run.save_model("model_partial.zip")
            run.partial_saved = True
        ev = self.run.eval_cb
        if ev is not None and ev.eval_freq > 0 and self.n_calls % ev.eval_freq == 0:
            self.run.check_finite()
        return True

    def _on_training_end(self) -> None:
        self._check_loss()


def _save_evals(
    d: Path,
    steps: list[int],
    results: list[list[float]],
    seconds: float,
    cfg: RLConfig,
    scorer_fit: dict[str, float] | None = None,
    best: dict[str, Any] | None = None,
    confirmation: dict[str, Any] | None = None,
) -> None:
    if results and len({len(r) for r in results}) == 1:
        arr = np.asarray(results, dtype=np.float64)
    else:
        width = max((len(r) for r in results), default=0)
        arr = np.full((len(results), width), np.nan)
        for i, r in enumerate(results):
            arr[i, : len(r)] = r

    atomic_write_stream(
        d / "evaluations.npz", lambda f: np.savez(f, timesteps=np.asarray(steps), results=arr)
    )
    summary = {
        "env": cfg.env,
        "method": cfg.method,
        "seed": cfg.seed,
        "train_seconds": seconds,
        "scorer_fit": scorer_fit or None,
        "best": best,
        "evaluations": [
            {
                "timestep": t,
                "mean_return": float(np.mean(r)),
                "std_return": float(np.std(r)),
                "episodes": len(r),
            }
            for t, r in zip(steps, results)
        ],
    }
    if confirmation is not None:  # the candidates for best_model.zip on fresh episodes (best: the winner)
        summary["confirmation"] = {k: v for k, v in confirmation.items() if k != "best"}
    write_json(d / "evaluations.json", summary)
