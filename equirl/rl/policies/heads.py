"""What the equivariant policies of both families share: the head symmetrizer, the group actions on
what a policy sees, the constructor options and the backbone freeze.

Every equirl policy keeps SB3's networks and replaces the *head* SB3 calls everywhere (a Q-network, the
``[logits | value]`` vector of an actor-critic policy, an actor, a critic ensemble) by one symmetrized
over the environment's group (:mod:`equirl.rl.spec`), built by :func:`make_head_symmetrizer` from
``method`` and ``method_kwargs``:

* the method is checked against the head: every method of :data:`METHODS` for a Q / quantile head
  (the learned canonicalizers ``canonicalize`` / ``multigroup`` too), :data:`AC_METHODS` for the
  actor-critic heads;
* equizero's proxy reads what the head outputs: Q-values (the fused :class:`QValueEquiZero` for the
  proxies of :data:`FAST_PROXIES`; :func:`quantile_max_value` on quantiles) or named slices of an
  actor-critic vector (a value, logits, a Gaussian's ``log_std`` or gSDE variance);
* λ-equitune's λ-net reads ``[g·x, head(g·x)]`` (``lambda_input="obs+q"``, the default,
  :class:`QLambdaEquiTune`) or ``g·x`` (``"obs"``); ``lambda_reg`` is the λ-fitting callback's, not the
  symmetrizer's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.distributions import StateDependentNoiseDistribution
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.torch_layers import NatureCNN
from torch import Tensor, nn

from equirl.actions import GroupAction, SignedPerm, SignedPermAction
from equirl.errors import EquirlError, SymmetryError
from equirl.groups import Group
from equirl.registry import EQUITUNE, EQUIZERO, get_method, method_names, validate_method_kwargs
from equirl.rl.spec import EnvSymmetry, resolve_symmetry
from equirl.symmetrizers import (
    EquiZero,
    LambdaEquiTune,
    Symmetrizer,
    SymmetrizerOutput,
    get_proxy,
    symmetrize,
)
from equirl.symmetrizers.fold import SpatialChain, carried_prefix
from equirl.symmetrizers.methods import straight_through, tie_weights
from equirl.symmetrizers.nets import ObsLambdaNet
from equirl.symmetrizers.proxies import action_gap, min_spread, quantile_spread

__all__ = [
    "AC_METHODS",
    "DEFAULT_LAMBDA_HIDDEN",
    "FAST_PROXIES",
    "METHODS",
    "FoldableNet",
    "LambdaFeatures",
    "ObsLambdaNet",
    "QLambdaEquiTune",
    "QValueEquiZero",
    "concat_action",
    "flat_obs_action",
    "make_head_symmetrizer",
    "policy_obs_action",
    "quantile_max_value",
    "sde_variance",
]

#: the methods a Q / quantile head accepts (every method of :mod:`equirl.registry`; ``base`` = the plain
#: network, for comparisons); ``canonicalize`` is learned canonicalization (one backbone pass),
#: ``multigroup`` needs a direct-product group (e.g. ``C2xZ2``)
METHODS = method_names()

#: the methods the actor-critic heads accept (the learned canonicalizers are DQN-only for now)
AC_METHODS = method_names(learned_scorer=False)

#: the RL λ-net's default hidden sizes: ``()`` is a linear λ on ``[g·s, Q(g·s)]``, one matrix-vector
#: product. It reached CartPole 475 in fewer env steps than a 64-unit hidden layer (0.29-0.33x plain
#: DQN's against 0.54x, ``docs/results/rl/README.md``); ``method_kwargs={"lambda_hidden": [64]}`` gives
#: the MLP.
DEFAULT_LAMBDA_HIDDEN: tuple[int, ...] = ()

#: the proxy equizero uses when none is given (RL's default; on an actor-critic head the critic's value)
_VALUE_PROXY = get_method(EQUIZERO).option("proxy").default_for("rl")  # type: ignore[union-attr]
#: the names that select the critic's value on an actor-critic head (``max_value`` as documented, and
#: the RL default)
_VALUE_PROXIES = frozenset({_VALUE_PROXY, "max_value"})

#: the proxies :class:`QValueEquiZero` computes itself (on Q-values; quantiles averaged first, except
#: ``quantile_spread`` which reads the greedy action's quantiles)
FAST_PROXIES = ("max_value", "action_gap", "min_spread", "quantile_spread")

#: what a head outputs: Q-values ``(B, A)``, quantiles ``(B, n_quantiles, A)`` (DQN / QR-DQN) or an
#: actor-critic vector ``(B, D)`` whose slices the equizero proxies read
HeadKind = Literal["q", "quantile", "actor_critic"]


# ------------------------------------------------------------------------------------------------------
# the group's actions on what a policy sees
# ------------------------------------------------------------------------------------------------------
def policy_obs_action(sym: EnvSymmetry, observation_space: spaces.Space) -> Any:
    """The group action on the observation tensor *as the policy sees it* (after SB3's transposition of
    channel-last images to channel-first), checked against the space
    (:meth:`~equirl.rl.spec.EnvSymmetry.policy_obs_action`)."""
    return sym.policy_obs_action(observation_space)


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


def _image_scale(observation_space: spaces.Space) -> float:
    """The λ-net's / scorer's input scale: ``1/255`` for uint8 images, else 1."""
    image = isinstance(observation_space, spaces.Box) and observation_space.dtype.name == "uint8"
    return 1.0 / 255.0 if image else 1.0


# ------------------------------------------------------------------------------------------------------
# Gaussian heads with gSDE
# ------------------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------------------
# Q-value heads: equizero's fused proxies, λ's input
# ------------------------------------------------------------------------------------------------------
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

    def combine(self, x_rows: Tensor | None, ys: Tensor) -> SymmetrizerOutput:
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
    values :class:`LambdaFeatures` would recompute. On an actor-critic head ``Q(g·s)`` is the head's
    whole output vector.

    :param scale: observation scale (``1/255`` for uint8 images).
    :param quantile: outputs are quantiles (averaged over the quantile axis for λ's input).
    """

    def __init__(self, *args: Any, scale: float = 1.0, quantile: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.scale = scale
        self.quantile = quantile

    def combine(self, x_rows: Tensor | None, ys: Tensor) -> SymmetrizerOutput:
        assert x_rows is not None  # not fold_safe: never folded
        G, B = ys.shape[0], ys.shape[1]
        q = _q_values(ys.detach(), self.quantile).float().reshape(G * B, -1)
        z = torch.cat([_scaled(x_rows, self.scale), q], dim=1)
        w = self.weights_from_logits(self.lambda_net(z), ys)
        return SymmetrizerOutput(self.weighted_average(ys, w), w)


# ------------------------------------------------------------------------------------------------------
# actor-critic heads: equizero's proxies on slices of the head vector
# ------------------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------------------
# the head symmetrizer
# ------------------------------------------------------------------------------------------------------
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
    *,
    head: HeadKind = "actor_critic",
) -> Symmetrizer | None:
    """The core symmetrizer of a policy head ``model_fn`` (``None`` for ``base`` and ``augment``).

    :param model_fn: the plain head: ``(B, ...) -> (B, A)`` Q-values, ``(B, n_quantiles, A)`` quantiles
        or ``(B, out_features)`` (actor-critic).
    :param in_action: the group's action on its input; ``out_action`` on its output (``None``: invariant).
    :param method: a method of :data:`METHODS` (a Q / quantile head) or of :data:`AC_METHODS` (an
        actor-critic head), by name or alias.
    :param method_kwargs: the method's options (checked by :func:`equirl.registry.validate_method_kwargs`;
        ``lambda_reg`` is dropped: the λ-fitting callback reads it).
    :param in_features: the flat input size (for the λ-net and the learned scorer).
    :param out_features: the size of the output λ reads with ``lambda_input="obs+q"`` (a Q / quantile
        head: the number of actions; quantiles are averaged).
    :param value: the output coordinates holding invariant values (equizero's ``max_value`` proxy on an
        actor-critic head).
    :param logits: the output coordinates holding discrete action logits (the other named proxies).
    :param log_std: the output coordinates holding a Gaussian's ``log_std`` (the ``entropy`` proxy).
    :param scale: the input scale for the λ-net and the scorer (``1/255`` for uint8 images).
    :param where: names the head in errors.
    :param variance: the output coordinates holding a Gaussian's variance (gSDE; the ``entropy`` proxy).
    :param head: what the head outputs: ``"q"`` / ``"quantile"`` (DQN / QR-DQN: every method, the
        learned canonicalizers too; equizero's proxies read the Q-values, fused for
        :data:`FAST_PROXIES`) or ``"actor_critic"`` (:data:`AC_METHODS`; equizero's proxies read the
        named slices).
    """
    try:
        spec = get_method(method)
        kw = validate_method_kwargs(spec.name, method_kwargs, adapter="rl")
    except EquirlError as exc:
        raise SymmetryError(str(exc)) from None
    kw.pop("lambda_reg", None)  # read by the λ-fitting callback, not by the symmetrizer
    q_head = head != "actor_critic"
    quantile = head == "quantile"
    if not q_head and spec.name not in AC_METHODS:
        raise SymmetryError(
            f"{where}: method {spec.name!r} is not available for actor-critic policies; choose one of "
            f"{', '.join(AC_METHODS)}"
        )
    if spec.pseudo:
        raise SymmetryError(
            f"method {spec.name!r} resolves to a concrete method first (equirl.rl.select_method / method: auto in a run)"
        )
    if not spec.symmetrizes:
        return None
    if spec.learned_scorer and "scorer" not in kw:
        # learned canonicalization (Kaba et al., 2023) with the prior of Mondal et al. (2023): a small
        # scorer on g·s picks one element; the backbone runs once (multigroup: Σ|G_i| - k + 1 times)
        hidden = tuple(int(h) for h in kw.pop("scorer_hidden", (64,)))
        kw["scorer"] = ObsLambdaNet(in_features, hidden, scale=scale, zero_init=False)
    elif spec.name == EQUIZERO and not q_head:
        kw["proxy"] = _proxy_for(kw.get("proxy", _VALUE_PROXY), value, logits, log_std, where, variance)
    elif spec.name == EQUIZERO:
        proxy = kw.setdefault("proxy", _VALUE_PROXY)
        if isinstance(proxy, str) and proxy in FAST_PROXIES and kw.get("tie_break", "average") == "average":
            return QValueEquiZero(model_fn, in_action, out_action, quantile=quantile, **kw)
        if quantile and proxy == "max_value":
            kw["proxy"] = quantile_max_value
    elif spec.learned_weights and "lambda_net" not in kw:
        hidden = tuple(int(h) for h in kw.pop("lambda_hidden", DEFAULT_LAMBDA_HIDDEN))
        lam_in = str(kw.pop("lambda_input", "obs+q"))
        if lam_in not in ("obs", "obs+q"):
            raise SymmetryError(f"lambda_input must be 'obs' or 'obs+q', got {lam_in!r}")
        if lam_in == "obs":
            kw["lambda_net"] = ObsLambdaNet(in_features, hidden, scale=scale)
        else:
            # λ reads [g·x, head(g·x)], the head's outputs taken from the orbit already computed (no
            # second backbone pass); LambdaFeatures recomputes the same input for lambda_logits
            kw.setdefault("lambda_features", LambdaFeatures(model_fn, scale, quantile))
            lam = ObsLambdaNet(in_features + out_features, hidden)
            return QLambdaEquiTune(
                model_fn, in_action, out_action, lambda_net=lam, scale=scale, quantile=quantile, **kw
            )
    return symmetrize(model_fn, in_action, out_action, method=spec.name, **kw)


