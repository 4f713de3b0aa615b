"""Equivariant DQN / QR-DQN policies for Stable-Baselines3.

The Q-network (or quantile network) built by ``DQNPolicy.make_q_net`` / ``QRDQNPolicy.make_quantile_net``
is replaced by a subclass whose ``forward`` is symmetrized over the environment's symmetry group
(:mod:`equirl.rl.spec`). Because SB3 uses that same module for acting, for the TD targets (the target
network is a second copy built by the same factory) and for the loss, all three are equivariant.

The plain network's parameters keep their SB3 names (``q_net.q_net.0.weight``...), so a plain
pretrained checkpoint loads *strictly* into an equitune/equizero policy; λ-equitune only adds the
λ-net (``q_net.equi.lambda_net...``). ``policy_kwargs``:

* ``symmetry``: an env id with a packaged spec, a spec YAML path, a spec mapping or an
  :class:`~equirl.rl.spec.EnvSymmetry` (default: the training env's id is not known to the policy, so
  this key is required);
* ``method``: ``"equitune"``, ``"equizero"``, ``"lambda"`` or ``"base"`` (no symmetrization), or a
  learned canonicalizer (``"canonicalize"``, ``"multigroup"``);
* ``method_kwargs``: passed to the symmetrizer, e.g. ``{"proxy": "max_value"}`` for equizero or
  ``{"lambda_hidden": [64]}`` for λ-equitune (default: a linear λ,
  :data:`~equirl.rl.policies.heads.DEFAULT_LAMBDA_HIDDEN`);
* ``freeze_backbone``: train only the symmetrizer's own parameters (λ-net), keeping the pretrained
  Q-network fixed.

The head symmetrizer is :func:`~equirl.rl.policies.heads.make_head_symmetrizer` on the Q-values
(``head="q"``) or quantiles (``head="quantile"``). Everything is plain data, so ``model.save`` /
``DQN.load`` round-trip without ``custom_objects``. ``import equirl.rl`` registers the aliases
``"EquiMlpPolicy"`` and ``"EquiCnnPolicy"`` on ``DQN`` and ``QRDQN``
(:func:`equirl.rl.algos.register_policy_aliases`), so
``DQN("EquiMlpPolicy", env, policy_kwargs={"symmetry": "CartPole-v1"})`` works.

References: Basu et al. (2023), *Efficient Equivariant Transfer Learning from Pretrained Models*
(NeurIPS) for equizero with the max-value proxy and λ-equitune on DQN agents.
"""

from __future__ import annotations

from typing import Any

from gymnasium import spaces
from sb3_contrib.qrdqn.policies import QRDQNPolicy, QuantileNetwork
from stable_baselines3.common.torch_layers import NatureCNN
from stable_baselines3.dqn.policies import DQNPolicy, QNetwork
from torch import Tensor, nn

from equirl.errors import SymmetryError
from equirl.registry import canonical_method, get_method
from equirl.rl.policies.heads import (
    METHODS,
    FoldableNet,
    _EquiNetOptions,
    _EquiPolicyMixin,
    _image_scale,
    make_head_symmetrizer,
)
from equirl.symmetrizers import Symmetrizer, SymmetrizerOutput

__all__ = [
    "SCORED_METHODS",
    "EquiCnnDQNPolicy",
    "EquiCnnQRDQNPolicy",
    "EquiDQNPolicy",
    "EquiQNetwork",
    "EquiQRDQNPolicy",
    "EquiQuantileNetwork",
]

#: methods driven by a learned scorer (trained by the straight-through TD loss and :func:`fit_scorer_prior`)
SCORED_METHODS = tuple(m for m in METHODS if get_method(m).learned_scorer)


