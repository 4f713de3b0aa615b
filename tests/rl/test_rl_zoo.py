"""equirl inside RL-zoo: one flag (``--gym-packages equirl.rl``), the policy alias in a hyperparameters file,
the ``equi/`` callback named there with no required argument, and ``DQN.load`` of the result."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(importlib.util.find_spec("rl_zoo3") is None, reason="rl_zoo3 not installed")

HYPERPARAMS = """\
CartPole-v1:
  policy: 'EquiMlpPolicy'
  n_timesteps: 300
  learning_starts: 100
  buffer_size: 1000
  policy_kwargs: "dict(symmetry='CartPole-v1', method='equizero', method_kwargs=dict(proxy='max_value'), net_arch=[32, 32])"
  callback:
    - equirl.rl.callbacks.EquiLoggingCallback:
        equi_freq: 100
"""


def test_rl_zoo_trains_an_equivariant_dqn_that_dqn_load_reads(tmp_path: Path) -> None:
    from stable_baselines3 import DQN

    from equirl.rl.policies import policy_obs_action
    from equirl.rl.spec import load_spec
    from equirl.symmetrizers import check_equivariance

    (tmp_path / "hp.yml").write_text(HYPERPARAMS, encoding="utf-8")
    cmd = [sys.executable, "-m", "rl_zoo3.train", "--algo", "dqn", "--env", "CartPole-v1",
           "--gym-packages", "equirl.rl", "-conf", "hp.yml", "--log-folder", "logs", "--seed", "0",
           "--eval-freq", "-1", "-tb", "tb", "--device", "cpu"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    zips = list((tmp_path / "logs" / "dqn").glob("CartPole-v1_*/CartPole-v1.zip"))
    assert len(zips) == 1
    model = DQN.load(zips[0], device="cpu")  # no custom_objects
    assert model.num_timesteps == 300
    net = model.policy.q_net
    assert net.method == "equizero"
    sym = load_spec("CartPole-v1")
    x = torch.randn(64, 4)
    assert (
        check_equivariance(net, policy_obs_action(sym, net.observation_space), sym.action_action(), x) < 1e-5
    )
    events = list((tmp_path / "tb").rglob("events.out.tfevents.*"))
    assert events and any(b"equi/equivariance_error" in e.read_bytes() for e in events)
