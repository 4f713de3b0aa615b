"""The orbit of a convolutional network without transforming its input: ``M(g·x)`` for every ``g`` from
``x`` itself, by moving ``g`` into the kernels.

A quarter turn or mirror ``g`` of the image plane commutes with a stack of convolutions up to a change of
kernels: for a convolution whose windows tile the plane symmetrically (``(n + 2p - d(k-1) - 1)`` divisible
by the stride ``s`` on each moved axis, square kernels, strides, paddings and dilations where ``g`` turns
the plane),

.. math::  \\mathrm{conv}(g\\cdot x,\\ W) = g\\cdot \\mathrm{conv}(x,\\ g^{-1}\\cdot W),

and pointwise layers (activations, an evaluating batch norm) and aligned pooling commute with ``g``
outright. So a network ``M = rest ∘ chain ∘ pre`` whose ``chain`` is such layers gives

.. math::  M(g\\cdot x) = \\mathrm{rest}\\big(g\\cdot \\mathrm{chain}_{g^{-1}}(\\mathrm{pre}(x))\\big),

with ``chain_{g⁻¹}`` the chain with every kernel transformed by ``g⁻¹``. :class:`FoldedOrbit` evaluates it:
``pre`` once (not ``|G|`` times), the chain once per element on the batch as it is, ``g`` applied to the
chain's feature map (for the Nature CNN 3,136 numbers per frame stack instead of 28,224), and ``rest`` on
all ``|G|·B`` rows in one call. Nothing of the orbit of ``x`` is written, which on CPU is what made a
symmetrized CNN cost more than ``|G|`` forward passes (the stacked frames and the network's activations
do not fit in the cache together).

The result equals the orbit path up to floating-point summation order (≈ 1e-7 relative); a symmetrizer
checks it against the orbit path once per input shape and keeps the orbit path where they differ. Only
methods whose output is continuous in the orbit outputs use it (equitune, ``Symmetrizer.fold_safe``):
rounding of that size can hide the exact ties an argmin (equizero) needs on symmetric inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from equirl.actions import GroupAction, ImageAction

__all__ = ["FoldedOrbit", "SpatialChain", "carried_prefix", "chain_from_sequential"]

#: layers that act on each value alone (they commute with any permutation of the plane)
POINTWISE: tuple[type[nn.Module], ...] = (
    nn.Identity, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Tanh, nn.Sigmoid, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.PReLU,
)  # fmt: skip
#: window layers that commute with ``g`` when their windows tile the plane symmetrically
WINDOWED: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _carried(layer: nn.Module) -> bool:
    """Whether ``layer`` is one :class:`FoldedOrbit` can carry ``g`` through (shape permitting)."""
    if type(layer) in POINTWISE:
        return not isinstance(layer, nn.PReLU) or layer.num_parameters == 1
    if isinstance(layer, nn.BatchNorm2d):
        return True  # per channel; only while evaluating (checked per call)
    if isinstance(layer, nn.Conv2d):
        return (
            type(layer) is nn.Conv2d and not isinstance(layer.padding, str) and layer.padding_mode == "zeros"
        )
    if isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
        return type(layer) in WINDOWED and not layer.ceil_mode
    return False


def carried_prefix(layers: Sequence[nn.Module]) -> int:
    """How many leading ``layers`` are of the kinds ``g`` can be carried through (ending on a window
    layer: a chain of activations alone saves nothing)."""
    n = 0
    for i, layer in enumerate(layers):
        if not _carried(layer):
            break
        if isinstance(layer, WINDOWED):
            n = i + 1
    return n


@dataclass(frozen=True)
class SpatialChain:
    """A network split as ``rest ∘ chain ∘ pre`` for :class:`FoldedOrbit`.

    :param layers: the chain: layers of :func:`carried_prefix`'s kinds on ``(B, C, H, W)`` maps.
    :param rest: the rest of the network, on the chain's output.
    :param pre: what comes before the chain, applied to the raw input once; it must commute with the
        group's action and bring the image's (height, width) dims to ``(-2, -1)`` (a dtype cast, a scale,
        a channel-last to channel-first permute).
    """

    layers: tuple[nn.Module, ...]
    rest: Callable[[Tensor], Tensor]
    pre: Callable[[Tensor], Tensor] | None = None


def chain_from_sequential(model: nn.Module) -> SpatialChain | None:
    """The :class:`SpatialChain` of an ``nn.Sequential`` whose leading layers can carry ``g`` (``None``
    when there are none)."""
    if type(model) is not nn.Sequential:
        return None
    layers = list(model)
    n = carried_prefix(layers)
    if n == 0:
        return None
    return SpatialChain(tuple(layers[:n]), nn.Sequential(*layers[n:]))


def _window(layer: nn.Module) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]:
    """``(kernel, stride, padding, dilation)`` of a window layer, each as (height, width)."""
    if isinstance(layer, nn.Conv2d):
        return _pair(layer.kernel_size), _pair(layer.stride), _pair(layer.padding), _pair(layer.dilation)
    k = _pair(layer.kernel_size)  # type: ignore[arg-type]
    s = _pair(layer.stride if layer.stride is not None else layer.kernel_size)  # type: ignore[arg-type]
    d = _pair(getattr(layer, "dilation", 1))
    return k, s, _pair(layer.padding), d  # type: ignore[arg-type]


class FoldedOrbit:
    """``ys[g] = M(g·x)`` for every element, by the kernel identity of this module's docstring.

    :param chain: the network, split (:class:`SpatialChain`).
    :param action: the group's action on the raw input: an :class:`~equirl.actions.ImageAction` (quarter
        turns and mirrors of the plane; on dims ``(-2, -1)`` unless ``chain.pre`` brings them there).
    """

    def __init__(self, chain: SpatialChain, action: GroupAction[Any]) -> None:
        if type(action) is not ImageAction:
            raise TypeError(f"a folded orbit needs an ImageAction, got {type(action).__name__}")
        if chain.pre is None and action.dims != (-2, -1):  # the chain's convolutions read (..., H, W)
            raise TypeError(f"the action moves dims {action.dims}, the convolutions' planes are (-2, -1)")
        self.chain = chain
        self.group = action.group
        # the same transforms on the chain's (B, C, H, W) maps and (O, I, kh, kw) kernels
        self.action = ImageAction(action.group, action.transforms, dims=(-2, -1))
        self._turns = self.action._turns
        self._moves_h = self._turns or any(self.action._as_view_ops(t)[1] for t in self.action.transforms)
        self._moves_w = self._turns or any(self.action._as_view_ops(t)[2] for t in self.action.transforms)
        self._shapes: dict[tuple[int, int], tuple[int, int] | None] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_shapes"] = {}  # a cache, not part of the model
        return state

    def applies(self, hw: tuple[int, int]) -> bool:
        """Whether every window of the chain tiles an ``H×W`` input symmetrically, so that folding gives
        the orbit's outputs (cached per size)."""
        return self._walk(hw) is not None

    def pays(self, chw: tuple[int, int, int]) -> bool:
        """Whether folding saves work on a ``C×H×W`` input: it applies and the chain's output map has at
        most half the input's values (the Nature CNN: 3,136 of 28,224). Otherwise transforming the
        output map costs about what transforming the input would (MinAtar's CNN widens 4×10×10 frames
        to 16×8×8), and the |G| separate chain calls cost more than one stacked call."""
        out = self._walk(chw[1:])
        if out is None:
            return False
        convs = [m for m in self.chain.layers if isinstance(m, nn.Conv2d)]
        channels = convs[-1].out_channels if convs else chw[0]
        return 2 * channels * out[0] * out[1] <= chw[0] * chw[1] * chw[2]

    def _walk(self, hw: tuple[int, int]) -> tuple[int, int] | None:
        """The chain's output size on an ``H×W`` input, or ``None`` where a window does not tile a moved
        axis symmetrically (or quarter turns meet a non-square map or window)."""
        if hw in self._shapes:
            return self._shapes[hw]
        h, w = hw
        out: tuple[int, int] | None = hw
        if self._turns and h != w:
            out = None
        for layer in self.chain.layers:
            if out is None:
                break
            if not isinstance(layer, WINDOWED):
                continue
            k, s, p, d = _window(layer)
            if self._turns and not (k[0] == k[1] and s[0] == s[1] and p[0] == p[1] and d[0] == d[1]):
                out = None
                break
            sizes = []
            for axis, n, moved in ((0, out[0], self._moves_h), (1, out[1], self._moves_w)):
                span = n + 2 * p[axis] - d[axis] * (k[axis] - 1) - 1
                if span < 0 or (moved and span % s[axis]):
                    break
                sizes.append(span // s[axis] + 1)
            out = (sizes[0], sizes[1]) if len(sizes) == 2 else None
        self._shapes[hw] = out
        return out

    def usable(self) -> bool:
        """Whether the chain's layers can be folded now: a batch norm in the chain only while it evaluates
        with running statistics (batch statistics would be of one element's maps, not of the orbit's)."""
        return not any(
            isinstance(m, nn.BatchNorm2d) and (m.training or not m.track_running_stats)
            for m in self.chain.layers
        )

    def _kernel(self, conv: nn.Conv2d, g: int) -> Tensor:
        """``g⁻¹·W`` of a convolution, made on every call: a cache keyed on the weight's version would go
        stale under writes through ``.data`` (SB3's target-network update, fused optimizers), and turning
        a few kernels costs little next to the convolutions (the Nature CNN's: 78k values)."""
        return self.action.apply(conv.weight, self.group.inverse_indices[g])

    def _run_chain(self, h: Tensor, g: int) -> Tensor:
        for layer in self.chain.layers:
            if isinstance(layer, nn.Conv2d) and g != 0:
                h = F.conv2d(h, self._kernel(layer, g), layer.bias, layer.stride, layer.padding,
                             layer.dilation, layer.groups)  # fmt: skip
            else:
                h = layer(h)
        return h

    def __call__(self, x: Tensor) -> Tensor:
        """``(|G|, B, ...)``: ``M(g·x)`` for each element ``g`` (element 0 is the identity)."""
        pre = self.chain.pre
        h0 = x if pre is None else pre(x)
        G, B = self.group.order, x.shape[0]
        feats: Tensor | None = None
        for g in range(G):
            f = self._run_chain(h0, g)
            if feats is None:
                feats = f.new_empty((G, *f.shape))
            if g == 0:
                feats[0].copy_(f)
            else:
                self.action._write(f, self.action.transforms[g], feats[g])
        assert feats is not None
        y = self.chain.rest(feats.flatten(0, 1))
        return y.unflatten(0, (G, B))
