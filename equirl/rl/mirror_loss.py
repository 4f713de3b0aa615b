"""The mirror-symmetry loss: a training-time baseline that *asks* a plain actor to be equivariant.

Yu, Turk & Liu (Learning Symmetric and Low-Energy Locomotion, ACM TOG / SIGGRAPH 2018) add to the policy
loss the penalty

    w · E_s Σ_{g ≠ e} ‖ π(g·s) − g·π(s) ‖²  / (|G| − 1)

on the policy's deterministic action (for SAC the squashed mean, for TD3 the action), so the policy
becomes symmetric as it trains, without an equivariant architecture and without mirrored data (equirl's
``augment``). Abdolhosseini et al. (On Learning Symmetric Locomotion, MIG 2019) compare it with mirrored
data, a phase-based and a symmetric-network policy on Walker2d.

:func:`attach_mirror_loss` adds it to an SB3 off-policy actor-critic (SAC, TD3, TQC) without touching
SB3's training step: a pre-step hook of the actor's optimizer draws a batch of observations from the replay
buffer (as SB3's own step does), back-propagates ``w ×`` the penalty into the gradients SB3's actor loss
left, and records the penalty as ``train/mirror_loss``. Nothing is saved with the model (the hook lives in
the optimizer object, which SB3 saves as a state dict): a run that resumes attaches it again from its
config (``hyperparams.mirror_loss``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from equirl.errors import ConfigError
from equirl.rl.spec import EnvSymmetry

__all__ = ["attach_mirror_loss", "mirror_penalty"]


def mirror_penalty(actor: Any, obs: Tensor, obs_act: Any, act_act: Any) -> Tensor:
    """``mean_s Σ_{g≠e} ‖π(g·s) − g·π(s)‖² / (|G| − 1)`` for the actor's deterministic action.

    :param actor: an SB3 actor (``_predict(obs, deterministic=True)`` gives its deterministic action).
    :param obs: a batch of observations as the actor takes them (the replay buffer's samples).
    :param obs_act: the group action on those observations
        (:meth:`~equirl.rl.spec.EnvSymmetry.policy_obs_action`).
    :param act_act: the group action on actions (:meth:`~equirl.rl.spec.EnvSymmetry.action_action`).
    :returns: a scalar with gradients into the actor (through both terms, as in Yu et al.).
    """
    order, batch = obs_act.group.order, obs.shape[0]
    rows = obs_act.orbit(obs).flatten(0, 1)  # (|G|·B, ...): one forward for the whole orbit
    actions = actor._predict(rows, deterministic=True).unflatten(0, (order, batch))
    target = act_act.orbit(actions[0])  # g·π(s) for every g
    return ((actions[1:] - target[1:]) ** 2).sum(-1).mean(-1).sum() / max(order - 1, 1)


def attach_mirror_loss(model: Any, sym: EnvSymmetry, weight: float) -> Any:
    """Add ``weight ×`` :func:`mirror_penalty` to every actor update of ``model`` (SAC, TD3, TQC).

    :param model: the SB3 model (its ``actor``, ``replay_buffer`` and ``batch_size``).
    :param sym: the env's symmetry spec (continuous actions).
    :param weight: the penalty's weight (> 0).
    :returns: the hook's handle (``.remove()`` detaches it).
    :raises ConfigError: a model without an actor or a spec without continuous actions (one line).
    """
    actor = getattr(model, "actor", None)
    if actor is None or not hasattr(actor, "optimizer"):
        raise ConfigError(
            f"hyperparams.mirror_loss needs an off-policy actor-critic (SAC, TD3, TQC), not {type(model).__name__}"
        )
    if not sym.continuous:
        raise ConfigError(f"hyperparams.mirror_loss needs continuous actions; {sym.env_id} has discrete ones")
    obs_act = sym.policy_obs_action(actor.observation_space)
    act_act = sym.action_action()

    def hook(optimizer: Any, args: Any, kwargs: Any) -> None:
        data = model.replay_buffer.sample(model.batch_size, env=model._vec_normalize_env)
        with torch.enable_grad():
            penalty = mirror_penalty(actor, data.observations, obs_act, act_act)
            (weight * penalty).backward()
        model.logger.record("train/mirror_loss", float(penalty.detach()))

    return actor.optimizer.register_step_pre_hook(hook)
