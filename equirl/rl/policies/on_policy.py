"""Equivariant PPO / A2C policies (SB3's ``ActorCriticPolicy``).

The plain heads give one vector per observation, ``[action logits | value]`` (discrete) or
``[Gaussian mean | log_std | value]`` (continuous), and the group acts on it blockwise: logits permuted,
the mean by the spec's signed permutation, ``log_std`` by its absolute value (so the standard deviation
is equivariant), the value trivially. ``forward``, ``evaluate_actions``, ``get_distribution`` and
``predict_values`` all build the distribution from the symmetrized vector, so log-probabilities and
entropies are those of the symmetrized policy (``log π(g·a | g·s) = log π(a | s)``).

Equizero's proxy (``method_kwargs={"proxy": ...}``; the orbit element with the *lowest* proxy loss is
kept, ties averaged as in the core): ``max_value`` (default) is the critic's value, i.e. the element
maximising ``V(g·s)``; ``entropy`` / ``max_prob`` / ``nll`` score the logits of a discrete policy;
``entropy`` scores the Gaussian's ``log_std`` (the most confident element; with gSDE the log of its
variance) of a continuous one. λ-equitune's λ-net reads ``[g·s, head(g·s)]`` (``lambda_input="obs+q"``)
or ``g·s``.

**gSDE** (``use_sde``): gSDE samples ``a = μ(s) + φ(s)·W`` with an exploration matrix
``W_ij ~ N(0, σ_ij²)``, whose per-state marginal is the diagonal Gaussian of variance
``var_i(s) = Σ_j φ_j(s)² σ_ij²`` (the one SB3's ``log_prob`` uses). The symmetrized policy symmetrizes
``[μ | var]`` (``var`` by ``|P_g|``; equitune: ``var_sym(s) = 1/|G| Σ_g |P_g|⁻¹·var(g·s)``) and *samples the
diagonal Gaussian* ``N(μ_sym(s), var_sym(s))`` directly: no exploration matrix is sampled
(``reset_noise`` does nothing), and ``log_prob`` / ``entropy`` are those of that Gaussian. The
deterministic action (the mean) is equivariant exactly as without gSDE. With method ``base`` the policy
also samples ``N(μ(s), var(s))`` (same marginal as gSDE, independent noise at each step);
:func:`equirl.rl.build.load_pretrained` returns a gSDE agent's plain model for ``base``.

``policy_kwargs`` as for DQN (:mod:`equirl.rl.policies.q`): ``symmetry``, ``method`` (``base``,
``equitune``, ``equizero``, ``lambda``), ``method_kwargs``, ``freeze_backbone``. ``import equirl.rl``
registers ``EquiMlpPolicy`` and ``EquiCnnPolicy`` (SB3's NatureCNN feature extractor, as SB3's
``CnnPolicy``) on PPO and A2C.
"""

from __future__ import annotations

from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.distributions import (
    DiagGaussianDistribution,
    Distribution,
    SquashedDiagGaussianDistribution,
    StateDependentNoiseDistribution,
)
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import NatureCNN
from torch import Tensor

from equirl.actions import GroupAction
from equirl.registry import canonical_method
from equirl.rl.policies.heads import (
    FoldableNet,
    _EquiPolicyMixin,
    _image_scale,
    _log_std_of,
    concat_action,
    make_head_symmetrizer,
    sde_variance,
)
from equirl.rl.spec import EnvSymmetry
from equirl.symmetrizers import Symmetrizer

__all__ = ["EquiActorCriticCnnPolicy", "EquiActorCriticPolicy"]


