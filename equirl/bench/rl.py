"""``equirl bench rl``: zero-shot returns, sample efficiency and training wall time.

* ``zero-shot`` -- base / equitune / equizero / λ (untrained λ = equitune) on the RL-zoo agents (when
  the shared data folder, ``$EQUIRL_SHARED_DATA``, has them) and on the shipped full and partial agents,
  every algorithm (DQN, PPO, A2C, SAC, TQC...): the mean return with a 95 % bootstrap interval;
* ``efficiency`` -- env steps for plain vs equivariant (default equitune) DQN to reach a threshold
  (the env spec's: CartPole 475, Acrobot -100) when finetuning the same partial agent: per seed, early-stopped at the
  threshold, censored at the budget, with the medians (see :func:`efficiency`);
* ``canonical`` -- learned canonicalization and multigroup vs equitune / equizero on the gridworld agents;
* ``sweep-walltime`` -- a sweep (default ``configs/sweeps/cartpole-4x10.yaml``: 4 methods x 10 seeds on
  CartPole) run twice in one invocation, on a local Ray with ``jobs`` workers and one trial after another
  (``--executor serial``), into fresh folders: the wall seconds of each and their ratio;
* ``walltime`` -- seconds (wall and CPU) and env steps per second of ``learn`` from scratch for stock SB3
  and equirl's plain / equitune / equizero / λ policies, on CartPole by default or on any shipped RL configs
  (``dqn-MinAtar-Breakout-v1``, ``dqn-ALE-Breakout-v5``...), interleaved in one process, with ratios
  against stock SB3 and against equirl's plain policy, and what an exact symmetrizer costs at linear
  network cost (from stock SB3's share of time in its Q-networks' forward and backward passes,
  :func:`network_share`).

:func:`run_rl_bench` runs the chosen parts, saves each as CSV (plus matplotlib plots) under ``out`` and
yields its :class:`~equirl.utils.report.BenchTable` as the part finishes; ``equirl bench rl`` prints them.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from equirl.bench.threads import torch_threads
from equirl.errors import ConfigError, EquirlError
from equirl.registry import BASE, CANONICALIZE, EQUITUNE, EQUIZERO, MULTIGROUP, method_names
from equirl.utils.report import BenchTable, Step, progress, save_plot, write_csv
from equirl.utils.stats import median_ci

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from rich.console import Console

    from equirl.rl.config import RLConfig
    from equirl.rl.sweep import SweepSpec, Trial

__all__ = ["PARTS", "run_rl_bench"]

log = logging.getLogger(__name__)

#: the parts of :func:`run_rl_bench`
PARTS = ("zero-shot", "efficiency", "canonical", "walltime", "sweep-walltime")


#: an agent of the zero-shot part: (algorithm, "zoo" | "ours" | "ours-partial", env id, zip or zoo folder)
Agent = tuple[str, str, str, Path]


def _agents(envs: Sequence[str] | None = None) -> list[Agent]:
    """Every RL-zoo agent of the shared data folder (``rl-zoo/{algo}/{env}_1``) whose algorithm and env
    equirl can symmetrize, and every shipped agent (:func:`~equirl.rl.agents.shipped_agents`);
    ``envs``: only these (otherwise the agents whose env needs a missing optional dependency are
    skipped, with a warning)."""
    from equirl.rl.agents import shipped_agents
    from equirl.rl.algos import ALGOS
    from equirl.rl.spec import find_spec_file
    from equirl.utils.shared import shared_data_dir

    out: list[Agent] = []
    shared = shared_data_dir()
    zoo = shared / "rl-zoo" if shared is not None else None
    for run in sorted(zoo.glob("*/*_1")) if zoo is not None and zoo.is_dir() else []:
        algo, env = run.parent.name, run.name[: -len("_1")]
        if algo in ALGOS and find_spec_file(env) is not None:
            out.append((algo, "zoo", env, run))
        else:
            log.warning(
                "zero-shot: skipping %s (no symmetry spec for %s, or algorithm %s unknown)", run, env, algo
            )
    out += [(a.algo, "ours-partial" if a.partial else "ours", a.env, a.path) for a in shipped_agents()]
    if envs is not None:  # asked for by name: a missing dependency is an error (one line) when it runs
        return [a for a in out if a[2] in envs]
    return [a for a in out if _can_run(a)]


def _can_run(agent: Agent) -> bool:
    """Whether the agent's env can be made here (an optional dependency such as minatar or ale-py may be
    missing: the agent is skipped with a warning naming what to install)."""
    from equirl.rl.envs import prepare_env

    try:
        prepare_env(agent[2])
    except EquirlError as exc:
        log.warning("zero-shot: skipping %s (%s)", agent[3], exc)
        return False
    return True


def zero_shot(
    seeds: int, episodes: int, console: Console | None = None, envs: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Zero-shot returns of every available agent (of ``envs``, default all) under each method, mean with a
    95 % bootstrap interval over ``seeds`` x ``episodes`` episodes (progress bar on ``console``)."""
    agents = _agents(envs)
    with progress(console, "zero-shot returns", len(agents)) as step:
        return _zero_shot(agents, seeds, episodes, step)


