"""Level 2: actions on tensors are homomorphisms; the batched paths agree with per-element ones."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch

from equirl.actions import (
    BandMirror,
    GroupAction,
    ImageAction,
    ImageTransform,
    SignedPerm,
    band_mirror_action,
    band_mirror_index,
    image_action,
    mirror_action,
    permutation_action,
    product_action,
    rotation_action,
    signed_permutation_action,
    swap_permutation,
    token_action,
    trivial_action,
)
from equirl.errors import GroupError
from equirl.groups import cyclic, dihedral, direct_product, flip, permutation_group


def _actions() -> list[tuple[str, GroupAction[Any], torch.Tensor]]:
    z2 = flip()
    c3 = permutation_group([(1, 2, 0)], name="C3perm")
    return [
        ("C4-images", rotation_action(4), torch.randn(3, 2, 5, 5)),
        ("C2-images-nonsquare", image_action(cyclic(2)), torch.randn(3, 2, 4, 6)),
        ("D4-images", image_action(dihedral(4)), torch.randn(3, 2, 5, 5)),
        ("mirror-lr", mirror_action("left-right"), torch.randn(3, 1, 4, 6)),
        ("mirror-tb", mirror_action("top-bottom"), torch.randn(3, 1, 4, 6)),
        ("D4-HWC", image_action(dihedral(4), dims=(-3, -2)), torch.randn(2, 5, 5, 3)),
        ("band-rows", band_mirror_action(34, 194, 210), torch.randn(3, 2, 84, 5)),
        ("band-cols-HWC", band_mirror_action(2, 7, 10, "left-right", dims=(-3, -2)), torch.randn(2, 3, 9, 2)),
        (
            "Z2-signs",
            signed_permutation_action(z2, [[0, 1, 2, 3]], signs=[[-1, -1, -1, -1]]),
            torch.randn(4, 4),
        ),
        ("Z2-signed-perm", signed_permutation_action(z2, [[1, 0, 2]], signs=[[1, 1, -1]]), torch.randn(4, 3)),
        ("C3-logits", permutation_action(c3), torch.randn(4, 3)),
        ("C3-seq-logits", permutation_action(c3), torch.randn(2, 5, 3)),
        ("C2xZ2-images", image_action(direct_product(cyclic(2), z2)), torch.randn(2, 1, 4, 6)),
        ("trivial", trivial_action(dihedral(4)), torch.randn(2, 3)),
    ]


ACTIONS = _actions()


@pytest.mark.parametrize(("name", "act", "x"), ACTIONS, ids=[a[0] for a in ACTIONS])
def test_homomorphism_on_tensors(name: str, act: GroupAction[Any], x: torch.Tensor) -> None:
    act.check_homomorphism()
    for g, h in itertools.product(act.group.elements, repeat=2):
        lhs = act.apply(x, g @ h)
        rhs = act.apply(act.apply(x, h), g)
        assert torch.equal(lhs, rhs), (g, h)
    assert torch.equal(act.apply(x, act.group.identity), x)


@pytest.mark.parametrize(("name", "act", "x"), ACTIONS, ids=[a[0] for a in ACTIONS])
def test_batched_paths_match_apply(name: str, act: GroupAction[Any], x: torch.Tensor) -> None:
    G = act.group.order
    orbit = act.orbit(x)
    assert orbit.shape == (G, *x.shape)
    buffered = act.orbit(x, out=torch.empty_like(orbit))  # the symmetrizers' reused buffer
    assert torch.equal(buffered, orbit)
    for g in act.group.elements:
        assert torch.equal(orbit[g.index], act.apply(x, g))
    stacked = torch.stack([x] * G) + torch.arange(G, dtype=x.dtype).view(G, *([1] * x.dim()))
    back = act.inverse_stacked(stacked)
    for g in act.group.elements:
        assert torch.equal(back[g.index], act.apply(stacked[g.index], ~g))
    idx = torch.arange(x.shape[0]) % G
    each = act.apply_each(x, idx)
    each_inv = act.apply_each(x, idx, inverse=True)
    for b in range(x.shape[0]):
        g = act.group[int(idx[b])]
        assert torch.equal(each[b], act.apply(x[b : b + 1], g)[0])
        assert torch.equal(each_inv[b], act.apply(x[b : b + 1], ~g)[0])


IMAGE_ACTIONS = [
    a for a in ACTIONS if a[0].endswith(("images", "HWC", "nonsquare")) or a[0].startswith("mirror")
]


@pytest.mark.parametrize("dtype", [torch.uint8, torch.bool, torch.float16, torch.float64, torch.int64])
@pytest.mark.parametrize(("name", "act", "x"), IMAGE_ACTIONS, ids=[a[0] for a in IMAGE_ACTIONS])
def test_image_orbits_are_exact_for_every_dtype(
    name: str, act: GroupAction[Any], x: torch.Tensor, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Frames come as uint8 / bool (Atari, MinAtar) as well as float: the orbit moves them without a
    float32 gather (slow there), and every element still equals the reference transform."""
    xd = (x * 40).to(dtype) if dtype is not torch.bool else x > 0
    if isinstance(act, ImageAction):  # the plane gather is for float32 only: never taken here
        monkeypatch.setattr(act, "_plane_index", lambda *a: pytest.fail("gathered a non-float32 plane"))
    orbit = act.orbit(xd, out=xd.new_empty((act.group.order, *xd.shape)))
    assert orbit.dtype == dtype
    for g in act.group.elements:
        assert torch.equal(orbit[g.index], act.apply(xd, g)), g


