"""Strict YAML schemas for ``equirl pretrain`` / ``equirl train`` (see ``configs/rl/*.yaml``)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from equirl.config import FieldError, check_range, load_config
from equirl.errors import ConfigError
from equirl.registry import BASE, EQUIZERO, canonical_method, validate_method_kwargs

__all__ = [
    "CheckpointConfig",
    "EvalConfig",
    "HyperParams",
    "LogConfig",
    "RLConfig",
    "ScorerConfig",
    "check_buffer_memory",
    "load_rl_config",
    "total_ram_bytes",
]

#: upper bounds of values that can only be a mistake (a typo'd exponent, a unit slip)
MAX_TIMESTEPS = 1_000_000_000
MAX_BATCH_SIZE = 1_000_000
MAX_BUFFER_SIZE = 1_000_000_000
MAX_LAYER = 1_000_000


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
        check_range("learning_rate", self.learning_rate, gt=0)
        check_range("buffer_size", self.buffer_size, ge=1, le=MAX_BUFFER_SIZE)
        check_range("learning_starts", self.learning_starts, ge=0)
        check_range("batch_size", self.batch_size, ge=1, le=MAX_BATCH_SIZE)
        if self.batch_size > self.buffer_size:
            raise FieldError("batch_size", self.batch_size, f"must be <= buffer_size ({self.buffer_size})")
        check_range("gamma", self.gamma, ge=0, le=1)
        for key in ("train_freq", "gradient_steps", "target_update_interval", "n_quantiles"):
            check_range(key, getattr(self, key), ge=1)
        for key in ("exploration_fraction", "exploration_initial_eps", "exploration_final_eps"):
            check_range(key, getattr(self, key), ge=0, le=1)
        check_range("max_grad_norm", self.max_grad_norm, gt=0)
        if not self.net_arch:
            raise FieldError("net_arch", self.net_arch, "needs at least one layer size")
        for i, width in enumerate(self.net_arch):
            check_range(f"net_arch[{i}]", width, ge=1, le=MAX_LAYER)


@dataclass
class EvalConfig:
    """Periodic evaluation during training (logged as ``equi/eval_return/{method}``)."""

    freq: int = 5000
    episodes: int = 5
    final_episodes: int = 10

    def __post_init__(self) -> None:
        check_range("freq", self.freq, ge=0)  # 0: no periodic evaluation
        check_range("episodes", self.episodes, ge=1)
        check_range("final_episodes", self.final_episodes, ge=1)


@dataclass
class LogConfig:
    """TensorBoard logging of the ``equi/`` namespace."""

    equi_freq: int = 1000
    tensorboard: bool = True

    def __post_init__(self) -> None:
        check_range("equi_freq", self.equi_freq, ge=0)


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
        check_range("steps", self.steps, ge=0)
        check_range("observations", self.observations, ge=1)
        check_range("lr", self.lr, gt=0)
        if self.target not in SCORER_TARGETS:
            raise FieldError("target", self.target, f"must be one of {', '.join(SCORER_TARGETS)}")


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
        check_range("seed", self.seed, ge=0)
        check_range("timesteps", self.timesteps, ge=1, le=MAX_TIMESTEPS)
        check_range("partial_fraction", self.partial_fraction, ge=0, lt=1)
        self.method = canonical_method(self.method)
        self.method_kwargs = validate_method_kwargs(self.method, self.method_kwargs, adapter="rl")


def total_ram_bytes() -> int | None:
    """The machine's physical memory in bytes (``None`` when it cannot be read)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def check_buffer_memory(
    observation_space: Any,
    buffer_size: int,
    optimize_memory_usage: bool = False,
    key: str = "hyperparams.buffer_size",
) -> int:
    """Refuse up front a replay buffer that would not fit in RAM: observations x ``buffer_size`` x the
    observation dtype's bytes, twice (``next_obs``) unless ``optimize_memory_usage``.

    :param observation_space: the env's observation space (``shape`` and ``dtype``).
    :param buffer_size: the replay buffer's capacity.
    :returns: the bytes the observations would take.
    :raises FieldError: naming ``key``, the bytes needed and the machine's RAM.
    """
    shape = tuple(getattr(observation_space, "shape", None) or ())
    dtype = getattr(observation_space, "dtype", None)
    itemsize = int(getattr(dtype, "itemsize", 4) or 4)
    need = math.prod(shape) * itemsize * buffer_size * (1 if optimize_memory_usage else 2)
    ram = total_ram_bytes()
    if ram is not None and need > ram:
        raise FieldError(
            key,
            buffer_size,
            f"the replay buffer would need {_gb(need)} for observations of shape {shape} "
            f"({itemsize} bytes each, obs and next_obs) but this machine has {_gb(ram)} of RAM",
        )
    return need


def load_rl_config(path: str | Path, overrides: list[str] | None = None) -> RLConfig:
    """Read and validate a run config (one-line :class:`ConfigError` on any problem)."""
    cfg = load_config(RLConfig, path, overrides)
    if not isinstance(cfg, RLConfig):  # pragma: no cover
        raise ConfigError(f"{path}: not an RL config")
    return cfg
