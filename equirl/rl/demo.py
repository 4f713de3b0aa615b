"""The RL demo behind ``equirl demo``: the shipped CartPole agents, zero-shot and briefly finetuned."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from equirl.registry import EQUITUNE, method_names

__all__ = ["run_demo"]


def run_demo(
    console: Any,
    agent: str | Path | None = None,
    episodes: int = 5,
    finetune_steps: int = 3000,
    finetune_method: str = EQUITUNE,
    out: str = "runs",
) -> int:
    """Evaluate base / equitune / equizero / λ-equitune zero-shot on the shipped CartPole agents (fully
    and partially trained), finetune the partial one briefly with a symmetrizer, and print a comparison
    table and where the TensorBoard logs are.

    :param console: a rich console (the CLI's).
    :param agent: the full agent zip (default ``agents/dqn/CartPole-v1/CartPole-v1.zip``); its
        ``*_partial.zip`` sibling is used when present.
    :param episodes: evaluation episodes per method.
    :param finetune_steps: env steps of finetuning (0: skip).
    :param finetune_method: the symmetrizer used while finetuning.
    :param out: root of the run directory.
    """
    import torch
    from rich.table import Table

    from equirl.rl.agents import agent_path
    from equirl.rl.config import EvalConfig, HyperParams, LogConfig, RLConfig
    from equirl.rl.evaluation import evaluate_methods
    from equirl.rl.train import run_training

    torch.set_num_threads(1)
    env_id = "CartPole-v1"
    full = Path(agent) if agent is not None else agent_path(env_id)
    partial = full.with_name(full.stem + "_partial.zip")
    t0 = time.perf_counter()
    console.print(f"[bold]equirl RL demo[/]: {full} on {env_id} (mirror symmetry s ↦ -s, actions 0 ↔ 1)")
    methods = list(method_names(learned_scorer=False))
    zero = {"full": evaluate_methods(full, env_id, methods, episodes=episodes)}
    if partial.is_file():
        zero["partial"] = evaluate_methods(partial, env_id, methods, episodes=episodes)
    res = None
    if finetune_steps > 0 and partial.is_file():
        cfg = RLConfig(
            env=env_id,
            method=finetune_method,  # type: ignore[arg-type]
            init_from=str(partial),
            freeze_backbone=False,
            timesteps=finetune_steps,
            out=out,
            hyperparams=HyperParams(
                learning_rate=2.3e-3,
                buffer_size=20_000,
                learning_starts=500,
                train_freq=256,
                gradient_steps=128,
                target_update_interval=10,
                exploration_initial_eps=0.1,
                exploration_fraction=0.1,
                exploration_final_eps=0.04,
            ),
            eval=EvalConfig(freq=0, episodes=episodes, final_episodes=episodes),
            log=LogConfig(equi_freq=500),
        )
        res = run_training(cfg, console, exp_name=f"demo-{finetune_method}")
    t = Table(title=f"{env_id}: mean return ± std over {episodes} episodes (λ untrained = equitune)")
    t.add_column("method")
    for k in zero:
        t.add_column(f"{k} agent, zero-shot")
    if res is not None:
        t.add_column(f"partial + {finetune_steps} steps of {finetune_method} finetuning")
    for m in methods:
        row = [m] + [f"{zero[k][m]['mean_return']:.1f} ± {zero[k][m]['std_return']:.1f}" for k in zero]
        if res is not None:
            row.append(f"{res.final_mean:.1f} ± {res.final_std:.1f}" if m == finetune_method else "")
        t.add_row(*row)
    console.print(t)
    if res is not None:
        console.print(f"run directory: {res.run_dir}")
        console.print(
            f"TensorBoard: tensorboard --logdir {res.run_dir / 'tb'}  (equi/ tags: equivariance error, eval return)"
        )
    console.print(f"demo took {time.perf_counter() - t0:.0f} s")
    return 0
