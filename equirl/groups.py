"""Finite groups as small, torch-free objects.

A :class:`Group` is a finite group given by its Cayley table over the element indices
``0 .. order-1`` (index 0 is always the identity), together with a set of *generators*.
Every element knows a shortest word in the generators, which is what lets an action on
tensors be defined by the images of the generators only (see :mod:`equirl.actions`).

Elements are :class:`GroupElement` objects supporting composition ``g @ h`` (apply ``h``
first, then ``g``), inversion ``~g`` and powers ``g ** k``.

Factories are cached, so ``cyclic(4) is cyclic(4)``::

    >>> from equirl.groups import cyclic, dihedral, flip, permutation_group, direct_product
    >>> c4 = cyclic(4)
    >>> r = c4.generators[0]
    >>> (r @ r @ r @ r) == c4.identity
    True
    >>> d4 = dihedral(4)
    >>> m, r = d4.element("m"), d4.element("r1")
    >>> (m @ r @ m) == ~r
    True
    >>> swaps = permutation_group([(1, 0, 2, 3)], labels=["e", "jump<->run"])
    >>> swaps.order
    2
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from collections.abc import Iterator, Sequence
from typing import Any

from equirl.errors import GroupError
from equirl.utils.io import printable

Perm = tuple[int, ...]

__all__ = [
    "Group",
    "GroupElement",
    "cyclic",
    "dihedral",
    "direct_product",
    "flip",
    "get_group",
    "permutation_group",
    "trivial",
]


class GroupElement:
    """An element of a finite :class:`Group`, identified by its index in the group."""

    __slots__ = ("group", "index")

    def __init__(self, group: Group, index: int) -> None:
        self.group = group
        self.index = index

    def __matmul__(self, other: GroupElement) -> GroupElement:
        if other.group is not self.group:
            raise GroupError("cannot compose elements of different groups")
        return self.group[self.group.mul_index(self.index, other.index)]

    def __invert__(self) -> GroupElement:
        return self.group[self.group.inv_index(self.index)]

    def __pow__(self, k: int) -> GroupElement:
        base = self if k >= 0 else ~self
        out = self.group.identity
        for _ in range(abs(k)):
            out = out @ base
        return out

    @property
    def label(self) -> str:
        return self.group.labels[self.index]

    @property
    def data(self) -> Any:
        """Factory-specific description (rotation count, ``(r, m)`` pair, permutation, tuple of factors)."""
        return self.group.data[self.index]

    @property
    def is_identity(self) -> bool:
        return self.index == 0

    def __repr__(self) -> str:
        return f"{self.group.name}[{self.label}]"

    def __hash__(self) -> int:
        return hash((id(self.group), self.index))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GroupElement) and other.group is self.group and other.index == self.index


class Group:
    """A finite group given by its Cayley table.

    :param name: a short name (``"C4"``, ``"D4"``, ``"S2"``...).
    :param table: ``table[i][j]`` is the index of ``elements[i] @ elements[j]``; index 0 must be the identity.
    :param generators: indices of a generating set.
    :param labels: a readable label per element.
    :param data: per element, factory-specific data (see :attr:`GroupElement.data`).
    :param factors: for a direct product, the factor groups (element data is then a tuple of factor indices).
    """

    def __init__(
        self,
        name: str,
        table: Sequence[Sequence[int]],
        generators: Sequence[int],
        labels: Sequence[str] | None = None,
        data: Sequence[Any] | None = None,
        factors: Sequence[Group] = (),
    ) -> None:
        n = len(table)
        if n == 0:
            raise GroupError("a group needs at least one element")
        self.name = name
        self._table: tuple[tuple[int, ...], ...] = tuple(tuple(int(v) for v in row) for row in table)
        if any(len(row) != n for row in self._table):
            raise GroupError("the Cayley table must be square")
        self.generator_indices: tuple[int, ...] = tuple(int(g) for g in generators)
        self.labels: tuple[str, ...] = (
            tuple(labels) if labels is not None else tuple(str(i) for i in range(n))
        )
        self.data: tuple[Any, ...] = tuple(data) if data is not None else tuple(range(n))
        self.factors: tuple[Group, ...] = tuple(factors)
        if len(self.labels) != n or len(self.data) != n:
            raise GroupError("labels and data need one entry per element")
        inv = []
        for i in range(n):
            cands = [j for j in range(n) if self._table[i][j] == 0]
            if len(cands) != 1:
                raise GroupError(f"element {i} of {name} has no unique inverse")
            inv.append(cands[0])
        self._inv: tuple[int, ...] = tuple(inv)
        self.words: tuple[tuple[int, ...], ...] = self._shortest_words()
        self._elements = tuple(GroupElement(self, i) for i in range(n))

    # -- structure -------------------------------------------------------------------------------
    @property
    def order(self) -> int:
        return len(self._table)

    def __len__(self) -> int:
        return self.order

    @property
    def elements(self) -> tuple[GroupElement, ...]:
        return self._elements

    def __iter__(self) -> Iterator[GroupElement]:
        return iter(self._elements)

    def __getitem__(self, index: int) -> GroupElement:
        return self._elements[index]

    @property
    def identity(self) -> GroupElement:
        return self._elements[0]

    @property
    def generators(self) -> tuple[GroupElement, ...]:
        return tuple(self._elements[i] for i in self.generator_indices)

    def element(self, label: str) -> GroupElement:
        """The element with the given label."""
        try:
            return self._elements[self.labels.index(label)]
        except ValueError:
            raise GroupError(f"{self.name} has no element {label!r}; elements: {list(self.labels)}") from None

    def mul_index(self, i: int, j: int) -> int:
        return self._table[i][j]

    def inv_index(self, i: int) -> int:
        return self._inv[i]

    @property
    def table(self) -> tuple[tuple[int, ...], ...]:
        return self._table

    @property
    def inverse_indices(self) -> tuple[int, ...]:
        return self._inv

    @property
    def is_abelian(self) -> bool:
        n = self.order
        return all(self._table[i][j] == self._table[j][i] for i in range(n) for j in range(n))

    def _shortest_words(self) -> tuple[tuple[int, ...], ...]:
        """BFS over the Cayley graph: ``words[i]`` lists generator positions, applied right to left."""
        words: dict[int, tuple[int, ...]] = {0: ()}
        frontier = [0]
        while frontier:
            nxt = []
            for x in frontier:
                for pos, s in enumerate(self.generator_indices):
                    h = self._table[s][x]
                    if h not in words:
                        words[h] = (pos, *words[x])
                        nxt.append(h)
            frontier = nxt
        if len(words) != self.order:
            raise GroupError(f"the generators of {self.name} do not generate the whole group")
        return tuple(words[i] for i in range(self.order))

    def check_axioms(self) -> None:
        """Raise :class:`GroupError` unless identity, inverses and associativity hold."""
        n, t = self.order, self._table
        for i in range(n):
            if t[0][i] != i or t[i][0] != i:
                raise GroupError(f"{self.name}: index 0 is not the identity")
            if sorted(t[i]) != list(range(n)):
                raise GroupError(f"{self.name}: row {i} is not a permutation (not a Latin square)")
        for i, j, k in itertools.product(range(n), repeat=3):
            if t[t[i][j]][k] != t[i][t[j][k]]:
                raise GroupError(f"{self.name}: not associative at {(i, j, k)}")

    def __repr__(self) -> str:
        return f"Group({self.name}, order={self.order})"


# --------------------------------------------------------------------------------------------------
# factories
# --------------------------------------------------------------------------------------------------
def _table_from(elements: Sequence[Any], mul: Any) -> list[list[int]]:
    index = {e: i for i, e in enumerate(elements)}
    try:
        return [[index[mul(a, b)] for b in elements] for a in elements]
    except KeyError as exc:  # pragma: no cover - guarded by factories
        raise GroupError(f"product {exc} falls outside the element set") from None


@functools.cache
def trivial() -> Group:
    """The group with one element."""
    return Group("1", [[0]], generators=(), labels=["e"], data=[0])


@functools.cache
def cyclic(n: int) -> Group:
    """The cyclic group :math:`C_n` of rotations by multiples of :math:`2\\pi/n`.

    Element ``k`` (data ``k``) is the rotation by ``k`` steps; the generator is ``r1``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise GroupError(f"cyclic(n) needs an integer n >= 1, got {n!r}")
    if n == 1:
        return trivial()
    elems = list(range(n))
    table = _table_from(elems, lambda a, b: (a + b) % n)
    return Group(f"C{n}", table, generators=(1,), labels=["e"] + [f"r{k}" for k in range(1, n)], data=elems)


