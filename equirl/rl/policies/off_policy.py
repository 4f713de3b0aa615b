"""Equivariant off-policy actor-critic policies: SAC, TD3 (and DDPG), TQC (sb3-contrib).

Each policy keeps SB3's networks and replaces the actor and critics that ``make_actor`` /
``make_critic`` build (so the target networks are symmetrized too) by ones symmetrized over the
environment's group (:mod:`equirl.rl.spec`), with :func:`~equirl.rl.policies.heads.make_head_symmetrizer`:
the actor's squashed-Gaussian ``[mean | log_std]`` (SAC / TQC) or deterministic action (TD3) is
equivariant, and every critic is invariant under the joint action ``Q(g·s, g·a) = Q(s, a)``: the critic
is symmetrized over the group acting on the concatenated ``(obs, action)`` input.

* **TQC**: the actor is SAC's; the ``n_critics × n_quantiles`` quantiles of the critics are symmetrized
  together like the SAC critics (equitune averages each quantile over the group).
* **Images** (``EquiCnnPolicy``, SB3's NatureCNN feature extractor): the critics act on the joint row
  ``[flattened preprocessed image, action]``: the image transform becomes a permutation of the
  flattened pixels (:func:`~equirl.rl.policies.heads.flat_obs_action`), the action block its signed
  permutation.
* **gSDE** (``use_sde``; SAC, TQC): the actor symmetrizes ``[μ | var]``, gSDE's per-state variance
  (:func:`~equirl.rl.policies.heads.sde_variance`, by ``|P_g|``), and samples the squashed diagonal
  Gaussian ``N(μ_sym(s), var_sym(s))`` directly (no exploration matrix; ``reset_noise`` does nothing), as
  the PPO / A2C policy does (:mod:`equirl.rl.policies.on_policy`).

Equizero's proxy (``method_kwargs={"proxy": ...}``; the orbit element with the *lowest* proxy loss is
kept, ties averaged as in the core): ``max_value`` (default) is ``Q(g·s, μ(g·s))`` with the plain first
critic (actors; TQC: its mean quantile) or the mean ``Q(g·(s, a))`` over the critics (critics; TQC: over
all quantiles). Each is a function of the transformed input and its own output, so the selection is
equivariant. ``entropy`` scores the Gaussian's ``log_std`` (with gSDE the log of its variance) of a SAC /
TQC actor; the critics always use ``max_value``. λ-equitune's λ-net reads ``[g·x, head(g·x)]``
(``lambda_input="obs+q"``) or ``g·x``.

``policy_kwargs`` as for DQN (:mod:`equirl.rl.policies.q`): ``symmetry``, ``method`` (``base``,
``equitune``, ``equizero``, ``lambda``), ``method_kwargs``, ``freeze_backbone``. ``import equirl.rl``
registers ``EquiMlpPolicy`` and ``EquiCnnPolicy`` on SAC, TD3, DDPG and TQC.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from gymnasium import spaces
from sb3_contrib.tqc.policies import Actor as TQCActor
from sb3_contrib.tqc.policies import Critic as TQCCritic
from sb3_contrib.tqc.policies import TQCPolicy
from stable_baselines3.common.distributions import SquashedDiagGaussianDistribution
from stable_baselines3.common.policies import ContinuousCritic
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.torch_layers import NatureCNN
from stable_baselines3.sac.policies import Actor as SACActor
from stable_baselines3.sac.policies import SACPolicy
from stable_baselines3.td3.policies import Actor as TD3Actor
from stable_baselines3.td3.policies import TD3Policy
from torch import Tensor

from equirl.actions import GroupAction
from equirl.errors import SymmetryError
from equirl.registry import EQUIZERO, canonical_method
from equirl.rl.policies.heads import (
    _VALUE_PROXIES,
    _VALUE_PROXY,
    _EquiNetOptions,
    _EquiPolicyMixin,
    _image_scale,
    _log_std_of,
    concat_action,
    flat_obs_action,
    make_head_symmetrizer,
    policy_obs_action,
    sde_variance,
)

__all__ = [
    "EquiContinuousCritic",
    "EquiQuantileCritic",
    "EquiSACActor",
    "EquiSACCnnPolicy",
    "EquiSACPolicy",
    "EquiTD3Actor",
    "EquiTD3CnnPolicy",
    "EquiTD3Policy",
    "EquiTQCActor",
    "EquiTQCCnnPolicy",
    "EquiTQCPolicy",
]


class _EquiPart(_EquiNetOptions):
    """Symmetry options of an actor or a critic network (kept in its constructor parameters);
    ``_make_equi`` (each subclass) builds the symmetrizer."""

    def _setup_equi(self, method: str) -> None:
        self.method = canonical_method(method)
        self.symmetry.check_action_space(self.action_space)  # type: ignore[attr-defined]
        self._make_equi()

    def _make_equi(self) -> None:
        raise NotImplementedError


class _InvariantCriticMixin(_EquiPart):
    """A critic ensemble (``q_networks`` reading ``[features, action]``) made invariant under the joint
    action ``(s, a) ↦ (g·s, g·a)``: all its outputs, concatenated, are symmetrized over the group acting
    on ``[obs, action]`` (equitune averages them, equizero keeps the element with the highest mean)."""

    n_critics: int
    q_networks: Any
    observation_space: spaces.Space
    share_features_extractor: bool
    features_extractor: Any
    normalize_images: bool

    def _n_outputs(self) -> int:
        """The number of outputs of all the critics together."""
        return self.n_critics

    def _make_equi(self) -> None:
        obs_act = flat_obs_action(
            policy_obs_action(self.symmetry, self.observation_space), self.observation_space
        )
        self._obs_shape = tuple(self.observation_space.shape or ())
        self._obs_dim = obs_act.size
        in_act = concat_action(self.symmetry.group, [obs_act, self.symmetry.action_action()])
        kw = dict(self.method_kwargs)
        if self.method == EQUIZERO and not callable(kw.get("proxy")):
            kw["proxy"] = _VALUE_PROXY  # a critic only has values to score
        self.equi = None
        self.equi = make_head_symmetrizer(
            self._plain_joint,
            in_act,
            None,
            self.method,
            kw,
            in_features=in_act.size,
            out_features=self._n_outputs(),
            value=slice(0, self._n_outputs()),
            where=f"{self.symmetry.env_id} critic",
        )

    def _plain_joint(self, x: Tensor) -> Tensor:
        """The plain critics on joint rows ``[preprocessed obs (flattened), action]``: ``(N, n_outputs)``."""
        obs = x[:, : self._obs_dim].reshape(-1, *self._obs_shape)
        actions = x[:, self._obs_dim :]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.share_features_extractor):
            features = self.features_extractor(obs)  # the rows hold SB3's preprocessed observations
        qvalue_input = torch.cat([features, actions], dim=1)
        return torch.cat([q_net(qvalue_input) for q_net in self.q_networks], dim=1)

    def joint_values(self, obs: Tensor, actions: Tensor) -> Tensor:
        """The symmetrized critics, ``(B, n_outputs)`` (invariant under the joint action).

        The observation enters the joint row as SB3 preprocesses it (images divided by 255, as float),
        so the plain critic is SB3's exactly and a λ-net reads pixels in ``[0, 1]`` beside raw actions.

        :param obs: observations as SB3 passes them (feature vectors or channel-first images).
        :param actions: actions ``(B, d)``.
        """
        pre = preprocess_obs(obs, self.observation_space, normalize_images=self.normalize_images)
        assert isinstance(pre, Tensor)  # Box observations (policy_obs_action refuses Dict spaces)
        x = torch.cat([pre.float().flatten(1), actions.to(torch.float32)], dim=1)
        return self._plain_joint(x) if self.equi is None else self.equi(x)


class EquiContinuousCritic(_InvariantCriticMixin, ContinuousCritic):
    """SB3's ``ContinuousCritic`` (SAC / TD3 / DDPG) made invariant under the joint action
    ``(s, a) ↦ (g·s, g·a)``: every Q-network of the ensemble is symmetrized over the group acting on
    ``[obs, action]``."""

    def forward(self, obs: Tensor, actions: Tensor) -> tuple[Tensor, ...]:
        y = self.joint_values(obs, actions)
        return tuple(y[:, i : i + 1] for i in range(self.n_critics))

    def q1_forward(self, obs: Tensor, actions: Tensor) -> Tensor:
        return self.forward(obs, actions)[0]

    def plain_q1(self, obs: Tensor, actions: Tensor) -> Tensor:
        """The plain (un-symmetrized) first critic: the actor's equizero score."""
        return ContinuousCritic.q1_forward(self, obs, actions)


