"""Why a finetuned Walker2d SAC agent loses its gait in the first 2k steps, whatever the method.

One run per variant and seed: the shipped agent (agents/sac/Walker2d-v5/) is finetuned as
configs/rl/sac-Walker2d-v5-finetune.yaml says (method base: no symmetry at all) for STEPS env steps, then
its deterministic policy plays 5 episodes. Variants:

* ``no-updates``  -- the same run with no gradient step (the agent's own return, the reference);
* ``config``      -- the config as it is (1000 random warm-up steps, fresh Adam moments);
* ``sb3``         -- plain SB3: ``SAC.load`` (the agent's Adam moments kept) and ``learn``;
* ``adam``        -- the config, with the agent's Adam moments copied in;
* ``no-warmup``   -- ``learning_starts: 0`` (updates from the first transition);
* ``low-lr``      -- learning rate 3e-5 instead of 3e-4;
* ``own-warmup``  -- 5000 warm-up steps acting with the agent's own policy instead of at random;
* ``critic-first``-- own-warmup, and the actor held until step 10000 (the critic fits the agent's data).

It monkeypatches SB3 internals for the last two (a diagnostic, not an equirl feature).

    python docs/results/rl/walker2d-finetune/buffer_diagnosis.py VARIANT SEED STEPS
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from stable_baselines3 import SAC
from stable_baselines3.common.evaluation import evaluate_policy

from equirl.rl.build import build_model
from equirl.rl.config import load_rl_config
from equirl.rl.envs import make_env

ROOT = Path(__file__).resolve().parents[4]
CONFIG = ROOT / "configs" / "rl" / "sac-Walker2d-v5-finetune.yaml"


def main(variant: str, seed: int, steps: int) -> None:
    torch.set_num_threads(1)
    sets = [f"seed={seed}", "method=base", f"init_from={ROOT / 'agents/sac/Walker2d-v5/Walker2d-v5.zip'}"]
    if variant == "no-warmup":
        sets.append("hyperparams.learning_starts=0")
    elif variant == "low-lr":
        sets.append("hyperparams.learning_rate=3e-5")
    elif variant in ("own-warmup", "critic-first"):
        sets.append("hyperparams.learning_starts=5000")
    cfg = load_rl_config(CONFIG, sets)
    start = time.time()
    if variant == "sb3":
        model = SAC.load(
            cfg.init_from,
            env=make_env(cfg.env),
            device="cpu",
            seed=seed,
            custom_objects={"learning_starts": 1000},
        )
    else:
        model = build_model(cfg)
    if variant == "no-updates":
        model.learning_starts = 10**9
    elif variant == "adam":
        agent = SAC.load(cfg.init_from, device="cpu")
        model.actor.optimizer.load_state_dict(agent.actor.optimizer.state_dict())
        model.critic.optimizer.load_state_dict(agent.critic.optimizer.state_dict())
    if variant in ("own-warmup", "critic-first"):  # warm-up actions from the agent, not at random
        sample = model._sample_action
        model._sample_action = lambda _starts, noise, n_envs: sample(0, noise, n_envs)
    if variant == "critic-first":
        opt = model.actor.optimizer
        step = opt.step
        opt.step = lambda *a, **k: None if model.num_timesteps < 10_000 else step(*a, **k)
    model.learn(steps)
    mean, std = evaluate_policy(model, make_env(cfg.env), n_eval_episodes=5, deterministic=True)
    print(f"{variant} seed {seed}: {steps} steps -> {mean:.0f} ± {std:.0f} ({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