def _zero_shot(agents: list[Agent], seeds: int, episodes: int, step: Step) -> list[dict[str, Any]]:
    from equirl.rl.evaluation import evaluate_methods

    rows = []
    for algo, kind, env, path in agents:
        step(0, f"zero-shot: {algo} {kind} {env}")
        res = evaluate_methods(
            path, env, list(method_names(learned_scorer=False)), algo=algo, episodes=episodes, seeds=seeds
        )
        for m, r in res.items():
            rows.append(
                {
                    "algo": algo,
                    "agent": kind,
                    "env": env,
                    "method": m,
                    "mean_return": round(r["mean_return"], 2),
                    "std_return": round(r["std_return"], 2),
                    "ci95_low": round(r["ci95"][0], 2),
                    "ci95_high": round(r["ci95"][1], 2),
                    "episodes": r["episodes"],
                }
            )
        step()
    return rows


def threshold(env: str) -> float:
    """The success threshold of ``env`` (its spec's ``scores.threshold``; one line when it has none)."""
    from equirl.rl.spec import env_scores

    scores = env_scores(env)
    if scores is None:
        raise ConfigError(f"no success threshold for {env}: its symmetry spec gives no scores")
    return float(scores["threshold"])


#: finetuning overrides shared by both arms of the sample-efficiency benchmark
EFFICIENCY_OVERRIDES: dict[str, Any] = {
    "hyperparams.exploration_initial_eps": 0.1,
    "hyperparams.learning_starts": 500,
    "freeze_backbone": False,
    "partial_fraction": 0,
    "log.tensorboard": False,
}


def efficiency_sweep(
    seeds: int,
    budget: int,
    envs: tuple[str, ...] = ("CartPole-v1", "Acrobot-v1"),
    method: str = EQUITUNE,
    eval_freq: int = 1000,
    eval_episodes: int = 10,
    first_seed: int = 0,
) -> SweepSpec:
    """The sample-efficiency protocol as a sweep (see :func:`efficiency`): per env the shipped config
    finetuning ``{env}_partial.zip`` with :data:`EFFICIENCY_OVERRIDES`, evaluated at step 0 and every
    ``eval_freq`` env steps, stopped at the first evaluation reaching :func:`threshold` (the env spec's).

    :param seeds: seeds per arm, ``first_seed .. first_seed + seeds - 1``.
    :param budget: env steps per run (censoring limit).
    :param method: the equivariant arm (the other is ``base``).
    """
    from equirl.assets import asset_path
    from equirl.rl.agents import agent_path
    from equirl.rl.sweep import SweepBase, SweepSpec

    bases = []
    for env in envs:
        stop_at = threshold(env)
        bases.append(
            SweepBase(
                str(asset_path("configs") / "rl" / f"dqn-{env}.yaml"),
                eval={"stop_at": stop_at},
                set={**EFFICIENCY_OVERRIDES, "init_from": str(agent_path(env, partial=True))},
            )
        )
    return SweepSpec(
        config=bases,
        grid={"method": [BASE, method], "seed": list(range(first_seed, first_seed + seeds))},
        timesteps=budget,
        eval={
            "freq": eval_freq,
            "episodes": eval_episodes,
            "final_episodes": eval_episodes,
            "at_start": True,
        },
    )


def efficiency(
    spec: SweepSpec,
    jobs: int = 1,
    runs_dir: Path | None = None,
    console: Console | None = None,
) -> list[dict[str, Any]]:
    """Sample efficiency of plain vs equivariant finetuning from the same partial agent, run as a sweep
    (``spec``: :func:`efficiency_sweep`; :func:`equirl.rl.sweep.run_sweep`): every run is an ordinary run
    directory in ``runs_dir``.

    Protocol: both arms start from the shipped ``{env}_partial.zip`` with the env's pretraining
    hyperparameters (exploration restarted at ε = 0.1); at step 0 and every ``eval_freq`` env steps
    ``eval_episodes`` deterministic episodes are run; a run stops at the first evaluation whose mean
    return reaches :func:`threshold` (``eval.stop_at``) and records that step, or is censored at
    ``budget``.

    :param jobs: trials at once on a local Ray (each on one CPU and one torch thread; ``$RAY_ADDRESS``: a
        cluster); 1: one after another in this process.
    :param runs_dir: the sweep folder (run directories; a rerun skips finished runs, so seeds can be
        added). Default: a new folder under the system's temporary directory (logged).
    :param console: show a transient progress bar there (``None``: silent).
    """
    import tempfile

    from equirl.rl.sweep import expand_trials, run_sweep

    if runs_dir is None:
        runs_dir = Path(tempfile.mkdtemp(prefix="equirl-efficiency-"))
        log.info("sample-efficiency runs in %s", runs_dir)
    trials = expand_trials(spec, runs_dir)
    with progress(console, "sample efficiency", len(trials)) as step:
        res = run_sweep(
            spec, runs_dir, executor="ray" if jobs > 1 else "serial", cpus=jobs, on_trial=lambda o: step()
        )
    failed = [o for o in res.outcomes if o.status != "finished"]
    if failed:
        raise EquirlError(
            f"{len(failed)} sample-efficiency runs failed, e.g. {failed[0].name}: {failed[0].error}"
        )
    return [efficiency_row(t, Path(o.run_dir or "")) for t, o in zip(trials, res.outcomes)]