class EquiActorCriticPolicy(_EquiPolicyMixin, FoldableNet, ActorCriticPolicy):
    """SB3's ``ActorCriticPolicy`` (PPO, A2C) with equivariant action logits / Gaussian mean and
    ``log_std`` and an invariant value; see the module docstring.

    :param symmetry: env id / spec path / mapping / :class:`~equirl.rl.spec.EnvSymmetry`.
    :param method: ``base``, ``equitune``, ``equizero`` or ``lambda``.
    :param method_kwargs: symmetrizer options (``proxy``, ``lambda_hidden``, ``lambda_input``...).
    :param freeze_backbone: train only the λ-net.
    """

    equi: Symmetrizer | None

    def _build(self, lr_schedule: Any) -> None:
        sym: EnvSymmetry = self._equi_kwargs["symmetry"]
        # what the spec gives, read in one go (then the heads module builds the symmetrizer)
        sym.check_action_space(self.action_space)
        d = sym.n_actions
        in_act = sym.policy_obs_action(self.observation_space)
        self._continuous = sym.continuous
        blocks: list[GroupAction[Any] | int] = [sym.action_action()]
        if self._continuous:
            blocks.append(sym.action_action(absolute=True))
        blocks.append(1)
        group = sym.group
        # gSDE: the head carries the per-state variance, the policy samples a diagonal Gaussian
        self._sde = isinstance(self.action_dist, StateDependentNoiseDistribution)
        squash = self._sde and getattr(self.action_dist, "bijector", None) is not None
        self._gauss = (SquashedDiagGaussianDistribution if squash else DiagGaussianDistribution)(d)
        self._n_act = d
        self.out_action = concat_action(group, blocks)
        size = self.out_action.size
        self.method = canonical_method(self._equi_kwargs["method"])
        self.equi = None
        self.equi = make_head_symmetrizer(
            self._plain_heads,
            in_act,
            self.out_action,
            self.method,
            self._equi_kwargs["method_kwargs"],
            in_features=int(spaces.flatdim(self.observation_space)),
            out_features=size,
            value=slice(size - 1, size),
            logits=None if self._continuous else slice(0, d),
            log_std=slice(d, 2 * d) if self._continuous and not self._sde else None,
            scale=_image_scale(self.observation_space),
            where=sym.env_id,
            variance=slice(d, 2 * d) if self._sde else None,
        )
        if isinstance(self.equi, Symmetrizer) and self.share_features_extractor:  # a CNN: fold into kernels
            self.equi.fold_into(self._fold_chain(self.features_extractor, self._heads_from_features))
        super()._build(lr_schedule)  # the optimizer sees the λ-net (self.equi is a submodule by now)
        if self.freeze_backbone:
            self._freeze_to_symmetrizers(lr_schedule(1), [(self, self)])

    def _plain_heads(self, obs: Tensor) -> Tensor:
        """The plain network's ``[logits | value]``, ``[mean | log_std | value]`` or, with gSDE,
        ``[mean | variance | value]``, ``(B, D)``."""
        features = self.extract_features(obs)
        if self.share_features_extractor:
            return self._heads_from_features(features)  # type: ignore[arg-type]
        pi_features, vf_features = features
        return self._heads_from_latent(
            self.mlp_extractor.forward_actor(pi_features), self.mlp_extractor.forward_critic(vf_features)
        )

    def _heads_from_features(self, features: Tensor) -> Tensor:
        """:meth:`_plain_heads` from the shared extractor's features."""
        latent_pi, latent_vf = self.mlp_extractor(features)
        return self._heads_from_latent(latent_pi, latent_vf)

    def _heads_from_latent(self, latent_pi: Tensor, latent_vf: Tensor) -> Tensor:
        params = self.action_net(latent_pi)
        parts = [params]
        if self._sde:
            parts.append(sde_variance(self.action_dist, self.log_std, latent_pi))  # type: ignore[arg-type]
        elif self._continuous:
            parts.append(self.log_std.expand_as(params))
        parts.append(self.value_net(latent_vf))
        return torch.cat(parts, dim=1)

    def symmetric_heads(self, obs: Tensor) -> Tensor:
        """The symmetrized head vector (equivariant under :attr:`out_action`), ``(B, D)``."""
        return self._plain_heads(obs) if self.equi is None else self.equi(obs)

    def _heads(self, obs: Any) -> tuple[Distribution, Tensor]:
        y = self.symmetric_heads(obs)
        d = self._n_act
        if self._sde:
            dist: Distribution = self._gauss.proba_distribution(y[:, :d], _log_std_of(y[:, d : 2 * d]))
        elif self._continuous:
            dist = self.action_dist.proba_distribution(y[:, :d], y[:, d : 2 * d])  # type: ignore[call-arg]
        else:
            dist = self.action_dist.proba_distribution(action_logits=y[:, :d])  # type: ignore[call-arg]
        return dist, y[:, -1:]

    def forward(self, obs: Tensor, deterministic: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        dist, values = self._heads(obs)
        actions = dist.get_actions(deterministic=deterministic)
        log_prob = dist.log_prob(actions)
        return actions.reshape((-1, *self.action_space.shape)), values, log_prob  # type: ignore[misc]

    def evaluate_actions(self, obs: Any, actions: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        dist, values = self._heads(obs)
        return values, dist.log_prob(actions), dist.entropy()

    def get_distribution(self, obs: Any) -> Distribution:
        return self._heads(obs)[0]

    def reset_noise(self, n_envs: int = 1) -> None:
        """Nothing to resample: with gSDE the policy samples its state-dependent diagonal Gaussian.

        :param n_envs: unused (SB3's signature).
        """

    def predict_values(self, obs: Any) -> Tensor:
        return self._heads(obs)[1]


class EquiActorCriticCnnPolicy(EquiActorCriticPolicy):
    """:class:`EquiActorCriticPolicy` with SB3's NatureCNN feature extractor (image observations)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("features_extractor_class", NatureCNN)
        super().__init__(*args, **kwargs)
