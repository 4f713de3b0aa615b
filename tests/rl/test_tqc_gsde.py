"""TQC (sb3-contrib) and gSDE agents: equivariant actors, invariant (quantile) critics and values,
log-probabilities consistent with what the symmetrized policy samples, save/load, and the RL-zoo's gSDE
PPO / TQC Pendulum agents under every method."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sb3_contrib import TQC
from stable_baselines3 import PPO, SAC

import equirl.rl  # noqa: F401  (registers the aliases)
from equirl.registry import BASE, EQUITUNE, EQUIZERO, LAMBDA
from equirl.rl.build import load_plain, load_pretrained
from equirl.rl.evaluation import evaluate
from equirl.rl.policies import EquiTQCPolicy, concat_action
from equirl.rl.spec import load_spec
from equirl.symmetrizers import check_equivariance
from tests.rl.helpers import perturb_lambda

METHODS = (BASE, EQUITUNE, EQUIZERO, LAMBDA)
ATOL = 1e-5
ENV = "Pendulum-v1"


def _off(algo: Any, method: str, use_sde: bool = False, **pk: Any) -> Any:
    kwargs = {"symmetry": ENV, "method": method, "net_arch": [32, 32], **pk}
    if algo is TQC:
        kwargs.setdefault("n_quantiles", 5)
    return algo(
        "EquiMlpPolicy",
        ENV,
        policy_kwargs=kwargs,
        use_sde=use_sde,
        buffer_size=200,
        learning_starts=20,
        batch_size=16,
        seed=0,
        device="cpu",
    )


def _ppo_sde(method: str) -> Any:
    pk = {"symmetry": ENV, "method": method, "net_arch": [16, 16], "log_std_init": -0.5}
    return PPO(
        "EquiMlpPolicy", ENV, use_sde=True, n_steps=32, batch_size=32, policy_kwargs=pk, seed=0, device="cpu"
    )


def _x(n: int = 16) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(n, 3) * 2


def _check_actor(pol: Any, method: str, x: torch.Tensor) -> None:
    """Actor ``[mean | log_std or variance]`` equivariant, every critic (and target) invariant under the
    joint action, ``log π(g·a | g·s) = log π(a | s)`` for every group element."""
    sym = load_spec(ENV)
    oa, aa = sym.obs_action(), sym.action_action()
    out = concat_action(sym.group, [aa, sym.action_action(absolute=True)])
    joint = concat_action(sym.group, [oa, aa])
    err = check_equivariance(pol.actor.symmetric_out, oa, out, x)
    assert (err > 1e-3) if method == BASE else (err <= ATOL)
    acts = torch.rand(x.shape[0], 1) * 2 - 1
    for critic in (pol.critic, pol.critic_target):
        err = check_equivariance(
            lambda z, c=critic: c.joint_values(z[:, :3], z[:, 3:]), joint, None, torch.cat([x, acts], 1)
        )
        assert (err > 1e-3) if method == BASE else (err <= ATOL)
    if method == BASE:
        return
    a = torch.rand(x.shape[0], 1) * 1.8 - 0.9
    with torch.no_grad():
        mean, log_std, _ = pol.actor.get_action_dist_params(x)
        lp = pol.actor.gaussian.proba_distribution(mean, log_std).log_prob(a)
        det = pol.actor(x, deterministic=True)
        for g in range(1, sym.group.order):
            gx = oa.apply(x, g)
            mean_g, log_std_g, _ = pol.actor.get_action_dist_params(gx)
            lp_g = pol.actor.gaussian.proba_distribution(mean_g, log_std_g).log_prob(aa.apply(a, g))
            assert (lp_g - lp).abs().max() <= 1e-4  # float32 atanh / log of the squashing
            assert (pol.actor(gx, deterministic=True) - aa.apply(det, g)).abs().max() <= ATOL


# ---------------------------------------------------------------------------------------------------
# TQC
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_tqc_actor_equivariant_quantile_critics_invariant(method: str) -> None:
    model = _off(TQC, method)
    pol = model.policy
    assert isinstance(pol, EquiTQCPolicy)
    perturb_lambda(pol)
    pol.set_training_mode(False)
    x = _x()
    _check_actor(pol, method, x)
    q = pol.critic(x, torch.zeros(x.shape[0], 1))
    assert q.shape == (x.shape[0], 2, 5)  # TQC's (batch, n_critics, n_quantiles)


def test_tqc_save_load_round_trip_and_learns(tmp_path: Path) -> None:
    model = _off(TQC, LAMBDA)
    perturb_lambda(model.policy)
    model.learn(60)
    path = tmp_path / "tqc.zip"
    model.save(path)
    loaded = TQC.load(path, device="cpu")  # no custom_objects
    assert type(loaded.policy) is EquiTQCPolicy
    x = _x().numpy()
    np.testing.assert_allclose(
        model.predict(x, deterministic=True)[0], loaded.predict(x, deterministic=True)[0], atol=1e-6
    )
    for (k, v), (k2, v2) in zip(model.policy.state_dict().items(), loaded.policy.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    loaded.policy.set_training_mode(False)
    _check_actor(loaded.policy, LAMBDA, _x())


def test_own_tqc_agent_loads_under_every_method(tmp_path: Path) -> None:
    plain = TQC("MlpPolicy", ENV, policy_kwargs={"net_arch": [16], "n_quantiles": 4}, buffer_size=10, seed=0)
    plain.save(tmp_path / "agent.zip")
    x = _x(4)
    want = plain.policy.predict(x.numpy(), deterministic=True)[0]
    for method in METHODS:
        model = load_pretrained(tmp_path / "agent.zip", ENV, method=method, algo="tqc")
        assert isinstance(model.policy, EquiTQCPolicy) and model.policy.critic.n_quantiles == 4
        got = model.policy.predict(x.numpy(), deterministic=True)[0]
        if method == BASE:
            np.testing.assert_allclose(got, want, atol=1e-6)
            continue
        flipped = x * torch.tensor([1.0, -1.0, -1.0])
        np.testing.assert_allclose(
            model.policy.predict(flipped.numpy(), deterministic=True)[0], -got, atol=ATOL
        )


# ---------------------------------------------------------------------------------------------------
# gSDE
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_gsde_ppo_equivariant_mean_invariant_value_consistent_log_prob(method: str) -> None:
    model = _ppo_sde(method)
    pol = model.policy
    perturb_lambda(pol)
    pol.set_training_mode(False)
    sym = load_spec(ENV)
    oa, aa = sym.obs_action(), sym.action_action()
    x = _x()
    err = check_equivariance(pol.symmetric_heads, oa, pol.out_action, x)  # [mean | variance | value]
    if method == BASE:
        assert err > 1e-3
    else:
        assert err <= ATOL
    acts = torch.rand(x.shape[0], 1) * 4 - 2
    with torch.no_grad():
        v, lp, ent = pol.evaluate_actions(x, acts)
        det = pol.get_distribution(x).get_actions(deterministic=True)
        # sampling and log_prob agree: forward's log-probabilities are those evaluate_actions gives
        sampled, _, lp_sampled = pol(x)
        torch.testing.assert_close(pol.evaluate_actions(x, sampled)[1], lp_sampled)
        if method == BASE:
            return
        for g in range(1, sym.group.order):
            gx = oa.apply(x, g)
            v2, lp2, ent2 = pol.evaluate_actions(gx, aa.apply(acts, g))
            assert (v2 - v).abs().max() <= ATOL
            assert (lp2 - lp).abs().max() <= ATOL
            assert ent is not None and ent2 is not None and (ent2 - ent).abs().max() <= ATOL
            det_g = pol.get_distribution(gx).get_actions(deterministic=True)
            assert (det_g - aa.apply(det, g)).abs().max() <= ATOL


def test_gsde_base_variance_is_sb3_marginal_and_samples_follow_it() -> None:
    """The plain head's variance is SB3's gSDE per-state variance (its log_prob's), and the policy's
    samples have that variance (statistically: 20k samples, 5 %)."""
    model = _ppo_sde(BASE)
    pol = model.policy
    x = _x(4)
    with torch.no_grad():
        features = pol.extract_features(x)
        latent_pi = pol.mlp_extractor.forward_actor(features)
        sb3 = pol.action_dist.proba_distribution(pol.action_net(latent_pi), pol.log_std, latent_pi)
        ours = pol.get_distribution(x)
        torch.testing.assert_close(ours.distribution.stddev, sb3.distribution.stddev)
        torch.testing.assert_close(ours.log_prob(torch.ones(4, 1)), sb3.log_prob(torch.ones(4, 1)))
        pol.reset_noise(4)  # nothing to resample
        torch.manual_seed(3)
        samples = torch.stack([ours.sample() for _ in range(20_000)])
    np.testing.assert_allclose(samples.std(0).numpy(), ours.distribution.stddev.numpy(), rtol=0.05)


@pytest.mark.parametrize("algo", [SAC, TQC], ids=["sac", "tqc"])
@pytest.mark.parametrize("method", METHODS)
def test_gsde_sac_tqc_actor_equivariant_and_log_prob_of_its_samples(algo: Any, method: str) -> None:
    model = _off(algo, method, use_sde=True, log_std_init=-1.0)
    pol = model.policy
    perturb_lambda(pol)
    pol.set_training_mode(False)
    x = _x()
    _check_actor(pol, method, x)
    with torch.no_grad():
        actions, log_prob = pol.actor.action_log_prob(x)
        mean, log_std, _ = pol.actor.get_action_dist_params(x)
        again = pol.actor.gaussian.proba_distribution(mean, log_std).log_prob(actions)
    torch.testing.assert_close(again, log_prob, atol=1e-4, rtol=1e-5)


@pytest.mark.slow
def test_gsde_equitune_learns() -> None:
    """SB3's gSDE training loops run (``reset_noise`` is called) and keep the actor equivariant."""
    sym = load_spec(ENV)
    out = concat_action(sym.group, [sym.action_action(), sym.action_action(absolute=True)])
    for model in (_ppo_sde(EQUITUNE), _off(TQC, EQUITUNE, use_sde=True)):
        model.learn(64)
        pol = model.policy
        pol.set_training_mode(False)
        if isinstance(model, PPO):
            assert check_equivariance(pol.symmetric_heads, sym.obs_action(), pol.out_action, _x()) <= ATOL
        else:
            assert check_equivariance(pol.actor.symmetric_out, sym.obs_action(), out, _x()) <= ATOL


def test_gsde_save_load_round_trip(tmp_path: Path) -> None:
    model = _ppo_sde(EQUIZERO)
    model.save(tmp_path / "a.zip")
    loaded = PPO.load(tmp_path / "a.zip", device="cpu")  # no custom_objects
    x = _x()
    with torch.no_grad():
        a = torch.rand(x.shape[0], 1)
        torch.testing.assert_close(
            loaded.policy.evaluate_actions(x, a)[1], model.policy.evaluate_actions(x, a)[1]
        )


# ---------------------------------------------------------------------------------------------------
# RL-zoo gSDE agents (PPO and TQC Pendulum)
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("algo", ["ppo", "tqc"])
def test_zoo_gsde_agents_load_under_every_method(shared_data: Path, algo: str) -> None:
    folder = shared_data / "rl-zoo" / algo / f"{ENV}_1"
    if not folder.is_dir():
        pytest.skip(f"{folder} not in the shared data")
    from equirl.rl.envs import make_vec_env

    sym = load_spec(ENV)
    plain = load_plain(folder, make_vec_env(ENV), algo=algo)
    x = _x(32)
    for method in (EQUITUNE, EQUIZERO, LAMBDA):
        model = load_pretrained(folder, ENV, method=method, algo=algo)
        pol = model.policy
        perturb_lambda(pol)
        pol.set_training_mode(False)
        if algo == "ppo":
            assert check_equivariance(pol.symmetric_heads, sym.obs_action(), pol.out_action, x) <= ATOL
        else:
            _check_actor(pol, method, x)
    # the symmetrized equitune agent still swings the pendulum up
    model = load_pretrained(folder, ENV, method=EQUITUNE, algo=algo)
    assert np.mean(evaluate(model, ENV, n_eval_episodes=2, seed=0)) > -400.0
    assert plain.use_sde


def test_equivariant_tqc_reloads_safely_and_cli_eval(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An equivariant TQC agent saved by equirl reloads through the safe loader (nothing unpickled) with
    the same actions, and ``equirl eval --algo tqc`` runs every method on it."""
    import json
    import pickle

    import cloudpickle

    from equirl.cli import main

    plain = TQC("MlpPolicy", ENV, policy_kwargs={"net_arch": [8], "n_quantiles": 3}, buffer_size=10, seed=0)
    plain.save(tmp_path / "plain.zip")
    model = load_pretrained(tmp_path / "plain.zip", ENV, method=EQUIZERO, algo="tqc")
    model.save(tmp_path / "equi.zip")

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("unrestricted unpickling")

    for mod, name in ((cloudpickle, "loads"), (pickle, "loads"), (pickle, "load")):
        monkeypatch.setattr(mod, name, refuse)
    again = load_pretrained(tmp_path / "equi.zip", ENV, method=EQUIZERO, algo="tqc")
    x = _x(4).numpy()
    np.testing.assert_allclose(
        again.predict(x, deterministic=True)[0], model.predict(x, deterministic=True)[0], atol=1e-6
    )
    argv = ["eval", "--agent", str(tmp_path / "plain.zip"), "--env", ENV, "--algo", "tqc"]
    assert main([*argv, "--method", "all", "--episodes", "1", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res) == set(METHODS) and all(r["episodes"] == 1 for r in res.values())


def test_gsde_equizero_entropy_proxy_picks_the_lowest_variance() -> None:
    """Equizero's ``entropy`` proxy on a gSDE head scores the variance (the most confident element)."""
    sym = load_spec(ENV)
    kw = {"symmetry": ENV, "method": EQUIZERO, "method_kwargs": {"proxy": "entropy"}, "net_arch": [16]}
    ppo = PPO("EquiMlpPolicy", ENV, use_sde=True, n_steps=32, batch_size=32, policy_kwargs=kw, seed=0)
    sac = SAC("EquiMlpPolicy", ENV, use_sde=True, buffer_size=10, policy_kwargs=kw, seed=0)
    x = _x()
    with torch.no_grad():
        y = ppo.policy.symmetric_heads(x)
        plain = torch.stack([ppo.policy._plain_heads(sym.obs_action().apply(x, g)) for g in range(2)])
    assert check_equivariance(ppo.policy.symmetric_heads, sym.obs_action(), ppo.policy.out_action, x) <= ATOL
    assert torch.allclose(y[:, 1], plain[:, :, 1].min(0).values, atol=ATOL)  # the smaller variance
    out = concat_action(sym.group, [sym.action_action(), sym.action_action(absolute=True)])
    assert check_equivariance(sac.policy.actor.symmetric_out, sym.obs_action(), out, x) <= ATOL