def efficiency_row(trial: Trial, run_dir: Path) -> dict[str, Any]:
    """One finished sample-efficiency run as a table row (the periodic evaluations, step 0 included)."""
    from equirl.utils.io import read_json

    p = run_dir / "evaluations.json"
    data = read_json(p, "evaluations")
    ev = data.get("evaluations") if isinstance(data, dict) else None
    if not isinstance(ev, list) or len(ev) < 2:
        raise ConfigError(f"evaluations {p} has no periodic evaluations")
    curve = [(int(e["timestep"]), float(e["mean_return"])) for e in ev[:-1]]  # the last: the final evaluation
    goal = threshold(trial.env)
    reached = next((t for t, r in curve if r >= goal), None)
    return {
        "env": trial.env,
        "method": trial.method,
        "seed": trial.seed,
        "steps_to_threshold": reached if reached is not None else -1,
        "reached": reached is not None,
        "start_return": round(curve[0][1], 2),
        "best_return": round(max(r for _, r in curve), 2),
        "budget": trial.cfg.timesteps,
        "eval_freq": trial.cfg.eval.freq,
        "eval_episodes": trial.cfg.eval.episodes,
        "seconds": round(float(data.get("train_seconds") or 0.0), 1),
        "curve": ";".join(f"{t}:{r:.1f}" for t, r in curve),
    }


def efficiency_summary(rows: list[dict[str, Any]], method: str) -> list[dict[str, Any]]:
    """Median steps to threshold per env and method. A censored run counts as "> budget"; the median
    is reported as ``None`` (not reached) when more than half of the runs are censored."""
    out = []
    for env in sorted({r["env"] for r in rows}):
        med: dict[str, float | None] = {}
        for m in (BASE, method):
            runs = [r for r in rows if r["env"] == env and r["method"] == m]
            if not runs:
                continue
            steps = sorted(r["steps_to_threshold"] if r["reached"] else math.inf for r in runs)
            mid = float(np.median(steps))
            med[m] = None if math.isinf(mid) else mid
            out.append(
                {
                    "env": env,
                    "method": m,
                    "runs": len(runs),
                    "reached": sum(bool(r["reached"]) for r in runs),
                    "median_steps": med[m] if med[m] is not None else f"> {runs[0]['budget']}",
                    "ratio_vs_base": "",
                }
            )
        b, e = med.get(BASE), med.get(method)
        if out and out[-1]["method"] == method:
            if e is not None and b is not None:
                out[-1]["ratio_vs_base"] = round(e / max(b, 1.0), 3)
            elif e is not None and b is None:
                budget = next(r["budget"] for r in rows if r["env"] == env)
                out[-1]["ratio_vs_base"] = f"< {e / budget:.2f}"
            elif e is None and b is not None:
                out[-1]["ratio_vs_base"] = "not reached"
    return out


#: (label, method, spec, scorer target) rows of the canonicalization benchmark on the gridworld
CANONICAL_VARIANTS: tuple[tuple[str, str, str, str | None], ...] = (
    (BASE, BASE, "D4", None),
    ("equitune D4", EQUITUNE, "D4", None),
    ("equizero D4", EQUIZERO, "D4", None),
    ("canonicalize D4 (random scorer)", CANONICALIZE, "D4", None),
    ("canonicalize D4 (identity prior)", CANONICALIZE, "D4", "identity"),
    ("canonicalize D4 (distilled equizero)", CANONICALIZE, "D4", EQUIZERO),
    ("equitune C2xZ2", EQUITUNE, "klein", None),
    ("multigroup C2xZ2 (distilled equizero)", MULTIGROUP, "klein", EQUIZERO),
)


def canonical(
    seeds: int,
    episodes: int,
    scorer_steps: int = 300,
    observations: int = 2000,
    console: Console | None = None,
) -> list[dict[str, Any]]:
    """Zero-shot returns of the shipped gridworld agents under learned canonicalization vs equitune /
    equizero (D4), and multigroup vs equitune on the Klein four-group ``C2 x mirror``; the scorer is fitted
    for ``scorer_steps`` Adam steps on ``observations`` rollout observations (no env-reward learning).
    ``passes`` is the number of backbone passes per input (ties aside); progress bar on ``console``."""
    with progress(console, "learned canonicalization", 2 * len(CANONICAL_VARIANTS)) as step:
        return _canonical(seeds, episodes, scorer_steps, observations, step)


def _canonical(
    seeds: int, episodes: int, scorer_steps: int, observations: int, step: Step
) -> list[dict[str, Any]]:
    from equirl.assets import asset_path
    from equirl.rl.agents import agent_dir
    from equirl.rl.build import load_pretrained
    from equirl.rl.canonical import collect_observations, fit_scorer
    from equirl.rl.evaluation import evaluate
    from equirl.rl.spec import load_spec

    env = "equirl/GridWorld-v0"
    specs = {
        "D4": load_spec(env),
        "klein": load_spec(asset_path("envs") / "variants" / "equirl_GridWorld-v0_klein.yaml"),
    }
    rows: list[dict[str, Any]] = []
    d = agent_dir(env)
    for kind, name in (
        ("ours", "equirl_GridWorld-v0.zip"),
        ("ours-partial", "equirl_GridWorld-v0_partial.zip"),
    ):
        if not (d / name).is_file():
            step(len(CANONICAL_VARIANTS))
            continue
        for label, method, spec, target in CANONICAL_VARIANTS:
            step(0, f"canonicalization: {kind} {label}")
            sym = specs[spec]
            model = load_pretrained(d / name, env, method=method, symmetry=sym, seed=0)
            fit: dict[str, float] = {}
            if target is not None:
                obs = collect_observations(model, env, observations, seed=123)
                fit = fit_scorer(model, obs, steps=scorer_steps, target=target)  # type: ignore[arg-type]
            equi = model.policy.q_net.equi
            passes = (
                1
                if method in (BASE, CANONICALIZE)
                else int(getattr(equi, "passes_per_input", sym.group.order))
            )
            rets: list[float] = []
            for sd in range(seeds):
                rets += evaluate(model, env, n_eval_episodes=episodes, seed=1000 * sd)
            rows.append(
                {
                    "agent": kind,
                    "variant": label,
                    "group": sym.group.name,
                    "passes": passes,
                    "mean_return": round(float(np.mean(rets)), 3),
                    "std_return": round(float(np.std(rets)), 3),
                    "episodes": len(rets),
                    "scorer_agreement": round(fit["agreement"], 3) if fit else "",
                }
            )
            log.info("%s %s: %.3f", kind, label, rows[-1]["mean_return"])
            step()
    return rows


