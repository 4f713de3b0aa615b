"""Fitting the scorer of a canonicalization policy (``method: canonicalize`` / ``multigroup``).

Learned canonicalization (Kaba et al., ICML 2023) runs the Q-network once, on ``g*·s`` with
``g* = argmax_g h(g·s)``; its scorer ``h`` is trained

* by DQN's own TD loss, through the straight-through estimator of
  :class:`~equirl.symmetrizers.Canonicalize` (the scorer's parameters are part of the Q-network), and
* in a short separate phase before training or evaluation (this module), on observations collected
  by rolling out the agent, with either

  - ``target="identity"``: the prior of Mondal et al. (NeurIPS 2023), cross-entropy of the scorer's
    distribution to the identity element (keep inputs in the pose the pretrained network was trained on);
  - ``target="equizero"``: cross-entropy to equizero's pick ``argmax_g max_a Q(g·s)_a`` (ties shared),
    i.e. the pose in which the pretrained Q-network is most confident (Basu et al., NeurIPS 2023), so
    that canonicalization matches equizero at one backbone pass instead of ``|G|``. For an env whose
    observation distribution is itself symmetric (the D4 gridworld) no pose is preferred by the data,
    and this is the informative target.

The fitted scorer is copied into the target network.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import Tensor

from equirl.errors import SymmetryError
from equirl.registry import EQUIZERO
from equirl.rl.config import SCORER_TARGETS
from equirl.symmetrizers.methods import tie_weights
from equirl.train_loop import fit

__all__ = ["collect_observations", "fit_scorer"]

log = logging.getLogger(__name__)


def collect_observations(model: Any, env_id: str, n: int, seed: int = 0, epsilon: float = 0.1) -> Tensor:
    """``n`` observations from ε-greedy rollouts of ``model`` (a SB3 DQN / QR-DQN) on ``env_id``."""
    from equirl.rl.envs import make_env

    env = make_env(env_id)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    out = []
    for i in range(n):
        out.append(np.asarray(obs))
        if rng.random() < epsilon:
            a = env.action_space.sample()
        else:
            a, _ = model.predict(obs, deterministic=True)
        obs, _, term, trunc, _ = env.step(int(a))
        if term or trunc:
            obs, _ = env.reset(seed=seed + i + 1)
    env.close()
    return torch.as_tensor(np.stack(out))


def _equizero_targets(net: Any, x: Tensor) -> Tensor:
    """``(|G|, B)`` target distribution: uniform over the elements maximising ``max_a Q(g·x)``."""
    equi = net.equi
    with torch.no_grad():
        _, ys = equi.orbit_outputs(x)
        q = ys.mean(-2) if ys.dim() == 4 else ys
        return tie_weights(q.float().amax(-1), 1e-6, 1e-6)


def fit_scorer(
    model: Any,
    observations: Tensor,
    steps: int = 300,
    lr: float = 1e-2,
    batch_size: int = 256,
    target: str = EQUIZERO,
    seed: int = 0,
) -> dict[str, float]:
    """Train the canonicalization scorer of ``model``'s Q-network on ``observations``; returns
    ``{"loss", "agreement"}`` (final loss; fraction of observations whose chosen element gets target mass).

    :param model: a SB3 DQN / QR-DQN whose policy uses ``method="canonicalize"`` or ``"multigroup"``.
    :param observations: ``(N, ...)`` observations as the policy sees them (see :func:`collect_observations`).
    :param steps: Adam steps.
    :param target: ``"identity"`` (prior of Mondal et al., weighted by the symmetrizer's
        ``prior_weight``) or ``"equizero"`` (distil equizero's pick).
    """
    pol = model.policy
    net = pol.q_net if hasattr(pol, "q_net") else pol.quantile_net
    tgt_net = pol.q_net_target if hasattr(pol, "q_net_target") else pol.quantile_net_target
    equi = getattr(net, "equi", None)
    if equi is None or not hasattr(equi, "scorer"):
        raise SymmetryError("fit_scorer needs a policy with method 'canonicalize' or 'multigroup'")
    if target not in SCORER_TARGETS:
        raise SymmetryError(f"scorer target must be one of {', '.join(SCORER_TARGETS)}, got {target!r}")
    # raw observations (uint8 frames stay uint8): the network does SB3's preprocessing itself
    x_all = torch.as_tensor(observations, device=pol.device)
    targets = _equizero_targets(net, x_all) if target == EQUIZERO else None
    gen = torch.Generator().manual_seed(seed)

    def loss_fn(step: int) -> Tensor:
        idx = torch.randint(0, x_all.shape[0], (min(batch_size, x_all.shape[0]),), generator=gen)
        x = x_all[idx]
        if targets is None:
            return equi.prior_loss(x)
        logp = torch.log_softmax(equi.scores(x) / equi.temperature, dim=0)
        return -(targets[:, idx] * logp).sum(0).mean()

    losses = fit(equi.scorer.parameters(), loss_fn, steps, lr, what="fitting the scorer")
    loss_v = losses[-1] if losses else float("nan")
    with torch.no_grad():
        pick = equi.scores(x_all).argmax(0)
        if targets is None:  # the identity element (index 0)
            ref = torch.zeros(equi.group.order, x_all.shape[0])
            ref[0] = 1.0
        else:
            ref = targets
        agree = float((ref[pick, torch.arange(x_all.shape[0])] > 0).float().mean())
    tgt_net.load_state_dict(net.state_dict())
    log.info("scorer fit (%s): loss %.4f, agreement %.3f", target, loss_v, agree)
    return {"loss": loss_v, "agreement": agree}
