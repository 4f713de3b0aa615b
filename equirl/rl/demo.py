"""The RL demo behind ``equirl demo``: the shipped CartPole agents, zero-shot and briefly finetuned.

:func:`run_demo` computes; the CLI prints (``equirl/cli/core.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from equirl.registry import AUTO, BASE, EQUIZERO, method_names

__all__ = ["DEMO_ENV", "DEMO_METHODS", "DemoResult", "run_demo"]

DEMO_ENV = "CartPole-v1"
#: the methods compared zero-shot (an untrained λ equals equitune)
DEMO_METHODS = method_names(learned_scorer=False)


@dataclass
class DemoResult:
    """What the demo measured.

    :param agent: the full agent's zip.
    :param episodes: evaluation episodes per method.
    :param zero_shot: ``{"full"|"partial": {method: {"mean_return", "std_return", "episodes"}}}``.
    :param finetune_method: the method used to finetune the partial agent (``auto``'s pick when auto).
    :param finetune_steps: env steps of finetuning (0: none).
    :param finetune: the finetuning run (``None`` when skipped).
    :param notes: one-sentence explanations of surprising rows, for the user.
    :param auto_reason: why ``auto`` picked ``finetune_method`` (``None`` when it was not auto).
    """

    agent: Path
    episodes: int
    zero_shot: dict[str, dict[str, dict[str, Any]]]
    finetune_method: str
    finetune_steps: int
    finetune: Any = None
    notes: list[str] = field(default_factory=list)
    auto_reason: str | None = None


def _notes(zero: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    full = zero.get("full", {})
    base, eqz = full.get(BASE), full.get(EQUIZERO)
    if base is None or eqz is None or eqz["mean_return"] >= 0.98 * base["mean_return"]:
        return []
    return [
        f"equizero scores {eqz['mean_return']:.0f} against {base['mean_return']:.0f} for the base agent because it "
        "acts on whichever mirror image of the state has the highest Q-value: this agent's Q-values for a "
        "state and its mirror image are almost equal, so it often acts on the mirror image, which it never "
        "trained on and plays badly; use equitune or λ-equitune for such an agent "
        "(`equirl eval --agent YOUR.zip --env ENV --method all` compares them on yours)."
    ]


def run_demo(
    agent: str | Path | None = None,
    episodes: int = 5,
    finetune_steps: int = 3000,
    finetune_method: str = AUTO,
    out: str = "runs",
    progress_bar: bool = False,
) -> DemoResult:
    """Evaluate base / equitune / equizero / λ-equitune zero-shot on the shipped CartPole agents (fully
    and partially trained) and finetune the partial one briefly with a symmetrizer.

    :param agent: the full agent zip (default: the shipped ``agents/dqn/CartPole-v1/CartPole-v1.zip``);
        its ``*_partial.zip`` sibling is used when present.
    :param episodes: evaluation episodes per method.
    :param finetune_steps: env steps of finetuning (0: skip).
    :param finetune_method: the symmetrizer used while finetuning; ``auto`` (the default) picks it on
        validation episodes of the partial agent (:func:`equirl.rl.select.select_method`).
    :param out: root of the run directory.
    :param progress_bar: show SB3's progress bar while finetuning.
    """
    from equirl.rl.agents import agent_path
    from equirl.rl.config import EvalConfig, HyperParams, LogConfig, RLConfig
    from equirl.rl.evaluation import evaluate_methods
    from equirl.rl.train import run_training

    full = Path(agent) if agent is not None else agent_path(DEMO_ENV)
    partial = full.with_name(full.stem + "_partial.zip")
    methods = list(DEMO_METHODS)
    zero = {"full": evaluate_methods(full, DEMO_ENV, methods, episodes=episodes)}
    if partial.is_file():
        zero["partial"] = evaluate_methods(partial, DEMO_ENV, methods, episodes=episodes)
    res = None
    if finetune_steps > 0 and partial.is_file():
        cfg = RLConfig(
            env=DEMO_ENV,
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
        res = run_training(cfg, progress_bar=progress_bar, exp_name=f"demo-{finetune_method}")
    auto_reason = None
    if res is not None and finetune_method == AUTO:
        from equirl.config import load_yaml
        from equirl.utils.io import read_json

        finetune_method = str(load_yaml(res.run_dir / "config.yaml")["method"])
        choice = res.run_dir / "auto_choice.json"
        if choice.is_file():
            auto_reason = str(read_json(choice, "auto choice")["reason"])
    return DemoResult(
        full, episodes, zero, finetune_method, finetune_steps if res else 0, res, _notes(zero), auto_reason
    )
