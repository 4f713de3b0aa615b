"""Multi-group symmetrizer (Baltaji et al.): exact equivariance to the full product at Σ|G_i| cost,
and the invariant-symmetric (IS) layer."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

from equirl import check_equivariance, symmetrize
from equirl.actions import (
    GroupAction,
    mirror_action,
    permutation_action,
    product_action,
    rotation_action,
    signed_permutation_action,
    trivial_action,
)
from equirl.errors import GroupError
from equirl.groups import cyclic, dihedral, direct_product, flip, permutation_group
from equirl.symmetrizers import EquiTune, ISLayer, MultiGroup, equivariance_errors, multigroup_pass_count

ATOL = 1e-5
N = 4  # image side


def _rot_src(n: int) -> list[int]:
    return torch.rot90(torch.arange(n * n).view(n, n), 1, (0, 1)).flatten().tolist()


def _mirror_src(n: int) -> list[int]:
    return torch.arange(n * n).view(n, n).flip(1).flatten().tolist()


def flat_image_actions(with_mirror: bool = False) -> GroupAction[Any]:
    """(C4 or D4) × Z2 on flattened n×n images: spatial symmetries × contrast inversion (x ↦ -x).

    The factors commute, so this is a genuine direct-product action (rotations and mirrors alone do
    not commute: they form D4, which is one factor here)."""
    spatial = dihedral(4) if with_mirror else cyclic(4)
    imgs = [_rot_src(N), _mirror_src(N)] if with_mirror else [_rot_src(N)]
    a_sp = signed_permutation_action(spatial, imgs)
    a_neg = signed_permutation_action(flip(), [list(range(N * N))], signs=[[-1.0] * (N * N)])
    return product_action(direct_product(spatial, flip()), [a_sp, a_neg])


def block_actions() -> tuple[GroupAction[Any], GroupAction[Any]]:
    """C4 × Z2 × Z2 on 8 features: C4 cycles block 0..3, Z2 swaps 4<->5, Z2 negates 6,7; the output
    (6 Q-values) is permuted blockwise (C4 cycles 0..3, first Z2 swaps 4<->5, second Z2 fixes all)."""
    c4, z2a = cyclic(4), flip()
    z2b = permutation_group([(1, 0)], name="Zneg", labels=["e", "neg"])  # distinct labels per factor
    g = direct_product(c4, z2a, z2b)
    ident = list(range(8))
    ins = [
        signed_permutation_action(c4, [[3, 0, 1, 2, 4, 5, 6, 7]]),
        signed_permutation_action(z2a, [[0, 1, 2, 3, 5, 4, 6, 7]]),
        signed_permutation_action(z2b, [ident], signs=[[1, 1, 1, 1, 1, 1, -1, -1]]),
    ]
    outs = [
        permutation_action(c4, [[1, 2, 3, 0, 4, 5]]),
        permutation_action(z2a, [[0, 1, 2, 3, 5, 4]]),
        permutation_action(z2b, [[0, 1, 2, 3, 4, 5]]),
    ]
    return product_action(g, ins), product_action(g, outs)


class CountingModel(nn.Module):
    """Wraps a model and counts the rows (transformed copies) it is called on."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.rows = 0
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        self.rows += x.shape[0]
        self.calls += 1
        return self.inner(x)


def _mlp(i: int, o: int) -> nn.Module:
    return nn.Sequential(nn.Linear(i, 32), nn.Tanh(), nn.Linear(32, o))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("with_mirror", [False, True])
def test_invariant_output_every_product_element(seed: int, with_mirror: bool) -> None:
    torch.manual_seed(seed)
    act = flat_image_actions(with_mirror)
    mg = symmetrize(_mlp(N * N, 5), act, method="multigroup")
    assert isinstance(mg, MultiGroup)
    x = torch.randn(6, N * N)
    errs = equivariance_errors(mg, act, None, x)
    assert len(errs) == act.group.order  # every element of the full product was checked
    assert max(errs.values()) < ATOL
    # the raw model is far from invariant, so the check is not vacuous
    assert check_equivariance(mg.model, act, None, x) > 1e-2


