"""The one small-MLP module (:mod:`equirl.symmetrizers.nets`): flat parameter, starting behaviour of the
λ-nets and scorers, lazy input size, and loading of state dicts saved with the earlier layouts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from equirl.errors import SymmetryError
from equirl.rl.policies import ObsLambdaNet as RLObsLambdaNet
from equirl.symmetrizers import LambdaNet, ScoreNet, SmallMLP
from equirl.symmetrizers.nets import ObsLambdaNet

ATOL = 1e-6


def _sequential(n_in: int, hidden: tuple[int, ...], act: type[nn.Module]) -> nn.Sequential:
    """The layout ``LambdaNet`` / ``ScoreNet`` used before the flat parameter."""
    layers: list[nn.Module] = [nn.Flatten()]
    prev = n_in
    for h in hidden:
        layers += [nn.Linear(prev, h), act()]
        prev = h
    layers.append(nn.Linear(prev, 1))
    return nn.Sequential(*layers)


def test_the_rl_name_is_the_shared_class() -> None:
    assert RLObsLambdaNet is ObsLambdaNet
    assert all(issubclass(c, SmallMLP) for c in (LambdaNet, ScoreNet, ObsLambdaNet))


@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("hidden", [(), (8,), (8, 4)])
def test_lambda_net_starts_at_zero_and_scorer_does_not(lazy: bool, hidden: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    z = torch.randn(5, 2, 3)
    lam = LambdaNet(None if lazy else 6, hidden)
    assert torch.equal(lam(z), torch.zeros(5))  # λ-equitune starts exactly as equitune
    score = ScoreNet(None if lazy else 6, hidden)
    s = score(z)
    assert s.shape == (5,) and float(s.detach().std()) > 0  # scores differ between rows from the start
    for net in (lam, score):
        assert [n for n, _ in net.named_parameters()] == ["params"]
        assert net.in_features == 6


@pytest.mark.parametrize("hidden", [(8,), (8, 4)])
def test_forward_is_the_mlp_of_its_layers(hidden: tuple[int, ...]) -> None:
    torch.manual_seed(1)
    for net, act in ((LambdaNet(6, hidden), torch.relu), (ScoreNet(6, hidden), torch.tanh)):
        nn.init.normal_(net.params)
        z = torch.randn(7, 6)
        h = z
        *layers, (w, b) = net.layers()
        for wk, bk in layers:
            h = act(h @ wk.t() + bk)
        assert b is not None  # these two keep the last bias (ObsLambdaNet drops it)
        torch.testing.assert_close(net(z), (h @ w.t() + b).squeeze(-1), atol=ATOL, rtol=0)


@pytest.mark.parametrize("cls, act", [(LambdaNet, nn.ReLU), (ScoreNet, nn.Tanh)])
@pytest.mark.parametrize("lazy", [False, True])
def test_the_earlier_sequential_layout_loads(cls: type[SmallMLP], act: type[nn.Module], lazy: bool) -> None:
    torch.manual_seed(2)
    old = _sequential(6, (8,), act)
    nn.init.normal_(old[-1].weight)
    net = cls(None if lazy else 6, (8,))  # type: ignore[call-arg]
    net.load_state_dict({f"net.{k}": v for k, v in old.state_dict().items()})
    z = torch.randn(9, 6)
    torch.testing.assert_close(net(z), old(z).squeeze(-1), atol=ATOL, rtol=0)


def test_token_scorer_loads_its_embedding_and_layers() -> None:
    torch.manual_seed(3)
    emb = nn.Embedding(5, 4)
    old = _sequential(12, (8,), nn.Tanh)
    state = {"embed.weight": emb.weight.detach().clone()}
    state.update({f"net.{k}": v for k, v in old.state_dict().items()})
    net = ScoreNet(vocab_size=5, embed_dim=4, hidden=(8,))
    net.load_state_dict(state)
    ids = torch.randint(0, 5, (6, 3))
    torch.testing.assert_close(net(ids), old(emb(ids)).squeeze(-1), atol=ATOL, rtol=0)


def test_a_lazy_net_loads_a_flat_state_dict_and_round_trips() -> None:
    torch.manual_seed(4)
    src = ScoreNet(10, (8, 4))
    z = torch.randn(3, 10)
    lazy = ScoreNet(None, (8, 4))
    lazy.load_state_dict(src.state_dict())
    assert lazy.in_features == 10
    torch.testing.assert_close(lazy(z), src(z), atol=0, rtol=0)
    with pytest.raises(SymmetryError, match="scorer_hidden"):
        ScoreNet(None, (7,)).load_state_dict(src.state_dict())


def test_mismatched_hidden_sizes_fail_in_one_line() -> None:
    old = _sequential(6, (64,), nn.ReLU)
    with pytest.raises(SymmetryError, match=r"hidden sizes \[64\], this one \[8\]: pass the lambda_hidden"):
        LambdaNet(6, (8,)).load_state_dict({f"net.{k}": v for k, v in old.state_dict().items()})


def test_dtype_follows_the_parameters_and_optimizers_see_one_tensor() -> None:
    net = ScoreNet(None, (8,)).double()
    out = net(torch.randn(4, 6))  # float input, double net
    assert out.dtype == torch.float64
    lam = ObsLambdaNet(6, (), scale=0.5)
    assert lam.params.shape == (6,)  # a linear λ: the weight vector, no bias
    x = torch.randint(0, 255, (4, 6), dtype=torch.uint8)
    nn.init.normal_(lam.params)
    torch.testing.assert_close(lam(x), (x.float() * 0.5) @ lam.params, atol=ATOL, rtol=0)