def test_mirror_is_a_real_mirror_not_a_half_turn() -> None:
    img = torch.arange(12.0).view(1, 3, 4)
    f = flip()[1]
    assert torch.equal(mirror_action("left-right").apply(img, f), img.flip(-1))
    assert torch.equal(mirror_action("top-bottom").apply(img, f), img.flip(-2))
    half_turn = img.flip(-2).flip(-1)
    assert not torch.equal(mirror_action("left-right").apply(img, f), half_turn)
    sq = torch.arange(9.0).view(1, 3, 3)
    d4 = image_action(dihedral(4))
    assert torch.equal(d4.apply(sq, dihedral(4).element("m")), sq.flip(-1))
    assert torch.equal(d4.apply(sq, dihedral(4).element("r2")), sq.flip(-2).flip(-1))
    assert torch.equal(rotation_action(4).apply(sq, cyclic(4)[1]), torch.rot90(sq, 1, dims=(-2, -1)))


def test_signed_permutation_semantics() -> None:
    act = signed_permutation_action(flip(), [[1, 0, 2]], signs=[[1, 1, -1]])
    x = torch.tensor([[1.0, 2.0, 3.0]])
    assert torch.equal(act.apply(x, flip()[1]), torch.tensor([[2.0, 1.0, -3.0]]))


def test_permutation_action_moves_index_i_to_p_i() -> None:
    c3 = permutation_group([(1, 2, 0)])
    act = permutation_action(c3)
    y = torch.tensor([10.0, 20.0, 30.0])
    g = c3.generators[0]  # 0->1, 1->2, 2->0
    gy = act.apply(y, g)
    for i, pi in enumerate(g.data):
        assert gy[pi] == y[i]


def test_token_action() -> None:
    swaps = permutation_group([swap_permutation(6, [(1, 4)])])
    act = token_action(swaps)
    ids = torch.tensor([[0, 1, 2, 4, 4]])
    assert torch.equal(act.apply(ids, swaps[1]), torch.tensor([[0, 4, 2, 1, 1]]))
    assert torch.equal(act.orbit(ids)[1], act.apply(ids, swaps[1]))


def test_product_action_from_factors() -> None:
    g = direct_product(cyclic(2), flip())  # half turn and mirror commute
    act = product_action(g, [rotation_action(2), mirror_action()])
    act.check_homomorphism()
    x = torch.randn(1, 1, 4, 4)
    r, m = g.generators
    assert torch.equal(act.apply(x, r), torch.rot90(x, 2, dims=(-2, -1)))
    assert torch.equal(act.apply(x, m), x.flip(-1))
    # signed permutations on disjoint features commute too
    g2 = direct_product(flip(), flip())
    a1 = signed_permutation_action(flip(), [[1, 0, 2, 3]])
    a2 = signed_permutation_action(flip(), [[0, 1, 2, 3]], signs=[[1, 1, -1, -1]])
    product_action(g2, [a1, a2]).check_homomorphism()