class _EquiMixin(_EquiNetOptions, FoldableNet):
    """Construction and forward shared by the equivariant Q / quantile networks (options: see
    :class:`~equirl.rl.policies.heads._EquiNetOptions`)."""

    #: whether outputs are quantiles ``(B, n_quantiles, A)`` (set by each network class)
    quantile: bool = False

    def _setup_equi(self, method: str) -> None:
        sym = self.symmetry
        observation_space: spaces.Space = self.observation_space  # type: ignore[attr-defined]
        action_space = self.action_space  # type: ignore[attr-defined]
        # what the spec gives, read in one go: the number of actions, the actions on inputs and outputs
        n_actions = sym.n_actions
        if not isinstance(action_space, spaces.Discrete) or int(action_space.n) != n_actions:
            raise SymmetryError(
                f"{sym.env_id}: the spec permutes {n_actions} actions but the action space is {action_space}"
            )
        in_action = sym.policy_obs_action(observation_space)
        out_action = sym.action_action()
        self.equi = make_head_symmetrizer(
            self._plain_forward,
            in_action,
            out_action,
            method,
            self.method_kwargs,
            in_features=int(spaces.flatdim(observation_space)),
            out_features=n_actions,
            scale=_image_scale(observation_space),
            where=sym.env_id,
            head="quantile" if self.quantile else "q",
        )
        self.method = canonical_method(method)  # an alias ("plain", "λ"...) as its canonical name
        if isinstance(self.equi, Symmetrizer):  # a CNN extractor: the group may go into its kernels
            extractor: nn.Module = self.features_extractor  # type: ignore[attr-defined]
            self.equi.fold_into(self._fold_chain(extractor, self._head))

    def _head(self, features: Tensor) -> Tensor:
        """The network's output on the extractor's features."""
        raise NotImplementedError

    def _plain_forward(self, obs: Tensor) -> Tensor:
        return self._head(self.extract_features(obs, self.features_extractor))  # type: ignore[attr-defined]

    def _prepare(self, obs: Tensor) -> Tensor:
        # the scorer's straight-through term needs a floating input: uint8 frames become float (exact;
        # SB3's preprocessing still scales them by 1/255 inside the backbone)
        if self.method in SCORED_METHODS and not obs.is_floating_point():
            return obs.float()
        return obs

    def forward(self, obs: Tensor) -> Tensor:
        if self.equi is None:
            return self._plain_forward(obs)
        return self.equi(self._prepare(obs))

    def forward_with_weights(self, obs: Tensor) -> SymmetrizerOutput:
        """Output and ``(|G|, B)`` orbit weights (uniform for base/equitune)."""
        if self.equi is None:
            y = self._plain_forward(obs)
            return SymmetrizerOutput(y, y.new_ones((1, y.shape[0])))
        return self.equi.forward_with_weights(self._prepare(obs))


class EquiQNetwork(_EquiMixin, QNetwork):  # type: ignore[misc]
    """SB3's ``QNetwork`` symmetrized over the env's group (Q-values permuted on the action axis).

    Keyword options ``symmetry``, ``method``, ``method_kwargs``: see :class:`_EquiMixin`.
    """

    quantile = False

    def _head(self, features: Tensor) -> Tensor:
        return self.q_net(features)  # type: ignore[no-any-return]


class EquiQuantileNetwork(_EquiMixin, QuantileNetwork):  # type: ignore[misc]
    """sb3-contrib's ``QuantileNetwork`` symmetrized: quantiles ``(B, n_quantiles, A)`` are permuted on the
    last (action) axis; equizero's default proxy is :func:`~equirl.rl.policies.heads.quantile_max_value`."""

    quantile = True

    def _head(self, features: Tensor) -> Tensor:
        return self.quantile_net(features).view(-1, self.n_quantiles, int(self.action_space.n))


class EquiDQNPolicy(_EquiPolicyMixin, DQNPolicy):
    """DQN policy whose Q-network (and target network) are equivariant; see the module docstring.

    :param symmetry: env id / spec path / mapping / :class:`~equirl.rl.spec.EnvSymmetry`.
    :param method: ``equitune``, ``equizero``, ``lambda`` or ``base``.
    :param method_kwargs: symmetrizer options (``proxy``, ``lambda_hidden``, ``tie_break``...).
    :param freeze_backbone: only the λ-net is trained.
    """

    q_net: EquiQNetwork
    q_net_target: EquiQNetwork

    def make_q_net(self) -> EquiQNetwork:
        net_args = self._update_features_extractor(self.net_args, features_extractor=None)
        return EquiQNetwork(**net_args, **self._equi_kwargs).to(self.device)

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)
        if self.freeze_backbone:
            self._freeze_to_symmetrizers(lr_schedule(1), [(self.q_net, self)])


class EquiCnnDQNPolicy(EquiDQNPolicy):
    """:class:`EquiDQNPolicy` with SB3's NatureCNN feature extractor (Atari frames)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("features_extractor_class", NatureCNN)
        super().__init__(*args, **kwargs)


class EquiQRDQNPolicy(_EquiPolicyMixin, QRDQNPolicy):
    """QR-DQN policy whose quantile network (and its target) are equivariant."""

    quantile_net: EquiQuantileNetwork
    quantile_net_target: EquiQuantileNetwork

    def make_quantile_net(self) -> EquiQuantileNetwork:
        net_args = self._update_features_extractor(self.net_args, features_extractor=None)
        return EquiQuantileNetwork(**net_args, **self._equi_kwargs).to(self.device)

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)
        if self.freeze_backbone:
            self._freeze_to_symmetrizers(lr_schedule(1), [(self.quantile_net, self)])


class EquiCnnQRDQNPolicy(EquiQRDQNPolicy):
    """:class:`EquiQRDQNPolicy` with the NatureCNN feature extractor."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("features_extractor_class", NatureCNN)
        super().__init__(*args, **kwargs)
