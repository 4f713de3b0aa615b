"""Running a config: pretraining, finetuning or training from scratch with a symmetrizer.

Each run writes ``{out}/{env}__{method}__{seed}__{time}/`` atomically (built under a temporary name,
renamed on success, removed on error) holding ``config.yaml`` (resolved), ``model.zip``,
optionally ``model_partial.zip``, ``evaluations.npz`` + ``evaluations.json`` and ``tb/`` (TensorBoard).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from equirl.config import to_dict
from equirl.registry import get_method
from equirl.rl.config import RLConfig
from equirl.rl.envs import make_vec_env
from equirl.rl.spec import load_spec
from equirl.utils.io import atomic_dir, atomic_write_text
from equirl.utils.runs import run_name, unique_run_dir

__all__ = ["RunResult", "build_model", "run_training"]

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a run produced.

    :param run_dir: the run directory.
    :param final_mean: mean return of the final evaluation.
    :param final_std: its standard deviation.
    :param seconds: wall time of ``learn``.
    :param timesteps: evaluation steps; ``results``: returns per evaluation.
    """

    run_dir: Path
    final_mean: float
    final_std: float
    seconds: float
    timesteps: list[int]
    results: list[list[float]]


def _algo_kwargs(cfg: RLConfig) -> dict[str, Any]:
    hp = cfg.hyperparams
    kw: dict[str, Any] = {
        "learning_rate": hp.learning_rate,
        "buffer_size": hp.buffer_size,
        "learning_starts": hp.learning_starts,
        "batch_size": hp.batch_size,
        "gamma": hp.gamma,
        "train_freq": hp.train_freq,
        "gradient_steps": hp.gradient_steps,
        "target_update_interval": hp.target_update_interval,
        "exploration_fraction": hp.exploration_fraction,
        "exploration_initial_eps": hp.exploration_initial_eps,
        "exploration_final_eps": hp.exploration_final_eps,
        "max_grad_norm": hp.max_grad_norm,
    }
    return kw


def _raw_spaces(vec: Any) -> tuple[Any, Any]:
    """The observation and action spaces of the env under a VecEnv's wrappers (what a spec describes)."""
    env = vec.unwrapped.envs[0].unwrapped
    return env.observation_space, env.action_space


def _policy_alias(space: Any) -> str:
    """``EquiCnnPolicy`` for image observations (SB3's NatureCNN needs at least 36x36), else ``EquiMlpPolicy``."""
    shape = space.shape or ()
    return "EquiCnnPolicy" if len(shape) == 3 and min(shape) >= 36 else "EquiMlpPolicy"


