"""RL subcommands: ``envs``, ``check-symmetry``, ``pretrain``, ``train``, ``eval`` and ``bench rl``.

Heavy imports (torch, SB3) stay inside the handlers so ``equirl --help`` is fast.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from equirl.cli.args import (
    add_config_args,
    algo_arg,
    bounded_int,
    method_arg,
    nonneg_int,
    out_dir,
    positive_float,
    positive_int,
)
from equirl.cli.core import register_runs, set_torch_threads
from equirl.errors import ConfigError
from equirl.registry import AUTO, canonical_method, method_names
from equirl.utils.io import printable, read_json, refuse_existing
from equirl.utils.runs import tensorboard_command

METHOD_CHOICES = method_names()
#: ``train --method`` also takes the data-augmentation baseline and the pseudo-method ``auto``
TRAIN_METHOD_CHOICES = method_names(augment=True, pseudo=True)
#: ``eval --method`` also takes ``auto`` (pick by validation episodes)
RUN_METHOD_CHOICES = method_names(pseudo=True)
#: what ``--method all`` evaluates (the scorer methods need a fitted scorer / a product group)
ALL_METHODS = method_names(learned_scorer=False)
#: what ``symmetrize`` writes (the methods that change the agent; no learned scorer to fit first)
SYMMETRIZE_METHOD_CHOICES = method_names(base=False, learned_scorer=False)
TRUST_HELP = (
    "let SB3 unpickle the agent zip's pickled entries, which can run code: only for files you trust"
    " (default: read as plain data, anything else refused)"
)


def register(commands: Any, bench: Any) -> None:
    p = commands.add_parser("envs", help="list the environments with a symmetry spec")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=_envs)

    p = commands.add_parser(
        "check-symmetry", help="check that an env's declared symmetry commutes with its dynamics"
    )
    p.add_argument("env", help="env id (e.g. CartPole-v1) or a spec YAML path")
    p.add_argument(
        "--steps", type=bounded_int(1, 1_000_000), default=200, help="sampled states (default 200)"
    )
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument(
        "--atol",
        type=positive_float,
        default=None,
        help="tolerance of the check of envs whose state can be set (default: the spec's verify.atol, 1e-5 "
        "unless it declares the env only approximately symmetric; the statistical check has its own bound)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help='print {"env", "max_error", "verified", "exact", "statistical", "approximate", "message"}',
    )
    p.set_defaults(func=_check_symmetry)

    for name, helptext in (
        ("pretrain", "train a plain agent from a config (configs/rl/*.yaml)"),
        ("train", "finetune an agent, or train from scratch, with a symmetrizer"),
    ):
        p = commands.add_parser(name, help=helptext)
        add_config_args(
            p,
            "YAML run config (a file, or a shipped one: `equirl train nosuch` lists them); omit with --resume",
            required=False,
            example="hyperparams.learning_rate=1e-4",
        )
        p.add_argument(
            "--resume",
            default=None,
            metavar="RUN_DIR",
            help="continue an interrupted (or stale / failed) run from its last checkpoint",
        )
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        p.add_argument(
            "--dry-run",
            action="store_true",
            help="check the config, env, agent, output folder and memory, then stop: nothing is trained",
        )
        if name == "pretrain":
            p.add_argument(
                "--export",
                default=None,
                type=out_dir,
                metavar="DIR",
                help="also copy the agent to DIR/{algo}/{env}/ (zoo-like layout, e.g. agents/)",
            )
            p.add_argument(
                "--overwrite",
                action="store_true",
                help="with --export: replace an agent already in DIR/{algo}/{env}/",
            )
            p.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
        else:
            p.add_argument(
                "--init-from",
                default=None,
                help="agent to finetune: zip, run directory (its best_model.zip), RL-zoo folder or"
                " hf://ORG/REPO (overrides init_from)",
            )
            p.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
            p.add_argument(
                "--method",
                default=None,
                type=method_arg,
                choices=TRAIN_METHOD_CHOICES,
                help="overrides method (auto: pick by zero-shot validation episodes of --init-from)",
            )
        p.set_defaults(func=_pretrain if name == "pretrain" else _train)

    register_runs(commands)

    p = commands.add_parser("eval", help="evaluate an agent zero-shot under several symmetrization methods")
    p.add_argument(
        "--agent",
        required=True,
        help="agent zip, equirl run directory (best_model.zip), RL-zoo folder or hf://ORG/REPO",
    )
    p.add_argument(
        "--final", action="store_true", help="in a run directory, the final model.zip, not best_model.zip"
    )
    p.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    p.add_argument(
        "--env",
        default=None,
        help="env id (default: the one an RL-zoo folder names, run as its current version)",
    )
    p.add_argument(
        "--algo",
        default=None,
        type=algo_arg,
        metavar="ALGO",
        help="the agent's algorithm: dqn, ppo, sac... (default: read from its zip's policy class)",
    )
    p.add_argument(
        "--method",
        nargs="+",
        default=["all"],
        help=f"methods ({' '.join(RUN_METHOD_CHOICES)}) or all; auto picks one on validation seeds",
    )
    p.add_argument(
        "--candidates",
        nargs="+",
        default=None,
        metavar="CANDIDATE",
        help="auto's candidates: 'method' or 'method:key=value,...' (default: by the agent's kind, e.g."
        " base equitune equizero equizero:proxy=max_value for DQN)",
    )
    p.add_argument(
        "--out", default=None, type=out_dir, help="folder for auto's choice (auto_choice.json / .md)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace auto's choice files already in --out")
    p.add_argument("--episodes", type=bounded_int(1, 100_000), default=10)
    p.add_argument("--seeds", type=bounded_int(1, 1000), default=1, help="evaluation seeds (episodes each)")
    p.add_argument(
        "--json", action="store_true", help='print {method: {"mean_return", "std_return", "episodes"}}'
    )
    p.set_defaults(func=_eval)

    p = commands.add_parser(
        "symmetrize",
        help="write an agent symmetrized as an SB3 zip (PPO.load / DQN.load, rl_zoo3 -i) and its statistics",
    )
    p.add_argument("--agent", required=True, help="agent zip, run directory, RL-zoo folder or hf://ORG/REPO")
    p.add_argument("--method", required=True, type=method_arg, choices=SYMMETRIZE_METHOD_CHOICES)
    p.add_argument(
        "--out",
        required=True,
        help="the zip to write (statistics and env files go to {env}/ beside it, as rl_zoo3 reads them)",
    )
    p.add_argument("--env", default=None, help="env id (default: the one the agent's files name)")
    p.add_argument("--algo", default=None, type=algo_arg, metavar="ALGO", help="default: read from the zip")
    p.add_argument("--final", action="store_true", help="in a run directory, model.zip, not best_model.zip")
    p.add_argument(
        "--overwrite", action="store_true", help="replace --out (and {env}/vecnormalize.pkl beside it)"
    )
    p.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    p.set_defaults(func=_symmetrize)

    p = bench.add_parser("rl", help="zero-shot returns, sample efficiency and wall time of equivariant DQN")
    p.add_argument("--out", default="bench-rl", type=out_dir, help="folder for CSV tables and plots")
    p.add_argument(
        "--parts",
        nargs="+",
        default=["zero-shot"],
        choices=("zero-shot", "efficiency", "canonical", "walltime", "sweep-walltime"),
        help="which benchmarks to run",
    )
    p.add_argument("--seeds", type=bounded_int(1, 1000), default=3)
    p.add_argument(
        "--first-seed",
        type=nonneg_int,
        default=0,
        help="sample-efficiency seeds are first-seed .. first-seed+seeds-1",
    )
    p.add_argument("--episodes", type=bounded_int(1, 100_000), default=10)
    p.add_argument("--budget", type=positive_int, default=30000, help="env steps per sample-efficiency run")
    p.add_argument(
        "--walltime-steps",
        type=positive_int,
        nargs="+",
        default=[50000],
        metavar="N",
        help="walltime: env steps per run (one for all --walltime-configs, or one per config)",
    )
    p.add_argument(
        "--sweep",
        default="cartpole-4x10",
        help="sweep-walltime: the sweep run on Ray (--jobs workers) and serially",
    )
    p.add_argument(
        "--sweep-timesteps", type=positive_int, default=None, help="sweep-walltime: per-trial budget override"
    )
    p.add_argument(
        "--walltime-repeats", type=positive_int, default=1, help="interleaved rounds of the wall-time runs"
    )
    p.add_argument(
        "--walltime-configs",
        nargs="+",
        default=["dqn-CartPole-v1"],
        metavar="CONFIG",
        help="walltime: shipped RL configs (dqn-MinAtar-Breakout-v1, dqn-ALE-Breakout-v5...) or paths, each"
        " timed with stock SB3 and every method",
    )
    p.add_argument(
        "--walltime-learning-starts",
        type=nonneg_int,
        default=100,
        metavar="N",
        help="walltime: replaces the configs' learning_starts, so the timed steps include gradient updates",
    )
    p.add_argument(
        "--walltime-csv",
        default=None,
        metavar="FILE",
        help="walltime: the table's file name in --out (default: walltime.csv for CartPole alone, else"
        " walltime_<configs>.csv)",
    )
    p.add_argument(
        "--method",
        default=method_names(base=False)[0],
        type=method_arg,
        choices=method_names(base=False, learned_scorer=False),
        help="equivariant method of the sample-efficiency runs",
    )
    p.add_argument(
        "--envs",
        nargs="+",
        default=None,
        help="zero-shot: only these envs' agents (default all); efficiency: these envs (default CartPole-v1"
        " Acrobot-v1)",
    )
    p.add_argument(
        "--eval-freq", type=positive_int, default=1000, help="env steps between sample-efficiency evaluations"
    )
    p.add_argument(
        "--eval-episodes", type=positive_int, default=10, help="episodes per sample-efficiency evaluation"
    )
    p.add_argument(
        "--jobs",
        type=bounded_int(1, 256),
        default=1,
        help="sample-efficiency runs at once, as a sweep on Ray (the [dist] extra; $RAY_ADDRESS: a cluster);"
        " also the Ray workers of sweep-walltime",
    )
    p.set_defaults(func=_bench)


def _envs(args: argparse.Namespace, console: Any) -> int:
    from equirl.rl.check import check_kind
    from equirl.rl.spec import list_specs

    specs = list_specs()
    if args.json:
        console.print_json(
            json.dumps(
                [
                    {
                        "env": s.env_id,
                        "group": s.group.name,
                        "observation": s.obs_type,
                        "actions": s.n_actions,
                        "verify": s.verify,
                        "verify_atol": s.verify_atol,
                        "check": check_kind(s),
                    }
                    for s in specs
                ]
            )
        )
        return 0
    from equirl.cli.output import make_table

    rows = [(s.env_id, s.group.name, s.group.order, s.obs_type, s.n_actions, check_kind(s)) for s in specs]
    cols = ("env", "group", "|G|", "observation action", "actions", "check-symmetry")
    console.print(make_table("environments with a symmetry spec", cols, rows))
    console.print(
        "also: the RL zoo's Atari ids ({Game}NoFrameskip-v4) use ALE/{Game}-v5's spec; old ids "
        "(LunarLander-v2, Walker2d-v3...) run as their current version",
        soft_wrap=True,
        markup=False,
    )
    return 0


def _check_symmetry(args: argparse.Namespace, console: Any) -> int:
    from equirl.cli.output import progress_bar
    from equirl.rl.check import check_symmetry

    with progress_bar(console, f"check-symmetry {args.env}") as progress:
        rep = check_symmetry(args.env, steps=args.steps, seed=args.seed, atol=args.atol, progress=progress)
    if args.json:
        console.print_json(
            json.dumps(
                {
                    "env": rep.env,
                    "max_error": rep.max_error,
                    "verified": rep.verified,
                    "exact": rep.exact,
                    "statistical": rep.statistical,
                    "approximate": rep.approximate,
                    "message": rep.message,
                }
            )
        )
    else:
        checked = rep.exact or rep.statistical
        style = "green" if rep.verified else ("red" if checked else "yellow")
        console.print(f"[{style}]{rep.env}[/]: {rep.message}")
    if (rep.exact or rep.statistical) and not rep.verified:
        return 1
    return 0


def _load_cfg(args: argparse.Namespace) -> Any:
    from equirl.rl.config import load_rl_config

    if args.config is None:
        raise ConfigError(
            f"give a run config (configs/rl/*.yaml) or --resume RUN_DIR to `equirl {args.command}`"
        )
    return load_rl_config(args.config, args.overrides)


def _resume(args: argparse.Namespace, console: Any) -> Any:
    """Resume ``args.resume`` (``None`` when the run had already finished: said in one line)."""
    from equirl.errors import RunFinishedError
    from equirl.rl.train import resume_training

    extra = [
        a
        for a in ("config", "export", "init_from", "method", "overwrite", "dry_run")
        if getattr(args, a, None)
    ]
    if extra or args.overrides:
        raise ConfigError("--resume continues a run as configured: drop the config, --set and other options")
    try:
        return resume_training(
            args.resume, progress_bar=not args.no_progress, trust_checkpoint=args.trust_checkpoint
        )
    except RunFinishedError as exc:
        console.print(str(exc), soft_wrap=True, highlight=False)
        return None


def _dry_run(cfg: Any, console: Any, trust_checkpoint: bool) -> int:
    from equirl.rl.train import check_run

    console.print(check_run(cfg, trust_checkpoint=trust_checkpoint), soft_wrap=True, highlight=False)
    return 0


def _best_text(res: Any) -> str:
    """What the run says of ``best_model.zip``: its return over the fresh episodes that confirmed it (and
    its figure during the run), else its periodic evaluation's."""
    if res.best_mean is None:
        return ""
    if res.best_episodes is None:
        return f"  best return {res.best_mean:.1f} at step {res.best_step} (best_model.zip)"
    which = "best_model.zip = model.zip" if res.best_is_final else "best_model.zip"
    during = ""
    if res.best_eval_mean is not None:
        kind = "final evaluation" if res.best_is_final else "evaluation"
        n = f"{res.best_eval_episodes}-episode " if res.best_eval_episodes else ""
        during = f"; {res.best_eval_mean:.1f} in its {n}{kind}"
    return (
        f"  best return {res.best_mean:.1f} ± {res.best_std:.1f} over {res.best_episodes} fresh episodes "
        f"({which}, step {res.best_step}{during})"
    )


