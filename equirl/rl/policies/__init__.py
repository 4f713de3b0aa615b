"""Equivariant Stable-Baselines3 policies, laid out as SB3 lays out its own (one module a family):

* :mod:`equirl.rl.policies.heads` -- what every family shares: the one head-symmetrizer factory
  :func:`~equirl.rl.policies.heads.make_head_symmetrizer` (Q-values, quantiles or an actor-critic
  vector; equizero's proxies, λ-equitune's λ-net, the learned canonicalizers), the group's actions on
  what a policy sees (:func:`~equirl.rl.policies.heads.policy_obs_action`,
  :func:`~equirl.rl.policies.heads.concat_action`, :func:`~equirl.rl.policies.heads.flat_obs_action`),
  gSDE's per-state variance, the ``symmetry`` / ``method`` / ``method_kwargs`` / ``freeze_backbone``
  options;
* :mod:`equirl.rl.policies.q` -- DQN / QR-DQN: ``EquiDQNPolicy``, ``EquiQRDQNPolicy`` (and Cnn variants);
* :mod:`equirl.rl.policies.on_policy` -- PPO / A2C: ``EquiActorCriticPolicy`` (and its Cnn variant);
* :mod:`equirl.rl.policies.off_policy` -- SAC, TD3 (and DDPG), TQC: equivariant actors, invariant
  critics, ``EquiSACPolicy``, ``EquiTD3Policy``, ``EquiTQCPolicy`` (and Cnn variants).

Every public name of the four modules is importable from here (``from equirl.rl.policies import
EquiSACPolicy``). ``import equirl.rl`` registers the ``EquiMlpPolicy`` / ``EquiCnnPolicy`` aliases on
every algorithm (:func:`equirl.rl.algos.register_policy_aliases`, the one table of
:data:`equirl.rl.algos.ALGOS`); nothing here registers anything on import.

Agent zips saved before this package existed name their policy class by its old module
(``equirl.rl.policies.EquiDQNPolicy``, ``equirl.rl.ac_policies.EquiActorCriticPolicy``): the safe loader
(:mod:`equirl.rl.safe_load`) maps those paths to the classes here.
"""

from __future__ import annotations

from equirl.rl.policies import heads, off_policy, on_policy, q
from equirl.rl.policies.heads import *  # noqa: F403
from equirl.rl.policies.off_policy import *  # noqa: F403
from equirl.rl.policies.on_policy import *  # noqa: F403
from equirl.rl.policies.q import *  # noqa: F403

#: every public name of the four modules (each module's ``__all__`` is the one list of its names)
__all__ = sorted({*heads.__all__, *q.__all__, *on_policy.__all__, *off_policy.__all__})
