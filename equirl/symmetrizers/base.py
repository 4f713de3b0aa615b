"""The symmetrizer interface: one ``nn.Module`` wrapping any model ``M``.

Every method here is a weighted average over the orbit,

.. math::  M_G(x) = \\sum_{g \\in G} w_g(x)\\, g^{-1} \\cdot M(g \\cdot x), \\qquad w(x) \\in \\Delta^{|G|-1},

with uniform weights for equitune, the one-hot of ``argmin_g ℓ(M(g·x))`` for equizero and a learned
softmax for λ-equitune. :class:`Symmetrizer` owns the shared mechanics: the ``|G|`` transformed copies
go through ``M`` in one batched call per chunk, the chunk size keeps each call in the range where a
batched call is cheaper than ``|G|`` separate ones, and :meth:`Symmetrizer.forward_loop` is the
per-element reference the tests compare against.

Compilers: a symmetrizer runs under ``torch.compile``. ``torch.jit.script`` does not support it, and
``torch.jit.trace`` records only the branch its example input took, which is wrong for the methods that
select by the data (equizero's argmin, canonicalization): trace equitune and λ-equitune only.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from equirl.actions import GroupAction, TrivialAction
from equirl.errors import ConfigError, GroupError, SymmetryError
from equirl.registry import BASE
from equirl.symmetrizers.fold import FoldedOrbit, SpatialChain, chain_from_sequential

logger = logging.getLogger(__name__)

__all__ = ["SYMMETRIZERS", "Symmetrizer", "SymmetrizerOutput", "register_symmetrizer"]


_TAKES_OUT: dict[type, bool] = {}


def _takes_out(action: GroupAction[Any]) -> bool:
    """Whether ``action.orbit`` accepts ``out=`` (the built-in actions do; a user subclass may not)."""
    hit = _TAKES_OUT.get(type(action))
    if hit is None:
        hit = _TAKES_OUT[type(action)] = "out" in inspect.signature(action.orbit).parameters
    return hit


def _row_bytes(x: Tensor) -> int:
    """Bytes of one sample of ``x`` (at least 1)."""
    return max(1, (x.numel() // max(x.shape[0], 1)) * x.element_size())


class SymmetrizerOutput(NamedTuple):
    """The symmetrized output and the orbit weights that produced it.

    :ivar output: same shape and dtype as ``M(x)``.
    :ivar weights: ``(|G|, B)``, each column on the simplex (uniform, one-hot, or λ's softmax).
    """

    output: Tensor
    weights: Tensor


#: the methods by name (filled by :func:`register_symmetrizer`)
SYMMETRIZERS: dict[str, type[Symmetrizer]] = {}


def register_symmetrizer(name: str) -> Callable[[type[Symmetrizer]], type[Symmetrizer]]:
    """Class decorator registering a symmetrizer under ``name`` for :func:`equirl.symmetrize`.

    The built-in classes register under their canonical :mod:`equirl.registry` names (aliases are
    resolved by the registry); any other name adds a user method that :func:`equirl.symmetrize` finds
    by that exact name (its options are then not checked).
    """

    def deco(cls: type[Symmetrizer]) -> type[Symmetrizer]:
        SYMMETRIZERS[name] = cls
        cls.method_name = name
        return cls

    return deco


class Symmetrizer(nn.Module):
    """Base class: wraps ``model`` so that it becomes equivariant to ``in_action.group``.

    :param model: any ``nn.Module`` (or callable) mapping a batch ``(B, ...)`` to a tensor ``(B, ...)``.
    :param in_action: how the group acts on the model's input.
    :param out_action: how it acts on the output; ``None`` means trivially (an invariant model).
    :param chunk_size: samples per batched call (each call sees ``|G|·chunk`` rows); ``"auto"`` keeps a
        call's input under ``max_call_bytes`` and ``max_call_rows``; ``None`` never chunks.
    :param max_call_bytes: the auto chunk's budget for one call's input (8 MiB: 74 float Atari frame
        stacks, rounded to 64 rows; a NatureCNN call of 48-96 rows is 5-15 % cheaper per row than one of
        32 on one CPU thread, and larger calls stop gaining once their activations leave the cache).
    :param max_call_rows: the auto chunk's cap on rows per call.
    :param fold: where ``model`` is an ``nn.Sequential`` opening with convolutions and the input action
        turns or mirrors images, compute ``M(g·x)`` on batches of at least :attr:`fold_min_batch` by
        transforming the kernels instead of ``x`` (:mod:`equirl.symmetrizers.fold`; :meth:`fold_into`
        gives the split of any other network). The outputs agree with the orbit path to float rounding
        (checked once per input shape); ``False`` always transforms the input. Only methods whose
        :attr:`fold_safe` is set fold.
    """

    method_name = BASE
    #: whether this method may take the folded path: :meth:`combine` ignores ``x_rows`` (it gets
    #: ``None`` there) and its output is continuous in ``ys``, so float rounding stays float rounding.
    #: Equitune's average is; equizero's argmin is not (a symmetric input's exact ties would be missed)
    #: and a λ-net reads ``x_rows``. A subclass that overrides ``combine`` or ``combine_output``
    #: without saying ``fold_safe`` itself is not fold-safe.
    fold_safe = False
    #: the smallest batch computed by folding (below it one stacked call of ``|G|·B`` rows is cheaper
    #: than ``|G|`` calls of ``B``)
    fold_min_batch = 16
    #: rows the folded path's shared layers see in one call at most (larger batches are chunked)
    fold_max_rows = 4096

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = vars(cls)
        if ("combine" in own or "combine_output" in own) and "fold_safe" not in own:
            cls.fold_safe = False  # it may read x_rows, or pick by comparing outputs

    def __init__(
        self,
        model: nn.Module | Callable[[Tensor], Tensor],
        in_action: GroupAction[Any],
        out_action: GroupAction[Any] | None = None,
        chunk_size: int | str | None = "auto",
        max_call_bytes: int = 1 << 23,
        max_call_rows: int = 512,
        fold: bool = True,
    ) -> None:
        super().__init__()
        for what, act in (("in_action", in_action), ("out_action", out_action)):
            if act is not None and not isinstance(act, GroupAction):
                raise GroupError(
                    f"{what} must be a GroupAction (e.g. permutation_action(flip(), [[1, 0]])), got "
                    f"{type(act).__name__}"
                )
        if not isinstance(model, nn.Module) and not callable(model):
            raise SymmetryError(
                f"model must be an nn.Module or a callable from a batch to a tensor, got {type(model).__name__}"
            )
        if out_action is None:
            out_action = TrivialAction(in_action.group)
        if out_action.group is not in_action.group:
            raise GroupError(
                f"input and output actions must be of the same group, got {in_action.group.name} "
                f"and {out_action.group.name}"
            )
        if isinstance(model, nn.Module):
            self.model = model
        else:
            self._model_fn = model
        self.in_action = in_action
        self.out_action = out_action
        if not (
            chunk_size is None or chunk_size == "auto" or (isinstance(chunk_size, int) and chunk_size > 0)
        ):
            raise ConfigError(f"chunk_size must be a positive int, 'auto' or None, got {chunk_size!r}")
        self.chunk_size = chunk_size
        self.max_call_bytes = max_call_bytes
        self.max_call_rows = max_call_rows
        self.fold = bool(fold)
        self._folded: FoldedOrbit | None = None
        self._fold_checked: dict[tuple[Any, ...], bool] = {}
        self._fold_source: tuple[Any, ...] | None = None  # the nn.Sequential split automatically, as split
        if self.fold and isinstance(model, nn.Module):
            self._split_sequential(model)

    def _split_sequential(self, model: nn.Module) -> None:
        chain = chain_from_sequential(model)
        self.fold_into(chain)
        self._fold_source = (model, *model.children()) if chain is not None and self._folded else None

    def _source_changed(self) -> bool:
        """Whether the automatically split ``nn.Sequential`` was replaced or had a layer swapped since."""
        src = self._fold_source
        if src is None:
            return False
        model = self._modules.get("model")
        if model is not src[0]:
            return True
        layers = list(model.children())
        return len(layers) != len(src) - 1 or any(a is not b for a, b in zip(layers, src[1:]))

    def fold_into(self, chain: SpatialChain | None) -> None:
        """Compute ``M(g·x)`` through ``chain``, the model split as ``rest ∘ layers ∘ pre``
        (:class:`~equirl.symmetrizers.fold.SpatialChain`), where the input action allows it; ``None``
        goes back to transforming the input. Ignored when :attr:`fold` is off, the method reads the
        transformed inputs, or the input action is not an image action."""
        self._fold_checked = {}
        self._folded = None
        self._fold_source = None
        if chain is None or not self.fold or not self.fold_safe:
            return
        try:
            self._folded = FoldedOrbit(chain, self.in_action)
        except TypeError:
            self._folded = None

    def _folds(self, x: Tensor) -> bool:
        """Whether ``x`` takes the folded path: a batch of at least :attr:`fold_min_batch` of a shape the
        chain's windows tile symmetrically and shrink (:meth:`FoldedOrbit.pays`), on which the folded and
        the orbit path were found equal."""
        folded = self._folded
        if folded is None or x.dim() < 3 or x.shape[0] < self.fold_min_batch or not self.fold:
            return False
        if self._source_changed():
            model = self._modules.get("model")
            if model is None:
                self.fold_into(None)
            else:
                self._split_sequential(model)
            return self._folds(x)
        if not folded.usable():
            return False
        key = (tuple(x.shape[1:]), x.dtype, x.device)
        ok = self._fold_checked.get(key)
        if ok is None:
            ok = self._fold_checked[key] = self._check_fold(x)
        return ok

    def _check_fold(self, x: Tensor) -> bool:
        """Whether folding pays on ``x``'s shape and agrees with the orbit path on two of its samples (once
        per input shape)."""
        folded = self._folded
        assert folded is not None
        pre = folded.chain.pre
        h = x[:2] if pre is None else pre(x[:2])
        if h.dim() < 4 or not folded.pays((int(h.shape[-3]), int(h.shape[-2]), int(h.shape[-1]))):
            return False
        # evaluating, on a forked random stream: the check leaves no trace (no batch-norm statistics
        # updated, no dropout draws taken from the caller's stream) and compares the structure only
        owners = [m for m in (self._modules.get("model"), getattr(self.__dict__.get("_model_fn"), "__self__", None))
                  if isinstance(m, nn.Module)] + [m for m in folded.chain.layers if isinstance(m, nn.Module)]  # fmt: skip
        modes = [(m, m.training) for owner in owners for m in owner.modules()]
        try:
            for m, _ in modes:
                m.training = False
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                got = folded(x[:2])
                want = self._orbit_outputs_unfolded(x[:2])[1]
        finally:
            for m, mode in modes:
                m.training = mode
        if got.shape != want.shape or got.dtype != want.dtype:
            ok = False
        elif not got.is_floating_point():
            ok = bool(torch.equal(got, want))
        else:
            scale = float(want.abs().max()) if want.numel() else 0.0
            ok = bool(torch.allclose(got, want, rtol=1e-4, atol=1e-5 * (1.0 + scale)))
        if not ok:
            logger.warning(
                "%s: the kernel-folded orbit differs from the transformed inputs' for inputs of shape %s; "
                "using the transformed inputs",
                type(self).__name__,
                tuple(x.shape[1:]),
            )
        return ok

    def __getstate__(self) -> dict[str, Any]:
        state: dict[str, Any] = super().__getstate__()  # a copy of __dict__
        state.pop("_workspaces", None)  # scratch memory, not part of the module
        state["_fold_checked"] = {}
        return state

    # -- helpers -------------------------------------------------------------------------------------
    @property
    def group(self) -> Any:
        return self.in_action.group

    def _run_model(self, x: Tensor) -> Tensor:
        model = self._modules.get("model")  # not self.model: nn.Module.__getattr__ is slow on the hot path
        y = (self._model_fn if model is None else model)(x)
        if type(y) is not Tensor or y.dim() == 0 or y.shape[0] != x.shape[0]:
            self._bad_output(y, x)
        return y  # type: ignore[no-any-return]

    @property
    def _batched_dims(self) -> int:
        return self.in_action.batched_dims

    def _unbatched(self, x: Tensor) -> None:
        raise SymmetryError(
            f"{type(self).__name__}: inputs are batches with at least {self._batched_dims} dims (the batch axis "
            f"first), got shape {tuple(x.shape)}: for one sample, add the batch axis (x.unsqueeze(0))"
        )

    def _bad_output(self, y: Any, x: Tensor) -> None:
        """Raise one :class:`SymmetryError` naming what the model returned, unless it is a tensor (a
        subclass of one too) with the batch axis first."""
        name = type(self).__name__
        if not isinstance(y, Tensor):
            raise SymmetryError(
                f"{name}: the model must return one tensor of shape (B, ...), got {type(y).__name__} (wrap it "
                "to return the tensor to symmetrize, e.g. the logits)"
            )
        if y.dim() == 0 or y.shape[0] != x.shape[0]:
            raise SymmetryError(
                f"{name}: the model returned shape {tuple(y.shape)} for {x.shape[0]} input rows of shape "
                f"{tuple(x.shape[1:])}: it must keep the batch axis first (one output row per input row)"
            )

    def chunk_for(self, x: Tensor) -> int:
        """How many samples of ``x`` go into one batched call (with all their transformed copies: every
        call holds whole orbits, so a batch-dependent layer such as a training batch norm sees statistics
        the group leaves unchanged). ``"auto"``: as many as one call of :meth:`call_rows` rows holds."""
        B = x.shape[0]
        if self.chunk_size is None:
            return B
        if isinstance(self.chunk_size, int):
            return self.chunk_size
        G = self.group.order
        if self._folds(x):
            # no stacked input, and each element's chain call sees the chunk's samples: as many as one
            # call of float inputs holds (a 256-row Nature CNN call runs slower per row than 64-row ones,
            # its activations out of the cache), and at most fold_max_rows over the group for the rest
            float_row = (x.numel() // max(B, 1)) * max(4, x.element_size())
            return max(1, min(B, self.call_rows(x, float_row), self.fold_max_rows // G))
        return max(1, min(B, self.call_rows(x) // G))

    def call_rows(self, x: Tensor, row_bytes: int | None = None) -> int:
        """Rows of one model call under ``chunk_size="auto"``: inputs of at most ``max_call_bytes`` (rows of
        ``row_bytes``, default ``x``'s) and at most ``max_call_rows`` rows (at least ``|G|``), a multiple
        of 32 from 32 on."""
        per_row = _row_bytes(x) if row_bytes is None else max(1, row_bytes)
        rows = min(max(self.max_call_bytes // per_row, self.group.order), self.max_call_rows)
        if rows >= 32:  # CPU kernels (oneDNN) block the batch by 32: such calls are cheapest per row
            rows -= rows % 32
        return rows

    def orbit_outputs(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """One batched call: ``(x_rows, ys)`` with ``x_rows`` ``(|G|·B, ...)`` (element-major) and
        ``ys[g] = M(g·x)`` of shape ``(|G|, B, ...)``."""
        G, B = self.group.order, x.shape[0]
        x_rows = self.in_action.orbit(x).reshape(G * B, *x.shape[1:])
        y = self._run_model(x_rows)
        return x_rows, y.view(G, B, *y.shape[1:])

    def _orbit_outputs(self, x: Tensor) -> tuple[Tensor | None, Tensor]:
        """:meth:`orbit_outputs` for :meth:`forward`: folded into the kernels where :meth:`_folds` says so
        (``x_rows`` is then ``None``); otherwise :meth:`_orbit_outputs_unfolded`."""
        if x.dim() < self._batched_dims:
            self._unbatched(x)
        if self._folded is not None and self._folds(x):
            return None, self._folded(x)
        return self._orbit_outputs_unfolded(x)

    def _orbit_outputs_unfolded(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Without autograd, the stacked orbit of a large CPU batch is written into a buffer kept between
        calls (:meth:`_workspace`) -- ``x_rows`` is then valid only until the next call, which is all
        ``combine`` needs."""
        act = self.in_action
        G, B = act.group.order, x.shape[0]
        buf = None if torch.is_grad_enabled() else self._workspace(x, G)
        x_rows = (act.orbit(x) if buf is None else act.orbit(x, out=buf)).flatten(0, 1)
        y = self._run_model(x_rows)
        return x_rows, y.unflatten(0, (G, B))

    #: orbits smaller than this are allocated per call (a fresh small tensor is cheaper than a lookup)
    workspace_min_bytes = 1 << 17
    #: orbits larger than this are allocated per call too (a one-off huge batch is not kept alive)
    workspace_max_bytes = 1 << 26

    def _workspace(self, x: Tensor, G: int) -> Tensor | None:
        """A ``(|G|, *x.shape)`` buffer reused between calls, or ``None`` (small, huge or non-CPU inputs).

        Fresh multi-megabyte tensors come from ``mmap`` on CPU: every call would fault in and zero its
        pages again, which costs more than writing the orbit itself. Buffers are per thread (two threads
        never share one) and per inference mode (an inference tensor cannot be written outside it); the
        last few shapes are kept."""
        nbytes = x.numel() * x.element_size() * G
        if nbytes < self.workspace_min_bytes or nbytes > self.workspace_max_bytes:
            return None
        if x.device.type != "cpu" or not _takes_out(self.in_action):
            return None
        key = (tuple(x.shape), x.dtype, threading.get_ident(), torch.is_inference_mode_enabled())
        ws = self.__dict__.setdefault("_workspaces", {})
        buf = ws.pop(key, None)
        if buf is None:
            buf = x.new_empty((G, *x.shape))
            while len(ws) >= 4:  # least recently used first
                ws.pop(next(iter(ws)))
        ws[key] = buf
        return buf  # type: ignore[no-any-return]

    def orbit_outputs_loop(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The per-element reference of :meth:`orbit_outputs` (``|G|`` separate calls)."""
        xs = [self.in_action.apply(x, g) for g in self.group.elements]
        ys = [self._run_model(xg) for xg in xs]
        return torch.cat(xs), torch.stack(ys)

    # -- the method ----------------------------------------------------------------------------------
    def combine(self, x_rows: Tensor | None, ys: Tensor) -> SymmetrizerOutput:
        """Turn the orbit outputs into the symmetrized output (implemented by each method); ``x_rows`` is
        ``None`` on the folded path, which only methods with ``fold_safe`` take."""
        raise NotImplementedError

    def weighted_average(self, ys: Tensor, weights: Tensor) -> Tensor:
        """``Σ_g w[g, b] · g⁻¹·ys[g, b]`` (in float32 for integer or bool outputs, as equitune's mean: the
        weights are fractions)."""
        back = self.out_action.inverse_stacked(ys)
        if not back.is_floating_point() and not back.is_complex():
            back = back.float()
        w = weights.to(back.dtype).view(*weights.shape, *([1] * (back.dim() - 2)))
        return (w * back).sum(0)

    # -- forward -------------------------------------------------------------------------------------
    def forward_with_weights(self, x: Tensor) -> SymmetrizerOutput:
        """Like :meth:`forward`, also returning the ``(|G|, B)`` orbit weights (for logging)."""
        B = x.shape[0]
        c = self.chunk_for(x) if B > 1 else 1
        if c >= B:
            return self.combine(*self._orbit_outputs(x))
        outs, ws = [], []
        for i in range(0, B, c):
            o, w = self.combine(*self._orbit_outputs(x[i : i + c]))
            outs.append(o)
            ws.append(w)
        return SymmetrizerOutput(torch.cat(outs), torch.cat(ws, dim=1))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_weights(x).output

    def forward_loop(self, x: Tensor) -> Tensor:
        """Reference implementation with one model call per group element."""
        return self.combine(*self.orbit_outputs_loop(x)).output

    def extra_repr(self) -> str:
        return f"group={self.group.name}, in={self.in_action}, out={self.out_action}"