def _report(res: Any, console: Any, t0: float) -> None:
    best = _best_text(res)
    total = time.perf_counter() - t0
    console.print(
        f"run: {res.run_dir}  final return {res.final_mean:.1f} ± {res.final_std:.1f} (model.zip){best}"
        f"  (training {res.seconds:.0f} s, resumed sessions included; this command {total:.0f} s, with setup "
        "and evaluations)",
        soft_wrap=True,
    )
    console.print(f"TensorBoard: {tensorboard_command(res.run_dir / 'tb')}", soft_wrap=True)


def _pretrain(args: argparse.Namespace, console: Any) -> int:
    t0 = time.perf_counter()
    set_torch_threads(1)  # small RL networks: one thread each beats oversubscribed cores
    from equirl.rl.train import run_training

    if args.resume:
        res = _resume(args, console)
    else:
        cfg = _load_cfg(args)
        if cfg.init_from:
            raise ConfigError(
                "pretrain trains from scratch: remove init_from (use `equirl train` to finetune)"
            )
        if args.export:  # refused before any training, not after
            from equirl.rl.agents import check_export

            check_export(cfg, args.export, overwrite=args.overwrite)
        if args.dry_run:
            return _dry_run(cfg, console, args.trust_checkpoint)
        res = run_training(cfg, progress_bar=not args.no_progress, exp_name="pretrain", command="pretrain")
    if res is None:
        return 0
    _report(res, console, t0)
    if args.export:
        from equirl.rl.agents import export_agent

        dest = export_agent(res.run_dir, args.export, overwrite=args.overwrite)
        console.print(f"agent exported to {dest}")
    return 0


