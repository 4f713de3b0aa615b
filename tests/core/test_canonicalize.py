"""Learned canonicalization (Kaba et al.; Mondal et al.): exact equivariance for every element, one big
model pass, deterministic ties, the prior towards the identity and straight-through gradients."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from equirl import check_equivariance, symmetrize
from equirl.actions import image_action, permutation_action, rotation_action, token_action
from equirl.groups import dihedral, permutation_group
from equirl.symmetrizers import Canonicalize, EquiTune, ScoreNet, equivariance_errors
from tests.core.test_multigroup import CountingModel, block_actions, flat_image_actions

ATOL = 1e-5


def _cnn(out: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, out))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_invariant_d4_images_every_element(seed: int) -> None:
    torch.manual_seed(seed)
    act = image_action(dihedral(4))
    can = symmetrize(_cnn(5), act, method="canonicalize")
    assert isinstance(can, Canonicalize)
    x = torch.randn(6, 1, 6, 6)
    errs = equivariance_errors(can, act, None, x)
    assert len(errs) == 8 and max(errs.values()) < ATOL
    assert check_equivariance(can.model, act, None, x) > 1e-3


def test_equivariant_outputs_full_product() -> None:
    in_act, out_act = block_actions()  # C4 × Z2 × Z2 with permuted Q-values
    can = Canonicalize(nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 6)), in_act, out_act)
    x = torch.randn(7, 8)
    errs = equivariance_errors(can, in_act, out_act, x)
    assert len(errs) == 16 and max(errs.values()) < ATOL


def test_d4_equivariant_image_outputs() -> None:
    """Output = an image-shaped map transformed like the input (segmentation-style)."""
    act = image_action(dihedral(4))
    can = Canonicalize(nn.Conv2d(1, 2, 3, padding=1), act, act)
    x = torch.randn(3, 1, 5, 5)
    assert check_equivariance(can, act, act, x) < ATOL


def test_big_model_runs_once_per_input() -> None:
    act = flat_image_actions(with_mirror=True)  # |G| = 16
    model = CountingModel(nn.Linear(16, 3))
    can = Canonicalize(model, act)
    can(torch.randn(9, 16))
    assert model.calls == 1 and model.rows == 9


def test_ties_average_or_first() -> None:
    class Const(nn.Module):
        def forward(self, z: Tensor) -> Tensor:
            return torch.zeros(z.shape[0])

    act = rotation_action(4)
    model = CountingModel(_cnn(3))
    x = torch.randn(2, 1, 6, 6)
    avg = Canonicalize(model, act, scorer=Const())
    torch.testing.assert_close(avg(x), EquiTune(model, act)(x), atol=ATOL, rtol=0)
    first = Canonicalize(model, act, scorer=Const(), tie_break="first")
    model.rows = 0
    torch.testing.assert_close(first(x), model.inner(x))  # deterministic: the identity (index 0)
    assert model.rows == 2
    assert first.canonical_elements(x).tolist() == [0, 0]


def test_symmetric_inputs_stay_exact() -> None:
    act = rotation_action(4)
    can = Canonicalize(_cnn(3), act)
    base = torch.randn(2, 1, 3, 3)  # a C4-symmetric 6x6 image from four rotated quadrants
    top = torch.cat([base, torch.rot90(base, -1, (-2, -1))], -1)
    bottom = torch.cat([torch.rot90(base, 1, (-2, -1)), torch.rot90(base, 2, (-2, -1))], -1)
    x = torch.cat([top, bottom], -2)
    assert (act.apply(x, act.group[1]) - x).abs().max() == 0
    assert check_equivariance(can, act, None, x) < ATOL


def test_matches_reference_loop() -> None:
    in_act, out_act = block_actions()
    can = Canonicalize(nn.Linear(8, 6), in_act, out_act, chunk_size=3)
    x = torch.randn(7, 8)
    torch.testing.assert_close(can(x), can.forward_loop(x), atol=ATOL, rtol=0)


def test_token_inputs_with_embedding_scorer() -> None:
    sw = permutation_group([(0, 2, 1, 3, 4)], labels=["e", "swap"])  # swap tokens 1 <-> 2
    tok = token_action(sw)
    out = permutation_action(sw, [[1, 0, 2]])  # and the first two logits

    class Bag(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(5, 8)
            self.lin = nn.Linear(8, 3)

        def forward(self, t: Tensor) -> Tensor:
            return self.lin(torch.tanh(self.emb(t)).sum(1))

    can = Canonicalize(Bag(), tok, out, scorer=ScoreNet(vocab_size=5, hidden=(8,)))
    x = torch.randint(0, 5, (6, 7))
    assert check_equivariance(can, tok, out, x) < ATOL


def test_prior_loss_pulls_towards_identity() -> None:
    """A toy training loop on the prior alone: the loss drops and upright inputs stay upright, while
    rotated inputs are mapped back (g*(k·x) = k⁻¹ by equivariance of the scores)."""
    torch.manual_seed(0)
    act = rotation_action(4)
    # "upright" images: a bright top row (a pose cue), plus noise
    x = 0.3 * torch.randn(64, 1, 6, 6)
    x[:, :, 0, :] += 2.0
    can = Canonicalize(_cnn(3), act, scorer=ScoreNet(in_features=36, hidden=(16,)), prior_weight=0.5)
    opt = torch.optim.Adam(can.scorer.parameters(), lr=1e-2)
    first = float(can.prior_loss(x).detach())
    for _ in range(60):
        opt.zero_grad()
        loss = can.prior_loss(x)
        loss.backward()
        opt.step()
    last = float(can.prior_loss(x).detach())
    assert last < 0.5 * first
    assert (can.canonical_elements(x) == 0).float().mean() > 0.95
    r1 = act.group[1]
    assert (can.canonical_elements(act.apply(x, r1)) == (~r1).index).float().mean() > 0.95
    # the weight scales the loss
    can.prior_weight = 1.0
    torch.testing.assert_close(can.prior_loss(x), 2 * torch.tensor(last), rtol=1e-4, atol=1e-6)


def test_straight_through_gradients_reach_scorer_and_model() -> None:
    act = rotation_action(4)
    can = Canonicalize(_cnn(3), act, scorer=ScoreNet(hidden=(8,)))
    x = torch.randn(4, 1, 6, 6)
    can.eval()
    with torch.no_grad():
        y_eval = can(x)
    can.train()
    y = can(x)
    torch.testing.assert_close(y, y_eval, atol=0, rtol=0)  # the straight-through term is zero in value
    y.pow(2).sum().backward()
    for mod in (can.model, can.scorer):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in mod.parameters())


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="tie_break"):
        Canonicalize(_cnn(3), rotation_action(4), tie_break="random")
    with pytest.raises(ValueError, match="temperature"):
        Canonicalize(_cnn(3), rotation_action(4), temperature=0.0)
    with pytest.raises(ValueError, match="prior_weight"):
        Canonicalize(_cnn(3), rotation_action(4), prior_weight=-1.0)
