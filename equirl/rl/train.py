"""Running a config: pretraining, finetuning or training from scratch with a symmetrizer.

Each run writes ``{out}/{env}__{method}__{seed}__{time}/``, visible from its first second, holding
``config.yaml`` (resolved), ``run.json`` (status, steps, best / last evaluation, the resume command: see
:mod:`equirl.rl.lifecycle`), ``checkpoint/`` (periodic checkpoints), ``best_model.zip`` (best periodic
evaluation), ``model.zip`` (final), optionally ``model_partial.zip``, ``evaluations.npz`` +
``evaluations.json`` and ``tb/`` (TensorBoard + CSV). Every file is written atomically (temporary file in
the same folder, then a rename), so a crash never leaves a half-written model; a failure never deletes a
trained model (when the run directory is unwritable the final model goes to
``$TMPDIR/equirl-rescue-{run}-{pid}.zip`` and the error says so).

SIGINT / SIGTERM during training set a flag: the run checkpoints at the next rollout boundary, records
``interrupted`` and raises :class:`~equirl.errors.RunInterrupted` (a second signal stops at once, with a
best-effort checkpoint). :func:`resume_training` continues a run from its last checkpoint. A NaN / inf
training loss, Q-value or parameter stops the run as ``failed`` (:class:`~equirl.errors.NonFiniteError`)
before anything non-finite is saved.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from stable_baselines3.common.callbacks import BaseCallback

from equirl.config import FieldError, to_dict
from equirl.errors import (
    CheckpointError,
    ConfigError,
    NonFiniteError,
    RunFinishedError,
    RunInterrupted,
    RunSaveError,
)
from equirl.registry import BASE, get_method
from equirl.rl.config import ON_POLICY_ALGOS, RLConfig, TD3HyperParams, check_buffer_memory, load_rl_config
from equirl.rl.envs import make_vec_env
from equirl.rl.lifecycle import (
    AUTO_BUFFER_BYTES,
    RunRecord,
    effective_status,
    graceful_stop,
    load_checkpoint,
    nonfinite_reason,
    read_run,
    replay_buffer_bytes,
    restore_rng,
    save_checkpoint,
)
from equirl.rl.spec import load_spec
from equirl.utils.io import (
    atomic_write_stream,
    atomic_write_text,
    check_no_symlinks,
    check_output_path,
    check_writable_tree,
    config_fingerprint,
    printable,
    read_text,
    trusted_loads,
    write_json,
)
from equirl.utils.runs import run_name, unique_run_dir

__all__ = ["RunResult", "build_model", "check_run", "make_train_env", "resume_training", "run_training"]

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a run produced.

    :param run_dir: the run directory.
    :param final_mean: mean return of the final evaluation (of ``model.zip``).
    :param final_std: its standard deviation.
    :param seconds: wall time of ``learn`` (all sessions of a resumed run).
    :param timesteps: evaluation steps; ``results``: returns per evaluation.
    :param best_mean: the best mean return of the periodic evaluations (``best_model.zip``; ``None``:
        no periodic evaluation).
    :param best_step: the env step of that evaluation.
    :param steps: env steps done.
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


def _algo_kwargs(cfg: RLConfig, vec: Any) -> dict[str, Any]:
    """The SB3 algorithm's keyword arguments from ``cfg.hyperparams`` (TD3's exploration noise made here,
    from the action space)."""
    hp = cfg.hyperparams
    kw: dict[str, Any] = hp.sb3_kwargs()
    if isinstance(hp, TD3HyperParams) and hp.action_noise_std > 0:
        from stable_baselines3.common.noise import NormalActionNoise

        n = int(np.prod(vec.action_space.shape))
        kw["action_noise"] = NormalActionNoise(np.zeros(n), hp.action_noise_std * np.ones(n))
    return kw


def _n_envs(cfg: RLConfig) -> int:
    return int(getattr(cfg.hyperparams, "n_envs", 1))


def make_train_env(cfg: RLConfig) -> Any:
    """The training VecEnv of ``cfg`` (``hyperparams.n_envs`` copies for PPO / A2C)."""
    return make_vec_env(cfg.env, n_envs=_n_envs(cfg), seed=cfg.seed)


def _raw_spaces(vec: Any) -> tuple[Any, Any]:
    """The observation and action spaces of the env under a VecEnv's wrappers (what a spec describes)."""
    env = vec.unwrapped.envs[0].unwrapped
    return env.observation_space, env.action_space