#: the stock-SB3 arm of the wall-time part: SB3's own ``MlpPolicy`` / ``CnnPolicy`` model on the same env,
#: with the same hyperparameters, as the reference the equivariant methods are held to
SB3 = "sb3"
WALLTIME_METHODS = (SB3, *method_names(learned_scorer=False))
#: the configs the wall-time part times by default (``walltime.csv``)
WALLTIME_CONFIGS = ("dqn-CartPole-v1",)
#: ``learning_starts`` of the timed runs (so that nearly every timed step comes with its gradient updates)
WALLTIME_LEARNING_STARTS = 100


def walltime_csv_name(configs: Sequence[str]) -> str:
    """The CSV file of a wall-time run: ``walltime.csv`` for the default configs, else one named by them
    (``walltime_dqn-MinAtar-Breakout-v1+dqn-ALE-Breakout-v5.csv``), so another set never overwrites it."""
    stems = [Path(c).name.removesuffix(".yaml").removesuffix(".yml") for c in configs]
    if tuple(stems) == WALLTIME_CONFIGS:
        return "walltime.csv"
    return "walltime_" + "+".join(stems) + ".csv"


def load_walltime_configs(
    configs: Sequence[str], learning_starts: int | None = WALLTIME_LEARNING_STARTS
) -> list[tuple[str, RLConfig]]:
    """Each of ``configs`` (a shipped RL config's name or a path) read and validated, as ``(name, config)``,
    with ``hyperparams.learning_starts`` set to ``learning_starts`` where the algorithm has one (``None``:
    the config's own); a bad name fails here, in one line, before anything is timed."""
    from equirl.assets import find_config
    from equirl.rl.config import load_rl_config

    out: list[tuple[str, RLConfig]] = []
    for name in configs:
        path = find_config(name, section="rl")
        cfg = load_rl_config(path)
        if cfg.init_from:
            raise ConfigError(
                f"wall time: {name} finetunes {cfg.init_from}; time a config that trains from scratch"
            )
        if learning_starts is not None and hasattr(cfg.hyperparams, "learning_starts"):
            cfg = load_rl_config(path, [f"hyperparams.learning_starts={learning_starts}"])
        out.append((path.stem, cfg))
    return out


def walltime_runs(
    configs: Sequence[str],
    steps: int | Sequence[int],
    learning_starts: int | None = WALLTIME_LEARNING_STARTS,
) -> list[tuple[str, RLConfig, int]]:
    """``(name, config, env steps)`` of each config to time (:func:`load_walltime_configs`,
    :func:`walltime_budgets`); a config named twice is timed once (with its first budget)."""
    budgets = walltime_budgets(steps, configs)
    out: list[tuple[str, RLConfig, int]] = []
    for (name, cfg), n in zip(load_walltime_configs(configs, learning_starts), budgets, strict=True):
        if name not in {m for m, _, _ in out}:
            out.append((name, cfg, n))
    return out


def walltime(
    steps: int | Sequence[int],
    repeats: int = 1,
    methods: tuple[str, ...] = WALLTIME_METHODS,
    console: Console | None = None,
    configs: Sequence[str] = WALLTIME_CONFIGS,
    learning_starts: int | None = WALLTIME_LEARNING_STARTS,
) -> list[dict[str, Any]]:
    """Seconds of ``learn(steps)`` from scratch per (config, method), in one process with the runs
    interleaved (``repeats`` rounds; in each, every config with every method), so that load from other
    processes hits every arm alike. Reports the median wall time, the median CPU time of this thread (less
    sensitive to a shared machine), env steps per wall second, and ratios against the stock-SB3 arm
    (``sb3``) and equirl's un-symmetrized policy (``base``), where those arms are among ``methods``.

    The ``sb3`` arm is ``stable_baselines3.DQN("MlpPolicy" | "CnnPolicy", env, **hyperparams)`` (the
    config's algorithm and ``net_arch``) on the env equirl trains in (:func:`~equirl.rl.build.make_train_env`:
    Atari games with AtariWrapper and 4 stacked frames); the other arms are :func:`~equirl.rl.build.build_model`
    with ``method`` set. Building the model (and its env) is not timed.

    :param steps: env steps per run: one number for every config, or one per config.
    :param repeats: interleaved rounds (each arm runs once per round, same seed).
    :param configs: shipped RL config names (``dqn-MinAtar-Breakout-v1``) or paths; one row per config and
        method. ``group_order`` is the env's symmetry group's order (what the equivariant methods pay for:
        |G| transformed inputs per forward; ``sb3`` and ``base`` ignore it).
    :param learning_starts: replaces the configs' ``hyperparams.learning_starts`` (``None``: keep theirs),
        so the timed steps include the gradient updates; ``updates`` in the rows counts them per run.
    :param console: show a transient progress bar there (``None``: silent).

    Runs on 1 torch thread (restored afterwards).
    """
    unknown = [m for m in methods if m != SB3 and m not in method_names(learned_scorer=False)]
    if unknown:
        choices = ", ".join(WALLTIME_METHODS)
        raise ConfigError(f"wall time: unknown methods {', '.join(unknown)}; choose from {choices}")
    runs = walltime_runs(configs, steps, learning_starts)
    with torch_threads(1), progress(console, "wall time", repeats * len(runs) * len(methods)) as step:
        return _walltime(runs, repeats, methods, step)


