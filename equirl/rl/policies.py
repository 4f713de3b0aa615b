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
* ``method``: ``"equitune"``, ``"equizero"``, ``"lambda"`` or ``"base"`` (no symmetrization);
* ``method_kwargs``: passed to the symmetrizer, e.g. ``{"proxy": "max_value"}`` for equizero or
  ``{"lambda_hidden": [64]}`` for λ-equitune (default: a linear λ, :data:`DEFAULT_LAMBDA_HIDDEN`);
* ``freeze_backbone``: train only the symmetrizer's own parameters (λ-net), keeping the pretrained
  Q-network fixed.

Everything is plain data, so ``model.save`` / ``DQN.load`` round-trip without ``custom_objects``.
Importing this module registers the aliases ``"EquiMlpPolicy"`` and ``"EquiCnnPolicy"`` on ``DQN`` and
``QRDQN``, so ``DQN("EquiMlpPolicy", env, policy_kwargs={"symmetry": "CartPole-v1"})`` works.

References: Basu et al. (2023), *Efficient Equivariant Transfer Learning from Pretrained Models*
(NeurIPS) for equizero with the max-value proxy and λ-equitune on DQN agents.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from gymnasium import spaces
from sb3_contrib import QRDQN
from sb3_contrib.qrdqn.policies import QRDQNPolicy, QuantileNetwork
from stable_baselines3 import DQN
from stable_baselines3.common.preprocessing import is_image_space_channels_first
from stable_baselines3.common.torch_layers import NatureCNN
from stable_baselines3.dqn.policies import DQNPolicy, QNetwork
from torch import Tensor, nn

from equirl.errors import EquirlError, SymmetryError
from equirl.registry import (
    EQUITUNE,
    EQUIZERO,
    canonical_method,
    get_method,
    method_names,
    validate_method_kwargs,
)
from equirl.rl.spec import EnvSymmetry, resolve_symmetry
from equirl.symmetrizers import EquiZero, LambdaEquiTune, Symmetrizer, SymmetrizerOutput, symmetrize
from equirl.symmetrizers.methods import straight_through, tie_weights
from equirl.symmetrizers.nets import ObsLambdaNet
from equirl.symmetrizers.proxies import action_gap, min_spread, quantile_spread

__all__ = [
    "DEFAULT_LAMBDA_HIDDEN",
    "FAST_PROXIES",
    "METHODS",
    "EquiCnnDQNPolicy",
    "EquiCnnQRDQNPolicy",
    "EquiDQNPolicy",
    "EquiQNetwork",
    "EquiQRDQNPolicy",
    "EquiQuantileNetwork",
    "LambdaFeatures",
    "ObsLambdaNet",
    "QLambdaEquiTune",
    "QValueEquiZero",
    "policy_obs_action",
    "quantile_max_value",
]

log = logging.getLogger(__name__)

#: the methods a policy accepts (every method of :mod:`equirl.registry`; ``base`` = the plain network, for
#: comparisons); ``canonicalize`` is learned canonicalization (one backbone pass), ``multigroup`` needs a
#: direct-product group (e.g. ``C2xZ2``)
METHODS = method_names()

#: the RL λ-net's default hidden sizes: ``()`` is a linear λ on ``[g·s, Q(g·s)]``, one matrix-vector
#: product. It reached CartPole 475 in fewer env steps than a 64-unit hidden layer (0.29-0.33x plain
#: DQN's against 0.54x, ``docs/results/rl/README.md``); ``method_kwargs={"lambda_hidden": [64]}`` gives
#: the MLP.
DEFAULT_LAMBDA_HIDDEN: tuple[int, ...] = ()

#: methods driven by a learned scorer (trained by the straight-through TD loss and :func:`fit_scorer_prior`)
SCORED_METHODS = tuple(m for m in METHODS if get_method(m).learned_scorer)


def quantile_max_value(ys: Tensor) -> Tensor:
    """Equizero proxy for quantile outputs ``(|G|, B, n_quantiles, A)``: ``-max_a mean_q Z``."""
    return -ys.float().mean(-2).amax(-1)


def _scaled(x: Tensor, scale: float) -> Tensor:
    """``x`` as float32 rows ``(N, features)``, times ``scale`` (skipped when it is 1: no op on the hot path)."""
    if x.dim() != 2 or x.dtype != torch.float32:
        x = x.float().flatten(1)
    return x if scale == 1.0 else x * scale