def _policy_alias(space: Any) -> str:
    """``EquiCnnPolicy`` for image observations (SB3's image spaces, channel-first or -last; NatureCNN needs
    frames of at least 36x36), else ``EquiMlpPolicy``."""
    from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first

    if not is_image_space(space, check_channels=False):
        return "EquiMlpPolicy"
    shape = tuple(space.shape)
    h, w = shape[1:] if is_image_space_channels_first(space) else shape[:2]
    return "EquiCnnPolicy" if min(h, w) >= 36 else "EquiMlpPolicy"


#: the action spaces each algorithm takes (SB3's own check is an assert, a traceback for the user)
_ALGO_ACTIONS = {"dqn": "Discrete", "qrdqn": "Discrete", "sac": "Box", "td3": "Box"}


def _check_action_space(cfg: RLConfig, space: Any) -> None:
    """One line when ``cfg.algo`` cannot act in ``space`` (DQN on continuous actions, SAC on discrete)."""
    need = _ALGO_ACTIONS.get(cfg.algo)
    kind = type(space).__name__
    if need is not None and kind != need:
        what = "discrete" if need == "Discrete" else "continuous (Box)"
        raise FieldError(
            "algo",
            cfg.algo,
            f"{cfg.algo.upper()} needs {what} actions but {cfg.env} has {kind} actions "
            f"(use {'ppo, a2c, sac or td3' if need == 'Discrete' else 'ppo, a2c, dqn or qrdqn'})",
        )


def build_model(cfg: RLConfig, vec: Any | None = None, trust_checkpoint: bool = False) -> Any:
    """The SB3 model a config describes (fresh, or wrapped around ``init_from``).

    The symmetry spec is resolved once and the training env made once (``vec``, or one made here).
    ``policy_kwargs`` are plain data (the spec as a mapping), so the saved zip pickles none of them.
    Method ``augment`` trains a plain policy on mirrored transitions too (:mod:`equirl.rl.augment`).

    :param trust_checkpoint: let SB3 unpickle ``init_from``'s pickled entries (see
        :mod:`equirl.rl.safe_load`).
    """
    import equirl.rl.ac_policies  # noqa: F401  (registers EquiMlpPolicy on PPO / A2C / SAC / TD3)
    from equirl.rl.pretrained import _algo_cls, load_pretrained

    sym = load_spec(cfg.symmetry or cfg.env)
    vec = vec if vec is not None else make_train_env(cfg)
    _check_action_space(cfg, vec.action_space)
    sym.check_fits(*_raw_spaces(vec))
    if getattr(cfg.hyperparams, "use_sde", False) and not sym.continuous:
        raise FieldError(
            "hyperparams.use_sde", True, f"gSDE needs continuous actions; {cfg.env} has discrete ones"
        )
    if cfg.algo not in ON_POLICY_ALGOS:
        check_buffer_memory(vec.observation_space, cfg.hyperparams.buffer_size)
    kw = _algo_kwargs(cfg, vec)
    method = cfg.method
    if get_method(method).augments_data:  # a plain policy trained on mirrored transitions too
        from equirl.rl.augment import augment_kwargs

        kw.update(augment_kwargs(sym, cfg.algo, seed=cfg.seed))
        method = BASE
    if cfg.init_from:
        return load_pretrained(
            cfg.init_from,
            vec,
            method=method,
            algo=cfg.algo,
            symmetry=sym,
            method_kwargs=cfg.method_kwargs,
            freeze_backbone=cfg.freeze_backbone,
            seed=cfg.seed,
            trust_checkpoint=trust_checkpoint,
            **kw,
        )
    pk: dict[str, Any] = {
        "net_arch": list(cfg.hyperparams.net_arch),
        "symmetry": sym.to_dict(),
        "method": method,
        "method_kwargs": dict(cfg.method_kwargs),
        "freeze_backbone": bool(cfg.freeze_backbone),
    }
    if cfg.algo == "qrdqn":
        pk["n_quantiles"] = cfg.hyperparams.n_quantiles
    return _algo_cls(cfg.algo)(
        _policy_alias(vec.observation_space),
        vec,
        policy_kwargs=pk,
        seed=cfg.seed,
        device="cpu",
        **kw,
    )


