"""The small MLPs of the symmetrizers: λ-nets (one logit per transformed input) and canonicalization
scorers (one score per transformed input), in one module, :class:`SmallMLP`.

All weights live in one flat parameter (``params``; each layer is a view of it, initialised like
``nn.Linear``): on one CPU thread the optimizer, gradient clipping and target-network copies cost per
tensor, and the RL λ-net is trained on every DQN gradient step. Without hidden layers and last bias,
``params`` is the weight vector and the net is one matrix-vector product.

The named variants differ only in their defaults:

* :class:`LambdaNet` (λ-equitune's default): ReLU, zero last layer (λ-equitune starts exactly as
  equitune), lazy input size;
* :class:`ScoreNet` (canonicalization's default): tanh, random last layer (scores must differ between
  group elements from the start), optional token embedding, lazy input size;
* :class:`ObsLambdaNet` (the RL λ-net and scorer): ReLU, scaled input (``1/255`` for uint8 frames), no
  last bias (a constant added to every logit cancels in the softmax over the group and in an argmax).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from equirl.errors import ConfigError, SymmetryError

__all__ = ["LambdaNet", "ObsLambdaNet", "ScoreNet", "SmallMLP"]

_ACTIVATIONS = ("relu", "tanh")


def _linear_init(n_in: int, n_out: int, bias: bool, zero: bool, like: Tensor | None = None) -> list[Tensor]:
    """Flat ``[weight, bias]`` of a fresh ``nn.Linear(n_in, n_out)`` (same random draws), zeroed when
    ``zero``; the bias is left out when ``bias`` is off."""
    kw: dict[str, Any] = {} if like is None else {"device": like.device, "dtype": like.dtype}
    layer = nn.Linear(n_in, n_out, **kw)
    chunks = (
        [layer.weight.detach().flatten(), layer.bias.detach()] if bias else [layer.weight.detach().flatten()]
    )
    return [torch.zeros_like(c) for c in chunks] if zero else chunks


class SmallMLP(nn.Module):
    """An MLP from (flattened) rows to one real number per row, its weights in one flat parameter.

    :param in_features: flattened input size (``None``: inferred at the first call or when loading).
    :param hidden: hidden sizes (``()``: linear).
    :param activation: ``"relu"`` or ``"tanh"``.
    :param zero_init: zero the last layer (a λ-net starts as equitune); ``False`` for scorers.
    :param last_bias: give the last layer a bias (it cancels in a softmax over the group).
    :param scale: multiplies the input first (``1/255`` for uint8 images).
    :param vocab_size: for integer token inputs, embed ids first (``embed_dim`` each) and flatten.
    :param embed_dim: embedding size for token inputs.
    """

    #: what the net is called and how to fix a size mismatch, in the one-line loading error
    what = "net"
    fix = "build it with the hidden sizes it was saved with"

    params: nn.Parameter
    #: a lazy net's layers after the first, drawn at construction (``None`` once the input size is known)
    _rest: Tensor | None

    def __init__(
        self,
        in_features: int | None = None,
        hidden: Sequence[int] = (64,),
        *,
        activation: str = "relu",
        zero_init: bool = True,
        last_bias: bool = True,
        scale: float = 1.0,
        vocab_size: int | None = None,
        embed_dim: int = 16,
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ConfigError(f"activation must be one of {_ACTIVATIONS}, got {activation!r}")
        self.embed = nn.Embedding(vocab_size, embed_dim) if vocab_size is not None else None
        self.hidden = tuple(int(h) for h in hidden)
        self.activation = activation
        self.zero_init = zero_init
        self.last_bias = last_bias
        self.scale = float(scale)
        self.in_features = in_features
        self.shapes: tuple[tuple[int, int], ...] = ()
        self.split_sizes: tuple[int, ...] = ()
        self._linear = False
        # random draws in nn.Linear's order, layer by layer; a lazy first layer is drawn at the first call
        # (as nn.LazyLinear does), after the others
        first = self._first_chunks(in_features) if in_features is not None else []
        outs = (*self.hidden, 1)
        rest: list[Tensor] = []
        for k in range(1, len(outs)):
            last = k == len(outs) - 1
            rest += _linear_init(outs[k - 1], outs[k], not last or last_bias, last and zero_init)
        if in_features is None:
            self.params = cast(nn.Parameter, nn.parameter.UninitializedParameter())
            self.register_buffer("_rest", torch.cat(rest) if rest else torch.zeros(0), persistent=False)
        else:
            self._rest = None
            self._layout(in_features)
            self.params = nn.Parameter(torch.cat([*first, *rest]))

    # -- construction -------------------------------------------------------------------------------
    def _split(self, in_features: int) -> tuple[tuple[tuple[int, int], ...], tuple[int, ...]]:
        """``(out, in)`` per layer and the sizes of the flat parameter's pieces for ``in_features``."""
        sizes = (in_features, *self.hidden, 1)
        shapes = tuple(zip(sizes[1:], sizes[:-1]))
        split = []
        for k, (n_out, n_in) in enumerate(shapes):
            split.append(n_out * n_in)
            if k < len(shapes) - 1 or self.last_bias:
                split.append(n_out)
        return shapes, tuple(split)

    def _layout(self, in_features: int) -> None:
        self.in_features = in_features
        self.shapes, self.split_sizes = self._split(in_features)
        self._linear = len(self.shapes) == 1 and not self.last_bias

    def _first_chunks(self, in_features: int, like: Tensor | None = None) -> list[Tensor]:
        last = not self.hidden
        n_out = self.hidden[0] if self.hidden else 1
        return _linear_init(in_features, n_out, not last or self.last_bias, last and self.zero_init, like)

    def _materialize(self, in_features: int, init: bool = True) -> None:
        """Give a lazy net its input size: the first layer is drawn now (as ``nn.LazyLinear`` does)."""
        rest = self._rest
        assert rest is not None and isinstance(self.params, nn.parameter.UninitializedParameter)
        self._layout(in_features)
        n = sum(self.split_sizes)
        self.params.materialize((n,), device=rest.device, dtype=rest.dtype)
        if init:
            with torch.no_grad():
                self.params.copy_(torch.cat([*self._first_chunks(in_features, rest), rest]))
        self._rest = None

    def _in_features_from_count(self, n: int) -> int:
        """The input size that gives ``n`` parameters (a lazy net loading a flat state dict)."""
        per_input = self.hidden[0] if self.hidden else 1
        fixed = sum(self._split(1)[1]) - per_input
        k, r = divmod(n - fixed, per_input)
        if r or k < 1:
            raise SymmetryError(
                f"the saved {self.what} has {n} parameters, which no input size gives with hidden sizes "
                f"{list(self.hidden)}: {self.fix}"
            )
        return k

    # -- forward ------------------------------------------------------------------------------------
    def layers(self) -> list[tuple[Tensor, Tensor | None]]:
        """``(weight, bias)`` per layer, as views of :attr:`params` (a missing last bias is ``None``)."""
        parts = self.params.split(self.split_sizes)
        out: list[tuple[Tensor, Tensor | None]] = []
        i = 0
        for k, shape in enumerate(self.shapes):
            w = parts[i].view(shape)
            has_bias = k < len(self.shapes) - 1 or self.last_bias
            out.append((w, parts[i + 1] if has_bias else None))
            i += 2 if has_bias else 1
        return out

    def forward(self, z: Tensor) -> Tensor:
        """``(N, ...)`` rows to ``(N,)`` outputs."""
        if self.embed is not None:
            z = self.embed(z.long())
        if z.dim() != 2:
            z = z.flatten(1)
        if self._rest is not None:  # lazy: first call
            self._materialize(int(z.shape[1]))
        elif z.shape[1] != self.in_features:
            raise SymmetryError(
                f"this {self.what} reads rows of {self.in_features} values (sized at its first call, or by its "
                f"in_features option), got rows of {int(z.shape[1])}: inputs of another shape need a net of their own"
            )
        params = self.params
        if z.dtype != params.dtype:
            z = z.to(params.dtype)
        h = z if self.scale == 1.0 else z * self.scale
        if self._linear:  # one matrix-vector product
            return h @ params
        *hidden, (w, b) = self.layers()
        act = torch.relu if self.activation == "relu" else torch.tanh
        for wk, bk in hidden:
            h = act(F.linear(h, wk, bk))
        out = h @ w.squeeze(0)
        return out if b is None else out + b

    # -- loading ------------------------------------------------------------------------------------
    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # nets saved before the flat layout kept an ``nn.Sequential`` (Flatten, Linear, act, ...):
        # ``net.1.weight``, ``net.1.bias``, ``net.3.weight``, ... are concatenated in the same order (the
        # last bias dropped when this net has none: it cancels in the softmax over the group)
        old = sorted(
            int(key[len(prefix) + 4 :].split(".")[0])
            for key in state_dict
            if key.startswith(f"{prefix}net.") and key.endswith(".weight")
        )
        saved = state_dict.get(f"{prefix}params")
        if saved is None and old:
            weights = [state_dict[f"{prefix}net.{i}.weight"] for i in old]
            if self._rest is not None and weights and weights[0].dim() == 2:
                self._materialize(int(weights[0].shape[1]), init=False)
            if [tuple(w.shape) for w in weights] != list(self.shapes):
                sizes = [int(w.shape[0]) for w in weights[:-1]]
                raise SymmetryError(
                    f"the saved {self.what} has hidden sizes {sizes}, this one {list(self.hidden)}: {self.fix}"
                )
            tensors = []
            for i in old:
                tensors.append(state_dict.pop(f"{prefix}net.{i}.weight"))
                b = state_dict.pop(f"{prefix}net.{i}.bias", None)
                if b is not None:
                    tensors.append(b)
            if not self.last_bias and len(tensors) > len(self.split_sizes):
                tensors = tensors[:-1]
            state_dict[f"{prefix}params"] = saved = torch.cat([t.flatten() for t in tensors])
        if saved is not None and self._rest is not None:
            self._materialize(self._in_features_from_count(int(saved.numel())), init=False)
        if saved is not None and saved.shape != self.params.shape:
            raise SymmetryError(
                f"the saved {self.what} has {saved.numel()} parameters, this one {self.params.numel()} "
                f"(hidden sizes {list(self.hidden)}): {self.fix}"
            )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        layers = (
            [tuple(reversed(s)) for s in self.shapes] if self.shapes else f"lazy, hidden={list(self.hidden)}"
        )
        return (
            f"layers={layers}, activation={self.activation}, last_bias={self.last_bias}, scale={self.scale}"
        )


