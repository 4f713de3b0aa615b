"""Strict YAML schemas for ``equirl pretrain`` / ``equirl train`` (see ``configs/rl/*.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from equirl.config import load_config
from equirl.errors import ConfigError
from equirl.registry import BASE, EQUIZERO, canonical_method, validate_method_kwargs

__all__ = [
    "CheckpointConfig",
    "EvalConfig",
    "HyperParams",
    "LogConfig",
    "RLConfig",
    "ScorerConfig",
    "load_rl_config",
]


@dataclass
class HyperParams:
    """SB3 DQN / QR-DQN hyperparameters (RL-zoo names)."""

    learning_rate: float = 1e-4
    buffer_size: int = 50_000
    learning_starts: int = 1000
    batch_size: int = 64
    gamma: float = 0.99
    train_freq: int = 4
    gradient_steps: int = 1
    target_update_interval: int = 1000
    exploration_fraction: float = 0.1
    exploration_initial_eps: float = 1.0
    exploration_final_eps: float = 0.05
    max_grad_norm: float = 10.0
    net_arch: list[int] = field(default_factory=lambda: [64, 64])
    n_quantiles: int = 50

    def __post_init__(self) -> None:
        if self.learning_rate <= 0 or self.batch_size < 1 or self.buffer_size < 1:
            raise ValueError("learning_rate, batch_size and buffer_size must be positive")
        if not 0.0 <= self.exploration_final_eps <= 1.0 or not 0.0 <= self.exploration_initial_eps <= 1.0:
            raise ValueError("exploration eps must lie in [0, 1]")


@dataclass
class EvalConfig:
    """Periodic evaluation during training (logged as ``equi/eval_return/{method}``)."""

    freq: int = 5000
    episodes: int = 5
    final_episodes: int = 10


@dataclass
class LogConfig:
    """TensorBoard logging of the ``equi/`` namespace."""

    equi_freq: int = 1000
    tensorboard: bool = True


@dataclass
class CheckpointConfig:
    """Periodic checkpoints in ``{run}/checkpoint/`` (what ``--resume`` continues from).

    :param freq: env steps between checkpoints; ``null`` (default): a tenth of ``timesteps``; 0: none
        (SIGINT / SIGTERM still write one).
    :param replay_buffer: also save the replay buffer (SB3's ``save_replay_buffer``), so that a resumed
        run continues with the same transitions. ``null`` (default): yes when the buffer's estimated size
        is at most :data:`equirl.rl.lifecycle.AUTO_BUFFER_BYTES` (256 MiB: CartPole's 100k transitions
        take ~5 MB, an Atari buffer of 100k 84x84x4 frames ~5.6 GB, which would make every checkpoint
        slow and fill the disk); a resume without the buffer refills it from scratch.
    """

    freq: int | None = None
    replay_buffer: bool | None = None

    def __post_init__(self) -> None:
        if self.freq is not None and self.freq < 0:
            raise ValueError("checkpoint.freq must be >= 0 (0: no periodic checkpoints)")

    def every(self, timesteps: int) -> int:
        """The checkpoint period in env steps for a run of ``timesteps`` (0: none)."""
        return max(1, timesteps // 10) if self.freq is None else self.freq


#: what the scorer of ``canonicalize`` / ``multigroup`` is fitted to: the identity prior or equizero's pick
SCORER_TARGETS = ("identity", EQUIZERO)


@dataclass
class ScorerConfig:
    """The scorer phase of ``canonicalize`` / ``multigroup`` runs (:func:`equirl.rl.canonical.fit_scorer`),
    before training: ``steps`` Adam steps on ``observations`` rollout observations of the start agent.

    :param target: ``identity`` (the prior of Mondal et al.) or ``equizero`` (distil equizero's pick).
    """

    steps: int = 0
    observations: int = 2000
    target: str = EQUIZERO
    lr: float = 1e-2

    def __post_init__(self) -> None:
        if self.steps < 0 or self.observations < 1 or self.lr <= 0:
            raise ValueError("scorer.steps must be >= 0, observations and lr positive")
        if self.target not in SCORER_TARGETS:
            raise ValueError(f"scorer.target must be one of {', '.join(SCORER_TARGETS)}, got {self.target!r}")


@dataclass
class RLConfig:
    """One training run.

    :param env: gymnasium id with a symmetry spec (``equirl envs``).
    :param algo: ``dqn`` or ``qrdqn``.
    :param method: a method of :mod:`equirl.registry` (``base``, ``equitune``, ``equizero``, ``lambda``,
        ``canonicalize``, ``multigroup``) or an alias (``plain``, ``λ``...); stored as its canonical name.
    :param method_kwargs: symmetrizer options (``proxy``, ``lambda_hidden``, ``lambda_input``...), checked
        against the method's options in the registry.
    :param symmetry: a spec path/env id overriding the env's packaged spec.
    :param init_from: a plain or equivariant agent to finetune (zip or zoo folder); ``null`` = scratch.
    :param freeze_backbone: train only the λ-net (default: true for ``lambda`` with ``init_from``).
    :param timesteps: env steps of this run.
    :param partial_fraction: also save ``model_partial.zip`` after this fraction of ``timesteps`` (0: no).
    :param out: root folder of run directories.
    :param scorer: the scorer phase of ``canonicalize`` / ``multigroup`` runs.
    :param checkpoint: periodic checkpoints (``--resume``).
    """

    env: str
    algo: Literal["dqn", "qrdqn"] = "dqn"
    seed: int = 0
    timesteps: int = 50_000
    method: str = BASE
    method_kwargs: dict[str, Any] = field(default_factory=dict)
    symmetry: str | None = None
    init_from: str | None = None
    freeze_backbone: bool | None = None
    partial_fraction: float = 0.0
    out: str = "runs"
    hyperparams: HyperParams = field(default_factory=HyperParams)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)
    scorer: ScorerConfig = field(default_factory=ScorerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)

    def __post_init__(self) -> None:
        if self.timesteps < 1:
            raise ValueError("timesteps must be positive")
        if not 0.0 <= self.partial_fraction < 1.0:
            raise ValueError("partial_fraction must lie in [0, 1)")
        self.method = canonical_method(self.method)
        self.method_kwargs = validate_method_kwargs(self.method, self.method_kwargs, adapter="rl")


def load_rl_config(path: str | Path, overrides: list[str] | None = None) -> RLConfig:
    """Read and validate a run config (one-line :class:`ConfigError` on any problem)."""
    cfg = load_config(RLConfig, path, overrides)
    if not isinstance(cfg, RLConfig):  # pragma: no cover
        raise ConfigError(f"{path}: not an RL config")
    return cfg
