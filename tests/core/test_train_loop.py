"""The shared Adam loop (:func:`equirl.train_loop.fit`) and the shared tie / straight-through pieces."""

from __future__ import annotations

import doctest
import math

import pytest
import torch
from torch import nn

import equirl.train_loop
from equirl.symmetrizers.methods import straight_through, tie_mask, tie_weights
from equirl.train_loop import NonFiniteLossError, fit


def test_docstring_example() -> None:
    result = doctest.testmod(equirl.train_loop)
    assert result.failed == 0 and result.attempted > 0


def test_fit_trains_only_the_given_params_and_returns_every_loss() -> None:
    torch.manual_seed(0)
    a, b = nn.Linear(3, 1), nn.Linear(3, 1)
    x, y = torch.randn(32, 3), torch.randn(32, 1)
    b_before = [p.detach().clone() for p in b.parameters()]
    seen: list[tuple[int, float]] = []
    losses = fit(
        a.parameters(),
        lambda step: (a(x) + b(x) - y).square().mean(),
        steps=50,
        lr=0.05,
        on_step=lambda s, v: seen.append((s, v)),
    )
    assert len(losses) == 50 and losses[-1] < losses[0]
    assert seen == list(enumerate(losses))
    assert all(torch.equal(p, q) for p, q in zip(b.parameters(), b_before))


def test_fit_matches_a_hand_written_adam_loop_with_clip_decay_and_schedule() -> None:
    torch.manual_seed(1)
    x, y = torch.randn(16, 4), torch.randn(16, 2)
    nets = [nn.Linear(4, 2), nn.Linear(4, 2)]
    nets[1].load_state_dict(nets[0].state_dict())

    def lr_lambda(s: int) -> float:
        return 0.5 + 0.5 * math.cos(s / 10)

    loss_of = [lambda step, n=n: (n(x) - y).square().mean() * 100 for n in nets]
    got = fit(nets[0].parameters(), loss_of[0], 20, 1e-2, weight_decay=0.1, clip=0.5, lr_lambda=lr_lambda)
    params = list(nets[1].parameters())
    opt = torch.optim.Adam(params, lr=1e-2, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    want = []
    for step in range(20):
        loss = loss_of[1](step)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, 0.5)
        opt.step()
        sched.step()
        want.append(loss.item())
    assert got == want
    for p, q in zip(nets[0].parameters(), nets[1].parameters()):
        assert torch.equal(p, q)


def test_a_non_finite_loss_is_a_one_line_error() -> None:
    w = nn.Parameter(torch.ones(1))
    with pytest.raises(NonFiniteLossError, match=r"fitting w: the loss is nan at step 3 of 5; lower"):
        fit([w], lambda step: w.sum() * (float("nan") if step == 2 else 1.0), 5, 0.1, what="fitting w")


def test_tie_weights_average_ties_and_first_picks_one() -> None:
    s = torch.tensor([[1.0, 0.0, 2.0], [1.0 + 1e-9, 1.0, 2.0], [0.0, 1.0, 2.0 - 1e-3]])
    w = tie_weights(s, 1e-6, 1e-6)
    torch.testing.assert_close(w, torch.tensor([[0.5, 0.0, 0.5], [0.5, 0.5, 0.5], [0.0, 0.5, 0.0]]))
    first = tie_mask(s, 1e-6, 1e-6, first=True)
    assert first.sum(0).tolist() == [1.0, 1.0, 1.0] and first[:, 2].tolist() == [1.0, 0.0, 0.0]


def test_straight_through_has_the_hard_value_and_the_soft_gradient() -> None:
    x = torch.randn(5, requires_grad=True)
    hard, soft = (3 * x).detach().round(), 3 * x
    y = straight_through(hard, soft)
    assert torch.equal(y, hard)
    (g,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(g, torch.full((5,), 3.0))