def _train(args: argparse.Namespace, console: Any) -> int:
    t0 = time.perf_counter()
    _fetch_hub_agent(args.init_from)
    set_torch_threads(1)  # small RL networks: one thread each beats oversubscribed cores
    from equirl.rl.train import run_training

    if args.resume:
        res = _resume(args, console)
    else:
        from equirl.rl.config import with_run_options

        cfg = with_run_options(_load_cfg(args), init_from=args.init_from, method=args.method)
        if args.dry_run:
            return _dry_run(cfg, console, args.trust_checkpoint)
        res = run_training(cfg, progress_bar=not args.no_progress, trust_checkpoint=args.trust_checkpoint)
    if res is not None:
        choice_file = res.run_dir / "auto_choice.json"
        if choice_file.is_file():
            console.print(printable(read_json(choice_file, "auto choice").get("reason")), soft_wrap=True)
        _report(res, console, t0)
    return 0


def _eval_env(args: argparse.Namespace) -> str:
    """``--env``, or the env the agent's files name (an RL-zoo folder's ``args.yml`` / subfolder / folder
    name, a run's ``config.yaml``), as its current id (one warning naming both ids when they differ)."""
    from equirl.rl.envs import resolve_env_id
    from equirl.rl.zoo import agent_env_id, agent_runs

    if args.env is not None:
        from equirl.rl.spec import is_spec_path, use_spec_file

        if is_spec_path(args.env):  # a spec file: its env, with that spec for this command
            return use_spec_file(args.env)
        return resolve_env_id(args.env)
    trained = agent_env_id(args.agent)
    if trained is None:
        several = agent_runs(args.agent)
        if len(several) > 1:  # rl_zoo3's {algo}/ folder: one run per subfolder
            shown = ", ".join(printable(n, 60) for n in several[:4]) + (", ..." if len(several) > 4 else "")
            raise ConfigError(
                f"{printable(args.agent, 200)} holds several agents ({shown}): give one of them"
            )
        raise ConfigError(
            f"{printable(args.agent, 200)} does not name the env it was trained on: pass it as --env ENV_ID"
        )
    return resolve_env_id(trained, trained_on=trained)