class LambdaFeatures:
    """λ's input for ``lambda_input="obs+q"``: the transformed observation and the frozen network's
    Q-values on it, ``[g·x, Q(g·x)]`` (still a function of ``g·x`` only, so λ-equitune stays
    equivariant). The Q-values let λ learn *which* transformed copy the pretrained network handles best.

    :param model_fn: the plain network's forward.
    :param scale: observation scale (``1/255`` for uint8 images).
    :param quantile: average the quantile axis of ``(N, n_quantiles, A)`` outputs.
    """

    def __init__(self, model_fn: Any, scale: float = 1.0, quantile: bool = False) -> None:
        self.model_fn = model_fn
        self.scale = scale
        self.quantile = quantile

    def __call__(self, rows: Tensor) -> Tensor:
        q = self.model_fn(rows)
        if self.quantile:
            q = q.mean(-2)
        return torch.cat([_scaled(rows, self.scale), q.float().flatten(1)], dim=1)


def _q_values(ys: Tensor, quantile: bool) -> Tensor:
    """``(|G|, B, A)`` Q-values of orbit outputs (quantiles ``(|G|, B, n_quantiles, A)`` averaged)."""
    return ys.mean(-2) if quantile else ys


#: the proxies :class:`QValueEquiZero` computes itself (on Q-values; quantiles averaged first, except
#: ``quantile_spread`` which reads the greedy action's quantiles)
FAST_PROXIES = ("max_value", "action_gap", "min_spread", "quantile_spread")


def _fast_scores(back: Tensor, proxy: str, quantile: bool) -> Tensor:
    """``(|G|, B)`` scores (higher = chosen) of the mapped-back orbit outputs ``back`` for a fast proxy.

    Every score is invariant to permuting the action axis, so the mapped-back outputs give the same
    scores as the outputs in each element's own frame (what the core proxies read).
    """
    if proxy == "quantile_spread":
        if not quantile:
            raise SymmetryError("the quantile_spread proxy needs a QR-DQN (quantile) network")
        return -quantile_spread(back)
    q = _q_values(back, quantile).float()
    if proxy == "max_value":
        return q.amax(-1)
    if proxy == "action_gap":
        return -action_gap(q)
    if proxy == "min_spread":
        return -min_spread(q)
    raise SymmetryError(
        f"the fused Q-value equizero takes the proxies {', '.join(FAST_PROXIES)}, got {proxy!r}"
    )


class QValueEquiZero(EquiZero):
    """Equizero fused for Q / quantile networks, with the proxies of :data:`FAST_PROXIES`.

    Same output as :class:`~equirl.symmetrizers.EquiZero` with the same proxy on the Q-values
    (:func:`quantile_max_value` for ``max_value`` on quantiles) and ``tie_break="average"`` -- e.g.
    :math:`g^* = \\arg\\max_g \\max_a Q(g\\cdot s)_a` for ``max_value``, ties averaged -- but the orbit outputs are
    mapped back once and reused for the selection, the output and the straight-through equitune
    gradient, and no host synchronisation is needed. This is what SB3 calls three times per gradient
    step (acting, TD target, loss), so it matters for wall time (Basu et al., NeurIPS 2023, use equizero
    with the max-value proxy for DQN agents; ``action_gap`` is the RL default, see ``docs/rl.md``).

    :param quantile: outputs are quantiles ``(B, n_quantiles, A)``.
    :param proxy: one of :data:`FAST_PROXIES`.
    """

    def __init__(
        self,
        model: Any,
        in_action: Any,
        out_action: Any = None,
        *,
        quantile: bool = False,
        proxy: str = "max_value",
        **kwargs: Any,
    ) -> None:
        if proxy not in FAST_PROXIES:
            raise SymmetryError(
                f"the fused Q-value equizero takes the proxies {', '.join(FAST_PROXIES)}, got {proxy!r}"
            )
        core_proxy: Any = quantile_max_value if quantile and proxy == "max_value" else proxy
        super().__init__(model, in_action, out_action, proxy=core_proxy, **kwargs)
        if self.tie_break != "average":
            raise SymmetryError("the fused Q-value equizero averages ties (tie_break='average')")
        self.quantile = quantile
        self.fast_proxy = proxy
        if proxy == "quantile_spread" and not quantile:
            raise SymmetryError("the quantile_spread proxy needs a QR-DQN (quantile) network")

    def combine(self, x_rows: Tensor, ys: Tensor) -> SymmetrizerOutput:
        back = self.out_action.inverse_stacked(ys)  # (|G|, B, ...): g^-1 . M(g . x)
        with torch.no_grad():
            # ties averaged by the core's rule (EquiZero.select with tie_break="average")
            v = _fast_scores(back.detach(), self.fast_proxy, self.quantile)
            w = tie_weights(v, self.tie_atol, self.tie_rtol, dtype=back.dtype)
        zero = (w.view(*w.shape, *([1] * (back.dim() - 2))) * back).sum(0)
        if self.uses_straight_through(ys):
            zero = straight_through(zero, back.mean(0))
        return SymmetrizerOutput(zero, w)


