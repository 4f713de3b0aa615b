"""Equivariant Stable-Baselines3 agents: the algorithm table, equivariant policies, building and loading
models, runs, evaluation, sweeps.

* :mod:`equirl.rl.spec` -- declarative env symmetry specs (``envs/*.yaml``);
* :mod:`equirl.rl.check` -- does a spec commute with the dynamics (``equirl check-symmetry``);
* :mod:`equirl.rl.policies` -- the equivariant policies, one module a family: :class:`EquiDQNPolicy`,
  :class:`EquiQRDQNPolicy` (``policies.q``), :class:`EquiActorCriticPolicy` (PPO, A2C;
  ``policies.on_policy``), :class:`EquiSACPolicy`, :class:`EquiTD3Policy` (TD3, DDPG), ``EquiTQCPolicy``
  (``policies.off_policy``), and Cnn variants; the head symmetrizer they share (``policies.heads``);
* :mod:`equirl.rl.algos` -- the algorithm table (:data:`~equirl.rl.algos.ALGOS`);
* :mod:`equirl.rl.build` -- :func:`load_pretrained` wraps plain agents (zips, RL-zoo folders, ``hf://``),
  :func:`build_model` makes a run's model; :mod:`equirl.rl.evaluation` -- :func:`evaluate`;
* :mod:`equirl.rl.train` -- config-driven runs; :mod:`equirl.rl.demo` (benchmarks: :mod:`equirl.bench.rl`).

``import equirl.rl`` registers the ``EquiMlpPolicy`` / ``EquiCnnPolicy`` aliases on SB3's ``DQN``, ``PPO``,
``A2C``, ``SAC``, ``TD3``, ``DDPG`` and sb3-contrib's ``QRDQN``, ``TQC``, and the ``equirl/GridWorld-v0``
env with gymnasium, so RL-zoo needs one flag:
``python -m rl_zoo3.train --algo dqn --env CartPole-v1 --gym-packages equirl.rl`` with
``policy: EquiMlpPolicy`` in its hyperparameters. Other names load on first use.
"""

from __future__ import annotations

import importlib
import sys as _sys
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
    "EquiActorCriticPolicy": "equirl.rl.policies",
    "EquiActorCriticCnnPolicy": "equirl.rl.policies",
    "EquiSACPolicy": "equirl.rl.policies",
    "EquiTD3Policy": "equirl.rl.policies",
    "EquiSACCnnPolicy": "equirl.rl.policies",
    "EquiTD3CnnPolicy": "equirl.rl.policies",
    "load_pretrained": "equirl.rl.build",
    "evaluate": "equirl.rl.evaluation",
    "evaluate_methods": "equirl.rl.evaluation",
    "make_env": "equirl.rl.envs",
    "run_demo": "equirl.rl.demo",
    "select_method": "equirl.rl.select",
}


from equirl.rl.algos import register_policy_aliases as _register_policy_aliases  # noqa: E402
from equirl.rl.gridworld import register as _register_envs  # noqa: E402

_register_policy_aliases()
# agent zips saved before the policies became a package name the classes by their old module paths:
# ``equirl.rl.policies.<Class>`` still resolves (the package re-exports them), ``equirl.rl.ac_policies``
# is this alias, so SB3's own loader (``PPO.load``) and resumed runs read those zips as before
_sys.modules.setdefault("equirl.rl.ac_policies", importlib.import_module("equirl.rl.policies"))
_register_envs()


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'equirl.rl' has no attribute {name!r}")
