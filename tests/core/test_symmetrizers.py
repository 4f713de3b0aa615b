"""Level 3: module equivariance of every symmetrizer, plus picks, ties, gradients and the batched path."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from equirl import check_equivariance, symmetrize
from equirl.actions import (
    GroupAction,
    image_action,
    mirror_action,
    permutation_action,
    rotation_action,
    signed_permutation_action,
    swap_permutation,
)
from equirl.groups import cyclic, dihedral, flip, permutation_group
from equirl.symmetrizers import EquiTune, EquiZero, LambdaEquiTune, LambdaNet, Symmetrizer

ATOL = 1e-5
METHODS = ["equitune", "equizero", "lambda"]


@dataclass
class Case:
    name: str
    make_model: Callable[[], nn.Module]
    in_action: GroupAction[Any]
    out_action: GroupAction[Any] | None
    make_input: Callable[[], torch.Tensor]
    lambda_features: int


def _cnn(out: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, out))


def _block_cycle() -> tuple[GroupAction[Any], GroupAction[Any]]:
    """C3 as a permutation group: shifts 3 blocks of 2 input features, cycles 3 logits."""
    c3 = permutation_group([(1, 2, 0)], name="C3")
    p = c3.generators[0].data
    src = [0] * 6
    for i in range(3):  # block i goes to block p[i]
        for k in range(2):
            src[2 * p[i] + k] = 2 * i + k
    return signed_permutation_action(c3, [src]), permutation_action(c3)


_c3_in, _c3_out = _block_cycle()

CASES = [
    Case(
        "Z2-signflip-vectors",
        lambda: nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2)),
        signed_permutation_action(flip(), [[0, 1, 2, 3]], signs=[[-1, -1, -1, -1]]),
        permutation_action(flip(), [[1, 0]]),
        lambda: torch.randn(6, 4),
        4,
    ),
    Case(
        "C4-images-invariant", lambda: _cnn(5), rotation_action(4), None, lambda: torch.randn(3, 2, 6, 6), 72
    ),
    Case(
        "C4-images-equivariant",
        lambda: nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 2, 3, padding=1)),
        rotation_action(4),
        rotation_action(4),
        lambda: torch.randn(3, 2, 6, 6),
        72,
    ),
    Case(
        "D4-images-invariant",
        lambda: _cnn(5),
        image_action(dihedral(4)),
        None,
        lambda: torch.randn(3, 2, 6, 6),
        72,
    ),
    Case(
        "D4-images-equivariant",
        lambda: nn.Sequential(nn.Conv2d(2, 2, 3, padding=1)),
        image_action(dihedral(4)),
        image_action(dihedral(4)),
        lambda: torch.randn(3, 2, 6, 6),
        72,
    ),
    Case(
        "mirror-lr-actions",
        lambda: _cnn(4),
        mirror_action("left-right"),
        permutation_action(flip(), [swap_permutation(4, [(2, 3)])]),
        lambda: torch.randn(3, 2, 6, 6),
        72,
    ),
    Case(
        "C3-perm-logits",
        lambda: nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)),
        _c3_in,
        _c3_out,
        lambda: torch.randn(5, 6),
        6,
    ),
]


def _build(case: Case, method: str, **kw: Any) -> Symmetrizer:
    model = case.make_model()
    if method == "lambda":
        kw.setdefault("lambda_in_features", case.lambda_features)
    sym = symmetrize(model, case.in_action, case.out_action, method=method, **kw)
    if isinstance(sym, LambdaEquiTune):  # non-trivial λ so that the weights are not uniform
        for p in sym.lambda_net.parameters():
            nn.init.normal_(p, std=0.5)
    return sym


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_equivariant_for_every_element(case: Case, method: str) -> None:
    sym = _build(case, method, proxy="entropy") if method == "equizero" else _build(case, method)
    x = case.make_input()
    for mode in ("eval", "train"):
        getattr(sym, mode)()
        err = check_equivariance(sym, case.in_action, case.out_action, x)
        assert err < ATOL, f"{method} {mode}: error {err}"
    # and the plain model is not equivariant (the test has teeth)
    assert check_equivariance(sym.model, case.in_action, case.out_action, x) > 1e-3


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_batched_equals_per_element_loop(case: Case, method: str) -> None:
    sym = _build(case, method).eval()
    x = case.make_input()
    with torch.no_grad():
        ref = sym.forward_loop(x)
        for chunk in ("auto", None, 1, 2):
            sym.chunk_size = chunk
            out = sym(x)
            assert out.shape == ref.shape and out.dtype == ref.dtype
            torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)


def test_output_shape_and_dtype_follow_the_model() -> None:
    case = CASES[0]
    for method in METHODS:
        sym = _build(case, method).double()
        x = case.make_input().double()
        out = sym(x)
        assert out.dtype == torch.float64 and out.shape == sym.model(x).shape


def test_lambda_weights_positive_normalised_and_start_as_equitune() -> None:
    case = CASES[3]
    x = case.make_input()
    sym = _build(case, "lambda")
    w = sym.forward_with_weights(x).weights
    assert w.shape == (8, 3)
    assert bool((w > 0).all())
    torch.testing.assert_close(w.sum(0), torch.ones(3), atol=1e-6, rtol=0)
    fresh = LambdaEquiTune(sym.model, case.in_action, case.out_action, lambda_in_features=72)
    tune = EquiTune(sym.model, case.in_action, case.out_action)
    torch.testing.assert_close(fresh(x), tune(x), atol=1e-6, rtol=0)
    assert isinstance(fresh.lambda_net, LambdaNet)
    assert any(n.startswith("lambda_net.") for n, _ in fresh.named_parameters())  # registered submodule


@pytest.mark.parametrize("proxy", ["entropy", "max_prob", "max_value", "nll"])
def test_equizero_picks_the_brute_force_argmin(proxy: str) -> None:
    from equirl.symmetrizers import get_proxy

    case = CASES[3]
    sym = _build(case, "equizero", proxy=proxy).eval()
    x = case.make_input()
    picks = sym.forward_with_weights(x).weights.argmax(0)
    loss_fn = get_proxy(proxy)
    with torch.no_grad():
        for b in range(x.shape[0]):
            losses = [
                float(loss_fn(sym.model(case.in_action.apply(x[b : b + 1], g)).unsqueeze(0)))
                for g in case.in_action.group.elements
            ]
            assert int(picks[b]) == min(range(len(losses)), key=losses.__getitem__)
    # max_prob picks the *most* confident element (the seed code's argmin bug would pick the least)
    if proxy == "max_prob":
        probs = torch.softmax(sym.orbit_outputs(x)[1], -1).amax(-1)
        assert torch.equal(picks, probs.argmax(0))


class _TiedQ(nn.Module):
    """Q(x) = (|x|, 0): both orbit elements always tie on max Q, and the model is not equivariant."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.norm(dim=-1, keepdim=True)
        return torch.cat([n, torch.zeros_like(n)], dim=-1)


