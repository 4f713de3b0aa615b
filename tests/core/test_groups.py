"""Level 1: group axioms for every factory, inverses, generation, parsing and errors."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from equirl.errors import GroupError
from equirl.groups import Group, cyclic, dihedral, direct_product, flip, get_group, permutation_group, trivial

FACTORIES = [
    trivial(),
    flip(),
    *(cyclic(n) for n in (1, 2, 3, 4, 6)),
    *(dihedral(n) for n in (1, 2, 3, 4, 5)),
    permutation_group([(1, 0, 2, 3)]),
    permutation_group([(1, 2, 0)]),
    permutation_group([(1, 0, 2), (0, 2, 1)]),
    direct_product(cyclic(4), flip()),
    direct_product(flip(), flip(), cyclic(3)),
]


@pytest.mark.parametrize("group", FACTORIES, ids=lambda g: g.name)
def test_axioms(group: Group) -> None:
    group.check_axioms()
    e = group.identity
    for g in group:
        assert (g @ e) == g == (e @ g)
        assert (g @ ~g) == e == (~g @ g)
        assert ~~g == g
        assert g**group.order == e
    for g, h, k in itertools.product(group.elements, repeat=3):
        assert (g @ h) @ k == g @ (h @ k)


@pytest.mark.parametrize("group", FACTORIES, ids=lambda g: g.name)
def test_words_generate_every_element(group: Group) -> None:
    gens = group.generators
    for g, word in zip(group.elements, group.words):
        prod = group.identity
        for pos in reversed(word):
            prod = gens[pos] @ prod
        assert prod == g


def test_orders_and_labels() -> None:
    assert [cyclic(n).order for n in range(1, 7)] == list(range(1, 7))
    assert [dihedral(n).order for n in range(1, 6)] == [2, 4, 6, 8, 10]
    assert direct_product(cyclic(4), flip()).order == 8
    d4 = dihedral(4)
    m, r = d4.element("m"), d4.element("r1")
    assert m @ r @ m == ~r  # the dihedral relation
    assert r**4 == d4.identity and r**2 != d4.identity
    assert not d4.is_abelian and cyclic(5).is_abelian


def test_factories_are_cached() -> None:
    assert cyclic(4) is cyclic(4)
    assert dihedral(3) is dihedral(3)
    assert permutation_group([(1, 0)]) is permutation_group([[1, 0]])
    assert direct_product(cyclic(2), flip()) is direct_product(cyclic(2), flip())


def test_permutation_group_composition_convention() -> None:
    g = permutation_group([(1, 2, 0), (1, 0, 2)])
    assert g.order == 6
    for a, b in itertools.product(g.elements, repeat=2):
        p, q = a.data, b.data
        assert (a @ b).data == tuple(p[q[i]] for i in range(3))  # apply q first


def test_product_structure() -> None:
    g = direct_product(cyclic(4), flip())
    assert g.factors == (cyclic(4), flip())
    for a, b in itertools.product(g.elements, repeat=2):
        (i1, j1), (i2, j2) = a.data, b.data
        assert (a @ b).data == (cyclic(4).mul_index(i1, i2), flip().mul_index(j1, j2))


@pytest.mark.parametrize(
    ("spec", "order"), [("C4", 4), ("d4", 8), ("Z2", 2), ("flip", 2), ("1", 1), ("C4xZ2", 8), ("D2xC3", 12)]
)
def test_get_group(spec: str, order: int) -> None:
    assert get_group(spec).order == order


def test_errors_are_actionable() -> None:
    with pytest.raises(GroupError, match="not a permutation"):
        permutation_group([(0, 0, 1)])
    with pytest.raises(GroupError, match="unknown group"):
        get_group("Q8")
    with pytest.raises(GroupError, match="no element"):
        cyclic(4).element("m")
    with pytest.raises(GroupError, match="associative|Latin|identity|inverse"):
        Group("bad", [[0, 1], [1, 1]], generators=(1,)).check_axioms()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.permutations(list(range(5))), min_size=1, max_size=3))
def test_random_permutation_groups_satisfy_axioms(gens: list[list[int]]) -> None:
    g = permutation_group(gens)
    g.check_axioms()
    assert 120 % g.order == 0  # Lagrange: a subgroup of S5
    for a in g.elements:
        assert sorted(a.data) == list(range(5))