def walltime_budgets(steps: int | Sequence[int], configs: Sequence[str]) -> list[int]:
    """The env steps of each config's runs, in the order of ``configs``: ``steps`` (or its one value) for
    all, or the i-th value for the i-th config."""
    each = [int(steps)] if isinstance(steps, int) else [int(n) for n in steps]
    if len(each) == 1:
        each *= len(configs)
    if len(each) != len(configs):
        raise ConfigError(
            f"wall time: {len(each)} step budgets for {len(configs)} configs (give one, or one per config)"
        )
    if min(each, default=1) < 1:
        raise ConfigError(f"wall time: step budgets must be >= 1, got {min(each)}")
    return each


def _sb3_model(cfg: RLConfig) -> Any:
    """Stock SB3: the config's algorithm with SB3's own ``MlpPolicy`` / ``CnnPolicy`` (the policy equirl
    would pick for the env) and the same hyperparameters and network (``net_arch``, a named feature
    extractor), on the same training env."""
    from equirl.rl.algos import get_algo
    from equirl.rl.build import make_train_env, policy_alias, policy_net_kwargs, sb3_algo_kwargs

    vec = make_train_env(cfg)
    policy = "CnnPolicy" if policy_alias(vec.observation_space) == "EquiCnnPolicy" else "MlpPolicy"
    pk = policy_net_kwargs(cfg)
    return get_algo(cfg.algo).cls(
        policy, vec, policy_kwargs=pk, seed=cfg.seed, device="cpu", **sb3_algo_kwargs(cfg, vec.action_space)
    )


def _walltime_model(cfg: RLConfig, method: str) -> Any:
    from dataclasses import replace

    from stable_baselines3.common.logger import Logger

    from equirl.rl.build import build_model

    if method == SB3:
        model = _sb3_model(cfg)
    else:  # the config's symmetrizer options belong to its own method
        model = build_model(
            replace(cfg, method=method, method_kwargs=cfg.method_kwargs if method == cfg.method else {})
        )
    # a logger with no outputs: else every ``learn`` leaves an empty ``SB3-{time}`` folder in the temp dir
    model.set_logger(Logger(folder=None, output_formats=[]))
    return model


def _n_updates(model: Any) -> int:
    return int(getattr(model, "_n_updates", 0))


def network_share(model: Any, steps: int) -> tuple[float, float] | None:
    """The shares of ``model.learn(steps)``'s CPU time (this thread) spent in its Q-networks' forward calls
    (``q_net`` / ``q_net_target`` / ``quantile_net``...: the value-based family) and in the backward pass of
    its loss (from the end of the optimizer's ``zero_grad`` to its ``step``: the backward and SB3's gradient
    clipping), measured with hooks that are removed afterwards (``None`` for other algorithms).

    An exact symmetrizer runs the network on all ``|G|`` transformed inputs, forward and backward, so with
    these shares ``f + b`` it trains about ``1 + (|G| - 1)·(f + b)`` times as long as the plain model if a
    call on ``|G|`` times the rows costs ``|G|`` times as much: close to a floor for a CNN on frames (its
    calls scale about linearly), an estimate for a small MLP, whose batch-1 calls are mostly fixed
    per-call cost (then it can go below).
    """
    from torch import nn

    nets = [
        m
        for name, m in model.policy.named_children()
        if isinstance(m, nn.Module) and name.endswith(("_net", "_net_target"))
    ]
    optimizer = getattr(model.policy, "optimizer", None)
    if not nets or optimizer is None:
        return None
    clock = time.thread_time
    spent = {"forward": 0.0, "backward": 0.0}
    started: list[float] = []
    cleared: list[float] = []

    def before(_m: Any, _inp: Any) -> None:
        started.append(clock())

    def after(_m: Any, _inp: Any, _out: Any) -> None:
        spent["forward"] += clock() - started.pop()

    zero_grad = optimizer.zero_grad

    def zero_grad_timed(*args: Any, **kwargs: Any) -> None:
        zero_grad(*args, **kwargs)
        cleared[:] = [clock()]

    def before_step(*_: Any) -> None:
        if cleared:
            spent["backward"] += clock() - cleared.pop()

    handles = [
        h for net in nets for h in (net.register_forward_pre_hook(before), net.register_forward_hook(after))
    ]
    handles.append(optimizer.register_step_pre_hook(before_step))
    optimizer.zero_grad = zero_grad_timed
    try:
        c0 = clock()
        model.learn(steps)
        total = clock() - c0
    finally:
        for h in handles:
            h.remove()
        del optimizer.zero_grad  # the class's method again
    if total <= 0:
        return None
    return spent["forward"] / total, spent["backward"] / total


