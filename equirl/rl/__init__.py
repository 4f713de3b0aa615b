"""Equivariant Stable-Baselines3 agents (issue 4).

* :mod:`equirl.rl.spec` -- declarative env symmetry specs (``envs/*.yaml``);
* :mod:`equirl.rl.check` -- does a spec commute with the dynamics (``equirl check-symmetry``);
* :mod:`equirl.rl.policies` -- :class:`EquiDQNPolicy`, :class:`EquiQRDQNPolicy` (and Cnn variants);
* :mod:`equirl.rl.ac_policies` -- :class:`EquiActorCriticPolicy` (PPO, A2C), :class:`EquiSACPolicy`,
  :class:`EquiTD3Policy` (TD3, DDPG), ``EquiTQCPolicy`` (and Cnn variants);
* :mod:`equirl.rl.pretrained` -- :func:`load_pretrained` wraps plain (incl. RL-zoo SB3 1.x) agents;
* :mod:`equirl.rl.train` -- config-driven runs; :mod:`equirl.rl.demo` (benchmarks: :mod:`equirl.bench.rl`).

``import equirl.rl`` registers the ``EquiMlpPolicy`` / ``EquiCnnPolicy`` aliases on SB3's ``DQN``, ``PPO``,
``A2C``, ``SAC``, ``TD3``, ``DDPG`` and sb3-contrib's ``QRDQN``, ``TQC``, and the ``equirl/GridWorld-v0``
env with gymnasium, so RL-zoo needs one flag:
``python -m rl_zoo3.train --algo dqn --env CartPole-v1 --gym-packages equirl.rl`` with
``policy: EquiMlpPolicy`` in its hyperparameters. Other names load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "EnvSymmetry",
    "EquiActorCriticCnnPolicy",
    "EquiActorCriticPolicy",
    "EquiCnnDQNPolicy",
    "EquiCnnQRDQNPolicy",
    "EquiDQNPolicy",
    "EquiQRDQNPolicy",
    "EquiSACCnnPolicy",
    "EquiSACPolicy",
    "EquiTD3CnnPolicy",
    "EquiTD3Policy",
    "check_symmetry",
    "evaluate",
    "evaluate_methods",
    "list_specs",
    "load_pretrained",
    "load_spec",
    "make_env",
    "run_demo",
    "select_method",
]

_WHERE = {
    "EnvSymmetry": "equirl.rl.spec",
    "list_specs": "equirl.rl.spec",
    "load_spec": "equirl.rl.spec",
    "check_symmetry": "equirl.rl.check",
    "EquiDQNPolicy": "equirl.rl.policies",
    "EquiCnnDQNPolicy": "equirl.rl.policies",
    "EquiQRDQNPolicy": "equirl.rl.policies",
    "EquiCnnQRDQNPolicy": "equirl.rl.policies",
    "EquiActorCriticPolicy": "equirl.rl.ac_policies",
    "EquiActorCriticCnnPolicy": "equirl.rl.ac_policies",
    "EquiSACPolicy": "equirl.rl.ac_policies",
    "EquiTD3Policy": "equirl.rl.ac_policies",
    "EquiSACCnnPolicy": "equirl.rl.ac_policies",
    "EquiTD3CnnPolicy": "equirl.rl.ac_policies",
    "load_pretrained": "equirl.rl.pretrained",
    "evaluate": "equirl.rl.pretrained",
    "evaluate_methods": "equirl.rl.evaluation",
    "make_env": "equirl.rl.envs",
    "run_demo": "equirl.rl.demo",
    "select_method": "equirl.rl.select",
}


from equirl.rl import ac_policies as _ac_policies  # noqa: E402  (registers the SB3 policy aliases)
from equirl.rl import policies as _policies  # noqa: E402
from equirl.rl.gridworld import register as _register_envs  # noqa: E402

_register_envs()
del _policies, _ac_policies


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'equirl.rl' has no attribute {name!r}")