def test_non_commuting_product_is_refused_with_a_hint() -> None:
    with pytest.raises(GroupError, match="dihedral"):
        product_action(direct_product(cyclic(4), flip()), [rotation_action(4), mirror_action()])


def test_inconsistent_generator_images_are_refused() -> None:
    # a quarter turn cannot represent the flip group: flip^2 = e but a quarter turn squared is not e
    with pytest.raises(GroupError, match="do not define an action"):
        image_action(flip(), [ImageTransform(1)])
    # (a mirror *can* represent C4's generator: r -> m is a non-faithful homomorphism C4 -> Z2)
    image_action(cyclic(4), [ImageTransform(0, True)]).check_homomorphism()
    # a 3-cycle cannot represent the flip group
    with pytest.raises(GroupError, match="do not define an action"):
        signed_permutation_action(flip(), [SignedPerm((1, 2, 0))])


def test_bad_permutations_are_refused() -> None:
    with pytest.raises(GroupError, match="bijection"):
        SignedPerm((0, 0, 1))
    with pytest.raises(GroupError, match="reuses an index"):
        swap_permutation(4, [(0, 1), (1, 2)])
    with pytest.raises(GroupError, match="out of range"):
        swap_permutation(3, [(0, 5)])
    act = signed_permutation_action(flip(), [[1, 0]])
    with pytest.raises(GroupError, match="last axis of size 2"):
        act.orbit(torch.randn(3, 4))


def test_quarter_turns_need_square_images() -> None:
    with pytest.raises(GroupError, match="square"):
        rotation_action(4).orbit(torch.randn(1, 1, 3, 4))


@pytest.mark.parametrize("n", [1, 2, 7, 84, 105, 210, 420])
def test_band_mirror_index_is_an_involution_inside_the_scaled_band(n: int) -> None:
    idx = band_mirror_index(n, 34, 194, 210)
    assert sorted(idx) == list(range(n)) and all(idx[idx[i]] == i for i in range(n))
    lo, hi = 34 * n / 210, 194 * n / 210
    for i, j in enumerate(idx):
        if j != i:  # what moves stays inside the band, mirrored about its centre to within half a pixel
            assert lo <= i + 0.5 < hi and lo <= j + 0.5 < hi
            assert abs((i + j + 1) / 2 - (lo + hi) / 2) <= 0.5


def test_band_mirror_is_exact_at_the_reference_size_and_nearest_when_resized() -> None:
    """Pong's playfield: rows 34-193 of 210 mirror as r -> 227 - r, rows outside stay; on the policy's 84
    rows (scale 0.4) the band's centre 45.1 gives r -> 90 - r for rows 14-76 (row 45 on the axis)."""
    raw = band_mirror_index(210, 34, 194, 210)
    assert raw[:34] == list(range(34)) and raw[194:] == list(range(194, 210))
    assert all(raw[r] == 227 - r for r in range(34, 194))
    small = band_mirror_index(84, 34, 194, 210)
    moved = [r for r in range(84) if small[r] != r]
    assert moved == [r for r in range(14, 77) if r != 45] and all(small[r] == 90 - r for r in moved)
    x = torch.arange(210.0).view(1, 210, 1).expand(2, 210, 3)
    y = band_mirror_action(34, 194, 210, dims=(-2, -1)).apply(x, 1)
    assert torch.equal(y[0, :, 0], torch.tensor(raw, dtype=torch.float32))


def test_band_mirrors_are_refused_when_malformed() -> None:
    with pytest.raises(GroupError, match="0 <= start < stop <= size"):
        BandMirror(0, 50, 40, 210)
    with pytest.raises(GroupError, match="axis 0"):
        BandMirror(2, 0, 4, 10)
    with pytest.raises(GroupError, match="different bands"):
        BandMirror(0, 0, 4, 10).compose(BandMirror(0, 1, 4, 10))
    with pytest.raises(GroupError, match="unknown mirror axis"):
        band_mirror_action(0, 4, 10, "diagonal")
