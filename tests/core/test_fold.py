"""The orbit folded into a CNN's kernels (:mod:`equirl.symmetrizers.fold`) equals the orbit of the input.

Three levels, as for the symmetrizers: the kernel identity ``M(g·x) = rest(g·chain_{g⁻¹}(x))`` per element
on generated architectures (and the alignment rule that says where it holds), the symmetrized model's
equivariance and agreement with the stacked-orbit path, and the guards (what does not fold, and what
happens when a split is wrong).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from equirl.actions import image_action, permutation_action, signed_permutation_action
from equirl.groups import cyclic, dihedral, flip
from equirl.symmetrizers import EquiTune, EquiZero, LambdaEquiTune
from equirl.symmetrizers.fold import FoldedOrbit, SpatialChain, carried_prefix, chain_from_sequential

ATOL = 1e-5
GROUPS = {"Z2": flip, "C4": lambda: cyclic(4), "D4": lambda: dihedral(4)}


def _nature(n_out: int = 4) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(4, 8, 8, stride=4), nn.ReLU(), nn.Conv2d(8, 8, 4, stride=2), nn.ReLU(),
        nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 7 * 7, 16), nn.ReLU(), nn.Linear(16, n_out),
    )  # fmt: skip


def _stacked(model: nn.Module, action: Any, x: torch.Tensor) -> torch.Tensor:
    return torch.stack([model(action.apply(x, g)) for g in range(action.group.order)])


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_folded_orbit_is_the_orbit_for_every_element(group: str) -> None:
    torch.manual_seed(0)
    model, act = _nature().eval(), image_action(GROUPS[group]())
    chain = chain_from_sequential(model)
    assert chain is not None and len(chain.layers) == 5  # up to the third convolution
    folded = FoldedOrbit(chain, act)
    assert folded.applies((84, 84)) and folded.pays((4, 84, 84))
    x = torch.randn(5, 4, 84, 84)
    with torch.no_grad():
        got, want = folded(x), _stacked(model, act, x)
    assert got.shape == want.shape == (act.group.order, 5, 4)
    for g in range(act.group.order):
        assert torch.allclose(got[g], want[g], atol=ATOL), g


_LAYER = st.one_of(
    st.tuples(st.just("conv"), st.integers(1, 5), st.integers(1, 3), st.integers(0, 2), st.integers(1, 2)),
    st.tuples(st.just("max"), st.integers(2, 3), st.integers(1, 3), st.integers(0, 1), st.just(1)),
    st.tuples(st.just("avg"), st.integers(2, 3), st.integers(1, 3), st.integers(0, 1), st.just(1)),
    st.tuples(st.sampled_from(["relu", "tanh", "bn"]), st.just(0), st.just(0), st.just(0), st.just(0)),
)


def _build(spec: list[tuple[str, int, int, int, int]], channels: int = 3) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for kind, k, s, p, d in spec:
        if kind == "conv":
            layers.append(nn.Conv2d(channels, 4, k, stride=s, padding=min(p, k // 2), dilation=d))
            channels = 4
        elif kind == "max":
            layers.append(nn.MaxPool2d(k, stride=s, padding=min(p, k // 2)))
        elif kind == "avg":
            layers.append(nn.AvgPool2d(k, stride=s, padding=min(p, k // 2)))
        elif kind == "bn":
            bn = nn.BatchNorm2d(channels)
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            layers.append(bn)
        else:
            layers.append(nn.ReLU() if kind == "relu" else nn.Tanh())
    return layers


@settings(max_examples=60, deadline=None)
@given(
    spec=st.lists(_LAYER, min_size=1, max_size=4),
    size=st.tuples(st.integers(7, 16), st.integers(7, 16)),
    group=st.sampled_from(sorted(GROUPS)),
)
def test_generated_chains_fold_exactly_where_the_windows_align(
    spec: list[tuple[str, int, int, int, int]], size: tuple[int, int], group: str
) -> None:
    """On generated conv / pool / pointwise stacks: where :meth:`FoldedOrbit.applies` holds, every element's
    output equals the model on the transformed input (and the symmetrizer takes the fold); where it does
    not, the symmetrizer keeps the stacked orbit and stays equivariant."""
    torch.manual_seed(0)
    layers = _build(spec)
    model = nn.Sequential(*layers, nn.Flatten()).eval()
    act = image_action(GROUPS[group]())
    x = torch.randn(16, 3, *size)
    try:
        with torch.no_grad():
            model(x)
    except RuntimeError:  # the stack shrinks the map below a window: not a model
        return
    chain = chain_from_sequential(model)
    if chain is None:  # activations only: nothing to fold
        assert carried_prefix(layers) == 0
        return
    folded = FoldedOrbit(chain, act)
    square = size[0] == size[1]
    if not square and act.group.order > 2:
        assert not folded.applies(size)
        return
    sym = EquiTune(model, act).eval()
    with torch.no_grad():
        if folded.applies(size):
            got, want = folded(x), _stacked(model, act, x)
            assert torch.allclose(got, want, atol=ATOL)
            assert sym._folds(x) is folded.pays((3, *size))
        else:
            assert not sym._folds(x)
        y = sym(x)
        for g in range(act.group.order):  # invariant output, either way
            assert torch.allclose(sym(act.apply(x, g)), y, atol=ATOL)


def test_a_misaligned_stride_is_refused() -> None:
    """85 pixels under an 8-wide window of stride 4 leave one column over: the mirrored windows are not the
    windows of the mirror, so the fold does not apply (and would be wrong)."""
    model, act = _nature().eval(), image_action(flip())
    folded = FoldedOrbit(chain_from_sequential(model[:6]), act)  # type: ignore[arg-type]
    assert folded.applies((84, 84)) and not folded.applies((84, 85))
    assert folded.applies((85, 84))  # the mirror moves the width only
    x = torch.randn(2, 4, 85, 85)
    with torch.no_grad():
        wrong = (folded(x) - _stacked(model[:6], act, x)).abs().max()
    assert wrong > 1e-3  # the rule is needed: folding here gives other outputs


@pytest.mark.parametrize("method", [EquiTune, EquiZero])
@pytest.mark.parametrize("group", sorted(GROUPS))
def test_symmetrized_cnn_takes_the_fold_and_stays_exactly_equivariant(method: type, group: str) -> None:
    """Equitune folds; equizero never does (its argmin must see a symmetric input's exact ties, which
    float rounding of the folded path would break) and is checked the same way."""
    torch.manual_seed(1)
    G = GROUPS[group]()
    act = image_action(G)
    out = permutation_action(G, [[0, 1, 3, 2]]) if group == "Z2" else None
    model = _nature().eval()
    sym, plain = method(model, act, out).eval(), method(model, act, out, fold=False).eval()
    x = torch.randn(sym.fold_min_batch, 4, 84, 84)
    with torch.no_grad():
        assert sym._folds(x) is (method is EquiTune) and not plain._folds(x)
        y = sym(x)
        assert torch.allclose(y, plain(x), atol=ATOL)
        assert torch.allclose(y, sym.forward_loop(x), atol=ATOL)
        for g in range(G.order):
            want = y if out is None else out.apply(y, g)
            assert torch.allclose(sym(act.apply(x, g)), want, atol=ATOL), g
        small = x[: sym.fold_min_batch - 1]  # below the threshold: the stacked orbit
        assert not sym._folds(small) and torch.allclose(sym(small), plain(small), atol=ATOL)


def test_fold_gradients_equal_the_orbit_paths() -> None:
    torch.manual_seed(2)
    act = image_action(dihedral(4))
    model = _nature()
    x = torch.randn(16, 4, 84, 84)
    grads = []
    for fold in (True, False):
        model.zero_grad()
        sym = EquiTune(model, act, fold=fold)
        assert sym._folds(x) is fold
        sym(x).square().sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])  # type: ignore[union-attr]
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_kernels_follow_the_weights() -> None:
    """The transformed kernels follow every way weights change: an optimizer step, a write through
    ``.data`` (SB3's target-network update, which leaves the weight's version as it was) and a layer
    swapped in the ``nn.Sequential`` (the split is made again); kernels made in inference mode are usable
    where gradients are recorded."""
    torch.manual_seed(3)
    act = image_action(cyclic(4))
    model = _nature()
    sym = EquiTune(model, act)
    x = torch.randn(16, 4, 84, 84)
    with torch.inference_mode():
        sym(x)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    sym(x).sum().backward()
    opt.step()
    with torch.no_grad():
        assert torch.allclose(sym(x), sym.forward_loop(x), atol=ATOL)
        for p in model.parameters():
            p.data.mul_(1.5)  # no version bump
        assert torch.allclose(sym(x), sym.forward_loop(x), atol=ATOL)
        model[2] = nn.Conv2d(8, 8, 4, stride=2)
        model[-1] = nn.Linear(16, 4)
        assert sym._folds(x) and torch.allclose(sym(x), sym.forward_loop(x), atol=ATOL)
        sym.fold = False
        assert not sym._folds(x)
    for p in model.parameters():
        p.requires_grad_(False)  # frozen weights with a grad-requiring input: the cached kernels are used
    xg = x.clone().requires_grad_(True)
    sym(xg).sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0


def test_what_does_not_fold() -> None:
    act = image_action(flip())
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(4 * 84 * 84, 2))
    assert chain_from_sequential(mlp) is None and EquiTune(mlp, act)._folded is None
    cnn = _nature()
    assert LambdaEquiTune(cnn, act, lambda_in_features=4 * 84 * 84)._folded is None  # its λ-net reads g·x
    bn = nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3), nn.Flatten())
    sym = EquiTune(bn, act)
    x = torch.randn(16, 4, 9, 9)
    assert not sym._folds(x)  # a training batch norm inside the chain: statistics per element's batch
    assert sym.eval()._folds(x)
    bn[1].track_running_stats = False  # evaluating on batch statistics all the same
    assert not EquiTune(bn, act).eval()._folds(x)

    class Reads(EquiTune):  # overrides how outputs combine, without saying it is fold-safe
        def combine_output(self, x_rows: Any, ys: torch.Tensor) -> torch.Tensor:
            return super().combine_output(x_rows, ys) + 0 * x_rows.float().mean()

    assert not Reads.fold_safe and Reads(cnn, act)._folded is None
    same = nn.Sequential(nn.Conv2d(4, 4, 3, padding="same"), nn.Flatten())
    assert chain_from_sequential(same) is None  # string padding: not read
    wide = nn.Sequential(nn.Conv2d(4, 16, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 8 * 8, 3))
    sym = EquiTune(wide, act)  # MinAtar's CNN: 4x10x10 frames widen to 16x8x8 maps
    assert sym._folded is not None and sym._folded.applies((10, 10))
    assert not sym._folded.pays((4, 10, 10)) and not sym._folds(torch.randn(16, 4, 10, 10))


def test_a_wrong_split_is_caught_and_the_orbit_kept(caplog: pytest.LogCaptureFixture) -> None:
    """:meth:`Symmetrizer.fold_into` with a chain that is not the model (here a ``pre`` that moves the
    image): the one-time check finds the difference, logs it and keeps the stacked orbit."""
    torch.manual_seed(4)
    act = image_action(flip())
    model = _nature().eval()
    sym = EquiTune(model, act).eval()
    chain = chain_from_sequential(model)
    assert chain is not None
    sym.fold_into(SpatialChain(chain.layers, chain.rest, pre=lambda x: x.roll(1, dims=-1)))
    x = torch.randn(16, 4, 84, 84)
    with caplog.at_level(logging.WARNING), torch.no_grad():
        y = sym(x)
    assert not sym._folds(x)
    assert "differs" in caplog.text
    with torch.no_grad():
        assert torch.allclose(y, sym.forward_loop(x), atol=ATOL)


def test_an_action_on_other_dims_does_not_fold() -> None:
    """A channel-last action (height, width at dims -3, -2) before a channel-first convolution: the chain
    has no ``pre`` to bring the plane to (-2, -1), so nothing folds."""
    act = image_action(flip(), dims=(-3, -2))
    assert EquiTune(_nature(), act)._folded is None


def test_the_one_time_check_leaves_no_trace() -> None:
    """The check compares the paths with every layer evaluating, on a forked random stream: a training
    batch norm's statistics and the caller's random stream are as they were, and dropout in the rest of
    the network does not make it fail."""
    torch.manual_seed(5)
    model = nn.Sequential(
        nn.Conv2d(4, 8, 8, stride=4), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 20 * 20, 8), nn.BatchNorm1d(8),
        nn.Dropout(0.5), nn.Linear(8, 2),
    ).train()  # fmt: skip
    sym = EquiTune(model, image_action(flip()))
    x = torch.randn(16, 4, 84, 84)
    state = torch.get_rng_state()
    assert sym._folds(x)
    assert int(model[4].num_batches_tracked) == 0 and torch.equal(state, torch.get_rng_state())
    assert model.training and model[4].training


def test_training_batch_norm_sees_whole_orbits() -> None:
    """Every model call holds whole orbits, so a training batch norm's statistics are group-invariant and
    the symmetrized model stays exactly equivariant in training mode, however the batch is chunked."""
    torch.manual_seed(6)
    model = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2)).train()
    obs = signed_permutation_action(flip(), [[0, 1, 2, 3]], signs=[[-1, -1, -1, -1]])
    sym = EquiTune(model, obs, permutation_action(flip(), [[1, 0]]), max_call_rows=64)
    x = torch.randn(300, 4)
    with torch.no_grad():
        assert torch.allclose(sym(-x), sym(x).flip(-1), atol=ATOL)