def check_run(cfg: RLConfig, trust_checkpoint: bool = False) -> str:
    """Everything :func:`run_training` checks before it trains -- the config, the output folder, the env
    and its spec, the agent to finetune, the memory the model and its buffer need -- without training
    or writing anything (``equirl train --dry-run``). ``method: auto`` is checked with ``base`` (its
    zero-shot selection is not run).

    :returns: one line describing the run that would start.
    :raises EquirlError: what :func:`run_training` would refuse, in one line.
    """
    import dataclasses

    from equirl.registry import AUTO

    check_output_path(cfg.out, "out")
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
    from equirl.rl.select import resolve_auto

    check_output_path(cfg.out, "out")
    # validation errors happen before any directory exists; method auto resolves first (zero-shot)
    cfg, auto_choice = resolve_auto(cfg, trust_checkpoint=trust_checkpoint)
    model = build_model(cfg, trust_checkpoint=trust_checkpoint)
    scorer_fit = _fit_scorer(cfg, model)
    root = Path(cfg.out)
    run_dir = unique_run_dir(root, run_name(cfg.env, exp_name or cfg.method, cfg.seed))
    run_dir.mkdir(parents=True)
    cfg_text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    atomic_write_text(run_dir / "config.yaml", cfg_text)
    if auto_choice is not None:
        auto_choice.save(run_dir)
    record = RunRecord(
        run_dir,
        {
            "command": command,
            "resume_command": f"equirl {command} --resume {run_dir}",
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

    from equirl.rl.pretrained import _algo_cls

    run_dir = Path(run_dir)
    check_no_symlinks(run_dir)
    info = read_run(run_dir)
    status = effective_status(info)
    if status == "finished":
        raise RunFinishedError(
            f"{run_dir} has already finished ({info.get('steps_done')} of {info.get('total_timesteps')} "
            "steps): nothing to resume"
        )
    if status == "running" and info.get("pid") != os.getpid():
        raise CheckpointError(f"{run_dir} is still running (pid {info.get('pid')}); stop it first")
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
        if vec is None:
            vec = make_train_env(cfg)
        try:
            model = _algo_cls(cfg.algo).load(
                _io.BytesIO(ckpt.model_bytes), env=vec, device="cpu", force_reset=not exact
            )
            if ckpt.replay_buffer is not None:
                model.load_replay_buffer(_io.BytesIO(ckpt.replay_buffer))
        except (ValueError, KeyError, TypeError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise CheckpointError(
                f"cannot restore checkpoint {ckpt.model} (corrupt, or it does not fit {cfg.env}): "
                f"{printable(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, 200)}"
            ) from None
        if extra.get("rng") is not None:
            restore_rng(model, extra["rng"])
        state = ckpt.state
    fields = {k: v for k, v in info.items() if k not in ("pid", "host", "ended_at", "error", "status")}
    resumes = [*fields.pop("resumed_at", []), time.strftime("%Y-%m-%dT%H:%M:%S%z")]
    record = RunRecord(run_dir, {**fields, "resumed_at": resumes})
    record.data["steps_done"] = int(model.num_timesteps)
    record.update(status="running")
    run = _Run(cfg, run_dir, model, record, stop or threading.Event(), fresh=ckpt is None)
    run.restore(state, ckpt.step if ckpt else 0, str(ckpt.model) if ckpt else None)
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
        return str(self.record.data.get("resume_command", f"equirl train --resume {self.run_dir}"))

    @property
    def save_buffer(self) -> bool:
        flag = self.cfg.checkpoint.replay_buffer
        return replay_buffer_bytes(self.model) <= AUTO_BUFFER_BYTES if flag is None else flag

    def restore(self, state: dict[str, Any], step: int, path: str | None) -> None:
        self.eval_state = dict(state.get("eval") or {})
        self.partial_saved = bool(state.get("partial_saved", False))
        self.seconds_before = float(state.get("train_seconds") or 0.0)
        self.scorer_fit = dict(state.get("scorer_fit") or {})
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
        where = (
            f"the trained model was saved to {rescue}" if rescue else "the model could not be saved anywhere"
        )
        msg = f"could not write to {self.run_dir} ({reason}); {where}"
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

        from equirl.rl.callbacks import EquiEvalCallback, EquiLoggingCallback

        cfg, model = self.cfg, self.model
        logger = _configure_logger(self.run_dir / "tb", cfg.log.tensorboard)
        model.set_logger(logger)
        n_envs = _n_envs(cfg)
        self.eval_cb = EquiEvalCallback(
            cfg.env,
            # callbacks are called once per step of all n_envs envs: the period in env steps stays eval.freq
            eval_freq=max(1, cfg.eval.freq // n_envs) if cfg.eval.freq else 0,
            n_eval_episodes=cfg.eval.episodes,
            seed=cfg.seed + 10_000,
            method=cfg.method,
            best_model_save_path=str(self.run_dir),
            callback_on_new_best=None
            if cfg.eval.stop_at is None
            else StopTrainingOnRewardThreshold(reward_threshold=float(cfg.eval.stop_at)),
        )
        if self.eval_state:
            self.eval_cb.set_state(self.eval_state)
        elif cfg.eval.at_start and cfg.eval.freq > 0 and int(model.num_timesteps) == 0:
            from equirl.rl.pretrained import evaluate

            rets = evaluate(model, cfg.env, n_eval_episodes=cfg.eval.episodes, seed=cfg.seed + 10_000)
            self.eval_cb.evaluations_timesteps.append(0)
            self.eval_cb.evaluations_results.append([float(r) for r in rets])
        t0 = time.perf_counter()
        cbs = [_RunCallback(self, t0), EquiLoggingCallback(cfg.log.equi_freq), self.eval_cb]
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
            with graceful_stop(self.stop):
                # one learn call: SB3's schedules (learning rate, clip range, exploration) then run over
                # the whole budget; model_partial.zip is saved by _RunCallback on the way
                learn_to(cfg.timesteps)
                seconds = self.seconds_before + time.perf_counter() - t0
                if not self.halted and self.stop.is_set():  # a signal after the last rollout
                    self.checkpoint(exact=True, seconds=seconds)
                    self.halted = True
                if self.halted:
                    raise self._interrupted()
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
        from equirl.rl.pretrained import evaluate

        cfg, model, cb = self.cfg, self.model, self.eval_cb
        self.check_finite()
        rets = evaluate(model, cfg.env, n_eval_episodes=cfg.eval.final_episodes, seed=cfg.seed + 20_000)
        timesteps = [*cb.timesteps, int(model.num_timesteps)]
        results = [*cb.results, rets]
        model.logger.record(f"equi/eval_return/{cfg.method}", float(np.mean(rets)))
        model.logger.dump(int(model.num_timesteps))
        self.save_model("model.zip")
        best = _eval_summary(cb.best_step, cb.best_mean_reward)
        final = _eval_summary(int(model.num_timesteps), float(np.mean(rets)))
        try:
            _save_evals(self.run_dir, timesteps, results, seconds, cfg, self.scorer_fit, best=best)
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
        log.info("run written to %s", self.run_dir)
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
        )


#: the loss scalars each algorithm's ``train()`` records (what the non-finite guard reads)
LOSS_KEYS: dict[str, tuple[str, ...]] = {
    "dqn": ("train/loss",),
    "qrdqn": ("train/loss",),
    "ppo": ("train/loss", "train/value_loss", "train/policy_gradient_loss"),
    "a2c": ("train/policy_loss", "train/value_loss", "train/entropy_loss"),
    "sac": ("train/actor_loss", "train/critic_loss", "train/ent_coef_loss"),
    "td3": ("train/actor_loss", "train/critic_loss"),
}


class _RunCallback(BaseCallback):
    """Checkpoints, ``run.json`` ticks, graceful stops and the non-finite guard of one run.

    The loss check reads the loss scalars SB3's ``train()`` already records (:data:`LOSS_KEYS`: ``train/loss``
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

    def _seconds(self) -> float:
        return self.run.seconds_before + time.perf_counter() - self.t0

    def _check_loss(self) -> None:
        values = self.model.logger.name_to_value
        for key in LOSS_KEYS.get(self.run.cfg.algo, ("train/loss",)):
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
            except OSError as exc:
                log.warning("checkpoint at step %d not written: %s", n, exc)

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
    write_json(d / "evaluations.json", summary)