def _fetch_hub_agent(agent: str | None) -> None:
    """A hub agent (``hf://ORG/REPO``) into the local hub cache before the heavy imports: offline and not
    cached, one line at once."""
    from equirl.utils.hub import hub_agent_folder, is_hub_ref

    if agent and is_hub_ref(agent):
        hub_agent_folder(agent)


def _symmetrize(args: argparse.Namespace, console: Any) -> int:
    _fetch_hub_agent(args.agent)
    set_torch_threads(1)  # small RL networks: one thread each beats oversubscribed cores
    from equirl.rl.agents import save_symmetrized

    env = _eval_env(args)
    written = save_symmetrized(
        args.agent,
        args.out,
        env,
        args.method,
        algo=args.algo,
        which="final" if args.final else "best",
        overwrite=args.overwrite,
        trust_checkpoint=args.trust_checkpoint,
    )
    console.print(
        f"wrote {', '.join(printable(p, 200) for p in written)} ({args.method} on {env})", soft_wrap=True
    )
    console.print(
        "load it with SB3 after `import equirl.rl` (e.g. PPO.load), or finetune it with rl_zoo3: "
        f"-i {printable(written[0], 200)} --gym-packages equirl.rl",
        soft_wrap=True,
    )
    return 0


def _eval_title(args: argparse.Namespace, which: str) -> str:
    """The table's title: the env, the zip evaluated, and whether the agent was trained with a method
    (an equirl run folder's config) or is evaluated zero-shot."""

    from equirl.config import load_yaml
    from equirl.rl.zoo import find_agent_zip, resolve_agent_path

    shown = printable(args.agent, 200)
    try:
        zpath = find_agent_zip(args.agent, args.env, which=which)
        folder = resolve_agent_path(args.agent)
        run_cfg = (folder if folder.is_dir() else folder.parent) / "config.yaml"
        trained = load_yaml(run_cfg).get("method") if run_cfg.is_file() else None
    except Exception:  # the title only; the evaluation itself has read the agent
        return f"{args.env}: returns of {shown}"
    notes = [zpath.name] if zpath != Path(str(args.agent)) else []
    notes.append(f"trained with method {printable(trained, 40)}" if isinstance(trained, str) else "zero-shot")
    return f"{args.env}: returns of {shown} ({'; '.join(notes)})"


