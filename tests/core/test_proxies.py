"""The equizero proxies added for RL (``action_gap``, ``min_spread``, ``quantile_spread``): each equals a
brute-force per-element Python reference and keeps equizero exactly equivariant for every element."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from equirl import check_equivariance
from equirl.registry import EQUIZERO, EQUIZERO_PROXIES, get_method
from equirl.symmetrizers import PROXIES, EquiZero, equivariance_errors
from equirl.symmetrizers.proxies import action_gap, min_spread, quantile_spread

ATOL = 1e-5


def _gap_ref(q: list[float]) -> float:
    s = sorted(q, reverse=True)
    return -(s[0] - s[1])


def _spread_ref(q: list[float]) -> float:
    return max(q) - min(q)


def _quantile_spread_ref(z: list[list[float]]) -> float:
    """``z[quantile][action]``: population std of the greedy action's quantiles (greedy by the mean)."""
    n, a = len(z), len(z[0])
    means = [sum(z[i][k] for i in range(n)) / n for k in range(a)]
    best = max(range(a), key=means.__getitem__)
    col = [z[i][best] for i in range(n)]
    mu = sum(col) / n
    return (sum((c - mu) ** 2 for c in col) / n) ** 0.5


@pytest.mark.parametrize("name,ref", [("action_gap", _gap_ref), ("min_spread", _spread_ref)])
def test_q_proxies_equal_a_per_element_loop(name: str, ref: object) -> None:
    torch.manual_seed(0)
    ys = torch.randn(8, 5, 4)  # (|G|, B, A)
    got = PROXIES[name](ys)
    assert got.shape == (8, 5)
    for g in range(8):
        for b in range(5):
            assert abs(float(got[g, b]) - ref(ys[g, b].tolist())) < 1e-6  # type: ignore[operator]


def test_quantile_spread_equals_a_per_element_loop() -> None:
    torch.manual_seed(1)
    ys = torch.randn(4, 3, 7, 3)  # (|G|, B, n_quantiles, A)
    got = quantile_spread(ys)
    for g in range(4):
        for b in range(3):
            assert abs(float(got[g, b]) - _quantile_spread_ref(ys[g, b].tolist())) < 1e-6
    from equirl.errors import EquirlError

    with pytest.raises(EquirlError, match="quantile"):
        quantile_spread(torch.randn(4, 3, 2))


def test_action_gap_single_action_is_zero_and_positions_are_summed() -> None:
    assert torch.equal(action_gap(torch.randn(2, 3, 1)), torch.zeros(2, 3))
    ys = torch.randn(2, 3, 4, 5)  # sequence positions between B and the logits are summed
    torch.testing.assert_close(min_spread(ys), (ys.amax(-1) - ys.amin(-1)).sum(-1))


def test_new_proxies_are_registered() -> None:
    for name in ("action_gap", "min_spread", "quantile_spread"):
        assert name in EQUIZERO_PROXIES and name in PROXIES
    assert get_method(EQUIZERO).option("proxy").check("action_gap") is None  # type: ignore[union-attr]


class _Grid(nn.Module):
    """A non-equivariant Q-network on 5x5 boards with 4 move actions (the D4 gridworld's shape)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(25, 32), nn.Tanh(), nn.Linear(32, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _d4_actions() -> tuple[object, object]:
    from equirl.rl.spec import load_spec

    sym = load_spec("equirl/GridWorld-v0")
    return sym.obs_action(image_dims=(-2, -1)), sym.action_action()


@pytest.mark.parametrize("proxy", ["action_gap", "min_spread", "max_value"])
def test_equizero_with_new_proxies_is_exactly_equivariant_and_picks_the_loop_argmin(proxy: str) -> None:
    torch.manual_seed(2)
    in_act, out_act = _d4_actions()
    model = _Grid()
    zero = EquiZero(model, in_act, out_act, proxy=proxy).eval()  # type: ignore[arg-type]
    x = torch.randn(6, 5, 5)
    errs = equivariance_errors(zero, in_act, out_act, x)  # type: ignore[arg-type]
    assert len(errs) == 8 and max(float(e) for e in errs.values()) <= ATOL
    assert check_equivariance(zero, in_act, out_act, x) <= ATOL  # type: ignore[arg-type]
    picks = zero.forward_with_weights(x).weights.argmax(0)
    ref = {"action_gap": _gap_ref, "min_spread": _spread_ref, "max_value": lambda q: -max(q)}[proxy]
    with torch.no_grad():
        for b in range(x.shape[0]):
            losses = [
                ref(model(in_act.apply(x[b : b + 1], g))[0].tolist())  # type: ignore[attr-defined]
                for g in in_act.group.elements  # type: ignore[attr-defined]
            ]
            assert int(picks[b]) == min(range(len(losses)), key=losses.__getitem__)


def test_quantile_spread_equizero_is_equivariant() -> None:
    torch.manual_seed(3)
    in_act, out_act = _d4_actions()
    model = nn.Sequential(nn.Flatten(), nn.Linear(25, 6 * 4), nn.Unflatten(1, (6, 4)))
    zero = EquiZero(model, in_act, out_act, proxy="quantile_spread").eval()  # type: ignore[arg-type]
    x = torch.randn(5, 5, 5)
    assert check_equivariance(zero, in_act, out_act, x) <= ATOL  # type: ignore[arg-type]