class EquiQuantileCritic(_InvariantCriticMixin, TQCCritic):
    """sb3-contrib's TQC critic made invariant under the joint action: the ``n_critics × n_quantiles``
    quantiles are symmetrized together (equitune averages each quantile over the group; equizero keeps
    the element whose quantiles have the highest mean, i.e. the highest mean Q over the critics, as the
    SAC critic does). An average of sorted quantile vectors is sorted, so the quantiles stay ordered."""

    def _n_outputs(self) -> int:
        return self.n_critics * self.n_quantiles

    def forward(self, obs: Any, action: Tensor) -> Tensor:
        """The symmetrized quantiles, ``(B, n_critics, n_quantiles)`` (TQC's layout)."""
        return self.joint_values(obs, action).reshape(-1, self.n_critics, self.n_quantiles)

    def plain_q1(self, obs: Tensor, actions: Tensor) -> Tensor:
        """The plain first critic's mean quantile, ``(B, 1)``: the actor's equizero score."""
        return TQCCritic.forward(self, obs, actions)[:, 0].mean(-1, keepdim=True)


class _EquiActorMixin(_EquiPart):
    """An actor whose output ``[action params (| score)]`` is symmetrized (see the module docstring)."""

    #: SAC outputs ``[mean | log_std]``, TD3 the action
    has_log_std = False

    def _make_equi(self) -> None:
        sym = self.symmetry
        d = sym.n_actions
        self._n_act = d
        self._sde = bool(getattr(self, "use_sde", False))
        self._scorer: Callable[[Tensor, Tensor], Tensor] | None = None
        blocks: list[GroupAction[Any] | int] = [sym.action_action()]
        if self.has_log_std:
            blocks.append(sym.action_action(absolute=True))
        proxy = self.method_kwargs.get("proxy", _VALUE_PROXY)
        self._with_score = self.method == EQUIZERO and proxy in _VALUE_PROXIES
        if self._with_score:
            blocks.append(1)  # the critic's score of the element's action, an invariant coordinate
        out_act = concat_action(sym.group, blocks)
        size = out_act.size
        self.equi = None
        self.equi = make_head_symmetrizer(
            self._plain_out,
            policy_obs_action(sym, self.observation_space),  # type: ignore[attr-defined]
            out_act,
            self.method,
            self.method_kwargs,
            in_features=int(spaces.flatdim(self.observation_space)),  # type: ignore[attr-defined]
            out_features=size,
            value=slice(size - 1, size) if self._with_score else None,
            log_std=slice(d, 2 * d) if self.has_log_std and not self._sde else None,
            scale=_image_scale(self.observation_space),  # type: ignore[attr-defined]
            where=f"{sym.env_id} actor",
            variance=slice(d, 2 * d) if self._sde else None,
        )

    def set_scorer(self, scorer: Callable[[Tensor, Tensor], Tensor]) -> None:
        """The critic scoring ``(g·s, μ(g·s))`` for equizero's ``max_value`` proxy (set by the policy)."""
        self._scorer = scorer

    def _score(self, obs: Tensor, action: Tensor) -> Tensor:
        if self._scorer is None:
            raise SymmetryError(
                "equizero's max_value proxy scores the actor's actions with the critic: build the actor "
                "through EquiSACPolicy / EquiTD3Policy (or set_scorer)"
            )
        with torch.no_grad():
            return self._scorer(obs, action).reshape(-1, 1)

    def _plain_params(self, obs: Tensor) -> Tensor:
        raise NotImplementedError

    def _plain_out(self, obs: Tensor) -> Tensor:
        y = self._plain_params(obs)
        if not self._with_score:
            return y
        action = y[:, : self._n_act]
        if self.has_log_std:
            action = torch.tanh(action)  # SAC's deterministic action
        return torch.cat([y, self._score(obs, action)], dim=1)

    def symmetric_out(self, obs: Tensor) -> Tensor:
        """The symmetrized ``[mean | log_std]`` (SAC) or action (TD3), without the score."""
        y = self._plain_out(obs) if self.equi is None else self.equi(obs)
        return y[:, : y.shape[1] - int(self._with_score)]


