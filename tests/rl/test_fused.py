"""The fused RL symmetrizers match the core ones: equizero (max-value proxy, ties averaged, straight-through
gradient = equitune's) and λ-equitune with ``obs+q`` features (no second backbone pass)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from equirl.rl.policies import (
    LambdaFeatures,
    ObsLambdaNet,
    QLambdaEquiTune,
    QValueEquiZero,
    quantile_max_value,
)
from equirl.rl.spec import load_spec
from equirl.symmetrizers import EquiTune, EquiZero, LambdaEquiTune, equivariance_errors

ATOL = 1e-5


def _setup(env_id: str = "equirl/GridWorld-v0") -> tuple[nn.Module, object, object, torch.Tensor]:
    from equirl.rl.envs import make_env
    from equirl.rl.policies import policy_obs_action

    sym = load_spec(env_id)
    space = make_env(env_id).observation_space
    in_act = policy_obs_action(sym, space)
    flat = int(torch.tensor(space.shape).prod())
    net = nn.Sequential(nn.Flatten(), nn.Linear(flat, 32), nn.ReLU(), nn.Linear(32, sym.n_actions))
    x = torch.as_tensor(space.sample()[None].repeat(12, 0)).float()
    x = x + torch.randn_like(x) * 0.1
    return net, in_act, sym.action_action(), x


def test_fused_equizero_matches_core_with_ties_and_equivariance() -> None:
    torch.manual_seed(0)
    net, in_act, out_act, x = _setup()
    fused = QValueEquiZero(net, in_act, out_act)
    core = EquiZero(net, in_act, out_act, proxy="max_value")
    # a D4-invariant input (all-zero board) makes every element tie
    x = torch.cat([x, torch.zeros_like(x[:2])])
    with torch.no_grad():
        a, b = fused.forward_with_weights(x), core.forward_with_weights(x)
    assert torch.allclose(a.output, b.output, atol=ATOL)
    assert torch.allclose(a.weights, b.weights, atol=ATOL)
    errs = equivariance_errors(fused, in_act, out_act, x)
    assert len(errs) == 8 and max(float(e) for e in errs.values()) <= ATOL


def test_fused_equizero_straight_through_gradient_is_equitune() -> None:
    torch.manual_seed(1)
    net, in_act, out_act, x = _setup()
    fused, tune = QValueEquiZero(net, in_act, out_act).train(), EquiTune(net, in_act, out_act)
    c = torch.randn(x.shape[0], 4)
    grads = []
    for m in (fused, tune):
        net.zero_grad()
        (c * m(x)).sum().backward()
        grads.append([p.grad.clone() for p in net.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1]) == 4
    for g1, g2 in zip(*grads):
        assert torch.allclose(g1, g2, atol=ATOL)
    core = EquiZero(net, in_act, out_act, proxy="max_value")
    assert torch.allclose(fused(x), core(x), atol=ATOL)  # forward: equizero
    with torch.no_grad():  # no gradient: plain equizero, no straight-through work
        assert torch.allclose(fused(x), core(x), atol=ATOL)


def test_fused_equizero_quantiles_match_core() -> None:
    torch.manual_seed(2)
    sym = load_spec("CartPole-v1")
    net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 5 * 2), nn.Unflatten(1, (5, 2)))
    in_act, out_act = sym.obs_action(), sym.action_action()
    x = torch.randn(20, 4)
    fused = QValueEquiZero(net, in_act, out_act, quantile=True)
    core = EquiZero(net, in_act, out_act, proxy=quantile_max_value)
    with torch.no_grad():
        assert torch.allclose(fused(x), core(x), atol=ATOL)


@pytest.mark.parametrize("quantile", [False, True])
def test_fused_lambda_matches_feature_recomputation(quantile: bool) -> None:
    torch.manual_seed(3)
    sym = load_spec("Acrobot-v1")
    A = sym.n_actions
    if quantile:
        net: nn.Module = nn.Sequential(
            nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4 * A), nn.Unflatten(1, (4, A))
        )
    else:
        net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, A))
    in_act, out_act = sym.obs_action(), sym.action_action()
    lam = ObsLambdaNet(6 + A, (8,))
    nn.init.normal_(lam.params)  # non-uniform λ
    feats = LambdaFeatures(net, 1.0, quantile)
    fused = QLambdaEquiTune(net, in_act, out_act, lambda_net=lam, lambda_features=feats, quantile=quantile)
    core = LambdaEquiTune(net, in_act, out_act, lambda_net=lam, lambda_features=feats)
    x = torch.randn(10, 6)
    a, b = fused.forward_with_weights(x), core.forward_with_weights(x)
    assert torch.allclose(a.output, b.output, atol=ATOL)
    assert torch.allclose(a.weights, b.weights, atol=ATOL)
    assert float(a.weights.detach().std(0).mean()) > 1e-3  # λ is really non-uniform
    errs = equivariance_errors(fused, in_act, out_act, x)
    assert max(float(e) for e in errs.values()) <= ATOL


@pytest.mark.parametrize("hidden", [(), (8,), (8, 4)])
def test_obs_lambda_net_is_an_mlp_in_one_flat_parameter(hidden: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    lam = ObsLambdaNet(6, hidden, scale=0.5)
    assert [name for name, _ in lam.named_parameters()] == ["params"]
    z = torch.randn(7, 2, 3)  # flattened to 6 features
    assert torch.equal(lam(z), torch.zeros(7))  # zero-initialised last layer: λ starts as equitune
    nn.init.normal_(lam.params)
    h = z.flatten(1) * 0.5
    layers = lam.layers()
    for w, b in layers[:-1]:
        assert b is not None
        h = torch.relu(h @ w.t() + b)
    w, b = layers[-1]
    assert b is None  # a constant logit cancels in the softmax over the group
    torch.testing.assert_close(lam(z), (h @ w.t()).squeeze(-1), atol=ATOL, rtol=0)
    # every layer is a view of the flat parameter: one gradient tensor for the optimizer
    lam(z).sum().backward()
    assert lam.params.grad is not None and lam.params.grad.shape == lam.params.shape


def test_obs_lambda_net_loads_the_earlier_sequential_layout() -> None:
    torch.manual_seed(1)
    old = nn.Sequential(nn.Flatten(), nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 1))
    state = {f"net.{k}": v for k, v in old.state_dict().items()}
    lam = ObsLambdaNet(6, (8,))
    lam.load_state_dict(state)
    z = torch.randn(5, 3, 6)  # 3 group elements x 5 samples
    logits = lam(z.reshape(15, 6)).view(5, 3)
    # the same λ weights: the dropped last bias shifts every logit alike
    torch.testing.assert_close(
        torch.softmax(logits, 1), torch.softmax(old(z.reshape(15, 6)).view(5, 3), 1), atol=ATOL, rtol=0
    )


def test_obs_lambda_net_with_other_hidden_sizes_fails_with_the_fix() -> None:
    from equirl.errors import SymmetryError

    old = nn.Sequential(nn.Flatten(), nn.Linear(6, 64), nn.ReLU(), nn.Linear(64, 1))
    with pytest.raises(SymmetryError, match=r"hidden sizes \[64\], this one \[\]: pass the lambda_hidden"):
        ObsLambdaNet(6, ()).load_state_dict({f"net.{k}": v for k, v in old.state_dict().items()})
    with pytest.raises(SymmetryError, match="lambda_hidden"):
        ObsLambdaNet(6, ()).load_state_dict(ObsLambdaNet(6, (8,)).state_dict())


@pytest.mark.parametrize("proxy", ["max_value", "action_gap", "min_spread"])
@pytest.mark.parametrize("env_id", ["equirl/GridWorld-v0", "LunarLander-v3"])
def test_fused_equizero_proxies_match_core_and_are_equivariant(proxy: str, env_id: str) -> None:
    torch.manual_seed(4)
    net, in_act, out_act, x = _setup(env_id)
    fused = QValueEquiZero(net, in_act, out_act, proxy=proxy)
    core = EquiZero(net, in_act, out_act, proxy=proxy)
    with torch.no_grad():
        a, b = fused.forward_with_weights(x), core.forward_with_weights(x)
    assert torch.allclose(a.output, b.output, atol=ATOL)
    assert torch.allclose(a.weights, b.weights, atol=ATOL)
    errs = equivariance_errors(fused, in_act, out_act, x)
    assert len(errs) == in_act.group.order and max(float(e) for e in errs.values()) <= ATOL


@pytest.mark.parametrize("proxy", ["action_gap", "min_spread", "quantile_spread"])
def test_fused_equizero_quantile_proxies_match_core(proxy: str) -> None:
    from equirl.symmetrizers.proxies import PROXIES

    torch.manual_seed(5)
    sym = load_spec("Acrobot-v1")
    A = sym.n_actions
    net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 5 * A), nn.Unflatten(1, (5, A)))
    in_act, out_act = sym.obs_action(), sym.action_action()
    x = torch.randn(20, 6)
    fused = QValueEquiZero(net, in_act, out_act, quantile=True, proxy=proxy)
    # the core reference on the quantile-averaged Q-values (quantile_spread reads the quantiles themselves)
    ref = PROXIES[proxy] if proxy == "quantile_spread" else (lambda ys: PROXIES[proxy](ys.mean(-2)))
    core = EquiZero(net, in_act, out_act, proxy=ref)
    with torch.no_grad():
        assert torch.allclose(fused(x), core(x), atol=ATOL)
    assert max(float(e) for e in equivariance_errors(fused, in_act, out_act, x).values()) <= ATOL


def test_fused_equizero_refuses_unknown_and_quantile_only_proxies() -> None:
    from equirl.errors import SymmetryError

    net, in_act, out_act, _ = _setup("CartPole-v1")
    with pytest.raises(SymmetryError, match="quantile"):
        QValueEquiZero(net, in_act, out_act, proxy="quantile_spread")
    with pytest.raises(SymmetryError, match="fused"):
        QValueEquiZero(net, in_act, out_act, proxy="entropy")