def _walltime(
    runs: list[tuple[str, RLConfig, int]], repeats: int, methods: tuple[str, ...], step: Step
) -> list[dict[str, Any]]:
    import gc

    from equirl.rl.spec import load_spec

    arms = [(name, m) for name, _, _ in runs for m in methods]
    wall: dict[tuple[str, str], list[float]] = {a: [] for a in arms}
    cpu: dict[tuple[str, str], list[float]] = {a: [] for a in arms}
    updates: dict[tuple[str, str], int] = {}
    policy: dict[tuple[str, str], str] = {}
    share: dict[str, tuple[float, float] | None] = {}
    if SB3 in methods:  # an extra, untimed run of stock SB3 per config (the hooks cost time themselves)
        for name, cfg, steps in runs:
            step(0, f"wall time: {name} sb3 (network share)")
            model = _walltime_model(cfg, SB3)
            share[name] = network_share(model, steps)
            model.get_env().close()
            del model
            gc.collect()
    for _ in range(repeats):
        for name, cfg, steps in runs:
            for method in methods:
                step(0, f"wall time: {name} {method}")
                model = _walltime_model(cfg, method)
                t0, c0 = time.perf_counter(), time.thread_time()
                model.learn(steps)
                wall[name, method].append(time.perf_counter() - t0)
                cpu[name, method].append(time.thread_time() - c0)
                updates[name, method] = _n_updates(model)
                policy[name, method] = type(model.policy).__name__
                model.get_env().close()
                del model  # a pixel replay buffer is GBs (if touched): free it before the next arm
                gc.collect()
                step()
    rows: list[dict[str, Any]] = []
    for name, cfg, steps in runs:
        w = {m: float(np.median(wall[name, m])) for m in methods}
        c = {m: float(np.median(cpu[name, m])) for m in methods}
        order = load_spec(cfg.symmetry or cfg.env).group.order
        for m in methods:
            row: dict[str, Any] = {
                "config": name,
                "env": cfg.env,
                "method": m,
                "policy": policy[name, m],
                "group_order": order,
                "steps": steps,
                "learning_starts": getattr(cfg.hyperparams, "learning_starts", ""),
                "updates": updates[name, m],
                "repeats": repeats,
                "wall_seconds": round(w[m], 2),
                "cpu_seconds": round(c[m], 2),
                "steps_per_second": round(steps / w[m], 1),
            }
            for ref in (SB3, BASE):  # paired: each round's time over its own reference run's
                if ref in methods:
                    ratios = [t / r for t, r in zip(wall[name, m], wall[name, ref], strict=True)]
                    row[f"wall_ratio_vs_{ref}"] = round(statistics.median(ratios), 3)
                    ci = median_ci(ratios)  # 95 %, from 6 rounds on
                    row[f"wall_ratio_vs_{ref}_lo"] = "" if ci is None else round(ci[0], 3)
                    row[f"wall_ratio_vs_{ref}_hi"] = "" if ci is None else round(ci[1], 3)
                    cpu_ratios = [t / r for t, r in zip(cpu[name, m], cpu[name, ref], strict=True)]
                    row[f"cpu_ratio_vs_{ref}"] = round(statistics.median(cpu_ratios), 3)
            fb = share.get(name)
            if SB3 in methods:  # an exact symmetrizer's ratio vs sb3 at linear network cost (network_share)
                row["sb3_forward_share"] = "" if fb is None else round(fb[0], 3)
                row["sb3_backward_share"] = "" if fb is None else round(fb[1], 3)
                symmetrizes = m not in (SB3, BASE) and fb is not None
                row["linear_vs_sb3"] = round(1 + (order - 1) * sum(fb), 3) if symmetrizes and fb else ""
            rows.append(row)
    return rows


def sweep_walltime(
    out: Path, sweep: str = "cartpole-4x10", cpus: int = 2, timesteps: int | None = None
) -> list[dict[str, Any]]:
    """Wall seconds of the same sweep on a local Ray with ``cpus`` workers and serially (one process,
    one torch thread), side by side, each into a fresh folder under ``out/sweep_walltime/``.

    :param sweep: a sweep file or a shipped sweep's name.
    :param cpus: Ray workers (= trials at once).
    :param timesteps: overrides the sweep's per-trial budget.
    """
    from dataclasses import replace

    from equirl.rl.sweep import load_sweep, run_sweep

    spec = load_sweep(sweep)
    if timesteps is not None:
        spec = replace(spec, timesteps=timesteps)
    root = out / "sweep_walltime" / time.strftime("%Y%m%d-%H%M%S")
    results = {}
    for executor in ("ray", "serial"):
        res = run_sweep(spec, root / executor, executor=executor, cpus=cpus)
        results[executor] = res
    serial = results["serial"].seconds
    return [
        {
            "sweep": Path(spec.source or sweep).stem,
            "executor": ex,
            "workers": cpus if ex == "ray" else 1,
            "trials": len(res.outcomes),
            "failed": res.count("failed"),
            "timesteps": spec.timesteps,
            "wall_seconds": round(res.seconds, 1),
            "ratio_vs_serial": round(res.seconds / serial, 3),
        }
        for ex, res in results.items()
    ]