# ------------------------------------------------------------------------------------------------------
# the policy options, the backbone freeze
# ------------------------------------------------------------------------------------------------------
class _EquiNetParams:
    """The constructor parameters ``symmetry`` / ``method`` / ``method_kwargs`` an equivariant SB3 network
    keeps (see :class:`_EquiNetOptions`; the Q-networks of :mod:`equirl.rl.policies.q` take their options
    themselves, so that a network is set up in one visit to its module)."""

    equi: Symmetrizer | None
    symmetry: EnvSymmetry
    method: str
    method_kwargs: dict[str, Any]

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data: dict[str, Any] = super()._get_constructor_parameters()  # type: ignore[misc]
        data.update(symmetry=self.symmetry, method=self.method, method_kwargs=self.method_kwargs)
        return data


class _FoldParts:
    """How an SB3 network splits around its extractor's leading convolutions (:class:`FoldableNet`): the
    extractor's own input step, the convolutions after the carried ones, the extractor's output layers
    and the network's head on the features."""

    def __init__(
        self,
        enter: Callable[[Tensor], Tensor] | None,
        tail: nn.Module,
        leave: nn.Module,
        after: Callable[[Tensor], Tensor],
    ) -> None:
        self.enter, self.tail, self.leave, self.after = enter, tail, leave, after