class _SquashedGaussianActorMixin(_EquiActorMixin):
    """A SAC-style actor (SB3's SAC actor, sb3-contrib's TQC actor) with an equivariant squashed-Gaussian
    mean and ``log_std`` (``|P_g|``-permuted). With gSDE the symmetrized quantity is the per-state
    variance (:func:`sde_variance`), and the actor samples the squashed diagonal Gaussian
    :attr:`gaussian` of the equivariant mean and that variance (no exploration matrix): its
    ``log_prob`` is that of what it samples."""

    has_log_std = True
    #: the plain actor class (SB3's / sb3-contrib's ``get_action_dist_params``)
    _plain_actor: Any
    action_dist: Any
    log_std: Any

    def _make_equi(self) -> None:
        super()._make_equi()
        #: the distribution the actor samples (the gSDE one replaced by a diagonal Gaussian)
        self.gaussian = SquashedDiagGaussianDistribution(self._n_act) if self._sde else self.action_dist

    def _plain_params(self, obs: Tensor) -> Tensor:
        mean, log_std, kw = self._plain_actor.get_action_dist_params(self, obs)
        if self._sde:
            return torch.cat([mean, sde_variance(self.action_dist, log_std, kw["latent_sde"])], dim=1)
        return torch.cat([mean, log_std], dim=1)

    def get_action_dist_params(self, obs: Any) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        y = self.symmetric_out(obs)
        d = self._n_act
        return y[:, :d], (_log_std_of(y[:, d:]) if self._sde else y[:, d:]), {}

    def forward(self, obs: Any, deterministic: bool = False) -> Tensor:
        mean, log_std, _ = self.get_action_dist_params(obs)
        return self.gaussian.actions_from_params(mean, log_std, deterministic=deterministic)  # type: ignore[no-any-return]

    def action_log_prob(self, obs: Any) -> tuple[Tensor, Tensor]:
        mean, log_std, _ = self.get_action_dist_params(obs)
        return self.gaussian.log_prob_from_params(mean, log_std)  # type: ignore[no-any-return]

    def reset_noise(self, batch_size: int = 1) -> None:
        """Nothing to resample: with gSDE the actor samples its state-dependent diagonal Gaussian.

        :param batch_size: unused (SB3's signature).
        """


