"""Equivariant actor-critic policies for Stable-Baselines3: PPO / A2C, SAC, TD3 (and DDPG).

Each policy keeps SB3's networks and replaces the head that SB3 calls everywhere by one symmetrized
over the environment's group (:mod:`equirl.rl.spec`), using the core symmetrizers
(:mod:`equirl.symmetrizers`, no second orbit average):

* **PPO / A2C** (``ActorCriticPolicy``): the plain heads give one vector per observation,
  ``[action logits | value]`` (discrete) or ``[Gaussian mean | log_std | value]`` (continuous), and the
  group acts on it blockwise: logits permuted, the mean by the spec's signed permutation, ``log_std``
  by its absolute value (so the standard deviation is equivariant), the value trivially. ``forward``,
  ``evaluate_actions``, ``get_distribution`` and ``predict_values`` all build the distribution from the
  symmetrized vector, so log-probabilities and entropies are those of the symmetrized policy
  (``log π(g·a | g·s) = log π(a | s)``).
* **SAC / TD3** (``make_actor`` / ``make_critic``, so the target networks are symmetrized too): the
  actor's squashed-Gaussian ``[mean | log_std]`` (SAC) or deterministic action (TD3) is equivariant,
  and every critic is invariant under the joint action ``Q(g·s, g·a) = Q(s, a)``: the critic is
  symmetrized over the group acting on the concatenated ``(obs, action)`` input.

Equizero's proxy (``method_kwargs={"proxy": ...}``; the orbit element with the *lowest* proxy loss is
kept, ties averaged as in the core): ``max_value`` (default) is the critic's value, i.e. the element
maximising ``V(g·s)`` (PPO / A2C), ``Q(g·s, μ(g·s))`` with the plain first critic (SAC / TD3 actors; TQC:
its mean quantile) or the mean ``Q(g·(s, a))`` over the critics (SAC / TD3 critics; TQC: over all
quantiles). Each is a function of the transformed
input and its own output, so the selection is equivariant. ``entropy`` / ``max_prob`` / ``nll`` score
the logits of a discrete PPO / A2C policy; ``entropy`` scores the Gaussian's ``log_std`` (the most
confident element; with gSDE the log of its variance) of a SAC / TQC actor or a continuous PPO policy;
SAC / TD3 / TQC critics always use ``max_value``. λ-equitune's λ-net reads ``[g·x, head(g·x)]`` (``lambda_input="obs+q"``) or ``g·x``.

``policy_kwargs`` as for DQN (:mod:`equirl.rl.policies`): ``symmetry``, ``method`` (``base``,
``equitune``, ``equizero``, ``lambda``), ``method_kwargs``, ``freeze_backbone``. Importing this module
registers ``EquiMlpPolicy`` and ``EquiCnnPolicy`` (SB3's NatureCNN feature extractor, as SB3's
``CnnPolicy``) on PPO, A2C, SAC, TD3, DDPG and TQC (sb3-contrib). With image observations the SAC / TD3 /
TQC critics act on the joint row ``[flattened preprocessed image, action]``: the image transform becomes a
permutation of the flattened pixels (:func:`flat_obs_action`), the action block its signed permutation.

* **TQC**: the actor is SAC's; the ``n_critics × n_quantiles`` quantiles of the critics are symmetrized
  together like the SAC critics (equitune averages each quantile over the group).
* **gSDE** (``use_sde``; PPO / A2C, SAC, TQC): gSDE samples ``a = μ(s) + φ(s)·W`` with an exploration
  matrix ``W_ij ~ N(0, σ_ij²)``, whose per-state marginal is the diagonal Gaussian of variance
  ``var_i(s) = Σ_j φ_j(s)² σ_ij²`` (the one SB3's ``log_prob`` uses). The symmetrized policy symmetrizes
  ``[μ | var]`` (``var`` by ``|P_g|``; equitune: ``var_sym(s) = 1/|G| Σ_g |P_g|⁻¹·var(g·s)``) and
  *samples the diagonal Gaussian* ``N(μ_sym(s), var_sym(s))`` (squashed for SAC / TQC) directly: no
  exploration matrix is sampled (``reset_noise`` does nothing), and ``log_prob`` / ``entropy`` are those
  of that Gaussian. The deterministic action (the mean) is equivariant exactly as without gSDE. With
  method ``base`` the policy also samples ``N(μ(s), var(s))`` (same marginal as gSDE, independent noise
  at each step); :func:`equirl.rl.pretrained.load_pretrained` returns a gSDE agent's plain model for
  ``base``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from sb3_contrib import TQC
from sb3_contrib.tqc.policies import Actor as TQCActor
from sb3_contrib.tqc.policies import Critic as TQCCritic
from sb3_contrib.tqc.policies import TQCPolicy
from stable_baselines3 import A2C, DDPG, PPO, SAC, TD3
from stable_baselines3.common.distributions import (
    DiagGaussianDistribution,
    Distribution,
    SquashedDiagGaussianDistribution,
    StateDependentNoiseDistribution,
)
from stable_baselines3.common.policies import ActorCriticPolicy, ContinuousCritic
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.torch_layers import NatureCNN
from stable_baselines3.sac.policies import Actor as SACActor
from stable_baselines3.sac.policies import SACPolicy
from stable_baselines3.td3.policies import Actor as TD3Actor
from stable_baselines3.td3.policies import TD3Policy
from torch import Tensor, nn

from equirl.actions import GroupAction, SignedPerm, SignedPermAction
from equirl.errors import EquirlError, SymmetryError
from equirl.groups import Group
from equirl.registry import (
    EQUIZERO,
    LAMBDA,
    canonical_method,
    get_method,
    method_names,
    validate_method_kwargs,
)
from equirl.rl.policies import (
    DEFAULT_LAMBDA_HIDDEN,
    ObsLambdaNet,
    QLambdaEquiTune,
    _EquiNetOptions,
    _EquiPolicyMixin,
    policy_obs_action,
)
from equirl.rl.spec import EnvSymmetry
from equirl.symmetrizers import Symmetrizer, get_proxy, symmetrize

__all__ = [
    "AC_METHODS",
    "EquiActorCriticCnnPolicy",
    "EquiActorCriticPolicy",
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
    "concat_action",
    "flat_obs_action",
    "make_head_symmetrizer",
    "sde_variance",
]

log = logging.getLogger(__name__)

#: the methods the actor-critic policies accept (the learned canonicalizers are DQN-only for now)
AC_METHODS = method_names(learned_scorer=False)

#: the proxy equizero uses when none is given (the critic's value)
_VALUE_PROXY = get_method(EQUIZERO).option("proxy").default_for("rl")  # type: ignore[union-attr]
#: the names that select the critic's value (``max_value`` as documented, and the RL default)
_VALUE_PROXIES = frozenset({_VALUE_PROXY, "max_value"})


def concat_action(group: Group, blocks: Sequence[GroupAction[Any] | int]) -> SignedPermAction:
    """The blockwise action on a concatenated vector: each block a signed-permutation action of
    ``group`` (or an ``int``: that many coordinates acted on trivially).

    :param group: the acting group.
    :param blocks: the blocks, in the order of the concatenation.
    """
    transforms = []
    for g in range(group.order):
        src: list[int] = []
        signs: list[float] = []
        off = 0
        for b in blocks:
            if isinstance(b, int):
                n, t_src, t_signs = b, tuple(range(b)), (1.0,) * b
            else:
                if not isinstance(b, SignedPermAction) or b.group is not group:
                    raise SymmetryError(
                        f"cannot concatenate {b}: a signed-permutation action of {group.name}"
                    )
                t = b.transforms[g]
                n, t_src, t_signs = t.size, t.src, t.signs or (1.0,) * t.size
            src += [off + i for i in t_src]
            signs += list(t_signs)
            off += n
        transforms.append(SignedPerm(tuple(src), tuple(signs)))
    return SignedPermAction(group, transforms)


class _SliceProxy:
    """An equizero proxy reading part of the head's output ``(|G|, B, D)``.

    :param part: the coordinates to read.
    :param kind: ``"value"`` (loss ``-mean(part)``: the highest value wins), ``"log_std"`` (loss
        ``sum(part)``: the most confident Gaussian wins), ``"variance"`` (loss ``sum(log part)``: the same
        for a variance block) or a core proxy name applied to ``part`` (logits).
    """

    def __init__(self, part: slice, kind: str) -> None:
        self.part = part
        self.kind = kind
        self.__name__ = kind

    def __call__(self, ys: Tensor) -> Tensor:
        y = ys[..., self.part].float()
        if self.kind == "value":
            return -y.mean(-1)
        if self.kind == "log_std":
            return y.sum(-1)
        if self.kind == "variance":
            return y.clamp_min(torch.finfo(y.dtype).tiny).log().sum(-1)
        return get_proxy(self.kind)(y)


def _proxy_for(
    proxy: Any,
    value: slice | None,
    logits: slice | None,
    log_std: slice | None,
    where: str,
    variance: slice | None = None,
) -> Any:
    if callable(proxy):
        return proxy
    if proxy in _VALUE_PROXIES:
        if value is None:
            raise SymmetryError(f"{where}: equizero's {proxy} proxy needs a value to score")
        return _SliceProxy(value, "value")
    if proxy == "entropy" and logits is None and log_std is not None:
        return _SliceProxy(log_std, "log_std")
    if proxy == "entropy" and logits is None and variance is not None:
        return _SliceProxy(variance, "variance")
    if logits is None:
        raise SymmetryError(
            f"{where}: equizero proxy {proxy!r} scores discrete action logits; use {_VALUE_PROXY!r}"
            + (" or 'entropy'" if log_std is not None or variance is not None else "")
        )
    return _SliceProxy(logits, str(proxy))


def make_head_symmetrizer(
    model_fn: Callable[[Tensor], Tensor],
    in_action: GroupAction[Any],
    out_action: GroupAction[Any] | None,
    method: str,
    method_kwargs: dict[str, Any],
    in_features: int,
    out_features: int,
    value: slice | None = None,
    logits: slice | None = None,
    log_std: slice | None = None,
    scale: float = 1.0,
    where: str = "policy",
    variance: slice | None = None,
) -> Symmetrizer | None:
    """The core symmetrizer of a head ``model_fn: (B, ...) -> (B, out_features)`` (``None`` for ``base``).

    :param model_fn: the plain head.
    :param in_action: the group's action on its input; ``out_action`` on its output (``None``: invariant).
    :param method: one of :data:`AC_METHODS` (name or alias).
    :param method_kwargs: the method's options (checked by :func:`equirl.registry.validate_method_kwargs`).
    :param in_features: the flat input size (for the λ-net).
    :param out_features: the output size (λ reads the output with ``lambda_input="obs+q"``).
    :param value: the output coordinates holding invariant values (equizero's ``max_value`` proxy).
    :param logits: the output coordinates holding discrete action logits (the other named proxies).
    :param log_std: the output coordinates holding a Gaussian's ``log_std`` (the ``entropy`` proxy).
    :param scale: the input scale for the λ-net (``1/255`` for uint8 images).
    :param where: names the head in errors.
    :param variance: the output coordinates holding a Gaussian's variance (gSDE; the ``entropy`` proxy).
    """
    try:
        spec = get_method(method)
        kw = validate_method_kwargs(spec.name, method_kwargs, adapter="rl")
        kw.pop("lambda_reg", None)  # read by the λ-fitting callback, not by the symmetrizer
    except EquirlError as exc:
        raise SymmetryError(str(exc)) from None
    if spec.name not in AC_METHODS:
        raise SymmetryError(
            f"{where}: method {spec.name!r} is not available for actor-critic policies; choose one of "
            f"{', '.join(AC_METHODS)}"
        )
    if not spec.symmetrizes:
        return None
    if spec.name == EQUIZERO:
        kw["proxy"] = _proxy_for(kw.get("proxy", _VALUE_PROXY), value, logits, log_std, where, variance)
        return symmetrize(model_fn, in_action, out_action, method=EQUIZERO, **kw)
    if spec.name == LAMBDA and "lambda_net" not in kw:
        hidden = tuple(int(h) for h in kw.pop("lambda_hidden", DEFAULT_LAMBDA_HIDDEN))
        if str(kw.pop("lambda_input", "obs+q")) == "obs":
            kw["lambda_net"] = ObsLambdaNet(in_features, hidden, scale=scale)
            return symmetrize(model_fn, in_action, out_action, method=LAMBDA, **kw)
        # λ reads [g·x, head(g·x)], the head's outputs taken from the orbit already computed
        lam = ObsLambdaNet(in_features + out_features, hidden)
        return QLambdaEquiTune(model_fn, in_action, out_action, lambda_net=lam, scale=scale, **kw)
    return symmetrize(model_fn, in_action, out_action, method=spec.name, **kw)


def _image_scale(observation_space: spaces.Space) -> float:
    image = isinstance(observation_space, spaces.Box) and observation_space.dtype.name == "uint8"
    return 1.0 / 255.0 if image else 1.0


def flat_obs_action(obs_action: GroupAction[Any], observation_space: spaces.Space) -> SignedPermAction:
    """``obs_action`` as a permutation of the flattened observation (a signed permutation as is): how the
    group acts on an image observation once it is one block of a concatenated row (the SAC / TD3 / TQC
    critics' ``[obs, action]``). Exact: each element's permutation is its transform of the index grid.

    :param obs_action: the group's action on one observation (:func:`policy_obs_action`).
    :param observation_space: the policy's observation space (its shape; images channel-first).
    """
    if isinstance(obs_action, SignedPermAction):
        return obs_action
    shape = tuple(observation_space.shape or ())
    grid = torch.arange(int(np.prod(shape)), dtype=torch.long).reshape(shape)
    # (g·x).flatten()[i] = x.flatten()[src[i]]: the transformed index grid is src
    transforms = [
        SignedPerm(tuple(int(i) for i in obs_action.apply(grid, g).flatten().tolist()))
        for g in range(obs_action.group.order)
    ]
    return SignedPermAction(obs_action.group, transforms)


def sde_variance(dist: StateDependentNoiseDistribution, log_std: Tensor, latent: Tensor) -> Tensor:
    """gSDE's per-state action variance ``var_i(s) = Σ_j φ_j(s)² σ_ij²`` (plus SB3's epsilon), ``(B, d)``:
    the marginal variance of SB3's gSDE sample, the one its ``log_prob`` uses.

    :param dist: the policy's gSDE distribution (its ``get_std`` / ``learn_features`` / ``epsilon``).
    :param log_std: the gSDE ``log_std`` parameter ``(latent_sde_dim, d)`` (or ``(latent_sde_dim, 1)``).
    :param latent: the features ``φ(s)``, ``(B, latent_sde_dim)``.
    """
    lat = latent if dist.learn_features else latent.detach()
    return torch.mm(lat**2, dist.get_std(log_std) ** 2) + dist.epsilon


def _log_std_of(variance: Tensor) -> Tensor:
    return 0.5 * variance.clamp_min(torch.finfo(variance.dtype).tiny).log()


def _freeze_to(module: nn.Module, optimizer_class: Any, lr: float, optimizer_kwargs: dict[str, Any]) -> Any:
    """Keep only ``module``'s symmetrizer parameters (``equi.*``) trainable; their optimizer or ``None``."""
    keep = []
    for name, p in module.named_parameters():
        train = name.startswith("equi.")
        p.requires_grad_(train)
        if train:
            keep.append(p)
    return optimizer_class(keep, lr=lr, **optimizer_kwargs) if keep else None


# ------------------------------------------------------------------------------------------------------
# PPO / A2C
# ------------------------------------------------------------------------------------------------------
class EquiActorCriticPolicy(_EquiPolicyMixin, ActorCriticPolicy):
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
        sym.check_action_space(self.action_space)
        # gSDE: the head carries the per-state variance, the policy samples a diagonal Gaussian
        self._sde = isinstance(self.action_dist, StateDependentNoiseDistribution)
        squash = self._sde and getattr(self.action_dist, "bijector", None) is not None
        self._gauss = (SquashedDiagGaussianDistribution if squash else DiagGaussianDistribution)(
            sym.n_actions
        )
        in_act = policy_obs_action(sym, self.observation_space)
        d = sym.n_actions
        self._n_act = d
        self._continuous = sym.continuous
        blocks: list[GroupAction[Any] | int] = [sym.action_action()]
        if self._continuous:
            blocks.append(sym.action_action(absolute=True))
        blocks.append(1)
        self.out_action = concat_action(sym.group, blocks)
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
        super()._build(lr_schedule)  # the optimizer sees the λ-net (self.equi is a submodule by now)
        if self.freeze_backbone:
            opt = _freeze_to(self, self.optimizer_class, lr_schedule(1), self.optimizer_kwargs)
            if opt is None:
                raise SymmetryError("freeze_backbone leaves nothing to train: use it with method 'lambda'")
            self.optimizer = opt

    def _plain_heads(self, obs: Tensor) -> Tensor:
        """The plain network's ``[logits | value]``, ``[mean | log_std | value]`` or, with gSDE,
        ``[mean | variance | value]``, ``(B, D)``."""
        features = self.extract_features(obs)
        if self.share_features_extractor:
            latent_pi, latent_vf = self.mlp_extractor(features)
        else:
            pi_features, vf_features = features
            latent_pi = self.mlp_extractor.forward_actor(pi_features)
            latent_vf = self.mlp_extractor.forward_critic(vf_features)
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


# ------------------------------------------------------------------------------------------------------
# SAC / TD3 building blocks
# ------------------------------------------------------------------------------------------------------
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


def _freeze_actor_critic(policy: Any, lr: float) -> None:
    found = False
    for part in ("actor", "critic"):
        net = getattr(policy, part)
        opt = _freeze_to(net, policy.optimizer_class, lr, policy.optimizer_kwargs)
        if opt is not None:
            net.optimizer = opt
            found = True
    if not found:
        raise SymmetryError("freeze_backbone leaves nothing to train: use it with method 'lambda'")


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
            _freeze_actor_critic(self, lr_schedule(1))


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


def _register_aliases() -> None:
    """Add ``EquiMlpPolicy`` (and ``EquiCnnPolicy`` where SB3 has a CNN policy) to the algorithms'
    ``policy_aliases`` (new dicts: SB3's class attributes are not mutated in place)."""
    for algo in (PPO, A2C):
        algo.policy_aliases = {
            **algo.policy_aliases,
            "EquiMlpPolicy": EquiActorCriticPolicy,
            "EquiCnnPolicy": EquiActorCriticCnnPolicy,
        }
    SAC.policy_aliases = {
        **SAC.policy_aliases,
        "EquiMlpPolicy": EquiSACPolicy,
        "EquiCnnPolicy": EquiSACCnnPolicy,
    }
    TQC.policy_aliases = {
        **TQC.policy_aliases,
        "EquiMlpPolicy": EquiTQCPolicy,
        "EquiCnnPolicy": EquiTQCCnnPolicy,
    }
    for off in (TD3, DDPG):
        off.policy_aliases = {
            **off.policy_aliases,
            "EquiMlpPolicy": EquiTD3Policy,
            "EquiCnnPolicy": EquiTD3CnnPolicy,
        }


_register_aliases()
