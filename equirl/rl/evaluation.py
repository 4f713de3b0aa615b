"""Evaluation: the returns of a model in a fresh env made as the model sees its env (:func:`evaluate`,
:func:`make_eval_env`), and the zero-shot returns of one agent under several symmetrization methods
(:func:`evaluate_methods`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from equirl.errors import EquirlError
from equirl.rl.build import load_pretrained
from equirl.rl.envs import make_vec_env, resolve_env_id
from equirl.rl.zoo import env_of
from equirl.utils.io import printable
from equirl.utils.progress import ProgressFn, subtask
from equirl.utils.stats import stratified_bootstrap_ci

__all__ = ["evaluate", "evaluate_methods", "make_eval_env"]

log = logging.getLogger(__name__)


def evaluate_methods(
    agent: Any,
    env_id: str,
    methods: list[str],
    algo: str = "dqn",
    episodes: int = 10,
    seeds: int = 1,
    method_kwargs: dict[str, dict[str, Any]] | None = None,
    progress: ProgressFn | None = None,
    which: str = "best",
    trust_checkpoint: bool = False,
) -> dict[str, dict[str, Any]]:
    """``{method: {"mean_return", "std_return", "episodes", "ci95", "returns"}}`` over ``seeds`` x
    ``episodes`` episodes: ``ci95`` is the 95 % percentile-bootstrap interval of the mean return (the
    episodes, independent starts under every seed, resampled together), ``returns`` the per-episode
    returns, seed after seed.

    :param agent: agent zip, equirl run directory or RL-zoo folder (plain, or saved by an equivariant
        policy).
    :param env_id: the env (its packaged symmetry spec is used).
    :param methods: among ``base``, ``equitune``, ``equizero``, ``lambda`` (an untrained λ equals equitune).
    :param method_kwargs: per-method symmetrizer options.
    :param progress: called as ``progress(episodes done, total episodes)`` as episodes end.
    :param which: in a folder, ``"best"`` (``best_model.zip`` when present) or ``"final"``.
    :param trust_checkpoint: let SB3 unpickle the zip's pickled entries (runs any code they hold).
    """
    out: dict[str, dict[str, Any]] = {}
    total = len(methods) * seeds * episodes
    for k, m in enumerate(methods):
        model = load_pretrained(
            agent,
            env_id,
            method=m,
            algo=algo,
            method_kwargs=(method_kwargs or {}).get(m),
            which=which,
            trust_checkpoint=trust_checkpoint,
        )
        rets: list[float] = []
        for s in range(seeds):
            step = subtask(progress, (k * seeds + s) * episodes, total)
            rets += evaluate(model, env_id, n_eval_episodes=episodes, seed=1000 * s, progress=step)
        ci = stratified_bootstrap_ci([rets], lambda strata: float(np.mean(strata[0])))
        out[m] = {
            "mean_return": float(np.mean(rets)),
            "std_return": float(np.std(rets)),
            "episodes": len(rets),
            "ci95": [ci.low, ci.high],
            "returns": [float(r) for r in rets],
        }
        log.info("%s %s: %.1f ± %.1f", env_id, m, out[m]["mean_return"], out[m]["std_return"])
    return out


def make_eval_env(model: Any, env_id: str, seed: int = 0) -> Any:
    """A fresh VecEnv of ``env_id`` as ``model`` sees its env: the env it was loaded with (an RL-zoo
    folder's wrappers and frame stack, see :func:`~equirl.rl.build.load_pretrained`), else the bare env; with the model's
    observation normalisation, frozen, when it has one; channel-last frames transposed when SB3 transposed
    the model's training env (``VecTransposeImage``), so an ``EvalCallback`` sees the same env type.

    :param model: an SB3 model.
    :param env_id: the env id (an older id runs as its current version).
    :param seed: the env's seed.
    """
    from stable_baselines3.common.vec_env import VecTransposeImage, is_vecenv_wrapped

    norm = model.get_vec_normalize_env() if hasattr(model, "get_vec_normalize_env") else None
    recipe = env_of(model)
    env_id = resolve_env_id(env_id, trained_on=None)
    if recipe is not None:
        recipe = replace(recipe, env_id=env_id)
    vec = recipe.make_base(seed=seed) if recipe is not None else make_vec_env(env_id, seed=seed)
    if norm is not None:  # the agent's observation normalisation, frozen
        from equirl.rl.normalize import wrap_like

        vec = wrap_like(norm, vec)
    vec = recipe.stack(vec) if recipe is not None else vec
    trained = model.get_env() if hasattr(model, "get_env") else None
    if isinstance(trained, VecTransposeImage) and not is_vecenv_wrapped(vec, VecTransposeImage):
        vec = VecTransposeImage(vec)  # channel-last frames, as SB3 wrapped the training env
    return vec


#: steps (of the VecEnv) without any episode ending after which :func:`evaluate` gives up with one line
#: (ALE's longest episode is 27,000 agent steps)
MAX_STEPS_WITHOUT_EPISODE = 200_000


def evaluate(
    model: Any,
    env: Any,
    n_eval_episodes: int = 10,
    deterministic: bool = True,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> list[float]:
    """Undiscounted returns of ``n_eval_episodes`` episodes, seeded (SB3's ``evaluate_policy`` names, with
    the per-episode returns as the result).

    :param model: an SB3 model (equivariant or not).
    :param env: env id or VecEnv (a fresh one is made from an id, seeded with ``seed``, and wrapped in
        the model's ``VecNormalize`` statistics when it has some).
    :param n_eval_episodes: number of episodes.
    :param deterministic: greedy actions (``False``: the policy's exploration).
    :param seed: seed of the evaluation env.
    :param progress: called as ``progress(episodes done, n_eval_episodes)`` when an episode ends.
    """
    from stable_baselines3.common.evaluation import evaluate_policy

    vec = make_eval_env(model, env, seed=seed) if isinstance(env, str) else env
    vec.seed(seed)
    done, idle = [0], [0]

    def on_step(loc: dict[str, Any], glob: dict[str, Any]) -> None:
        n = int(np.sum(loc.get("episode_counts", 0)))
        if n != done[0]:
            idle[0] = 0
        elif loc.get("i", 0) == 0:  # SB3 calls this once per env of each step: count the steps
            idle[0] += 1
        if idle[0] > MAX_STEPS_WITHOUT_EPISODE:  # an evaluation never hangs a command
            name = env if isinstance(env, str) else type(vec).__name__
            raise EquirlError(
                f"evaluating on {printable(str(name), 80)}: no episode ended in {MAX_STEPS_WITHOUT_EPISODE:,} "
                f"steps ({n} of {n_eval_episodes} done); does the env end its episodes (a time limit)?"
            )
        if progress is not None and n != done[0]:
            progress(min(n, n_eval_episodes), n_eval_episodes)
        done[0] = n

    rewards, _ = evaluate_policy(
        model,
        vec,
        n_eval_episodes=n_eval_episodes,
        deterministic=deterministic,
        return_episode_rewards=True,
        warn=False,
        callback=on_step,
    )
    return [float(r) for r in np.asarray(rewards, dtype=np.float64)]