def _plot_zero(rows: list[dict[str, Any]], path: Path) -> None:
    groups = sorted({(r["algo"], r["agent"], r["env"]) for r in rows})
    size = (max(6, 1.6 * min(len(groups), 6)), 3 * math.ceil(len(groups) / 6))
    save_plot(path, lambda fig: _draw_zero(fig, rows, groups), size)


def _draw_zero(fig: Figure, rows: list[dict[str, Any]], groups: list[tuple[str, str, str]]) -> None:
    """One panel per agent (returns differ in scale between envs): mean and 95 % interval per method."""
    methods = list(method_names(learned_scorer=False))
    axes = fig.subplots(math.ceil(len(groups) / 6), min(len(groups), 6), squeeze=False).ravel()
    for ax, g in zip(axes, groups):
        cell = {r["method"]: r for r in rows if (r["algo"], r["agent"], r["env"]) == g}
        xs = [m for m in methods if m in cell]
        means = np.array([cell[m]["mean_return"] for m in xs])
        lows = means - np.array([cell[m]["ci95_low"] for m in xs])
        highs = np.array([cell[m]["ci95_high"] for m in xs]) - means
        ax.bar(range(len(xs)), means, yerr=[lows, highs], color=[f"C{methods.index(m)}" for m in xs])
        ax.set_xticks(range(len(xs)), xs, fontsize=6, rotation=30)
        ax.set_title(f"{g[0]} {g[1]}\n{g[2]}", fontsize=7)
    for ax in axes[len(groups) :]:
        ax.axis("off")


def _plot_eff(rows: list[dict[str, Any]], summary: list[dict[str, Any]], path: Path) -> None:
    """Learning curves per seed (left of each pair) and steps-to-threshold per seed with the median."""
    envs = sorted({r["env"] for r in rows})
    save_plot(path, lambda fig: _draw_eff(fig, rows, summary, envs), (10, 3.6 * len(envs)))


def _draw_eff(
    fig: Figure, rows: list[dict[str, Any]], summary: list[dict[str, Any]], envs: list[str]
) -> None:
    methods = list(dict.fromkeys(r["method"] for r in rows))
    axes = fig.subplots(len(envs), 2, squeeze=False)
    for (ax, ax2), env in zip(axes, envs):
        labelled: set[str] = set()  # one legend entry per method, whatever the first seed
        for r in rows:
            if r["env"] != env:
                continue
            pts = [tuple(float(v) for v in p.split(":")) for p in r["curve"].split(";") if p]
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                color=f"C{methods.index(r['method'])}",
                alpha=0.6,
                label=None if r["method"] in labelled else r["method"],
            )
            labelled.add(r["method"])
        ax.axhline(threshold(env), ls="--", color="grey")
        ax.set_title(f"{env}: eval return while finetuning")
        ax.set_xlabel("env steps")
        ax.legend()
        budget = max(r["budget"] for r in rows if r["env"] == env)
        for i, m in enumerate(methods):
            runs = [r for r in rows if r["env"] == env and r["method"] == m]
            ys = [r["steps_to_threshold"] if r["reached"] else budget * 1.05 for r in runs]
            ax2.scatter([i] * len(ys), ys, color=f"C{i}", alpha=0.7)
            med = next((s["median_steps"] for s in summary if s["env"] == env and s["method"] == m), None)
            if isinstance(med, float):
                ax2.hlines(med, i - 0.25, i + 0.25, color="k")
        ax2.axhline(budget, ls=":", color="grey")
        ax2.text(
            len(methods) - 0.5, budget, "budget (above: not reached)", fontsize=7, va="bottom", ha="right"
        )
        ax2.set_xticks(range(len(methods)), methods)
        ax2.set_xlim(-0.5, len(methods) - 0.5)
        ax2.set_ylabel(f"env steps to {threshold(env):g}")
        ax2.set_title(f"{env}: steps to threshold (bar = median)")


#: the sample-efficiency part's envs when none are named
EFFICIENCY_ENVS = ("CartPole-v1", "Acrobot-v1")


