"""The compatibility matrix of agents from the wild (``docs/compatibility.md``).

Rows: the conventions SB3 agents come in (an RL-zoo folder with a time feature, ``VecNormalize`` and an old
env id; a pickled ``torch.device`` in ``policy_kwargs``; a frame-stacked pixel agent in an RL-zoo folder;
SB3 1.x zips; the hub cache). Columns: the algorithm families a convention applies to. Each cell loads the
agent with ``load_pretrained(path, env_id, method=..., algo=None)`` (the algorithm read from the zip,
nothing unpickled: no ``trust_checkpoint``) for each of base / equitune / equizero / lambda, and checks:

(a) the symmetrized pipeline -- raw observation -> the agent's normalisation -> symmetrized policy heads --
    is equivariant to 1e-5 for every group element (base: it is not, the check has teeth);
(b) ``base`` acts as the plain agent loaded by SB3 itself in the env rl_zoo3 makes (its wrappers, SB3's own
    ``VecNormalize`` with the saved statistics, its frame stack), on real observations, and
    ``evaluate`` gives SB3's ``evaluate_policy`` returns on that env;
(c) ``evaluate(model, env_id, n_eval_episodes=1)`` runs.

The agents are built here (:mod:`tests.rl.compat_fixtures`: tiny agents trained for a few hundred steps,
once per module); the shared folder's real SB3 1.0 RL-zoo agents form one more row, skipped without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import equirl.rl  # noqa: F401  (registers the aliases)
from equirl.registry import BASE, EQUITUNE, EQUIZERO, LAMBDA
from equirl.rl.algos import get_algo
from equirl.rl.build import load_pretrained
from equirl.rl.evaluation import evaluate
from equirl.rl.policies import concat_action, policy_obs_action
from equirl.symmetrizers.check import equivariance_errors
from tests.rl import compat_fixtures as cf

ATOL = 1e-5
METHODS = (BASE, EQUITUNE, EQUIZERO, LAMBDA)
#: the methods each algorithm family loads with (λ too: every family has a λ-net)
ALGO_METHODS = {algo: METHODS for algo in ("dqn", "qrdqn", "ppo", "a2c", "sac", "td3")}

#: row -> (what it is, the algorithms it is built for, marks)
ROWS: dict[str, tuple[str, tuple[str, ...], tuple[Any, ...]]] = {
    "zoo-timefeature-vecnormalize-oldid": (
        "RL-zoo folder: TimeFeatureWrapper + VecNormalize(norm_obs), trained on Pendulum-v0",
        ("ppo",),
        (),
    ),
    "device-in-policy-kwargs": (
        "zip: policy_kwargs pickled with device=torch.device('cpu')",
        ("sac", "td3"),
        (),
    ),
    "zoo-atari-framestack": (
        "RL-zoo folder: ALE/Breakout-v5, AtariWrapper, frame_stack 4, CnnPolicy",
        ("dqn",),
        (),
    ),
    "zoo-atari-v4-noframeskip": (
        "RL-zoo folder: BreakoutNoFrameskip-v4 (the zoo's own Atari id, ALE/Breakout-v5's spec), AtariWrapper, "
        "frame_stack 4, CnnPolicy",
        ("dqn", "qrdqn", "ppo"),
        (),
    ),
    "sb3-1x-zip": (
        "zip saved by SB3 1.x: gym spaces, closures as schedules, 1.x keys",
        ("dqn", "ppo", "a2c", "sac"),
        (),
    ),
    "rl-zoo-1.0-shared": (
        "the shared folder's real RL-zoo agents saved by SB3 1.0",
        tuple(cf.SHARED_AGENTS),
        (pytest.mark.shared,),
    ),
    "hub-cache": (
        "hf://ORG/REPO from a seeded Hugging Face hub cache, offline: the BreakoutNoFrameskip-v4 folder with an SB3 1.x "
        "zip (DQN) and the time "
        "feature + VecNormalize folder (PPO) as rl_zoo3 pushes them",
        ("dqn", "ppo"),
        (),
    ),
}


def _cells() -> list[Any]:
    return [
        pytest.param(row, algo, method, id=f"{row}-{algo}-{method}", marks=marks)
        for row, (_, algos, marks) in ROWS.items()
        for algo in algos
        for method in ALGO_METHODS[algo]
    ]


class _Agents:
    """The matrix's agents, each built on first use (so that ``-k`` builds only what it selects)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.built: dict[tuple[str, str], cf.Agent] = {}

    def get(self, row: str, algo: str, request: pytest.FixtureRequest) -> cf.Agent:
        key = (row, algo)
        if key not in self.built:
            where = self.root / row / algo
            if row == "zoo-timefeature-vecnormalize-oldid":
                agent = cf.build_zoo_time_feature(where)
            elif row == "device-in-policy-kwargs":
                agent = cf.build_device_kwargs(where, algo)
            elif row == "zoo-atari-framestack":
                pytest.importorskip("ale_py")
                agent = cf.build_zoo_atari(where)
            elif row == "zoo-atari-v4-noframeskip":
                pytest.importorskip("ale_py")
                agent = cf.build_zoo_atari(where, cf.ATARI_V4_ID, algo)
            elif row == "sb3-1x-zip":
                agent = cf.build_sb3_1x(where, algo)
            elif row == "hub-cache":
                if algo == "dqn":
                    pytest.importorskip("ale_py")
                agent = cf.build_hub(where, algo, self.root / "hub")
            elif row == "rl-zoo-1.0-shared":
                agent = cf.shared_zoo_agent(request.getfixturevalue("shared_data"), algo)
            else:  # pragma: no cover
                raise AssertionError(row)
            self.built[key] = agent
        return self.built[key]