def test_equizero_stays_equivariant_under_ties() -> None:
    obs = signed_permutation_action(flip(), [[0, 1, 2]], signs=[[-1, -1, -1]])
    acts = permutation_action(flip(), [[1, 0]])
    x = torch.randn(4, 3)
    avg = EquiZero(_TiedQ(), obs, acts, proxy="max_value")
    assert check_equivariance(avg, obs, acts, x) < ATOL
    w = avg.forward_with_weights(x).weights
    torch.testing.assert_close(w, torch.full_like(w, 0.5))
    first = EquiZero(_TiedQ(), obs, acts, proxy="max_value", tie_break="first")
    assert check_equivariance(first, obs, acts, x) > 0.1  # documented: 'first' is not equivariant under ties
    # a symmetric input (x = -x) ties every element for any model
    model = CASES[0].make_model()
    sym = EquiZero(model, CASES[0].in_action, CASES[0].out_action, proxy="max_value")
    zero = torch.zeros(2, 4)
    out = sym(zero)
    torch.testing.assert_close(out, out.flip(-1), atol=ATOL, rtol=0)


def test_gradients_reach_model_and_lambda() -> None:
    case = CASES[1]
    x = case.make_input()
    for method in METHODS:
        sym = _build(case, method).train()
        sym(x).square().sum().backward()
        grads = [p.grad for p in sym.model.parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), method
        if isinstance(sym, LambdaEquiTune):
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in sym.lambda_net.parameters())