@pytest.mark.parametrize("seed", [0, 1])
def test_equivariant_q_values_three_factors(seed: int) -> None:
    torch.manual_seed(seed)
    in_act, out_act = block_actions()
    mg = MultiGroup(_mlp(8, 6), in_act, out_act)
    x = torch.randn(7, 8)
    errs = equivariance_errors(mg, in_act, out_act, x)
    assert len(errs) == 16
    assert max(errs.values()) < ATOL
    assert check_equivariance(mg.model, in_act, out_act, x) > 1e-2


def test_pass_count_is_sum_not_product() -> None:
    act = flat_image_actions(with_mirror=True)  # D4 × Z2: |G| = 16
    model = CountingModel(_mlp(N * N, 3))
    mg = MultiGroup(model, act)
    B = 5
    mg(torch.randn(B, N * N))
    expected = multigroup_pass_count([8, 2])
    assert expected == 9 == mg.passes_per_input
    assert model.calls == 1
    assert model.rows == B * expected
    assert model.rows < B * act.group.order

    in_act, out_act = block_actions()  # C4 × Z2 × Z2: 4 + 2 + 2 - 2 = 6 instead of 16
    model2 = CountingModel(_mlp(8, 6))
    MultiGroup(model2, in_act, out_act)(torch.randn(B, 8))
    assert model2.rows == B * 6


def test_weights_are_a_distribution_on_the_cosets() -> None:
    act = flat_image_actions()
    mg = MultiGroup(_mlp(N * N, 3), act)
    out = mg.forward_with_weights(torch.randn(4, N * N))
    w = out.weights
    assert w.shape == (8, 4)
    torch.testing.assert_close(w.sum(0), torch.ones(4))
    assert ((w > 0).sum(0) == 5).all()
    # the canonical element carries 1/2·1/4 + 1/2·1/2 = 3/8
    torch.testing.assert_close(w.max(0).values, torch.full((4,), 3 / 8))


def test_matches_reference_loop_and_chunking() -> None:
    in_act, out_act = block_actions()
    mg = MultiGroup(_mlp(8, 6), in_act, out_act, chunk_size=2)
    x = torch.randn(5, 8)
    torch.testing.assert_close(mg(x), mg.forward_loop(x), atol=ATOL, rtol=0)
    mg_full = MultiGroup(mg.model, in_act, out_act, scorer=mg.scorer, chunk_size=None)
    torch.testing.assert_close(mg_full(x), mg(x), atol=ATOL, rtol=0)


def test_all_tied_scores_reduce_to_equitune() -> None:
    class Const(nn.Module):
        def forward(self, z: Tensor) -> Tensor:
            return torch.zeros(z.shape[0])

    in_act, out_act = block_actions()
    model = _mlp(8, 6)
    mg = MultiGroup(model, in_act, out_act, scorer=Const())
    x = torch.randn(3, 8)
    torch.testing.assert_close(mg(x), EquiTune(model, in_act, out_act)(x), atol=ATOL, rtol=0)


def test_symmetric_inputs_stay_exact() -> None:
    """Inputs fixed by some elements make scores tie; averaging the ties keeps equivariance."""
    in_act, out_act = block_actions()
    mg = MultiGroup(_mlp(8, 6), in_act, out_act)
    x = torch.randn(4, 8)
    x[:, 0:4] = x[:, :1]  # fixed by C4
    x[:, 6:8] = 0.0  # fixed by the sign flip
    assert check_equivariance(mg, in_act, out_act, x) < ATOL