class EquiSACActor(_SquashedGaussianActorMixin, SACActor):
    """SB3's SAC actor with an equivariant squashed-Gaussian mean and ``log_std`` (``|P_g|``-permuted)."""

    _plain_actor = SACActor


class EquiTQCActor(_SquashedGaussianActorMixin, TQCActor):
    """sb3-contrib's TQC actor (the same squashed Gaussian as SAC's) made equivariant."""

    _plain_actor = TQCActor


class EquiTD3Actor(_EquiActorMixin, TD3Actor):
    """SB3's TD3 / DDPG actor with an equivariant deterministic action."""

    def _plain_params(self, obs: Tensor) -> Tensor:
        return TD3Actor.forward(self, obs)

    def forward(self, obs: Tensor) -> Tensor:
        return self.symmetric_out(obs)


class _EquiOffPolicyMixin(_EquiPolicyMixin):
    """``make_actor`` / ``make_critic`` / ``_build`` shared by the SAC and TD3 policies: an equivariant
    actor of class :attr:`_actor_class` (and actor target, for TD3) scored by the invariant critic."""

    _actor_class: type[_EquiActorMixin]
    _critic_class: type[_InvariantCriticMixin] = EquiContinuousCritic

    def make_actor(self, features_extractor: Any = None) -> Any:
        kwargs = self._update_features_extractor(self.actor_kwargs, features_extractor)  # type: ignore[attr-defined]
        return self._actor_class(**kwargs, **self._equi_kwargs).to(self.device)  # type: ignore[attr-defined]

    def make_critic(self, features_extractor: Any = None) -> Any:
        kwargs = self._update_features_extractor(self.critic_kwargs, features_extractor)  # type: ignore[attr-defined]
        return self._critic_class(**kwargs, **self._equi_kwargs).to(self.device)  # type: ignore[attr-defined]

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)  # type: ignore[misc]
        self.actor.set_scorer(self.critic.plain_q1)  # type: ignore[attr-defined]
        actor_target = getattr(self, "actor_target", None)  # TD3 / DDPG only
        if actor_target is not None:
            actor_target.set_scorer(self.critic_target.plain_q1)  # type: ignore[attr-defined]
        if self.freeze_backbone:
            actor, critic = self.actor, self.critic  # type: ignore[attr-defined]
            self._freeze_to_symmetrizers(lr_schedule(1), [(actor, actor), (critic, critic)])