@functools.cache
def dihedral(n: int) -> Group:
    """The dihedral group :math:`D_n` of order ``2n``.

    Element data is ``(k, m)`` meaning :math:`r^k m^m` (first mirror if ``m``, then rotate by ``k``
    steps). Composition uses :math:`m r m = r^{-1}`. Generators: ``r1`` and ``m``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise GroupError(f"dihedral(n) needs an integer n >= 1, got {n!r}")
    elems = [(k, m) for m in (0, 1) for k in range(n)]

    def mul(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
        (k1, m1), (k2, m2) = a, b
        return ((k1 + (k2 if m1 == 0 else -k2)) % n, m1 ^ m2)

    def label(e: tuple[int, int]) -> str:
        k, m = e
        if m == 0:
            return "e" if k == 0 else f"r{k}"
        return "m" if k == 0 else f"r{k}m"

    table = _table_from(elems, mul)
    gens = (elems.index((1, 0)), elems.index((0, 1))) if n > 1 else (elems.index((0, 1)),)
    return Group(f"D{n}", table, generators=gens, labels=[label(e) for e in elems], data=elems)


@functools.cache
def flip() -> Group:
    """The two-element group ``{e, flip}`` (a mirror, a sign flip, a swap): :math:`\\mathbb{Z}_2`."""
    return Group("Z2", [[0, 1], [1, 0]], generators=(1,), labels=["e", "flip"], data=[0, 1])


def _compose_perm(p: Perm, q: Perm) -> Perm:
    """``p @ q``: apply ``q`` first, then ``p``."""
    return tuple(p[i] for i in q)


def permutation_group(
    generators: Sequence[Sequence[int]],
    name: str | None = None,
    labels: Sequence[str] | None = None,
    max_order: int = 100_000,
) -> Group:
    """The group generated by permutations of ``{0..n-1}``.

    Each element's data is its permutation ``p`` as a tuple (``p[i]`` is where ``i`` goes).
    Composition: ``(p @ q)[i] = p[q[i]]``.

    :param generators: the generating permutations (in one-line notation).
    :param name: a name; defaults to ``"Perm(n)"``.
    :param labels: optional labels, one per element in BFS order (identity first).
    :param max_order: refuse to enumerate larger groups.
    """
    gens = [tuple(int(v) for v in g) for g in generators]
    if not gens:
        raise GroupError("permutation_group needs at least one generator")
    n = len(gens[0])
    for g in gens:
        if len(g) != n or sorted(g) != list(range(n)):
            raise GroupError(
                f"not a permutation of 0..{n - 1}: {list(g)} (each index must appear exactly once)"
            )
    return _permutation_group_cached(
        tuple(gens), name, tuple(labels) if labels is not None else None, max_order
    )


@functools.lru_cache(maxsize=256)
def _permutation_group_cached(
    gens: tuple[Perm, ...], name: str | None, labels: tuple[str, ...] | None, max_order: int
) -> Group:
    n = len(gens[0])
    ident: Perm = tuple(range(n))
    elems: list[Perm] = [ident]
    seen = {ident}
    frontier = [ident]
    while frontier:
        nxt = []
        for x in frontier:
            for g in gens:
                h = _compose_perm(g, x)
                if h not in seen:
                    seen.add(h)
                    elems.append(h)
                    nxt.append(h)
                    if len(elems) > max_order:
                        raise GroupError(f"permutation group larger than max_order={max_order}")
        frontier = nxt
    table = _table_from(elems, _compose_perm)
    gen_idx = tuple(dict.fromkeys(elems.index(g) for g in gens if g != ident))
    if labels is not None and len(labels) != len(elems):
        raise GroupError(f"{len(labels)} labels given for a group of order {len(elems)}")
    lab = list(labels) if labels is not None else ["e"] + [f"p{i}" for i in range(1, len(elems))]
    return Group(name or f"Perm({n})", table, generators=gen_idx, labels=lab, data=elems)


def direct_product(*groups: Group) -> Group:
    """The direct product :math:`G_1 \\times \\dots \\times G_k`.

    Element data is the tuple of factor indices; ``factors`` keeps the factor groups, so that actions
    and the multi-group symmetrizers can work factor by factor.
    """
    if not groups:
        return trivial()
    if len(groups) == 1:
        return groups[0]
    return _direct_product_cached(tuple(groups))


@functools.lru_cache(maxsize=256)
def _direct_product_cached(groups: tuple[Group, ...]) -> Group:
    elems = list(itertools.product(*(range(g.order) for g in groups)))

    def mul(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(g.mul_index(x, y) for g, x, y in zip(groups, a, b))

    table = _table_from(elems, mul)
    index = {e: i for i, e in enumerate(elems)}
    gens: list[int] = []
    for f, g in enumerate(groups):
        for s in g.generator_indices:
            e = [0] * len(groups)
            e[f] = s
            gens.append(index[tuple(e)])

    def label(e: tuple[int, ...]) -> str:
        parts = [g.labels[x] for g, x in zip(groups, e) if x != 0]
        return "*".join(parts) if parts else "e"

    return Group(
        "x".join(g.name for g in groups),
        table,
        generators=gens,
        labels=[label(e) for e in elems],
        data=elems,
        factors=groups,
    )


#: the largest group :func:`get_group` builds from a name: its Cayley table has order² entries and a
#: symmetrizer runs the model once per element, so anything larger is a typo (``C10000``)
MAX_NAMED_ORDER = 1024
#: the names :func:`get_group` understands, as error messages list them
GROUP_NAMES = (
    "C<n>, D<n> (n >= 1), Z2 (also flip, mirror), 1 (trivial), or products joined by x such as C4xZ2"
)

_FACTOR = re.compile(r"([cd])([0-9]{1,7})")


def _factor(part: str) -> tuple[str, int] | None:
    """``(kind, n)`` for one factor of a group name (``("c", 4)`` for ``C4``), ``None`` when unknown."""
    key = part.strip().lower()
    if key in ("1", "trivial", "e"):
        return ("1", 1)
    if key in ("z2", "flip", "mirror"):
        return ("z2", 2)
    found = _FACTOR.fullmatch(key)
    if found is None or int(found.group(2)) < 1:
        return None
    return (found.group(1), int(found.group(2)))


def get_group(spec: str) -> Group:
    """A group from a short string: ``"C4"``, ``"D4"``, ``"Z2"``/``"flip"``, ``"1"``, or products ``"C4xZ2"``.

    :raises GroupError: one line naming ``spec`` as given and the valid names (also for a group larger
        than :data:`MAX_NAMED_ORDER`).
    """
    text = str(spec).strip()
    parsed = [_factor(part) for part in re.split("[xX]", text)]
    factors = [f for f in parsed if f is not None]
    if not text or len(factors) != len(parsed):
        raise GroupError(f"unknown group '{printable(text, 80)}': use {GROUP_NAMES}")
    order = math.prod(n * (2 if kind == "d" else 1) for kind, n in factors if kind != "1")
    if order > MAX_NAMED_ORDER:
        raise GroupError(
            f"group '{printable(text, 80)}' has {order} elements: more than {MAX_NAMED_ORDER} is refused "
            "(a symmetrizer runs the model once per element)"
        )
    groups = [_build(kind, n) for kind, n in factors]
    return groups[0] if len(groups) == 1 else direct_product(*groups)


def _build(kind: str, n: int) -> Group:
    if kind == "1":
        return trivial()
    if kind == "z2":
        return flip()
    return cyclic(n) if kind == "c" else dihedral(n)