class QLambdaEquiTune(LambdaEquiTune):
    """λ-equitune whose λ-net sees ``[g·s, Q(g·s)]`` (``lambda_input="obs+q"``), with the Q-values taken
    from the orbit outputs already computed (detached) instead of a second backbone pass -- the same
    values :class:`LambdaFeatures` would recompute.

    :param scale: observation scale (``1/255`` for uint8 images).
    :param quantile: outputs are quantiles (averaged over the quantile axis for λ's input).
    """

    def __init__(self, *args: Any, scale: float = 1.0, quantile: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.scale = scale
        self.quantile = quantile

    def combine(self, x_rows: Tensor, ys: Tensor) -> SymmetrizerOutput:
        G, B = ys.shape[0], ys.shape[1]
        q = _q_values(ys.detach(), self.quantile).float().reshape(G * B, -1)
        z = torch.cat([_scaled(x_rows, self.scale), q], dim=1)
        w = self.weights_from_logits(self.lambda_net(z), ys)
        return SymmetrizerOutput(self.weighted_average(ys, w), w)


def policy_obs_action(sym: EnvSymmetry, observation_space: spaces.Space) -> Any:
    """The group action on the observation tensor *as the policy sees it* (after SB3's transposition of
    channel-last images to channel-first), checked against the space."""
    shape = tuple(observation_space.shape or ())
    if sym.obs_type == "signed_permutation":
        assert sym.obs_generators is not None
        n = len(sym.obs_generators[0][0])
        if shape != (n,):
            raise SymmetryError(
                f"{sym.env_id}: the spec acts on {n} features but the observation shape is {shape}"
            )
        return sym.obs_action()
    if len(shape) == 3:
        dims = (-2, -1) if is_image_space_channels_first(observation_space) else (-3, -2)  # type: ignore[arg-type]
    elif len(shape) == 2:
        dims = (-2, -1)
    else:
        raise SymmetryError(f"{sym.env_id}: an image symmetry needs image observations, got shape {shape}")
    h, w = shape[dims[0]], shape[dims[1]]
    quarter = sym.obs_generators is None or any(k % 2 for k, _ in sym.obs_generators)
    if quarter and h != w:
        raise SymmetryError(f"{sym.env_id}: quarter turns need square frames, got {h}x{w}")
    return sym.obs_action(image_dims=dims)


def _make_symmetrizer(
    model_fn: Any,
    sym: EnvSymmetry,
    method: str,
    method_kwargs: dict[str, Any],
    observation_space: spaces.Space,
    action_space: spaces.Space,
    quantile: bool,
) -> Symmetrizer | None:
    try:
        spec = get_method(method)
        validate_method_kwargs(spec.name, method_kwargs, adapter="rl")
    except EquirlError as exc:
        raise SymmetryError(str(exc)) from None
    method = spec.name
    if spec.pseudo:
        raise SymmetryError(
            f"method {method!r} resolves to a concrete method first (equirl.select_method / method: auto in a run)"
        )
    kw_rl = dict(method_kwargs)
    kw_rl.pop("lambda_reg", None)  # read by the λ-fitting callback, not by the symmetrizer
    method_kwargs = kw_rl
    if not isinstance(action_space, spaces.Discrete) or int(action_space.n) != sym.n_actions:
        raise SymmetryError(
            f"{sym.env_id}: the spec permutes {sym.n_actions} actions but the action space is {action_space}"
        )
    in_act = policy_obs_action(sym, observation_space)
    if not spec.symmetrizes:
        return None
    out_act = sym.action_action()
    kw = dict(method_kwargs)
    if spec.learned_scorer and "scorer" not in kw:
        # learned canonicalization (Kaba et al., 2023) with the prior of Mondal et al. (2023): a small
        # scorer on g·s picks one element; the backbone runs once (multigroup: Σ|G_i| - k + 1 times)
        hidden = tuple(int(h) for h in kw.pop("scorer_hidden", (64,)))
        image = isinstance(observation_space, spaces.Box) and observation_space.dtype.name == "uint8"
        flat = int(spaces.flatdim(observation_space))
        kw["scorer"] = ObsLambdaNet(flat, hidden, scale=1.0 / 255.0 if image else 1.0, zero_init=False)
        return symmetrize(model_fn, in_act, out_act, method=method, **kw)
    if spec.name == EQUIZERO:
        proxy = kw.setdefault("proxy", spec.option("proxy").default_for("rl"))  # type: ignore[union-attr]
        if isinstance(proxy, str) and proxy in FAST_PROXIES and kw.get("tie_break", "average") == "average":
            return QValueEquiZero(model_fn, in_act, out_act, quantile=quantile, **kw)
        if quantile and proxy == "max_value":
            kw["proxy"] = quantile_max_value
    if spec.learned_weights and "lambda_net" not in kw:
        hidden = tuple(int(h) for h in kw.pop("lambda_hidden", DEFAULT_LAMBDA_HIDDEN))
        lam_in = str(kw.pop("lambda_input", "obs+q"))
        if lam_in not in ("obs", "obs+q"):
            raise SymmetryError(f"lambda_input must be 'obs' or 'obs+q', got {lam_in!r}")
        image = isinstance(observation_space, spaces.Box) and observation_space.dtype.name == "uint8"
        scale = 1.0 / 255.0 if image else 1.0
        flat = int(spaces.flatdim(observation_space))
        if lam_in == "obs":
            kw["lambda_net"] = ObsLambdaNet(flat, hidden, scale=scale)
        else:
            # λ's input [g·s, Q(g·s)] reuses the orbit's Q-values (no second backbone pass)
            lam_net = ObsLambdaNet(flat + sym.n_actions, hidden)
            feats = LambdaFeatures(model_fn, scale, quantile)
            return QLambdaEquiTune(
                model_fn,
                in_act,
                out_act,
                lambda_net=lam_net,
                lambda_features=feats,
                scale=scale,
                quantile=quantile,
                **kw,
            )
    return symmetrize(model_fn, in_act, out_act, method=method, **kw)


class _EquiNetOptions:
    """The keyword options ``symmetry`` / ``method`` / ``method_kwargs`` of an equivariant SB3 network:
    taken off the constructor's arguments, kept in its constructor parameters; ``_setup_equi`` (each
    subclass) builds the symmetrizer once SB3's network exists.

    :param symmetry: anything :func:`~equirl.rl.spec.resolve_symmetry` accepts.
    :param method: one of :data:`METHODS`.
    :param method_kwargs: symmetrizer options.
    """

    equi: Symmetrizer | None
    symmetry: EnvSymmetry
    method: str
    method_kwargs: dict[str, Any]

    def __init__(
        self,
        *args: Any,
        symmetry: Any = None,
        method: str = EQUITUNE,
        method_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.symmetry = resolve_symmetry(symmetry)
        self.method_kwargs = dict(method_kwargs or {})
        self._setup_equi(method)

    def _setup_equi(self, method: str) -> None:
        """Set ``method`` (canonical name) and ``equi``.

        :param method: the method as given (maybe an alias).
        """
        raise NotImplementedError

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data: dict[str, Any] = super()._get_constructor_parameters()  # type: ignore[misc]
        data.update(symmetry=self.symmetry, method=self.method, method_kwargs=self.method_kwargs)
        return data


class _EquiMixin(_EquiNetOptions):
    """Construction and forward shared by the equivariant Q / quantile networks (options: see
    :class:`_EquiNetOptions`)."""

    #: whether outputs are quantiles ``(B, n_quantiles, A)`` (set by each network class)
    quantile: bool = False

    def _setup_equi(self, method: str) -> None:
        self.equi = _make_symmetrizer(
            self._plain_forward,
            self.symmetry,
            method,
            self.method_kwargs,
            self.observation_space,  # type: ignore[attr-defined]
            self.action_space,  # type: ignore[attr-defined]
            quantile=self.quantile,
        )
        self.method = canonical_method(method)  # an alias ("plain", "λ"...) as its canonical name

    def _plain_forward(self, obs: Tensor) -> Tensor:
        raise NotImplementedError

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

    def _plain_forward(self, obs: Tensor) -> Tensor:
        return self.q_net(self.extract_features(obs, self.features_extractor))


class EquiQuantileNetwork(_EquiMixin, QuantileNetwork):  # type: ignore[misc]
    """sb3-contrib's ``QuantileNetwork`` symmetrized: quantiles ``(B, n_quantiles, A)`` are permuted on the
    last (action) axis; equizero's default proxy is :func:`quantile_max_value`."""

    quantile = True

    def _plain_forward(self, obs: Tensor) -> Tensor:
        q = self.quantile_net(self.extract_features(obs, self.features_extractor))
        return q.view(-1, self.n_quantiles, int(self.action_space.n))


def _freeze(net: nn.Module, policy: Any, lr: float) -> None:
    """Train only the symmetrizer's own parameters (the λ-net)."""
    trainable = []
    for name, p in net.named_parameters():
        keep = name.startswith("equi.")
        p.requires_grad_(keep)
        if keep:
            trainable.append(p)
    if not trainable:
        raise SymmetryError("freeze_backbone leaves nothing to train: use it with method 'lambda'")
    policy.optimizer = policy.optimizer_class(trainable, lr=lr, **policy.optimizer_kwargs)


class _EquiPolicyMixin:
    """The symmetry options shared by the DQN and QR-DQN policies (kept in the saved constructor args,
    so ``load`` needs no ``custom_objects``)."""

    _equi_kwargs: dict[str, Any]
    freeze_backbone: bool

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Discrete,
        lr_schedule: Any,
        *args: Any,
        symmetry: Any = None,
        method: str = EQUITUNE,
        method_kwargs: dict[str, Any] | None = None,
        freeze_backbone: bool = False,
        **kwargs: Any,
    ) -> None:
        if symmetry is None:
            raise SymmetryError(
                f"{type(self).__name__} needs policy_kwargs['symmetry'] (an env id or a spec)"
            )
        self._equi_kwargs = {
            "symmetry": resolve_symmetry(symmetry),
            "method": method,
            "method_kwargs": dict(method_kwargs or {}),
        }
        self.freeze_backbone = freeze_backbone
        super().__init__(observation_space, action_space, lr_schedule, *args, **kwargs)  # type: ignore[call-arg]

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data: dict[str, Any] = super()._get_constructor_parameters()  # type: ignore[misc]
        data.update(self._equi_kwargs, freeze_backbone=self.freeze_backbone)
        return data


class EquiDQNPolicy(_EquiPolicyMixin, DQNPolicy):
    """DQN policy whose Q-network (and target network) are equivariant; see the module docstring.

    :param symmetry: env id / spec path / mapping / :class:`EnvSymmetry`.
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
            _freeze(self.q_net, self, lr_schedule(1))


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
            _freeze(self.quantile_net, self, lr_schedule(1))


class EquiCnnQRDQNPolicy(EquiQRDQNPolicy):
    """:class:`EquiQRDQNPolicy` with the NatureCNN feature extractor."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("features_extractor_class", NatureCNN)
        super().__init__(*args, **kwargs)


def _register_aliases() -> None:
    """Add ``EquiMlpPolicy`` / ``EquiCnnPolicy`` to the algorithms' ``policy_aliases`` (a new dict each time,
    so SB3's own class attribute is not mutated in place)."""
    DQN.policy_aliases = {
        **DQN.policy_aliases,
        "EquiMlpPolicy": EquiDQNPolicy,
        "EquiCnnPolicy": EquiCnnDQNPolicy,
    }
    QRDQN.policy_aliases = {
        **QRDQN.policy_aliases,
        "EquiMlpPolicy": EquiQRDQNPolicy,
        "EquiCnnPolicy": EquiCnnQRDQNPolicy,
    }


_register_aliases()