def extractor_fold_parts(
    extractor: nn.Module,
) -> tuple[Callable[[Tensor], Tensor] | None, nn.Sequential, nn.Module] | None:
    """``(enter, convolutions, leave)`` of a features extractor whose forward is
    ``leave(convolutions(enter(obs)))``, for the extractors whose forward is known: SB3's ``NatureCNN``
    and extractors defining ``fold_parts()`` (:class:`~equirl.rl.extractors.MinAtarCNN`); ``None`` for
    any other (a user's extractor keeps the stacked orbit)."""
    if type(extractor) is NatureCNN:
        return None, extractor.cnn, extractor.linear
    parts = getattr(extractor, "fold_parts", None)
    return parts() if callable(parts) else None  # type: ignore[no-any-return]


class FoldableNet:
    """An SB3 network (Q-network, actor-critic policy) whose head symmetrizer may fold the group into its
    CNN extractor's kernels (:mod:`equirl.symmetrizers.fold`): :meth:`_fold_chain` splits it as SB3's
    preprocessing and the extractor's input step, the extractor's leading convolutions, and the rest.
    ``pre`` and ``rest`` are bound methods, so a deep copy of the network folds through its own layers."""

    observation_space: spaces.Space
    normalize_images: bool
    _fold: _FoldParts | None = None

    def _fold_chain(self, extractor: nn.Module, after: Callable[[Tensor], Tensor]) -> SpatialChain | None:
        """The chain of ``after ∘ extractor ∘ preprocessing``, or ``None`` (no known CNN extractor)."""
        parts = extractor_fold_parts(extractor)
        if parts is None or not isinstance(self.observation_space, spaces.Box):
            return None
        enter, convs, leave = parts
        layers = list(convs)
        n = carried_prefix(layers)
        if n == 0:
            return None
        self._fold = _FoldParts(enter, nn.Sequential(*layers[n:]), leave, after)
        return SpatialChain(tuple(layers[:n]), self._fold_rest, self._fold_pre)

    def _fold_pre(self, obs: Tensor) -> Tensor:
        fold = self._fold
        assert fold is not None
        x = preprocess_obs(obs, self.observation_space, normalize_images=self.normalize_images)
        assert isinstance(x, Tensor)  # a Box space
        return x if fold.enter is None else fold.enter(x)

    def _fold_rest(self, h: Tensor) -> Tensor:
        fold = self._fold
        assert fold is not None
        return fold.after(fold.leave(fold.tail(h)))


