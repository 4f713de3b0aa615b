"""Zero-shot evaluation of one agent under several symmetrization methods."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from equirl.rl.pretrained import evaluate, load_pretrained
from equirl.utils.progress import ProgressFn, subtask
from equirl.utils.stats import stratified_bootstrap_ci

__all__ = ["evaluate_methods"]

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
