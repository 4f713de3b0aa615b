"""The optimised forward path against straightforward references of the formulas.

The symmetrizers stack the orbit into one batched call, write it into a buffer reused between calls
(without autograd), derive image transforms from one another and permute small tensors with a cached
flat index. Here every output is compared, to 1e-6, with references written from the definitions and
the per-element :meth:`GroupAction.apply`:

* equitune ``(1/|G|) Σ_g g⁻¹·M(g·x)``;
* equizero ``Σ_g w_g g⁻¹·M(g·x)`` with ``w`` uniform over the elements whose proxy loss is within the
  tie tolerance of the minimum;
* λ-equitune ``Σ_g softmax_g(λ(g·x)) g⁻¹·M(g·x)``.
"""

from __future__ import annotations

import copy
import pickle
import threading
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from equirl.actions import (
    GroupAction,
    ImageAction,
    SignedPermAction,
    TrivialAction,
    image_action,
    permutation_action,
    signed_permutation_action,
)
from equirl.groups import cyclic, dihedral, flip
from equirl.symmetrizers import EquiTune, EquiZero, LambdaEquiTune, Symmetrizer
from equirl.symmetrizers.proxies import get_proxy

TOL = 1e-6


# -- references ----------------------------------------------------------------------------------------
def _orbit_outputs_ref(sym: Symmetrizer, x: Tensor) -> list[Tensor]:
    """``[g⁻¹·M(g·x) for g]``, one element and one model call at a time."""
    return [sym.out_action.apply(sym._run_model(sym.in_action.apply(x, g)), ~g) for g in sym.group.elements]


def equitune_ref(sym: Symmetrizer, x: Tensor) -> Tensor:
    back = _orbit_outputs_ref(sym, x)
    return sum(back[1:], back[0]) / len(back)


def equizero_ref(sym: EquiZero, x: Tensor) -> Tensor:
    ys = torch.stack([sym._run_model(sym.in_action.apply(x, g)) for g in sym.group.elements])
    loss = get_proxy(sym.proxy_name)(ys)  # (|G|, B)
    best = loss.amin(0)
    tied = (loss <= best + sym.tie_atol + sym.tie_rtol * best.abs()).to(ys.dtype)
    w = tied / tied.sum(0)
    back = _orbit_outputs_ref(sym, x)
    return sum(w[g].view(-1, *([1] * (back[g].dim() - 1))) * back[g] for g in range(len(back)))  # type: ignore[return-value]


def lambda_ref(sym: LambdaEquiTune, x: Tensor) -> Tensor:
    logits = torch.stack([sym.lambda_net(sym.in_action.apply(x, g)).reshape(-1) for g in sym.group.elements])
    w = torch.softmax(logits, dim=0)
    back = _orbit_outputs_ref(sym, x)
    return sum(w[g].view(-1, *([1] * (back[g].dim() - 1))) * back[g] for g in range(len(back)))  # type: ignore[return-value]


# -- cases: the benchmark's models and actions, small -----------------------------------------------------
def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 2))


def _cnn(n_out: int = 4, channels: int = 2) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(channels, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 7 * 7, n_out)
    )  # fmt: skip


def _seg() -> nn.Module:
    """Image in, image out (an equivariant output action on images)."""
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(), nn.Conv2d(3, 2, 3, padding=1))