class EquiSACPolicy(_EquiOffPolicyMixin, SACPolicy):
    """SAC policy with an equivariant actor and invariant critics (and critic target).

    :param symmetry: env id / spec path / mapping / :class:`~equirl.rl.spec.EnvSymmetry`.
    :param method: ``base``, ``equitune``, ``equizero`` or ``lambda``.
    :param method_kwargs: symmetrizer options.
    :param freeze_backbone: train only the λ-nets.
    """

    actor: EquiSACActor
    critic: EquiContinuousCritic
    critic_target: EquiContinuousCritic
    _actor_class = EquiSACActor


class EquiTD3Policy(_EquiOffPolicyMixin, TD3Policy):
    """TD3 / DDPG policy with equivariant actors (and actor target) and invariant critics (and target)."""

    actor: EquiTD3Actor
    actor_target: EquiTD3Actor
    critic: EquiContinuousCritic
    critic_target: EquiContinuousCritic
    _actor_class = EquiTD3Actor


class EquiTQCPolicy(_EquiOffPolicyMixin, TQCPolicy):
    """TQC policy (sb3-contrib) with an equivariant actor and invariant quantile critics (and target).

    :param symmetry: env id / spec path / mapping / :class:`~equirl.rl.spec.EnvSymmetry`.
    :param method: ``base``, ``equitune``, ``equizero`` or ``lambda``.
    :param method_kwargs: symmetrizer options.
    :param freeze_backbone: train only the λ-nets.
    """

    actor: EquiTQCActor
    critic: EquiQuantileCritic
    critic_target: EquiQuantileCritic
    _actor_class = EquiTQCActor
    _critic_class = EquiQuantileCritic


class EquiSACCnnPolicy(EquiSACPolicy):
    """:class:`EquiSACPolicy` with SB3's NatureCNN feature extractor (image observations; SAC's
    ``CnnPolicy``: the actor and the critics each have their own CNN unless ``share_features_extractor``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("features_extractor_class", NatureCNN)
        super().__init__(*args, **kwargs)


class EquiTD3CnnPolicy(EquiTD3Policy):
    """:class:`EquiTD3Policy` (TD3 / DDPG) with SB3's NatureCNN feature extractor (image observations)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("features_extractor_class", NatureCNN)
        super().__init__(*args, **kwargs)


class EquiTQCCnnPolicy(EquiTQCPolicy):
    """:class:`EquiTQCPolicy` with SB3's NatureCNN feature extractor (image observations)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("features_extractor_class", NatureCNN)
        super().__init__(*args, **kwargs)