def run_rl_bench(
    out: str | Path,
    parts: Sequence[str] = ("zero-shot",),
    *,
    seeds: int = 3,
    episodes: int = 10,
    budget: int = 30000,
    envs: Sequence[str] | None = None,
    method: str = EQUITUNE,
    eval_freq: int = 1000,
    eval_episodes: int = 10,
    jobs: int = 1,
    first_seed: int = 0,
    walltime_steps: int | Sequence[int] = 50000,
    walltime_repeats: int = 1,
    walltime_configs: Sequence[str] = WALLTIME_CONFIGS,
    walltime_learning_starts: int | None = WALLTIME_LEARNING_STARTS,
    walltime_csv: str | None = None,
    sweep: str = "cartpole-4x10",
    sweep_timesteps: int | None = None,
    threads: int | None = 1,
    console: Console | None = None,
) -> Iterator[BenchTable]:
    """Run the chosen :data:`PARTS`, save their CSV (and plots) under ``out``, and yield each part's
    tables as it finishes (so a long run shows its results as it goes).

    :param out: result folder (created).
    :param parts: a subset of :data:`PARTS`.
    :param seeds: evaluation seeds (zero-shot, canonical) or training seeds (efficiency).
    :param episodes: episodes per seed (zero-shot, canonical).
    :param budget: env steps per sample-efficiency run; see :func:`efficiency` for the other
        sample-efficiency parameters (``method``, ``eval_freq``, ``eval_episodes``, ``jobs``,
        ``first_seed``).
    :param envs: the zero-shot part's agents are only these envs' (``None``: all); the sample-efficiency
        part's envs (``None``: :data:`EFFICIENCY_ENVS`).
    :param walltime_steps: env steps per wall-time run (one for all configs, or one per config);
        ``walltime_repeats``: interleaved rounds;
        ``walltime_configs``: the RL configs timed (see :func:`walltime`), each with its
        ``learning_starts`` replaced by ``walltime_learning_starts`` (``None``: kept); ``walltime_csv``:
        the table's file name under ``out`` (default :func:`walltime_csv_name`: ``walltime.csv`` for
        CartPole alone, a name made of the configs otherwise).
    :param sweep: the sweep of ``sweep-walltime`` (run with ``jobs`` Ray workers and serially);
        ``sweep_timesteps`` overrides its per-trial budget.
    :param threads: torch threads of this process while it runs (restored afterwards; workers use 1).
    :param console: show transient progress bars there (``None``: silent).
    """
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ConfigError(f"unknown bench rl parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    if "efficiency" in parts or ("zero-shot" in parts and envs is not None):
        from equirl.rl.spec import load_spec

        for env_id in envs or EFFICIENCY_ENVS:  # an unknown env: one line before any folder or run exists
            load_spec(env_id)
    if "sweep-walltime" in parts:
        from equirl.rl.sweep import load_sweep

        load_sweep(sweep)  # an unknown sweep: one line before any other part runs
    if "walltime" in parts:
        walltime_runs(walltime_configs, walltime_steps, walltime_learning_starts)  # a bad config: ditto
        if walltime_csv is not None and (
            Path(walltime_csv).name != walltime_csv or walltime_csv in ("", ".", "..")
        ):
            raise ConfigError(
                f"--walltime-csv {walltime_csv!r}: a file name in the output folder, not a path"
            )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with torch_threads(threads):
        if "zero-shot" in parts:
            rows = zero_shot(seeds, episodes, console=console, envs=envs)
            write_csv(out / "zero_shot.csv", rows)
            if rows:
                _plot_zero(rows, out / "zero_shot.png")
            yield BenchTable(rows, "zero-shot returns (mean, 95 % bootstrap interval)", keys=4)
        if "efficiency" in parts:
            spec = efficiency_sweep(
                seeds, budget, tuple(envs or EFFICIENCY_ENVS), method, eval_freq, eval_episodes, first_seed
            )
            rows = efficiency(spec, jobs=jobs, runs_dir=out / "efficiency_runs", console=console)
            summary = efficiency_summary(rows, method)
            write_csv(out / "efficiency.csv", rows)
            write_csv(out / "efficiency_summary.csv", summary)
            if rows:
                _plot_eff(rows, summary, out / "efficiency.png")
            title = "sample efficiency (steps to threshold, -1 = not reached by the budget)"
            yield BenchTable(rows, title, [k for k in (rows[0] if rows else {}) if k != "curve"], keys=3)
            yield BenchTable(summary, "sample efficiency: median steps to threshold", keys=2)
        if "canonical" in parts:
            rows = canonical(seeds, episodes, console=console)
            write_csv(out / "canonical.csv", rows)
            title = "gridworld: learned canonicalization / multigroup vs equitune / equizero (zero-shot)"
            yield BenchTable(rows, title, keys=2)
        if "walltime" in parts:
            rows = walltime(
                walltime_steps,
                walltime_repeats,
                console=console,
                configs=walltime_configs,
                learning_starts=walltime_learning_starts,
            )
            write_csv(out / (walltime_csv or walltime_csv_name(walltime_configs)), rows)
            runs = ", ".join(dict.fromkeys(f"{r['env']} {r['steps']}" for r in rows))
            starts = (
                f"learning_starts={walltime_learning_starts}"
                if walltime_learning_starts is not None
                else "the configs' learning_starts"
            )
            title = f"training wall time (env steps from scratch: {runs}; {starts}; 1 torch thread)"
            hidden = ("env", "group_order", "steps", "learning_starts", "repeats")
            shown = [k for k in (rows[0] if rows else {}) if k not in hidden]
            note = (
                f"median of {walltime_repeats} interleaved round(s); updates = gradient steps per run; ratios"
                " of wall and of this thread's CPU seconds vs stock SB3 (sb3) and equirl's plain policy (base):"
                " the median of each round's ratio, *_lo / *_hi its 95 % interval (from 6 rounds on);"
                " sb3_forward_share f = stock SB3's CPU share in its Q-networks' forward calls (an untimed extra"
                " run), b its share in the loss's backward pass, linear_vs_sb3 = 1 + (|G| - 1)(f + b): an exact"
                " symmetrizer's ratio if its network calls cost |G| times the plain ones (about a floor for CNNs)"
            )
            yield BenchTable(rows, title, shown, keys=2, note=note)
        if "sweep-walltime" in parts:
            rows = sweep_walltime(out, sweep, jobs, sweep_timesteps)
            write_csv(out / "sweep_walltime.csv", rows)
            yield BenchTable(rows, "sweep wall time: Ray workers vs one trial after another", keys=2)