def test_straight_through_forward_is_equizero_gradient_is_equitune() -> None:
    case = CASES[6]
    x = case.make_input()
    model = case.make_model()
    zero = EquiZero(model, case.in_action, case.out_action, proxy="entropy").train()
    tune = EquiTune(model, case.in_action, case.out_action).train()
    out = zero(x)
    with torch.no_grad():
        torch.testing.assert_close(out, zero.eval()(x), atol=1e-6, rtol=0)
    zero.train()
    target = torch.randn_like(out)
    g_zero = torch.autograd.grad((zero(x) * target).sum(), list(model.parameters()))
    g_tune = torch.autograd.grad((tune(x) * target).sum(), list(model.parameters()))
    for a, b in zip(g_zero, g_tune):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_batchnorm_in_train_mode_stays_equivariant() -> None:
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
    act = image_action(dihedral(4))
    sym = EquiTune(model, act, None, chunk_size=None).train()
    assert check_equivariance(sym, act, None, torch.randn(4, 2, 6, 6)) < ATOL


def test_callable_models_and_mismatched_groups() -> None:
    from equirl.errors import EquirlError, GroupError

    act = rotation_action(4)
    f = lambda z: z.flatten(1).sum(-1, keepdim=True)
    sym = symmetrize(f, act)
    assert check_equivariance(sym, act, None, torch.randn(2, 1, 4, 4)) < ATOL
    with pytest.raises(GroupError, match="same group"):
        EquiTune(nn.Identity(), act, mirror_action())
    with pytest.raises(EquirlError, match="unknown method"):
        symmetrize(nn.Identity(), act, method="equi-magic")
    with pytest.raises(EquirlError, match="option proxy: expected one of entropy"):
        symmetrize(nn.Identity(), act, method="equizero", proxy="vibes")  # the registry checks options
    with pytest.raises(EquirlError, match="unknown equizero proxy"):
        EquiZero(nn.Identity(), act, proxy="vibes")


def test_equitune_uses_the_inverse_not_the_element() -> None:
    """For |G| = 3 mapping back with g instead of g⁻¹ (the released code's bug) breaks equivariance."""
    case = CASES[6]
    model = case.make_model()
    x = case.make_input()

    class WrongEquiTune(EquiTune):
        def combine_output(self, x_rows: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
            inv = self.group.inverse_indices
            wrong = self.out_action.inverse_stacked(ys[list(inv)])  # applies g instead of g⁻¹ to M(g·x)
            return wrong[list(inv)].mean(0)

    assert (
        check_equivariance(
            EquiTune(model, case.in_action, case.out_action), case.in_action, case.out_action, x
        )
        < ATOL
    )
    assert (
        check_equivariance(
            WrongEquiTune(model, case.in_action, case.out_action), case.in_action, case.out_action, x
        )
        > 1e-3
    )


@settings(max_examples=20, deadline=None)
@given(
    batch=st.integers(1, 9),
    seed=st.integers(0, 10_000),
    method=st.sampled_from(METHODS),
    group=st.sampled_from(["C4", "D4", "C2"]),
)
def test_property_random_models_inputs_and_batches(batch: int, seed: int, method: str, group: str) -> None:
    torch.manual_seed(seed)
    act = image_action({"C4": cyclic(4), "D4": dihedral(4), "C2": cyclic(2)}[group])
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.Conv2d(3, 1, 3, padding=1))
    kw: dict[str, Any] = {"lambda_in_features": 25} if method == "lambda" else {}
    sym = symmetrize(model, act, act, method=method, chunk_size=3, **kw)
    if isinstance(sym, LambdaEquiTune):
        for p in sym.lambda_net.parameters():
            nn.init.normal_(p)
    assert check_equivariance(sym, act, act, torch.randn(batch, 1, 5, 5)) < ATOL