def _eval(args: argparse.Namespace, console: Any) -> int:
    _fetch_hub_agent(args.agent)
    set_torch_threads(1)  # small RL networks: one thread each beats oversubscribed cores
    from equirl.rl.evaluation import evaluate_methods

    args.env = _eval_env(args)
    methods = list(ALL_METHODS) if "all" in args.method else [canonical_method(m) for m in args.method]
    from equirl.cli.output import make_table, progress_bar

    which = "final" if args.final else "best"
    from equirl.rl.build import spec_of_agent
    from equirl.rl.zipinfo import read_algo

    spec_of_agent(args.env, args.agent)  # an env without a symmetry spec is named before the agent is read
    # --algo, else the algorithm the zip was saved with; a contradiction is one line naming the option
    args.algo = read_algo(args.agent, args.algo, args.env, which)
    choice = None
    if AUTO in methods and args.out:  # a run folder's own choice is never replaced unasked
        from equirl.rl.select import choice_files

        refuse_existing(choice_files(args.out), args.overwrite, "--out")
    if AUTO in methods:
        from equirl.rl.select import select_method

        methods = [m for m in methods if m != AUTO]
        choice = select_method(
            args.agent,
            args.env,
            candidates=args.candidates,
            episodes=args.episodes,
            seeds=args.seeds,
            algo=args.algo,
            which=which,
            trust_checkpoint=args.trust_checkpoint,
        )
        if args.out:
            choice.save(args.out)
    common: dict[str, Any] = {
        "algo": args.algo,
        "episodes": args.episodes,
        "seeds": args.seeds,
        "which": which,
        "trust_checkpoint": args.trust_checkpoint,
    }
    with progress_bar(console, f"eval {args.env}") as progress:
        res = evaluate_methods(args.agent, args.env, methods, progress=progress, **common) if methods else {}
        if choice is not None:  # the chosen method on the evaluation seeds (not the validation ones)
            row = evaluate_methods(
                args.agent,
                args.env,
                [choice.method],
                method_kwargs={choice.method: choice.method_kwargs},
                **common,
            )[choice.method]
            res[AUTO] = {**row, "choice": choice.label}
    if args.json:
        console.print_json(json.dumps(res))
        return 0
    if choice is not None:
        console.print(choice.reason, soft_wrap=True)
    rows = [
        (
            f"{m} → {r['choice']}" if "choice" in r else m,
            f"{r['mean_return']:.1f}",
            f"[{r['ci95'][0]:.1f}, {r['ci95'][1]:.1f}]",
            f"{r['std_return']:.1f}",
            r["episodes"],
        )
        for m, r in res.items()
    ]
    cols = ("method", "mean return", "95% CI", "std", "episodes")
    console.print(make_table(_eval_title(args, which), cols, rows))
    return 0


def _bench(args: argparse.Namespace, console: Any) -> int:
    from equirl.bench.rl import run_rl_bench

    tables = run_rl_bench(
        args.out,
        args.parts,
        seeds=args.seeds,
        episodes=args.episodes,
        budget=args.budget,
        envs=args.envs,
        method=args.method,
        eval_freq=args.eval_freq,
        eval_episodes=args.eval_episodes,
        jobs=args.jobs,
        first_seed=args.first_seed,
        walltime_steps=args.walltime_steps,
        walltime_repeats=args.walltime_repeats,
        walltime_configs=args.walltime_configs,
        walltime_learning_starts=args.walltime_learning_starts,
        walltime_csv=args.walltime_csv,
        sweep=args.sweep,
        sweep_timesteps=args.sweep_timesteps,
        console=console,
    )
    for table in tables:  # each part's tables as it finishes
        console.print(table)
    console.print(f"results in {args.out}/")
    return 0