class _HWC(nn.Module):
    """A CNN on channel-last images ``(B, H, W, C)``."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _cnn()

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.permute(0, 3, 1, 2))


Z2_OBS = signed_permutation_action(flip(), [[0, 1, 2, 3]], signs=[[-1, -1, -1, -1]])
CASES: list[
    tuple[str, Callable[[], nn.Module], GroupAction[Any], GroupAction[Any] | None, tuple[int, ...]]
] = [
    ("mlp-Z2", _mlp, Z2_OBS, permutation_action(flip(), [[1, 0]]), (4,)),
    ("mlp-C4", _mlp, signed_permutation_action(cyclic(4), [[3, 0, 1, 2]]), None, (4,)),
    ("mlp-D4", _mlp, signed_permutation_action(dihedral(4), [[3, 0, 1, 2], [3, 2, 1, 0]]), None, (4,)),
    (
        "mlp-Z2-signed-perm-out",
        _mlp,
        Z2_OBS,
        signed_permutation_action(flip(), [[1, 0]], signs=[[-1, -1]]),
        (4,),
    ),
    ("cnn-Z2", _cnn, image_action(flip()), permutation_action(flip(), [[0, 1, 3, 2]]), (2, 16, 16)),
    ("cnn-C4", _cnn, image_action(cyclic(4)), None, (2, 16, 16)),
    ("cnn-D4", _cnn, image_action(dihedral(4)), None, (2, 16, 16)),
    ("cnn-C2", _cnn, image_action(cyclic(2)), None, (2, 16, 16)),
    ("seg-D4", _seg, image_action(dihedral(4)), image_action(dihedral(4)), (2, 8, 8)),
    ("seg-C4", _seg, image_action(cyclic(4)), image_action(cyclic(4)), (2, 8, 8)),
    ("hwc-D4", _HWC, image_action(dihedral(4), dims=(-3, -2)), None, (16, 16, 2)),
]
IDS = [c[0] for c in CASES]


def _make(
    method: str, factory: Callable[[], nn.Module], act: GroupAction[Any], out: Any, **kw: Any
) -> Symmetrizer:
    model = factory().eval()
    if method == "equitune":
        return EquiTune(model, act, out, **kw).eval()
    if method == "equizero":
        return EquiZero(model, act, out, proxy="max_value", **kw).eval()
    return LambdaEquiTune(model, act, out, **kw).eval()


def _ref(sym: Symmetrizer, x: Tensor) -> Tensor:
    if isinstance(sym, EquiZero):
        return equizero_ref(sym, x)
    if isinstance(sym, LambdaEquiTune):
        return lambda_ref(sym, x)
    return equitune_ref(sym, x)


@pytest.mark.parametrize("method", ["equitune", "equizero", "lambda"])
@pytest.mark.parametrize(("name", "factory", "act", "out", "shape"), CASES, ids=IDS)
@pytest.mark.parametrize("mode", ["inference", "no_grad", "grad"])
def test_forward_matches_the_reference(
    method: str, name: str, factory: Any, act: GroupAction[Any], out: Any, shape: tuple[int, ...], mode: str
) -> None:
    # workspace_min_bytes=0: even these small orbits go through the reused buffer
    sym = _make(method, factory, act, out, chunk_size=3)
    sym.workspace_min_bytes = 0
    ctx = {"inference": torch.inference_mode, "no_grad": torch.no_grad, "grad": torch.enable_grad}[mode]
    for B in (1, 7):  # 7 with chunks of 3: two full chunks and a rest
        x = torch.randn(B, *shape)
        with ctx():
            got = sym(x)
            w = sym.forward_with_weights(x)
        with torch.no_grad():
            ref = _ref(sym, x)
        torch.testing.assert_close(got, ref, atol=TOL, rtol=TOL)
        torch.testing.assert_close(w.output, ref, atol=TOL, rtol=TOL)
        assert w.weights.shape == (sym.group.order, B)


@pytest.mark.parametrize(("name", "factory", "act", "out", "shape"), CASES, ids=IDS)
def test_gradients_match_the_reference(
    name: str, factory: Any, act: GroupAction[Any], out: Any, shape: tuple[int, ...]
) -> None:
    sym = _make("equitune", factory, act, out)
    x = torch.randn(5, *shape, requires_grad=True)
    sym(x).square().sum().backward()
    got = [x.grad.clone()] + [p.grad.clone() for p in sym.parameters()]  # type: ignore[union-attr]
    x.grad, _ = None, sym.zero_grad()
    equitune_ref(sym, x).square().sum().backward()
    ref = [x.grad] + [p.grad for p in sym.parameters()]
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_equizero_ties_are_averaged_like_the_reference() -> None:
    """A symmetric input ties every element: the output is the average, as in the reference."""
    sym = _make("equizero", _mlp, signed_permutation_action(cyclic(4), [[3, 0, 1, 2]]), None)
    x = torch.ones(3, 4)
    with torch.inference_mode():
        w = sym.forward_with_weights(x)
    torch.testing.assert_close(w.weights, torch.full((4, 3), 0.25))
    torch.testing.assert_close(w.output, equizero_ref(sym, x), atol=TOL, rtol=TOL)  # type: ignore[arg-type]


# -- the reused buffer ----------------------------------------------------------------------------------
def _big_cnn_sym() -> EquiTune:
    return EquiTune(_cnn(), image_action(dihedral(4)), None).eval()


def test_the_workspace_is_reused_and_never_leaks_into_outputs() -> None:
    sym = _big_cnn_sym()
    x1, x2 = torch.randn(16, 2, 16, 16), torch.randn(16, 2, 16, 16)
    with torch.no_grad():
        y1 = sym(x1)
        y1_copy = y1.clone()
        rows1, _ = sym._orbit_outputs(x1)
        rows2, _ = sym._orbit_outputs(x2)
        y2 = sym(x2)
    assert rows1.data_ptr() == rows2.data_ptr()  # the same buffer, written twice
    assert torch.equal(y1, y1_copy)  # an earlier output is not touched by later calls
    torch.testing.assert_close(y2, equitune_ref(sym, x2), atol=TOL, rtol=TOL)
    # the public orbit_outputs allocates: its rows stay valid after later calls
    with torch.no_grad():
        public, _ = sym.orbit_outputs(x1)
        sym(x2)
    assert public.data_ptr() != rows1.data_ptr()
    torch.testing.assert_close(public, sym.in_action.orbit(x1).flatten(0, 1))


def test_no_workspace_when_autograd_records() -> None:
    sym = _big_cnn_sym()
    x = torch.randn(16, 2, 16, 16)
    rows, _ = sym._orbit_outputs(x)  # grad enabled: a fresh tensor the graph may keep
    rows2, _ = sym._orbit_outputs(x)
    assert rows.data_ptr() != rows2.data_ptr()
    assert not sym.__dict__.get("_workspaces")


def test_inference_mode_and_no_grad_buffers_do_not_mix() -> None:
    """An inference tensor cannot be written outside inference mode: each mode has its own buffer."""
    sym = _big_cnn_sym()
    x = torch.randn(16, 2, 16, 16)
    with torch.inference_mode():
        a = sym(x)
    with torch.no_grad():
        b = sym(x)
    with torch.inference_mode():
        c = sym(x)
    torch.testing.assert_close(a, b, atol=TOL, rtol=TOL)
    torch.testing.assert_close(a, c, atol=TOL, rtol=TOL)
    assert len(sym.__dict__["_workspaces"]) == 2


def test_threads_get_their_own_workspace() -> None:
    sym = _big_cnn_sym()
    xs = [torch.randn(16, 2, 16, 16) for _ in range(4)]
    refs = [equitune_ref(sym, x).detach() for x in xs]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            with torch.no_grad():
                for _ in range(20):
                    torch.testing.assert_close(sym(xs[i]), refs[i], atol=TOL, rtol=TOL)
        except BaseException as e:  # re-raised in the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_workspaces_are_not_copied_or_pickled() -> None:
    sym = _big_cnn_sym()
    x = torch.randn(16, 2, 16, 16)
    with torch.no_grad():
        y = sym(x)
    assert sym.__dict__["_workspaces"]
    for clone in (copy.deepcopy(sym), pickle.loads(pickle.dumps(sym))):
        assert not clone.__dict__.get("_workspaces")
        with torch.no_grad():
            torch.testing.assert_close(clone(x), y, atol=TOL, rtol=TOL)


def test_the_workspace_keeps_a_few_shapes() -> None:
    sym = _big_cnn_sym()
    with torch.no_grad():
        for B in range(8, 16):
            sym(torch.randn(B, 2, 16, 16))
    assert len(sym.__dict__["_workspaces"]) == 4


class _ActionWithoutOut(GroupAction[Any]):
    """A user action written before ``orbit`` took ``out=``."""

    def __init__(self) -> None:
        inner = image_action(dihedral(4))
        super().__init__(inner.group, inner.transforms)
        self.inner = inner

    def _apply_transform(self, x: Tensor, t: Any) -> Tensor:
        return self.inner._apply_transform(x, t)

    def orbit(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return torch.stack([self._apply_transform(x, t) for t in self.transforms])


def test_a_user_action_without_out_still_works() -> None:
    sym = EquiTune(_cnn(), _ActionWithoutOut(), None).eval()
    x = torch.randn(16, 2, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(sym(x), equitune_ref(sym, x), atol=TOL, rtol=TOL)


# -- the actions' fast paths ----------------------------------------------------------------------------
IMAGE_GROUPS = [dihedral(4), cyclic(4), cyclic(2), flip(), dihedral(2)]


@pytest.mark.parametrize("dims", [(-2, -1), (-1, -2), (-3, -2), (-2, -3), (-3, -1)])
@pytest.mark.parametrize("group", IMAGE_GROUPS, ids=[g.name for g in IMAGE_GROUPS])
@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_image_orbit_and_inverse_match_apply(dims: tuple[int, int], group: Any, dtype: torch.dtype) -> None:
    act = image_action(group, dims=dims)
    base = (torch.randn(3, 2, 5, 5, 5) * 40).to(dtype)
    strided = torch.cat([base, base], -1)[..., ::2]  # same values, not contiguous
    for x in (base, base.transpose(0, 1).contiguous().transpose(0, 1), strided):
        orbit = act.orbit(x)
        buf = torch.full_like(orbit, 7)
        assert act.orbit(x, out=buf) is buf
        back = act.inverse_stacked(orbit)
        for g in group.elements:
            ref = act.apply(x, g)
            assert torch.equal(orbit[g.index], ref) and torch.equal(buf[g.index], ref)
            assert torch.equal(back[g.index], x)
        idx = torch.arange(x.shape[0]) % group.order
        for inverse in (False, True):
            each = act.apply_each(x, idx, inverse=inverse)
            for b in range(x.shape[0]):
                g = group[int(idx[b])]
                assert torch.equal(each[b], act.apply(x[b : b + 1], ~g if inverse else g)[0])


def test_image_plan_transposes_once_per_orbit() -> None:
    """D4 and C4 need one gather (the transpose); every other element is a copy or a flip."""
    for group in (dihedral(4), cyclic(4)):
        act = image_action(group)
        kinds = [step[1] for step in act._plan(act.transforms)]
        assert kinds.count("gather") == 1 and kinds.count("same") == 1


def test_image_orbit_records_gradients() -> None:
    act = image_action(dihedral(4))
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    weights = torch.randn(8, 2, 3, 6, 6)
    (act.orbit(x) * weights).sum().backward()
    ref = sum(act.apply(weights[g], ~act.group[g]) for g in range(8))
    torch.testing.assert_close(x.grad, ref)
    out = torch.empty(8, 2, 3, 6, 6)
    y = act.orbit(x, out=out)  # autograd records: out= variants are avoided, the graph still flows
    assert y.requires_grad


@pytest.mark.parametrize("n_rows", [1, 5, 3000])  # 3000·4 features: past take_max_numel, gather path
def test_signed_permutations_small_and_large_agree(n_rows: int) -> None:
    acts: list[SignedPermAction] = [
        signed_permutation_action(dihedral(4), [[3, 0, 1, 2], [3, 2, 1, 0]]),
        signed_permutation_action(flip(), [[1, 0, 2, 3]], signs=[[1, 1, -1, 1]]),
        Z2_OBS,
    ]
    for act in acts:
        for x in (torch.randn(n_rows, 4), torch.randn(4, n_rows).t(), torch.randn(2, n_rows, 4)):
            orbit = act.orbit(x)
            buf = torch.empty_like(orbit)
            torch.testing.assert_close(act.orbit(x, out=buf), orbit, atol=0, rtol=0)
            for g in act.group.elements:
                assert torch.equal(orbit[g.index], act.apply(x, g))
            back = act.inverse_stacked(orbit)
            for g in act.group.elements:
                assert torch.equal(back[g.index], x)


def test_trivial_orbit_writes_out() -> None:
    act = TrivialAction(dihedral(4))
    x = torch.randn(3, 2)
    out = torch.empty(8, 3, 2)
    assert act.orbit(x, out=out) is out and torch.equal(out, x.expand(8, 3, 2))


def test_image_actions_are_image_actions() -> None:
    assert isinstance(image_action(dihedral(4)), ImageAction)


@pytest.mark.parametrize("method", ["equitune", "equizero", "lambda"])
@pytest.mark.parametrize(("name", "factory", "act", "out", "shape"), CASES, ids=IDS)
def test_inference_mode_first_then_training(
    method: str, name: str, factory: Any, act: GroupAction[Any], out: Any, shape: tuple[int, ...]
) -> None:
    """Index tables cached during an inference-mode call are plain tensors: training afterwards works
    (an inference tensor cannot be saved for backward)."""
    act, out = copy.deepcopy((act, out))  # fresh caches (one copy: both keep the same group)
    sym = _make(method, factory, act, out)
    x = torch.randn(5, *shape)
    with torch.inference_mode():
        sym(x)
        sym.forward_with_weights(x)
    sym.train()
    sym(x).square().sum().backward()
    assert all(p.grad is not None for p in sym.model.parameters())