class _EquiNetOptions(_EquiNetParams):
    """The keyword options ``symmetry`` / ``method`` / ``method_kwargs`` of an equivariant SB3 network:
    taken off the constructor's arguments, kept in its constructor parameters; ``_setup_equi`` (each
    subclass) builds the symmetrizer once SB3's network exists.

    :param symmetry: anything :func:`~equirl.rl.spec.resolve_symmetry` accepts.
    :param method: one of :data:`METHODS`.
    :param method_kwargs: symmetrizer options.
    """

    def __init__(
        self,
        *args: Any,
        symmetry: Any = None,
        method: str = EQUITUNE,
        method_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        # the policy hands its networks the spec it resolved (no second visit to the spec module)
        self.symmetry = symmetry if isinstance(symmetry, EnvSymmetry) else resolve_symmetry(symmetry)
        self.method_kwargs = dict(method_kwargs or {})
        self._setup_equi(method)

    def _setup_equi(self, method: str) -> None:
        """Set ``method`` (canonical name) and ``equi``.

        :param method: the method as given (maybe an alias).
        """
        raise NotImplementedError


class _EquiPolicyMixin:
    """The symmetry options shared by every equivariant policy (kept in the saved constructor args, so
    ``load`` needs no ``custom_objects``)."""

    _equi_kwargs: dict[str, Any]
    freeze_backbone: bool

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Any,
        *args: Any,
        symmetry: Any = None,
        method: str = EQUITUNE,
        method_kwargs: dict[str, Any] | None = None,
        freeze_backbone: bool = False,
        **kwargs: Any,
    ) -> None:
        unknown = self._unknown_kwargs(kwargs)
        if unknown:
            raise SymmetryError(unknown)
        if symmetry is None:
            raise SymmetryError(
                f"{type(self).__name__} needs policy_kwargs['symmetry'] (an env id or a spec)"
            )
        self._equi_kwargs = {
            "symmetry": symmetry if isinstance(symmetry, EnvSymmetry) else resolve_symmetry(symmetry),
            "method": method,
            "method_kwargs": dict(method_kwargs or {}),
        }
        self.freeze_backbone = freeze_backbone
        super().__init__(observation_space, action_space, lr_schedule, *args, **kwargs)  # type: ignore[call-arg]

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data: dict[str, Any] = super()._get_constructor_parameters()  # type: ignore[misc]
        data.update(self._equi_kwargs, freeze_backbone=self.freeze_backbone)
        return data

    def _unknown_kwargs(self, kwargs: dict[str, Any]) -> str | None:
        """The line naming a ``policy_kwargs`` key neither equirl's options nor the SB3 policy takes (with
        the closest known key), or ``None`` (SB3 would raise a bare ``TypeError`` for it)."""
        import difflib
        import inspect

        mro = type(self).__mro__
        parent = mro[mro.index(_EquiPolicyMixin) + 1]
        params = inspect.signature(parent.__init__).parameters  # type: ignore[misc]
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return None
        known = {*params, "symmetry", "method", "method_kwargs", "freeze_backbone"} - {"self"}
        bad = sorted(k for k in kwargs if k not in known)
        if not bad:
            return None
        close = difflib.get_close_matches(bad[0], sorted(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"{type(self).__name__}: unknown policy_kwargs key {bad[0]!r}{hint}"

    def _freeze_to_symmetrizers(self, lr: float, parts: Sequence[tuple[nn.Module, Any]]) -> None:
        """``freeze_backbone``: train only the symmetrizers' own parameters (``equi.*``: the λ-nets).

        Every other parameter of each part stops training, and the part's owner gets an optimizer of
        the policy's class over what is left.

        :param lr: the new optimizers' learning rate.
        :param parts: ``(network, owner)`` pairs, ``owner.optimizer`` replaced (DQN: the Q-network and
            the policy; PPO / A2C: the policy and itself; SAC / TD3 / TQC: the actor and the critic, each
            its own).
        :raises SymmetryError: no part has a symmetrizer parameter (the method learns nothing).
        """
        optimizer_class: Any = self.optimizer_class  # type: ignore[attr-defined]
        found = False
        for net, owner in parts:
            keep = []
            for name, p in net.named_parameters():
                train = name.startswith("equi.")
                p.requires_grad_(train)
                if train:
                    keep.append(p)
            if keep:
                owner.optimizer = optimizer_class(keep, lr=lr, **self.optimizer_kwargs)  # type: ignore[attr-defined]
                found = True
        if not found:
            raise SymmetryError("freeze_backbone leaves nothing to train: use it with method 'lambda'")