def build_model(cfg: RLConfig, vec: Any | None = None, trust_checkpoint: bool = False) -> Any:
    """The SB3 model a config describes (fresh, or wrapped around ``init_from``).

    The symmetry spec is resolved once and the training env made once (``vec``, or one made here).
    ``policy_kwargs`` are plain data (the spec as a mapping), so the saved zip pickles none of them.

    :param trust_checkpoint: let SB3 unpickle ``init_from``'s pickled entries (see
        :mod:`equirl.rl.safe_load`).
    """
    from equirl.rl.pretrained import _algo_cls, load_pretrained

    sym = load_spec(cfg.symmetry or cfg.env)
    vec = vec if vec is not None else make_vec_env(cfg.env, seed=cfg.seed)
    sym.check_fits(*_raw_spaces(vec))
    kw = _algo_kwargs(cfg)
    if cfg.init_from:
        return load_pretrained(
            cfg.init_from,
            vec,
            method=cfg.method,
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
        "method": cfg.method,
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


def run_training(
    cfg: RLConfig, progress_bar: bool = False, exp_name: str | None = None, trust_checkpoint: bool = False
) -> RunResult:
    """Train per ``cfg`` and write the run directory atomically.

    Periodic evaluations (``cfg.eval``) go through :class:`~equirl.rl.callbacks.EquiEvalCallback`,
    which keeps ``best_model.zip`` beside the final ``model.zip``.

    :param cfg: the validated config.
    :param progress_bar: show SB3's progress bar (``model.learn(progress_bar=True)``).
    :param exp_name: the ``{exp}`` part of the run name (default: the method).
    :param trust_checkpoint: let SB3 unpickle ``init_from``'s pickled entries (runs any code they hold).
    """
    from stable_baselines3.common.callbacks import CallbackList
    from stable_baselines3.common.logger import configure

    from equirl.rl.callbacks import EquiEvalCallback, EquiLoggingCallback
    from equirl.rl.select import resolve_auto

    # validation errors happen before any directory exists; method auto resolves first (zero-shot)
    cfg, auto_choice = resolve_auto(cfg, trust_checkpoint=trust_checkpoint)
    model = build_model(cfg, trust_checkpoint=trust_checkpoint)
    scorer_fit: dict[str, float] = {}
    if get_method(cfg.method).learned_scorer and cfg.scorer.steps > 0:
        from equirl.rl.canonical import collect_observations, fit_scorer

        obs = collect_observations(model, cfg.env, cfg.scorer.observations, seed=cfg.seed)
        scorer_fit = fit_scorer(model, obs, cfg.scorer.steps, cfg.scorer.lr, target=cfg.scorer.target)
    root = Path(cfg.out)
    final = unique_run_dir(root, run_name(cfg.env, exp_name or cfg.method, cfg.seed))
    with atomic_dir(final) as tmp:
        atomic_write_text(tmp / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
        if auto_choice is not None:
            auto_choice.save(tmp)
        fmt = ["csv", "tensorboard"] if cfg.log.tensorboard else ["csv"]
        logger = configure(str(tmp / "tb"), fmt)
        model.set_logger(logger)
        eval_cb = EquiEvalCallback(
            cfg.env,
            eval_freq=cfg.eval.freq,
            n_eval_episodes=cfg.eval.episodes,
            seed=cfg.seed + 10_000,
            method=cfg.method,
            best_model_save_path=str(tmp),
        )
        cbs: list[Any] = [EquiLoggingCallback(cfg.log.equi_freq), eval_cb]
        if get_method(cfg.method).learned_weights and getattr(model.policy, "freeze_backbone", False):
            from equirl.rl.lambda_fit import BestLambdaCallback  # keeps the best λ of the evaluations

            if cfg.eval.freq > 0:
                cbs.append(BestLambdaCallback(eval_cb, float(cfg.method_kwargs.get("lambda_reg", 0.0))))
        callbacks = CallbackList(cbs)
        t0 = time.perf_counter()
        if cfg.partial_fraction > 0:
            first = max(1, round(cfg.timesteps * cfg.partial_fraction))
            model.learn(first, callback=callbacks, reset_num_timesteps=True, progress_bar=progress_bar)
            model.save(tmp / "model_partial.zip")
            if cfg.timesteps - first > 0:
                model.learn(
                    cfg.timesteps - first,
                    callback=callbacks,
                    reset_num_timesteps=False,
                    progress_bar=progress_bar,
                )
        else:
            model.learn(cfg.timesteps, callback=callbacks, progress_bar=progress_bar)
        seconds = time.perf_counter() - t0
        from equirl.rl.pretrained import evaluate

        rets = evaluate(model, cfg.env, n_eval_episodes=cfg.eval.final_episodes, seed=cfg.seed + 20_000)
        timesteps = [*eval_cb.timesteps, int(model.num_timesteps)]
        results = [*eval_cb.results, rets]
        model.logger.record(f"equi/eval_return/{cfg.method}", float(np.mean(rets)))
        model.logger.dump(int(model.num_timesteps))
        logger.close()
        model.save(tmp / "model.zip")
        _save_evals(tmp, timesteps, results, seconds, cfg, scorer_fit)
    log.info("run written to %s", final)
    return RunResult(final, float(np.mean(rets)), float(np.std(rets)), seconds, timesteps, results)


def _save_evals(
    d: Path,
    steps: list[int],
    results: list[list[float]],
    seconds: float,
    cfg: RLConfig,
    scorer_fit: dict[str, float] | None = None,
) -> None:
    if results and len({len(r) for r in results}) == 1:
        arr = np.asarray(results, dtype=np.float64)
    else:
        width = max((len(r) for r in results), default=0)
        arr = np.full((len(results), width), np.nan)
        for i, r in enumerate(results):
            arr[i, : len(r)] = r

    def write(p: Path) -> None:
        with open(p, "wb") as f:
            np.savez(f, timesteps=np.asarray(steps), results=arr)

    from equirl.utils.io import atomic_write

    atomic_write(d / "evaluations.npz", write)
    summary = {
        "env": cfg.env,
        "method": cfg.method,
        "seed": cfg.seed,
        "train_seconds": seconds,
        "scorer_fit": scorer_fit or None,
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
    atomic_write_text(d / "evaluations.json", json.dumps(summary, indent=2))