@pytest.fixture(scope="module")
def agents(tmp_path_factory: pytest.TempPathFactory) -> _Agents:
    return _Agents(tmp_path_factory.mktemp("compat"))


# -- the checks ---------------------------------------------------------------------------------------------


def _collect(env: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` observations of the env under random actions: ``(raw, fed)``, before the env's normalisation
    and as the agent is fed them (the same without one)."""
    from stable_baselines3.common.vec_env import VecNormalize

    env.action_space.seed(0)
    obs = env.reset()
    raw, fed = [], []
    for _ in range(n):
        fed.append(obs[0])
        raw.append(env.get_original_obs()[0] if isinstance(env, VecNormalize) else obs[0])
        obs, *_ = env.step(np.array([env.action_space.sample()]))
    return np.stack(raw), np.stack(fed)


def _perturb_lambda(policy: torch.nn.Module) -> None:
    """λ starts as equitune (a zero last layer): random weights make the check non-trivial."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lambda_net" in name:
                p.copy_(torch.randn(p.shape, generator=gen))


def _heads(model: Any, algo: str) -> tuple[Any, Any, Any]:
    """``(f, in_action, out_action)``: the symmetrized heads on the observation tensor the policy sees."""
    pol = model.policy
    sym = pol._equi_kwargs["symmetry"]  # the spec as the policy applies it (time features, frames)
    in_action = policy_obs_action(sym, pol.observation_space)
    if algo == "dqn":
        return pol.q_net, in_action, sym.action_action()
    if algo == "qrdqn":  # quantiles (B, n_quantiles, A): the actions permuted on the last axis
        return pol.quantile_net, in_action, sym.action_action()
    if algo in ("ppo", "a2c"):
        return pol.symmetric_heads, in_action, pol.out_action
    aa = sym.action_action()
    out = concat_action(sym.group, [aa, sym.action_action(absolute=True)]) if algo == "sac" else aa
    return pol.actor.symmetric_out, in_action, out


def _pipeline_errors(model: Any, algo: str, raw: np.ndarray) -> dict[str, float]:
    """``|f(g·x) - g·f(x)|`` per group element, ``f``: the agent's normalisation, then the symmetrized heads;
    ``x``: real observations and Gaussian ones (feature vectors), in the policy's layout."""
    heads, in_action, out_action = _heads(model, algo)
    norm = model.get_vec_normalize_env()
    shape = tuple(model.policy.observation_space.shape)
    x = torch.as_tensor(raw, dtype=torch.float32)
    if tuple(x.shape[1:]) != shape:  # channel-last frames, as SB3's VecTransposeImage turns them
        x = x.permute(0, 3, 1, 2)
    if len(shape) == 1:
        x = torch.cat([x, 2 * torch.randn(16, *shape)])

    def f(obs: torch.Tensor) -> torch.Tensor:
        o = obs.numpy() if norm is None else norm.normalize_obs(obs.numpy())
        with torch.no_grad():
            return heads(torch.as_tensor(o, dtype=torch.float32))

    return equivariance_errors(f, in_action, out_action, x)


def _assert_acts_as_sb3(model: Any, agent: cf.Agent, raw: np.ndarray, fed: np.ndarray) -> None:
    """Base = the plain agent: the same actions on the env's real observations (each through its own
    normalisation), the same returns as SB3's ``evaluate_policy`` on the env rl_zoo3 makes."""
    from stable_baselines3.common.evaluation import evaluate_policy

    plain = agent.reference()
    norm = model.get_vec_normalize_env()
    own = raw if norm is None else norm.normalize_obs(raw)
    a_ref, _ = plain.predict(fed, deterministic=True)
    a, _ = model.predict(own, deterministic=True)
    if agent.algo in ("dqn", "qrdqn"):  # the Q-values (quantiles) themselves, not only their argmax
        net = "q_net" if agent.algo == "dqn" else "quantile_net"
        with torch.no_grad():
            q_ref = getattr(plain.policy, net)(plain.policy.obs_to_tensor(fed)[0])
            q = getattr(model.policy, net)(model.policy.obs_to_tensor(own)[0])
        torch.testing.assert_close(q, q_ref, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(a, a_ref, atol=1e-5)
    want, _ = evaluate_policy(
        plain, agent.reference_env(5), n_eval_episodes=1, deterministic=True, return_episode_rewards=True
    )
    got = evaluate(model, agent.env_id, n_eval_episodes=1, seed=5)
    assert got == pytest.approx([float(r) for r in want], abs=1e-6)


@pytest.mark.parametrize(("row", "algo", "method"), _cells())
def test_cell(
    agents: _Agents,
    row: str,
    algo: str,
    method: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    agent = agents.get(row, algo, request)
    if row == "hub-cache":  # the seeded cache, offline
        from huggingface_hub import constants

        from equirl.utils.hub import hub_agent_folder

        cache = str(agents.root / "hub")
        monkeypatch.setenv("HF_HUB_CACHE", cache)
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setattr(constants, "HF_HUB_CACHE", cache)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
        hub_agent_folder.cache_clear()

    def no_unpickling(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("SB3 unpickled a data entry: equirl hands it a value for every pickled entry")

    with monkeypatch.context() as m:
        m.setattr("stable_baselines3.common.save_util.cloudpickle.loads", no_unpickling)
        model = load_pretrained(agent.path, agent.env_id, method=method, algo=None)  # no trust_checkpoint
    assert type(model).__name__.lower() == algo  # the algorithm read from the zip
    if method == LAMBDA:
        _perturb_lambda(model.policy)
    model.policy.set_training_mode(False)
    raw, fed = _collect(agent.reference_env(3), 24)
    err = _pipeline_errors(model, algo, raw)
    assert set(err) == {g.label for g in model.policy._equi_kwargs["symmetry"].group.elements}
    if method == BASE:
        assert max(err.values()) > 1e-3, err  # the plain agent is not equivariant: the check has teeth
        _assert_acts_as_sb3(model, agent, raw, fed)
    else:
        assert max(err.values()) <= ATOL, err  # (a), for every group element
    rets = evaluate(model, agent.env_id, n_eval_episodes=1)  # (c)
    assert len(rets) == 1 and np.isfinite(rets[0])


def test_the_rows_are_what_the_docs_say() -> None:
    """``docs/compatibility.md`` lists every row and algorithm of the matrix."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "compatibility.md").read_text(encoding="utf-8")
    for row, (_, algos, _) in ROWS.items():
        assert f"`{row}`" in text, row
        for algo in algos:
            assert get_algo(algo).title in text, algo  # its display name: DQN, QR-DQN, PPO...


# -- the 1.x rewrite reproduces what makes 1.x zips different ------------------------------------------------


def test_the_sb3_1x_zip_looks_like_the_zoo_ones(agents: _Agents, request: pytest.FixtureRequest) -> None:
    import base64
    import zipfile

    from equirl.rl.safe_load import read_zip_data

    agent = agents.get("sb3-1x-zip", "dqn", request)
    data = read_zip_data(agent.path)
    assert data["observation_space"][":type:"] == "<class 'gym.spaces.box.Box'>"
    assert data["observation_space"]["shape"] == [4] and "_shape" not in data["observation_space"]
    assert data["action_space"][":type:"] == "<class 'gym.spaces.discrete.Discrete'>"
    blob = base64.b64decode(data["observation_space"][":serialized:"])
    assert blob[:2] == b"\x80\x04" and b"gym.spaces.box" in blob and b"gymnasium" not in blob
    for key in ("lr_schedule", "learning_rate", "exploration_schedule"):  # closures, pickled by value
        assert data[key][":type:"] == "<class 'function'>"
        code = base64.b64decode(data[key][":serialized:"])
        assert code[:2] == b"\x80\x04" and b"cloudpickle" in code and b"CodeType" in code
    assert b"numpy.core.multiarray" in base64.b64decode(data["_last_obs"][":serialized:"])
    assert "_last_dones" in data and "_last_episode_starts" not in data and "_stats_window_size" not in data
    with zipfile.ZipFile(agent.path) as z:
        assert z.read("_stable_baselines3_version") == b"1.0" and "system_info.txt" not in z.namelist()
    with pytest.raises(ModuleNotFoundError, match="gym"):  # nobody here can unpickle it: equirl never does
        __import__("pickle").loads(blob)
