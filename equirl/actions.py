"""How a finite group acts on tensors.

An *action* is a group together with a transform per element, and it must be a homomorphism:
``act(g @ h) = act(g) ∘ act(h)``. Actions are built from the images of the group's generators
(:meth:`GroupAction.from_generators`); the images of all other elements follow by composition along
the Cayley graph, and the construction checks every relation, so an inconsistent choice (say a
mirror declared as the image of a rotation of order 4) is refused with a clear error.

Transforms are small hashable value objects that compose exactly:

* :class:`ImageTransform` -- ``r^k m^m`` on two spatial dims: first a *left-right mirror* (flip of the
  width axis) if ``m``, then ``k`` quarter turns. A top-bottom mirror is ``r^2 m``; note that flipping
  both axes is the 180° rotation ``r^2``, *not* a mirror.
* :class:`SignedPerm` -- ``x ↦ s * x[..., src]``: signed permutations of features (CartPole's
  ``x ↦ -x``) and, with all signs ``+1``, index permutations of a categorical axis (Q-value columns,
  class or vocabulary logits). Inverses use ``argsort``, never dense matrices.
* :class:`BandMirror` -- a mirror of one image axis inside a band (a game's playfield below its score
  line), the rest left in place; given in pixels of a reference frame, so it acts on resized frames too.
* :class:`TokenMap` -- ``t ↦ table[t]`` on integer token ids (``jump ↔ run``).
* :class:`Identity` -- the trivial action (invariant outputs).

The batched entry points used by the symmetrizers lay the group axis first:

* :meth:`GroupAction.orbit` maps ``x`` of shape ``(B, ...)`` to ``(|G|, B, ...)`` with ``out[g] = g·x``
  (optionally written into a given buffer: the symmetrizers reuse one between calls);
* :meth:`GroupAction.inverse_stacked` maps ``y`` of shape ``(|G|, B, ...)`` to ``out[g] = g⁻¹·y[g]``;
* :meth:`GroupAction.apply_each` transforms sample ``b`` by its own element ``idx[b]``.

Example::

    >>> import torch
    >>> from equirl.groups import dihedral
    >>> from equirl.actions import image_action
    >>> act = image_action(dihedral(4))
    >>> x = torch.arange(4.0).view(1, 1, 2, 2)
    >>> act.orbit(x).shape
    torch.Size([8, 1, 1, 2, 2])
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import torch
from torch import Tensor

from equirl.errors import GroupError
from equirl.groups import Group, GroupElement, flip

__all__ = [
    "BandMirror",
    "BandMirrorAction",
    "GroupAction",
    "Identity",
    "ImageAction",
    "ImageTransform",
    "SignedPerm",
    "SignedPermAction",
    "TokenAction",
    "TokenMap",
    "TrivialAction",
    "band_mirror_action",
    "band_mirror_index",
    "image_action",
    "mirror_action",
    "permutation_action",
    "product_action",
    "rotation_action",
    "signed_permutation_action",
    "swap_permutation",
    "token_action",
    "trivial_action",
]


# --------------------------------------------------------------------------------------------------
# transforms (exact, composable value objects)
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Identity:
    """The identity transform."""

    def compose(self, other: Identity) -> Identity:
        return self

    def inverse(self) -> Identity:
        return self


@dataclass(frozen=True)
class ImageTransform:
    """``r^k m^m``: left-right mirror of the width axis if ``mirror``, then ``k`` quarter turns."""

    k: int = 0
    mirror: bool = False

    def compose(self, other: ImageTransform) -> ImageTransform:
        """``self ∘ other`` using ``m r = r⁻¹ m``."""
        k = self.k + (-other.k if self.mirror else other.k)
        return ImageTransform(k % 4, self.mirror != other.mirror)

    def inverse(self) -> ImageTransform:
        return ImageTransform(self.k if self.mirror else (-self.k) % 4, self.mirror)


@dataclass(frozen=True)
class BandMirror:
    """Reverse one image axis inside the band ``[start, stop)`` of a ``size``-pixel reference axis (``on``),
    or do nothing (``not on``). On an axis of another length ``n`` the band and its centre scale by
    ``n / size`` (see :func:`band_mirror_index`), so one spec serves raw and resized frames.

    :param axis: ``0``: the height axis (a top-bottom mirror of the band's rows), ``1``: the width axis.
    """

    axis: int
    start: int
    stop: int
    size: int
    on: bool = True

    def __post_init__(self) -> None:
        if self.axis not in (0, 1):
            raise GroupError(f"a band mirror acts on axis 0 (height) or 1 (width), got {self.axis}")
        if not 0 <= self.start < self.stop <= self.size:
            raise GroupError(
                f"a band needs 0 <= start < stop <= size, got [{self.start}, {self.stop}) of {self.size}"
            )

    def compose(self, other: BandMirror) -> BandMirror:
        if (self.axis, self.start, self.stop, self.size) != (other.axis, other.start, other.stop, other.size):
            raise GroupError("cannot compose band mirrors of different bands")
        return BandMirror(self.axis, self.start, self.stop, self.size, self.on != other.on)

    def inverse(self) -> BandMirror:
        return self


def band_mirror_index(n: int, start: int, stop: int, size: int) -> list[int]:
    """Where each of ``n`` pixels of an axis reads from under the mirror of the band ``[start, stop)`` of a
    ``size``-pixel reference axis: an involution of ``0..n-1``.

    Pixel ``i`` (centre ``i + ½``) goes to ``s - i`` with ``s`` the nearest integer to ``(start + stop)·n /
    size - 1`` (the band's centre, scaled, on pixel indices); it moves if both ``i`` and ``s - i`` have their
    centres inside the scaled band, and stays otherwise. At ``n = size`` this is the exact mirror of the band
    (``i ↦ start + stop - 1 - i``); on a resized axis it is the nearest pixel permutation (within half a
    pixel of the band's true centre).
    """
    lo, hi = start * n / size, stop * n / size
    s = math.floor((start + stop) * n / size - 1 + 0.5)
    out = list(range(n))
    for i in range(n):
        j = s - i
        if 0 <= j < n and lo <= i + 0.5 < hi and lo <= j + 0.5 < hi:
            out[i] = j
    return out


def _argsort(p: Sequence[int]) -> tuple[int, ...]:
    return tuple(sorted(range(len(p)), key=p.__getitem__))


@dataclass(frozen=True)
class SignedPerm:
    """``x ↦ signs * x[..., src]`` on the last axis; ``signs=None`` means all ``+1``."""

    src: tuple[int, ...]
    signs: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        n = len(self.src)
        if sorted(self.src) != list(range(n)):
            raise GroupError(f"not a bijection of 0..{n - 1}: {list(self.src)}")
        if self.signs is not None:
            if len(self.signs) != n or any(s not in (-1.0, 1.0) for s in self.signs):
                raise GroupError(f"signs must be {n} values of +1/-1, got {list(self.signs)}")
            if all(s == 1.0 for s in self.signs):
                object.__setattr__(self, "signs", None)

    @property
    def size(self) -> int:
        return len(self.src)

    def compose(self, other: SignedPerm) -> SignedPerm:
        """``self ∘ other``: ``x ↦ s1 * (s2 * x[src2])[src1]``."""
        if other.size != self.size:
            raise GroupError("cannot compose permutations of different sizes")
        src = tuple(other.src[i] for i in self.src)
        if self.signs is None and other.signs is None:
            return SignedPerm(src)
        s1 = self.signs or (1.0,) * self.size
        s2 = other.signs or (1.0,) * self.size
        return SignedPerm(src, tuple(s1[j] * s2[self.src[j]] for j in range(self.size)))

    def inverse(self) -> SignedPerm:
        inv = _argsort(self.src)
        if self.signs is None:
            return SignedPerm(inv)
        return SignedPerm(inv, tuple(self.signs[j] for j in inv))


@dataclass(frozen=True)
class TokenMap:
    """``t ↦ table[t]`` on integer ids; ``table`` is a permutation of the vocabulary."""

    table: tuple[int, ...]

    def __post_init__(self) -> None:
        if sorted(self.table) != list(range(len(self.table))):
            raise GroupError("a token map must be a bijection of the vocabulary")

    def compose(self, other: TokenMap) -> TokenMap:
        return TokenMap(tuple(self.table[t] for t in other.table))

    def inverse(self) -> TokenMap:
        return TokenMap(_argsort(self.table))


T = TypeVar("T", Identity, ImageTransform, BandMirror, SignedPerm, TokenMap)


def _extend_homomorphism(group: Group, images: Sequence[T], identity: T) -> list[T]:
    """Extend generator images to every element, checking all relations."""
    if len(images) != len(group.generator_indices):
        raise GroupError(
            f"{group.name} has {len(group.generator_indices)} generators, got {len(images)} images"
        )
    out: list[T | None] = [None] * group.order
    out[0] = identity
    frontier = [0]
    gens = list(zip(group.generator_indices, images))
    while frontier:
        nxt = []
        for x in frontier:
            tx = out[x]
            assert tx is not None
            for s, ts in gens:
                h = group.mul_index(s, x)
                th = ts.compose(tx)  # type: ignore[arg-type]
                if out[h] is None:
                    out[h] = th
                    nxt.append(h)
                elif out[h] != th:
                    hint = (
                        " (the factors' actions must commute; rotations and mirrors of an image do not: "
                        "together they generate the dihedral group, use dihedral(4))"
                        if group.factors
                        else ""
                    )
                    raise GroupError(
                        f"the generator images do not define an action of {group.name}: "
                        f"element {group.labels[h]} gets two different transforms{hint}"
                    )
        frontier = nxt
    return [t for t in out if t is not None]


# --------------------------------------------------------------------------------------------------
# actions
# --------------------------------------------------------------------------------------------------
class GroupAction(Generic[T]):
    """A group acting on tensors through one transform per element.

    Subclasses vectorise :meth:`orbit`, :meth:`inverse_stacked` and :meth:`apply_each`; the defaults
    below loop over the elements and serve as the reference.

    :param group: the acting group.
    :param transforms: one transform per element, in element order (must be a homomorphism).
    """

    def __init__(self, group: Group, transforms: Sequence[T]) -> None:
        if len(transforms) != group.order:
            raise GroupError(f"{group.name} has {group.order} elements, got {len(transforms)} transforms")
        self.group = group
        self.transforms: tuple[T, ...] = tuple(transforms)
        self._cache: dict[Any, Any] = {}

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def from_generators(cls, group: Group, images: Sequence[Any], **kwargs: Any) -> GroupAction[Any]:
        """Build the action from the images of ``group.generators`` (checked to be a homomorphism)."""
        return cls(
            group, _extend_homomorphism(group, list(images), cls._identity_like(images, **kwargs)), **kwargs
        )

    @classmethod
    def _identity_like(cls, images: Sequence[Any], **kwargs: Any) -> Any:
        raise NotImplementedError

    def check_homomorphism(self) -> None:
        """Raise unless ``act(g @ h) == act(g) ∘ act(h)`` for all elements (exact on transforms)."""
        g = self.group
        for i in range(g.order):
            for j in range(g.order):
                if self.transforms[g.mul_index(i, j)] != self.transforms[i].compose(self.transforms[j]):  # type: ignore[arg-type]
                    raise GroupError(f"not a homomorphism at ({g.labels[i]}, {g.labels[j]})")

    @property
    def is_trivial(self) -> bool:
        return False

    @property
    def batched_dims(self) -> int:
        """The fewest dims a batch of inputs has: the batch axis and the axes the action moves (a
        tensor with fewer is a single sample without its batch axis)."""
        dims = getattr(self, "dims", None)
        if isinstance(dims, tuple) and dims and all(isinstance(d, int) and d < 0 for d in dims):
            return 1 + max(-d for d in dims)
        return 2 if isinstance(self, SignedPermAction) else 1

    def _index(self, g: GroupElement | int) -> int:
        if isinstance(g, GroupElement):
            if g.group is not self.group:
                raise GroupError(f"element {g} does not belong to {self.group.name}")
            return g.index
        k = int(g)
        if not 0 <= k < self.group.order:
            raise GroupError(
                f"element index {k} is out of range for {self.group.name} (order {self.group.order})"
            )
        return k

    # -- per element ---------------------------------------------------------------------------------
    def element_transforms(self, inverse: bool = False) -> list[T]:
        """The transforms of the elements in index order, or of their inverses (``inverse=True``)."""
        if not inverse:
            return list(self.transforms)
        inv = self.group.inverse_indices
        return [self.transforms[inv[g]] for g in range(self.group.order)]

    def apply(self, x: Tensor, g: GroupElement | int) -> Tensor:
        """``g·x`` for one element (applied to the whole tensor)."""
        return self._apply_transform(x, self.transforms[self._index(g)])

    def _apply_transform(self, x: Tensor, t: T) -> Tensor:
        raise NotImplementedError

    # -- batched -------------------------------------------------------------------------------------
    def orbit(self, x: Tensor, out: Tensor | None = None) -> Tensor:
        """``(|G|, *x.shape)`` with ``out[g] = g·x``.

        :param out: a ``(|G|, *x.shape)`` tensor to write the orbit into (a buffer reused between
            calls); implementations may return a new tensor instead, so use the return value.
        """
        ys = [self._apply_transform(x, t) for t in self.transforms]
        return torch.stack(ys) if out is None or _records_grad(x) else torch.stack(ys, out=out)

    def inverse_stacked(self, y: Tensor) -> Tensor:
        """For ``y`` of shape ``(|G|, B, ...)``: ``out[g] = g⁻¹·y[g]``."""
        inv = self.group.inverse_indices
        return torch.stack([self._apply_transform(y[g], self.transforms[inv[g]]) for g in range(len(inv))])

    def apply_each(self, x: Tensor, idx: Tensor, inverse: bool = False) -> Tensor:
        """Transform sample ``b`` of ``x`` by element ``idx[b]`` (or its inverse)."""
        inv = self.group.inverse_indices
        out = torch.empty_like(x) if not self._changes_shape else None
        parts = []
        for b, i in enumerate(idx.tolist()):
            t = self.transforms[inv[i] if inverse else i]
            yb = self._apply_transform(x[b : b + 1], t)
            if out is not None:
                out[b : b + 1] = yb
            else:
                parts.append(yb)
        return out if out is not None else torch.cat(parts)

    @property
    def _changes_shape(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.group.name})"


class TrivialAction(GroupAction[Identity]):
    """Every element acts as the identity (invariant inputs or outputs)."""

    def __init__(self, group: Group, transforms: Sequence[Identity] | None = None) -> None:
        super().__init__(group, transforms or [Identity()] * group.order)

    @classmethod
    def _identity_like(cls, images: Sequence[Any], **kwargs: Any) -> Identity:
        return Identity()

    @property
    def is_trivial(self) -> bool:
        return True

    def _apply_transform(self, x: Tensor, t: Identity) -> Tensor:
        return x

    def orbit(self, x: Tensor, out: Tensor | None = None) -> Tensor:
        stacked = x.unsqueeze(0).expand(self.group.order, *x.shape)
        return stacked if out is None else out.copy_(stacked)

    def inverse_stacked(self, y: Tensor) -> Tensor:
        return y

    def apply_each(self, x: Tensor, idx: Tensor, inverse: bool = False) -> Tensor:
        return x


def _plain_tensors() -> torch.inference_mode:
    """Tensors cached across calls are made outside inference mode: an inference tensor cannot be saved
    for backward, so an index first built under ``torch.inference_mode`` would break later training."""
    return torch.inference_mode(False)


def _records_grad(x: Tensor) -> bool:
    """Whether an op on ``x`` is recorded by autograd (then ``out=`` variants are not allowed)."""
    return torch.is_grad_enabled() and x.requires_grad


def _transform_image(x: Tensor, t: ImageTransform, h: int, w: int) -> Tensor:
    """``t·x`` on the dims ``(h, w)``: the reference (a flip, then ``torch.rot90``)."""
    if t.k % 2 == 1 and x.shape[h] != x.shape[w]:
        raise GroupError(f"quarter turns need square images, got {x.shape[h]}x{x.shape[w]}")
    if t.mirror:
        x = x.flip(w)
    if t.k:
        x = torch.rot90(x, t.k, dims=(h, w))
    return x


def _image_dims(dims: tuple[int, int]) -> tuple[int, int]:
    """``dims`` checked to be two distinct negative (from-the-end) dims: (height, width)."""
    if not (dims[0] < 0 and dims[1] < 0 and dims[0] != dims[1]):
        raise GroupError(f"image dims must be two distinct negative dims, got {dims}")
    return dims


#: dtypes whose gather along a plane (``index_select``) is cheaper than a strided copy of a transposed
#: view on CPU (about 5 vs 7 plain copies); for the others the CPU gather runs element by element, 20-140
#: plain copies (uint8, bool, half precision, integers, float64), and the strided copy is used instead
#: (other devices: always the gather, as measured nowhere else)
_FAST_INDEX_DTYPES = frozenset({torch.float32})


class ImageAction(GroupAction[ImageTransform]):
    """Quarter turns and real mirrors of two spatial dims (default ``(-2, -1)``: NCHW / HW).

    :param group: the acting group.
    :param transforms: one :class:`ImageTransform` per element.
    :param dims: the (height, width) dims, counted from the end (negative) so batch dims do not matter.
    """

    def __init__(
        self, group: Group, transforms: Sequence[ImageTransform], dims: tuple[int, int] = (-2, -1)
    ) -> None:
        super().__init__(group, transforms)
        self.dims = _image_dims(dims)
        self._turns = any(self._as_view_ops(t)[0] for t in self.transforms)

    @classmethod
    def _identity_like(cls, images: Sequence[Any], **kwargs: Any) -> ImageTransform:
        return ImageTransform()

    def _apply_transform(self, x: Tensor, t: ImageTransform) -> Tensor:
        return _transform_image(x, t, *self.dims)

    @staticmethod
    def _as_view_ops(t: ImageTransform) -> tuple[bool, bool, bool]:
        """``r^k m^m`` as (transpose, flip_h, flip_w), the flips applied after the transpose."""
        # r = transpose then flip_h (counter-clockwise quarter turn, as torch.rot90); m = flip_w.
        # Composing these and normalising gives the 8 elements of D4 as a transpose plus flips.
        fh, fw, tr = False, t.mirror, False
        for _ in range(t.k % 4):  # apply one more quarter turn to (tr, fh, fw)
            # rot90(y) = flip_h(transpose(y)); transpose swaps the pending flips
            tr, fh, fw = not tr, not fw, fh
        return tr, fh, fw

    # -- the orbit without stacking strided copies -------------------------------------------------------
    # Every element is ``flips ∘ transpose^tr`` of the two image dims (:meth:`_as_view_ops`). A strided
    # copy of a transposed view is the expensive step (several times a plain copy), so each orbit
    # transposes once: the first element with a transpose is one gather over the flattened plane, with a
    # precomputed index (float32; one strided copy for other dtypes, :data:`_FAST_INDEX_DTYPES`); the
    # others with a transpose are flips of it. A flip of the outer image dim moves
    # whole rows (an index_select of rows, about the cost of a copy); a flip of the inner dim is
    # ``Tensor.flip``. The gather indices are built by applying the reference transform
    # (:func:`_transform_image`) to ``arange(H·W)``, so they agree with it by construction.
    def _plane(self, x: Tensor) -> tuple[int, int, int, int, int] | None:
        """``(pre, A, B, post, a)`` with ``x`` viewed as ``(pre, A, B, post)``: ``A``/``B`` the outer and
        inner image dims (``a`` the outer one, negative); ``None`` when the two dims are not adjacent or
        nothing precedes them."""
        h, w = self.dims
        a, b = min(h, w), max(h, w)
        if b != a + 1 or x.dim() + a < 1:
            return None
        shape = x.shape
        pre = 1
        for n in shape[: x.dim() + a]:
            pre *= n
        post = 1
        for n in shape[x.dim() + b + 1 :]:
            post *= n
        return pre, shape[a], shape[b], post, a

    def _ops(self, t: ImageTransform) -> tuple[bool, bool, bool]:
        """``(transpose, flip the outer dim, flip the inner dim)`` of ``t`` (flips after the transpose)."""
        tr, fh, fw = self._as_view_ops(t)
        return (tr, fh, fw) if self.dims[0] < self.dims[1] else (tr, fw, fh)

    def _plan(self, transforms: tuple[ImageTransform, ...]) -> tuple[tuple[int, str, int, list[int]], ...]:
        """Steps ``(target, kind, source, flip_dims)`` writing each ``transforms[target]·x`` from ``x``
        (``source == -1``) or from an earlier target: kind ``same`` (a copy), ``outer`` (flip the outer
        dim: an index_select of rows), ``inner`` (``Tensor.flip`` of ``flip_dims``: the inner dim, and
        the outer one if needed) or ``gather`` (from ``x``, with the target's plane index). Each step
        takes the cheapest source written so far (costs in copies of ``x``, measured on CPU)."""
        key = ("plan", transforms)
        hit = self._cache.get(key)
        if hit is not None:
            return hit  # type: ignore[no-any-return]
        ops = [self._ops(t) for t in transforms]
        outer = min(self.dims)
        done: list[tuple[tuple[bool, bool, bool], int]] = [((False, False, False), -1)]
        steps = []
        # untransposed targets first, inner flips last: later targets find a source one cheap flip away
        for i in sorted(range(len(ops)), key=lambda i: (ops[i][0], ops[i][2], ops[i][1])):
            best: tuple[float, str, int] = (6.0, "gather", -1)
            for o, j in done:
                if o[0] != ops[i][0]:
                    continue
                d_outer, d_inner = o[1] != ops[i][1], o[2] != ops[i][2]
                if d_inner:
                    cand = (2.5, "inner", j)
                elif d_outer:
                    cand = (1.5, "outer", j)
                else:
                    cand = (1.0, "same", j)
                best = min(best, cand, key=lambda c: c[0])
            src = ops[best[2]] if best[2] >= 0 else (False, False, False)
            flip_dims = [outer + 1] if src[1] == ops[i][1] else [outer, outer + 1]
            steps.append((i, best[1], best[2], flip_dims))
            done.append((ops[i], i))
        plan = tuple(steps)
        self._cache[key] = plan
        return plan

    def _plane_index(self, A: int, B: int, t: ImageTransform, device: torch.device) -> Tensor:
        """The flat source index of ``t`` on an ``A×B`` plane (outer × inner), cached per device."""
        key = ("plane", t, A, B, device)
        idx = self._cache.get(key)
        if idx is None:
            with _plain_tensors():
                grid = torch.arange(A * B, device=device).view(A, B)
                dims = (-2, -1) if self.dims[0] < self.dims[1] else (-1, -2)
                idx = _transform_image(grid, t, *dims).reshape(-1).contiguous()
            self._trim_cache()
            self._cache[key] = idx
        return idx

    def _reversed(self, n: int, device: torch.device) -> Tensor:
        key = ("rev", n, device)
        idx = self._cache.get(key)
        if idx is None:
            with _plain_tensors():
                idx = self._cache[key] = torch.arange(n - 1, -1, -1, device=device)
        return idx  # type: ignore[no-any-return]

    def _trim_cache(self) -> None:
        if len(self._cache) > 512:  # many image shapes: start over rather than grow without bound
            self._cache.clear()

    def _write_all(self, x: Tensor, transforms: tuple[ImageTransform, ...], out: Tensor) -> bool:
        """``out[i] = transforms[i]·x`` by :meth:`_plan`; ``False`` where the plan does not apply (image
        dims not adjacent, ``x`` or ``out[i]`` not contiguous, no elements), leaving ``out`` untouched."""
        geo = self._plane(x)
        if geo is None or x.numel() == 0 or not x.is_contiguous() or not out[0].is_contiguous():
            return False
        pre, A, B, post, _ = geo
        h, w = self.dims
        if A != B and any(self._ops(t)[0] for t in transforms):
            raise GroupError(f"quarter turns need square images, got {x.shape[h]}x{x.shape[w]}")
        grad = _records_grad(x) or _records_grad(out)
        flat = (pre, A * B) if post == 1 else (pre, A * B, post)
        rows = (pre, A, B * post)
        for i, kind, j, flip_dims in self._plan(transforms):
            src = x if j < 0 else out[j]
            target = out[i]  # a fresh view each time (autograd rebases views written in place)
            if kind == "same":
                target.copy_(src)
            elif kind == "inner":
                target.copy_(src.flip(flip_dims))
            else:
                if kind == "outer":
                    view, idx = src.view(rows), self._reversed(A, x.device)
                elif x.device.type == "cpu" and x.dtype not in _FAST_INDEX_DTYPES:  # one strided copy
                    self._write(x, transforms[i], target)
                    continue
                else:  # gather
                    view, idx = x.view(flat), self._plane_index(A, B, transforms[i], x.device)
                if grad:  # out= variants do not record autograd
                    target.copy_(torch.index_select(view, 1, idx).view(target.shape))
                else:
                    torch.index_select(view, 1, idx, out=target.view(view.shape))
        return True

    def _write(self, x: Tensor, t: ImageTransform, out: Tensor) -> None:
        """``out.copy_(t·x)``: the general path (any dims and strides), one strided copy."""
        h, w = self.dims
        tr, fh, fw = self._as_view_ops(t)
        if tr and x.shape[h] != x.shape[w]:
            raise GroupError(f"quarter turns need square images, got {x.shape[h]}x{x.shape[w]}")
        src = x.transpose(h, w) if tr else x
        dims = [d for d, f in ((h, fh), (w, fw)) if f]
        out.copy_(src.flip(dims) if dims else src)

    def orbit(self, x: Tensor, out: Tensor | None = None) -> Tensor:
        if out is None:
            out = x.new_empty((self.group.order, *x.shape))
        if self._turns and not x.is_contiguous() and self._plane(x) is not None:
            x = x.contiguous()  # one copy, then a single transpose for the whole orbit
        if not self._write_all(x, self.transforms, out):
            for g, t in enumerate(self.transforms):
                self._write(x, t, out[g])
        return out

    def inverse_stacked(self, y: Tensor) -> Tensor:
        inv = self.group.inverse_indices
        if y.shape[0] != len(inv):
            raise GroupError(f"expected {len(inv)} stacked outputs on dim 0, got shape {tuple(y.shape)}")
        out = torch.empty_like(y)
        for g in range(len(inv)):
            t = self.transforms[inv[g]]
            if not self._write_all(y[g], (t,), out[g : g + 1]):
                self._write(y[g], t, out[g])
        return out

    def _each_table(self, A: int, B: int, device: torch.device, inverse: bool) -> Tensor:
        """``(|G|, A·B)``: row ``g`` the flat source index of element ``g`` (or of its inverse)."""
        key = ("each", A, B, device, inverse)
        tab = self._cache.get(key)
        if tab is None:
            ts = self.element_transforms(inverse)
            with _plain_tensors():
                tab = torch.stack([self._plane_index(A, B, t, device) for t in ts])
            self._cache[key] = tab
        return tab

    def apply_each(self, x: Tensor, idx: Tensor, inverse: bool = False) -> Tensor:
        """One gather for the whole batch (sample ``b`` by element ``idx[b]``) on square images; the
        per-sample loop otherwise (where quarter turns raise)."""
        h, w = self.dims
        geo = self._plane(x)
        n = x.shape[0] if x.dim() else 0
        if geo is None or n == 0 or n != idx.numel() or (self._turns and x.shape[h] != x.shape[w]):
            return super().apply_each(x, idx, inverse)
        pre, A, B, post, _ = geo
        mid = pre // n
        rows = self._each_table(A, B, x.device, inverse)[
            idx.reshape(-1).to(device=x.device, dtype=torch.long)
        ]
        index = rows.view(n, 1, A * B, 1).expand(n, mid, A * B, post)
        return torch.gather(x.reshape(n, mid, A * B, post), 2, index).view(x.shape)


class BandMirrorAction(GroupAction[BandMirror]):
    """A two-element group mirroring one image axis inside a band (:class:`BandMirror`): Pong's playfield,
    whose centre is not the frame's. One gather along the axis per call; the index of each axis length is
    cached.

    :param group: the acting group (order 2: :func:`~equirl.groups.flip`).
    :param transforms: the identity's and the mirror's :class:`BandMirror`.
    :param dims: the (height, width) dims, counted from the end.
    """

    def __init__(
        self, group: Group, transforms: Sequence[BandMirror], dims: tuple[int, int] = (-2, -1)
    ) -> None:
        super().__init__(group, transforms)
        self.dims = _image_dims(dims)

    @classmethod
    def _identity_like(cls, images: Sequence[Any], **kwargs: Any) -> BandMirror:
        b = images[0]
        return BandMirror(b.axis, b.start, b.stop, b.size, on=False)

    def _band_index(self, n: int, t: BandMirror, device: torch.device) -> Tensor:
        key = ("band", n, t.start, t.stop, t.size, device)
        idx = self._cache.get(key)
        if idx is None:
            with _plain_tensors():
                idx = torch.tensor(
                    band_mirror_index(n, t.start, t.stop, t.size), dtype=torch.long, device=device
                )
            self._cache[key] = idx
        return idx  # type: ignore[no-any-return]

    def _apply_transform(self, x: Tensor, t: BandMirror) -> Tensor:
        if not t.on:
            return x
        dim = self.dims[t.axis]
        return torch.index_select(x, dim, self._band_index(x.shape[dim], t, x.device))

    def orbit(self, x: Tensor, out: Tensor | None = None) -> Tensor:
        """The two copies written straight into ``out`` (one copy, one gather; no stacking)."""
        if out is None or _records_grad(x):
            return super().orbit(x)
        for g, t in enumerate(self.transforms):
            if t.on:
                dim = self.dims[t.axis]
                torch.index_select(x, dim, self._band_index(x.shape[dim], t, x.device), out=out[g])
            else:
                out[g].copy_(x)
        return out


class SignedPermAction(GroupAction[SignedPerm]):
    """Signed permutations of the last axis: ``g·x = s_g * x[..., src_g]``.

    With all signs ``+1`` this is the action on a categorical axis (Q-values, logits); the inverse of
    each element is precomputed with ``argsort``.
    """

    @classmethod
    def _identity_like(cls, images: Sequence[Any], **kwargs: Any) -> SignedPerm:
        return SignedPerm(tuple(range(images[0].size))) if images else SignedPerm(())

    def __init__(self, group: Group, transforms: Sequence[SignedPerm]) -> None:
        super().__init__(group, transforms)
        sizes = {t.size for t in self.transforms}
        if len(sizes) != 1:
            raise GroupError("all signed permutations must act on the same number of features")
        self.size = sizes.pop()
        self.has_signs = any(t.signs is not None for t in self.transforms)
        self.is_pure_sign = all(t.src == tuple(range(self.size)) for t in self.transforms)

    def _tables(
        self, device: torch.device, dtype: torch.dtype, inverse: bool
    ) -> tuple[Tensor, Tensor | None]:
        key = ("tab", device, dtype, inverse)
        hit = self._cache.get(key)
        if hit is None:
            ts = self.element_transforms(inverse)
            with _plain_tensors():
                src = torch.tensor([t.src for t in ts], dtype=torch.long, device=device)
                signs = (
                    torch.tensor([t.signs or (1.0,) * self.size for t in ts], dtype=dtype, device=device)
                    if self.has_signs
                    else None
                )
            hit = (src, signs)
            self._cache[key] = hit
        return hit

    def _check(self, x: Tensor) -> None:
        if x.shape[-1] != self.size:
            raise GroupError(f"{self} acts on a last axis of size {self.size}, got shape {tuple(x.shape)}")

    def _apply_transform(self, x: Tensor, t: SignedPerm) -> Tensor:
        self._check(x)
        out = x[..., list(t.src)]
        if t.signs is not None:
            out = out * torch.tensor(t.signs, dtype=x.dtype, device=x.device)
        return out

    def _stacked(self, x: Tensor, inverse: bool, expand: bool, out: Tensor | None = None) -> Tensor:
        if x.shape[-1] != self.size:
            self._check(x)
        key = ("stk", x.device, x.dtype, inverse, expand, x.dim())
        hit = self._cache.get(key)
        if hit is None:
            G = self.group.order
            src, signs = self._tables(x.device, x.dtype, inverse)
            view = (G,) + (1,) * (x.dim() - (0 if expand else 1) - 1) + (self.size,)
            with _plain_tensors():
                hit = (src.view(view), None if signs is None else signs.view(view))
            self._cache[key] = hit
        src_v, signs_v = hit
        if out is not None and _records_grad(x):
            out = None  # out= variants do not record autograd
        if self.is_pure_sign:
            assert signs_v is not None
            # broadcasting adds the group axis
            return x * signs_v if out is None else torch.mul(x, signs_v, out=out)
        shape = (self.group.order, *x.shape) if expand else x.shape
        if out is None and x.numel() <= self.take_max_numel:
            # small (Q-values, CartPole states): one take with a cached flat index beats gather's
            # expand + strided-index overhead
            y = x.take(self._take_index(x.shape, src_v, inverse, expand))
            return y * signs_v if signs_v is not None else y
        base = x.unsqueeze(0).expand(shape) if expand else x
        if out is None:
            y = torch.gather(base, -1, src_v.expand(shape))
            return y * signs_v if signs_v is not None else y
        torch.gather(base, -1, src_v.expand(shape), out=out)
        return out.mul_(signs_v) if signs_v is not None else out

    #: inputs up to this many elements are permuted by :meth:`Tensor.take` (a cached index per shape)
    take_max_numel = 1 << 12

    def _take_index(self, shape: torch.Size, src_v: Tensor, inverse: bool, expand: bool) -> Tensor:
        """Flat index into ``x`` (of ``shape``) giving ``out[g, ..., j] = x[..., src_g[j]]`` (``expand``)
        or ``out[g, ..., j] = x[g, ..., src_g[j]]``; the last few shapes are kept."""
        key = ("take", shape, src_v.device, inverse, expand)
        idx = self._cache.get(key)
        if idx is None:
            n = 1
            for d in shape:
                n *= d
            with _plain_tensors():
                rows = torch.arange(0, n, self.size, device=src_v.device).view(*shape[:-1], 1)
                idx = (rows + src_v).contiguous()  # broadcasting adds the group axis when expanding
            takes = [k for k in self._cache if k[0] == "take"]
            if len(takes) >= 8:
                del self._cache[takes[0]]
            self._cache[key] = idx
        return idx  # type: ignore[no-any-return]

    def orbit(self, x: Tensor, out: Tensor | None = None) -> Tensor:
        return self._stacked(x, inverse=False, expand=True, out=out)

    def inverse_stacked(self, y: Tensor) -> Tensor:
        return self._stacked(y, inverse=True, expand=False)

    def apply_each(self, x: Tensor, idx: Tensor, inverse: bool = False) -> Tensor:
        self._check(x)
        src, signs = self._tables(x.device, x.dtype, inverse)
        view = (x.shape[0],) + (1,) * (x.dim() - 2) + (self.size,)
        out = torch.gather(x, -1, src[idx].view(view).expand(x.shape))
        if signs is not None:
            out = out * signs[idx].view(view)
        return out


class TokenAction(GroupAction[TokenMap]):
    """Id swaps on integer token tensors: ``g·t = table_g[t]`` (any shape)."""

    @classmethod
    def _identity_like(cls, images: Sequence[Any], **kwargs: Any) -> TokenMap:
        return TokenMap(tuple(range(len(images[0].table)))) if images else TokenMap(())

    @property
    def vocab_size(self) -> int:
        return len(self.transforms[0].table)

    def _table(self, device: torch.device, inverse: bool) -> Tensor:
        key = ("tok", device, inverse)
        tab = self._cache.get(key)
        if tab is None:
            ts = self.element_transforms(inverse)
            with _plain_tensors():
                tab = torch.tensor([t.table for t in ts], dtype=torch.long, device=device)
            self._cache[key] = tab
        return tab

    def _apply_transform(self, x: Tensor, t: TokenMap) -> Tensor:
        return torch.tensor(t.table, dtype=torch.long, device=x.device)[x]

    def orbit(self, x: Tensor, out: Tensor | None = None) -> Tensor:
        tab = self._table(x.device, False)  # (G, V)
        G = tab.shape[0]
        offs = (torch.arange(G, device=x.device) * self.vocab_size).view((G,) + (1,) * x.dim())
        return tab.view(-1)[x.unsqueeze(0) + offs]

    def inverse_stacked(self, y: Tensor) -> Tensor:
        tab = self._table(y.device, True)
        G = tab.shape[0]
        offs = (torch.arange(G, device=y.device) * self.vocab_size).view((G,) + (1,) * (y.dim() - 1))
        return tab.view(-1)[y + offs]

    def apply_each(self, x: Tensor, idx: Tensor, inverse: bool = False) -> Tensor:
        tab = self._table(x.device, inverse)
        offs = (idx * self.vocab_size).view((x.shape[0],) + (1,) * (x.dim() - 1))
        return tab.view(-1)[x + offs]


# --------------------------------------------------------------------------------------------------
# factories
# --------------------------------------------------------------------------------------------------
def trivial_action(group: Group) -> TrivialAction:
    """The trivial action of ``group`` (for invariant inputs/outputs)."""
    return TrivialAction(group)


def image_action(
    group: Group, generator_images: Sequence[ImageTransform] | None = None, dims: tuple[int, int] = (-2, -1)
) -> ImageAction:
    """An action on images from the images of the generators.

    Without ``generator_images``, the standard choice for the factory groups is used:
    ``cyclic(4)``: ``r1 ↦`` quarter turn; ``cyclic(2)``: half turn; ``dihedral(4)``/``dihedral(2)``:
    ``r ↦`` quarter/half turn, ``m ↦`` left-right mirror; ``flip()``: left-right mirror.
    """
    if generator_images is None:
        generator_images = _default_image_generators(group)
    act = ImageAction.from_generators(group, generator_images, dims=dims)
    assert isinstance(act, ImageAction)
    return act


def _default_image_generators(group: Group) -> list[ImageTransform]:
    if group.factors:
        imgs: list[ImageTransform] = []
        for f in group.factors:
            imgs.extend(_default_image_generators(f))
        return imgs
    order, n_gens = group.order, len(group.generator_indices)
    if group.name.startswith("C") and n_gens == 1 and order in (2, 4):
        return [ImageTransform(4 // order)]
    if group.name.startswith("D") and order in (4, 8) and n_gens == 2:
        return [ImageTransform(8 // order), ImageTransform(0, True)]
    if group is flip():
        return [ImageTransform(0, True)]
    raise GroupError(
        f"no default image action for {group.name}: pass generator_images (quarter turns act exactly only "
        "for C2, C4, D2, D4 and mirrors)"
    )


def rotation_action(n: int = 4, dims: tuple[int, int] = (-2, -1)) -> ImageAction:
    """``C_n`` (n = 2 or 4) rotating images by multiples of 360°/n."""
    from equirl.groups import cyclic

    return image_action(cyclic(n), dims=dims)


def mirror_action(axis: str = "left-right", dims: tuple[int, int] = (-2, -1)) -> ImageAction:
    """The two-element group acting by a real mirror: ``"left-right"`` (flip the width axis) or
    ``"top-bottom"`` (flip the height axis, ``r^2 m``)."""
    axis = axis.replace("_", "-").lower()
    if axis in ("left-right", "lr", "horizontal"):
        img = ImageTransform(0, True)
    elif axis in ("top-bottom", "tb", "vertical", "up-down"):
        img = ImageTransform(2, True)
    else:
        raise GroupError(f"unknown mirror axis {axis!r}: use 'left-right' or 'top-bottom'")
    return image_action(flip(), [img], dims=dims)


def band_mirror_action(
    start: int,
    stop: int,
    size: int,
    axis: str = "top-bottom",
    dims: tuple[int, int] = (-2, -1),
    group: Group | None = None,
) -> BandMirrorAction:
    """``group`` (default :func:`~equirl.groups.flip`; any group of order 2 with one generator) acting by
    the mirror of a band of one axis (:class:`BandMirror`): ``"top-bottom"`` reverses the rows ``[start,
    stop)`` of a ``size``-row reference frame, ``"left-right"`` the columns."""
    axis = axis.replace("_", "-").lower()
    if axis not in ("top-bottom", "left-right"):
        raise GroupError(f"unknown mirror axis {axis!r}: use 'left-right' or 'top-bottom'")
    img = BandMirror(0 if axis == "top-bottom" else 1, start, stop, size)
    act = BandMirrorAction.from_generators(flip() if group is None else group, [img], dims=dims)
    assert isinstance(act, BandMirrorAction)
    return act


def swap_permutation(n: int, swaps: Sequence[tuple[int, int]] | Mapping[int, int]) -> tuple[int, ...]:
    """The permutation of ``0..n-1`` exchanging each pair in ``swaps``.

    Raises :class:`GroupError` if an index is out of range or used twice.
    """
    pairs = list(swaps.items()) if isinstance(swaps, Mapping) else list(swaps)
    p = list(range(n))
    used: set[int] = set()
    for a, b in pairs:
        a, b = int(a), int(b)
        if not (0 <= a < n and 0 <= b < n):
            raise GroupError(f"swap ({a}, {b}) is out of range for size {n}")
        if a in used or b in used or a == b:
            raise GroupError(f"swap ({a}, {b}) reuses an index: swaps must be disjoint pairs")
        used.update((a, b))
        p[a], p[b] = b, a
    return tuple(p)


def signed_permutation_action(
    group: Group,
    generator_images: Sequence[SignedPerm | Sequence[int]],
    signs: Sequence[Sequence[float] | None] | None = None,
) -> SignedPermAction:
    """Signed permutation action on the last axis from generator images.

    :param generator_images: per generator, a :class:`SignedPerm` or a source-index list ``src``
        (``(g·x)[i] = x[src[i]]``).
    :param signs: optional per-generator sign vectors when ``generator_images`` are plain lists.
    """
    imgs: list[SignedPerm] = []
    for i, im in enumerate(generator_images):
        if isinstance(im, SignedPerm):
            imgs.append(im)
        else:
            s = None if signs is None or signs[i] is None else tuple(float(v) for v in signs[i])  # type: ignore[union-attr]
            imgs.append(SignedPerm(tuple(int(v) for v in im), s))
    act = SignedPermAction.from_generators(group, imgs)
    assert isinstance(act, SignedPermAction)
    return act


def permutation_action(
    group: Group, generator_perms: Sequence[Sequence[int]] | None = None
) -> SignedPermAction:
    """Index permutations of a categorical axis (Q-value columns, class or vocabulary logits).

    For a permutation group, ``generator_perms`` defaults to the group's own permutations:
    element ``p`` sends index ``i`` to ``p[i]``, i.e. ``(g·y)[p[i]] = y[i]``.
    Otherwise ``generator_perms`` gives, per generator, where each index goes.
    """
    if generator_perms is None:
        if not all(isinstance(d, tuple) and all(isinstance(v, int) for v in d) for d in group.data):
            raise GroupError(f"{group.name} is not a permutation group: pass generator_perms")
        generator_perms = [group.data[i] for i in group.generator_indices]
    perms = []
    for k, p in enumerate(generator_perms):
        try:
            if isinstance(p, (str, bytes)) or any(isinstance(v, bool) for v in p):
                raise TypeError
            vals = [operator.index(v) for v in p]  # ints, numpy ints; not floats
        except TypeError:
            raise GroupError(f"generator {k}'s permutation must be a list of ints, got {p!r:.80}") from None
        if sorted(vals) != list(range(len(vals))):
            raise GroupError(
                f"generator {k}'s permutation {vals!r:.80} is not a permutation of 0..{len(vals) - 1}: each index "
                "must appear exactly once"
            )
        perms.append(vals)
    # (g·y)[p[i]] = y[i]  <=>  (g·y)[j] = y[p^{-1}[j]]  =>  src = argsort(p)
    return signed_permutation_action(group, [SignedPerm(_argsort(p)) for p in perms])


def token_action(group: Group, generator_tables: Sequence[Sequence[int]] | None = None) -> TokenAction:
    """Id swaps on token tensors; by default a permutation group's own permutations (``t ↦ p[t]``)."""
    if generator_tables is None:
        generator_tables = [group.data[i] for i in group.generator_indices]
    act = TokenAction.from_generators(group, [TokenMap(tuple(int(v) for v in t)) for t in generator_tables])
    assert isinstance(act, TokenAction)
    return act


def product_action(group: Group, actions: Sequence[GroupAction[Any]]) -> GroupAction[Any]:
    """The action of a direct product ``group = G_1 × ... × G_k`` from commuting actions of its factors
    on the same kind of tensor (checked: the factors' transforms must commute)."""
    if not group.factors or len(group.factors) != len(actions):
        raise GroupError(f"{group.name} is not a direct product of {len(actions)} factors")
    kinds = {type(a) for a in actions if not a.is_trivial}
    if len(kinds) > 1:
        raise GroupError("product_action needs factor actions of the same kind")
    if not kinds:
        return TrivialAction(group)
    cls = kinds.pop()
    images: list[Any] = []
    template = next(a for a in actions if not a.is_trivial)
    ident = template.transforms[0]
    for f, a in zip(group.factors, actions):
        if a.group is not f:
            raise GroupError(f"action {a} is not an action of factor {f.name}")
        images.extend(ident if a.is_trivial else a.transforms[s] for s in f.generator_indices)
    kwargs: dict[str, Any] = {"dims": template.dims} if isinstance(template, ImageAction) else {}
    return cls.from_generators(group, images, **kwargs)


ActionFactory = Callable[..., GroupAction[Any]]