def test_gradients_reach_the_model() -> None:
    act = flat_image_actions()
    mg = MultiGroup(_mlp(N * N, 3), act)
    mg(torch.randn(4, N * N)).pow(2).sum().backward()
    grads = [p.grad for p in mg.model.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_prior_loss_exposed() -> None:
    act = flat_image_actions()
    mg = MultiGroup(_mlp(N * N, 3), act, prior_weight=2.0)
    loss = mg.prior_loss(torch.randn(4, N * N))
    assert loss.dim() == 0 and float(loss.detach()) > 0
    loss.backward()
    assert any(p.grad is not None for p in mg.scorer.parameters())


def test_single_group_is_refused() -> None:
    with pytest.raises(GroupError, match="direct product"):
        symmetrize(_mlp(16, 2), rotation_action(4), method="multigroup")


# -- the IS layer ---------------------------------------------------------------------------------
def test_is_layer_invariant_to_every_element_of_the_input_product() -> None:
    a1 = rotation_action(4)
    a2 = mirror_action("top-bottom")  # a different group on the second input (same feature shape)
    layer = ISLayer([a1, a2], out_features=4, hidden=16)
    z1, z2 = torch.randn(5, 1, N, N), torch.randn(5, 1, N, N)
    y = layer(z1, z2)
    assert y.shape == (5, 4)
    for g1 in a1.group.elements:
        for g2 in a2.group.elements:
            y2 = layer(a1.apply(z1, g1), a2.apply(z2, g2))
            assert (y2 - y).abs().max() < ATOL


@pytest.mark.parametrize("hidden", [0, 16])
def test_is_layer_symmetric_in_inputs(hidden: int) -> None:
    act = rotation_action(4)
    layer = ISLayer(act, out_features=3, hidden=hidden, num_inputs=3)
    zs = [torch.randn(4, 1, N, N) for _ in range(3)]
    y = layer(*zs)
    for perm in [(1, 0, 2), (2, 1, 0), (1, 2, 0)]:
        assert (layer(*[zs[i] for i in perm]) - y).abs().max() < ATOL
    # the list form is accepted too, and the output is not trivially constant
    assert (layer(zs) - y).abs().max() == 0
    assert (layer(*[torch.randn(4, 1, N, N) for _ in range(3)]) - y).abs().max() > 1e-3


def test_is_layer_trivial_action_and_errors() -> None:
    layer = ISLayer(trivial_action(cyclic(4)), out_features=2, num_inputs=2)
    a, b = torch.randn(3, 5), torch.randn(3, 5)
    assert (layer(a, b) - layer(b, a)).abs().max() < ATOL
    with pytest.raises(ValueError, match="expects 2 inputs"):
        layer(a)
    with pytest.raises(ValueError, match="num_inputs"):
        ISLayer(trivial_action(cyclic(4)), out_features=2)
    layer(a, b).sum().backward()
    assert all(p.grad is not None for p in layer.parameters())


@pytest.mark.slow
def test_product_bench_smoke(tmp_path: Any) -> None:
    """The benchmark runs end to end (tiny budgets) and reports exact, cheap wrappers."""
    from equirl.bench.product import COLUMNS, product_table, run_product_bench

    rows = run_product_bench(
        tmp_path, groups=("C4xZ2",), epochs=1, finetune_epochs=1, scorer_images=64, scorer_steps=20
    )
    assert (tmp_path / "product_bench.csv").read_text().splitlines()[0] == ",".join(COLUMNS)
    by = {(r["regime"], r["method"]): r for r in rows}
    # exactly symmetric digits tie and cost an extra pass each, hence the small slack
    assert 5 <= by[("zero-shot", "multigroup")]["model_passes"] < 5.1
    assert 1 <= by[("zero-shot", "canonicalize (prior)")]["model_passes"] < 1.1
    assert by[("zero-shot", "equitune (full product)")]["model_passes"] == 8
    for (_, method), r in by.items():
        if method != "plain model":
            assert r["equiv_error"] < ATOL
    assert product_table(rows).row_count == len(rows)