class LambdaNet(SmallMLP):
    """λ-equitune's default λ network: ReLU MLP, last layer zero (λ-equitune starts exactly as equitune).

    :param in_features: input size (``None``: inferred at the first call).
    :param hidden: hidden layer sizes.
    """

    what = "λ-net"
    fix = "pass the lambda_hidden it was saved with"

    def __init__(self, in_features: int | None = None, hidden: Sequence[int] = (64,)) -> None:
        super().__init__(in_features, hidden, activation="relu", zero_init=True, last_bias=True)


class ScoreNet(SmallMLP):
    """The default canonicalization network ``h``: one real score per (transformed) input row (tanh MLP).

    Any module mapping ``(N, ...)`` to ``(N,)`` (or ``(N, 1)``) can be used instead, e.g. a small CNN;
    equivariance of the canonicalizer never depends on ``h`` (it comes from scoring ``g·x``).

    :param in_features: flattened input size (``None``: inferred at the first call).
    :param hidden: hidden layer sizes of the MLP.
    :param vocab_size: for integer token inputs, embed ids first (``embed_dim`` each) and flatten.
    :param embed_dim: embedding size for token inputs.
    """

    what = "scorer"
    fix = "pass the scorer_hidden it was saved with"

    def __init__(
        self,
        in_features: int | None = None,
        hidden: Sequence[int] = (64,),
        vocab_size: int | None = None,
        embed_dim: int = 16,
    ) -> None:
        super().__init__(
            in_features,
            hidden,
            activation="tanh",
            zero_init=False,
            last_bias=True,
            vocab_size=vocab_size,
            embed_dim=embed_dim,
        )


class ObsLambdaNet(SmallMLP):
    """The RL λ-net (and scorer) on (transformed) observations: scale, flatten, ReLU MLP, one logit per row,
    no last bias. Without hidden layers (the RL default) it is one matrix-vector product.

    :param in_features: flattened observation size.
    :param hidden: hidden sizes (``()``: a linear λ).
    :param scale: multiplies the observation first (``1/255`` for uint8 images).
    :param zero_init: zero the last layer (λ starts as equitune); ``False`` for a canonicalization
        scorer, whose scores must differ between group elements from the start.
    """

    what = "λ-net"
    fix = "pass the lambda_hidden it was saved with in method_kwargs"

    def __init__(
        self, in_features: int, hidden: Sequence[int] = (64,), scale: float = 1.0, zero_init: bool = True
    ) -> None:
        super().__init__(
            in_features, hidden, activation="relu", zero_init=zero_init, last_bias=False, scale=scale
        )
