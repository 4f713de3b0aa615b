"""Strict YAML schemas for ``equirl pretrain`` / ``equirl train`` (see ``configs/rl/*.yaml``)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from equirl.config import FieldError, Range, from_dict, load_config
from equirl.errors import ConfigError
from equirl.registry import AUTO, BASE, EQUIZERO, MIRROR_LOSS, canonical_method, validate_method_kwargs
from equirl.rl.algos import ALGOS, FEATURE_EXTRACTORS
from equirl.utils.io import total_ram_bytes

__all__ = [
    "ALGO_HYPERPARAMS",
    "A2CHyperParams",
    "CheckpointConfig",
    "EvalConfig",
    "HyperParams",
    "LogConfig",
    "PPOHyperParams",
    "RLConfig",
    "SACHyperParams",
    "ScorerConfig",
    "TD3HyperParams",
    "check_buffer_memory",
    "load_rl_config",
    "total_ram_bytes",
    "with_run_options",
]

#: upper bounds of values that can only be a mistake (a typo'd exponent, a unit slip)
MAX_TIMESTEPS = 1_000_000_000
MAX_BATCH_SIZE = 1_000_000
MAX_BUFFER_SIZE = 1_000_000_000
MAX_LAYER = 1_000_000

#: the bounds most fields share, declared once
PositiveFloat = Annotated[float, Range(gt=0)]
NonNegativeFloat = Annotated[float, Range(ge=0)]
Fraction = Annotated[float, Range(ge=0, le=1)]
PositiveInt = Annotated[int, Range(ge=1)]
Count = Annotated[int, Range(ge=0)]
NetArch = list[Annotated[int, Range(ge=1, le=MAX_LAYER)]]


@dataclass(frozen=True)
class HyperParams:
    """SB3 DQN / QR-DQN hyperparameters (RL-zoo names)."""

    learning_rate: PositiveFloat = 1e-4
    buffer_size: Annotated[int, Range(ge=1, le=MAX_BUFFER_SIZE)] = 50_000
    learning_starts: Count = 1000
    batch_size: Annotated[int, Range(ge=1, le=MAX_BATCH_SIZE)] = 64
    gamma: Fraction = 0.99
    train_freq: PositiveInt = 4
    #: SB3: -1 = as many gradient steps as env steps in the rollout (checked in ``__post_init__``)
    gradient_steps: int = 1
    target_update_interval: PositiveInt = 1000
    exploration_fraction: Fraction = 0.1
    exploration_initial_eps: Fraction = 1.0
    exploration_final_eps: Fraction = 0.05
    max_grad_norm: PositiveFloat = 10.0
    net_arch: NetArch = field(default_factory=lambda: [64, 64])
    n_quantiles: PositiveInt = 50
    #: the feature extractor before the Q-network head, a key of :data:`equirl.rl.algos.FEATURE_EXTRACTORS`
    #: (``auto`` is SB3's, ``minatar-cnn`` the MinAtar paper's 16-filter convolution); ``net_arch`` is the
    #: head after it
    features_extractor: str = "auto"

    def __post_init__(self) -> None:
        _check_replay(self)
        if self.features_extractor not in FEATURE_EXTRACTORS:
            raise FieldError(
                "features_extractor",
                self.features_extractor,
                f"must be one of {', '.join(FEATURE_EXTRACTORS)}",
            )
        if self.features_extractor == "auto":  # an extractor's own layer may be the whole network
            _check_net_arch(self.net_arch)
        else:
            check_net_memory(self.net_arch)

    def sb3_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of SB3's ``DQN`` / ``QRDQN`` (the network goes to the policy)."""
        return _kwargs(self, drop=("net_arch", "n_quantiles", "features_extractor"))


def _check_replay(hp: Any) -> None:
    """The rules across fields every off-policy (replay-buffer) schema has (each field's own bounds are
    declared in its annotation).

    :param hp: a :class:`HyperParams` or an off-policy actor-critic schema.
    """
    if hp.batch_size > hp.buffer_size:
        raise FieldError("batch_size", hp.batch_size, f"must be <= buffer_size ({hp.buffer_size})")
    if hp.gradient_steps != -1 and hp.gradient_steps < 1:
        raise FieldError(
            "gradient_steps", hp.gradient_steps, "must be an integer >= 1, or -1 (one per env step)"
        )


def _check_net_arch(net_arch: list[int]) -> None:
    if not net_arch:
        raise FieldError("net_arch", net_arch, "needs at least one layer size")
    check_net_memory(net_arch)


#: copies of a network's weights training keeps: the weights, their gradients, a target / second critic,
#: Adam's two moments
_WEIGHT_COPIES = 5


def check_net_memory(net_arch: list[int], key: str = "net_arch") -> int:
    """Refuse up front hidden layers whose weights alone would not fit in RAM (a lower bound: the input
    and output layers are not counted), before torch tries to allocate them.

    :returns: the bytes the hidden layers' weights would take in training.
    :raises FieldError: naming the bytes needed and the machine's RAM.
    """
    params = sum(a * b + b for a, b in itertools.pairwise(net_arch))
    need = params * 4 * _WEIGHT_COPIES
    ram = total_ram_bytes()
    if ram is not None and need > ram // 2:
        raise FieldError(
            key,
            net_arch,
            f"layers this wide need {_gb(need)} in training (weights, gradients, target and optimizer "
            f"state) but this machine has {_gb(ram)} of RAM",
        )
    return need


def _kwargs(hp: Any, drop: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in asdict(hp).items() if k not in drop}


#: learning-rate schedules of the actor-critic algorithms (``linear``: decays to 0 at the last step)
LR_SCHEDULES = ("constant", "linear")


def _lr(value: float, schedule: str) -> Any:
    """A learning rate as SB3 takes it: the number, or SB3's (picklable) linear schedule."""
    if schedule == "constant":
        return value
    from stable_baselines3.common.utils import LinearSchedule

    return LinearSchedule(value, 0.0, 1.0)


_SDE_KEYS = ("use_sde", "sde_sample_freq", "use_sde_at_warmup")


def _check_sde(hp: Any) -> None:
    """gSDE (``use_sde``, Raffin et al. 2021) and its noise-resampling period (-1: once per rollout):
    checked when a schema is built directly, not from a config (where the annotations do it)."""
    for key in ("use_sde", "use_sde_at_warmup"):
        if not isinstance(getattr(hp, key, False), bool):
            raise FieldError(key, getattr(hp, key), "must be true or false")


def _sde_kwargs(hp: Any, kw: dict[str, Any]) -> dict[str, Any]:
    """``kw`` without the gSDE keys unless ``use_sde`` is on: finetuning a gSDE agent keeps its gSDE."""
    return kw if hp.use_sde else {k: v for k, v in kw.items() if k not in _SDE_KEYS}


@dataclass(frozen=True)
class _OnPolicyHyperParams:
    """What PPO and A2C share (RL-zoo names). ``use_sde``: generalized state-dependent exploration
    (continuous actions only; the equivariant policies symmetrize its variance, see
    :mod:`equirl.rl.ac_policies`), its noise resampled every ``sde_sample_freq`` steps (-1: per rollout)."""

    learning_rate: PositiveFloat = 3e-4
    lr_schedule: Literal["constant", "linear"] = "constant"
    n_envs: Annotated[int, Range(ge=1, le=1024)] = 1
    n_steps: Annotated[int, Range(ge=1, le=MAX_BUFFER_SIZE)] = 2048
    gamma: Fraction = 0.99
    gae_lambda: Fraction = 0.95
    ent_coef: NonNegativeFloat = 0.0
    vf_coef: NonNegativeFloat = 0.5
    max_grad_norm: PositiveFloat = 0.5
    normalize_advantage: bool = True
    use_sde: bool = False
    sde_sample_freq: Annotated[int, Range(ge=-1)] = -1
    net_arch: NetArch = field(default_factory=lambda: [64, 64])

    def __post_init__(self) -> None:
        _check_sde(self)
        _check_net_arch(self.net_arch)

    def sb3_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the SB3 algorithm (the network's size goes to the policy)."""
        kw = _kwargs(self, drop=("net_arch", "n_envs", "lr_schedule"))
        kw["learning_rate"] = _lr(self.learning_rate, self.lr_schedule)
        return _sde_kwargs(self, kw)


@dataclass(frozen=True)
class PPOHyperParams(_OnPolicyHyperParams):
    """SB3 PPO hyperparameters (RL-zoo names; ``lr_schedule: linear`` is the zoo's ``lin_``)."""

    batch_size: Annotated[int, Range(ge=2, le=MAX_BATCH_SIZE)] = 64
    n_epochs: Annotated[int, Range(ge=1, le=10_000)] = 10
    clip_range: Annotated[float, Range(gt=0, le=10)] = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        rollout = self.n_steps * self.n_envs
        if self.batch_size > rollout:
            raise FieldError("batch_size", self.batch_size, f"must be <= n_steps * n_envs ({rollout})")


@dataclass(frozen=True)
class A2CHyperParams(_OnPolicyHyperParams):
    """SB3 A2C hyperparameters (RL-zoo names; SB3's defaults: 5 steps, RMSprop, no GAE)."""

    learning_rate: PositiveFloat = 7e-4
    n_steps: Annotated[int, Range(ge=1, le=MAX_BUFFER_SIZE)] = 5
    gae_lambda: Fraction = 1.0
    normalize_advantage: bool = False
    use_rms_prop: bool = True


@dataclass(frozen=True)
class _OffPolicyACHyperParams:
    """What SAC and TD3 share (RL-zoo names)."""

    learning_rate: PositiveFloat = 3e-4
    buffer_size: Annotated[int, Range(ge=1, le=MAX_BUFFER_SIZE)] = 1_000_000
    learning_starts: Count = 100
    batch_size: Annotated[int, Range(ge=1, le=MAX_BATCH_SIZE)] = 256
    tau: Annotated[float, Range(gt=0, le=1)] = 0.005
    gamma: Fraction = 0.99
    train_freq: PositiveInt = 1
    gradient_steps: int = 1
    net_arch: NetArch = field(default_factory=lambda: [256, 256])

    def __post_init__(self) -> None:
        _check_replay(self)
        _check_net_arch(self.net_arch)

    def sb3_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the SB3 algorithm (the network's size goes to the policy)."""
        return _kwargs(self, drop=("net_arch",))


@dataclass(frozen=True)
class SACHyperParams(_OffPolicyACHyperParams):
    """SB3 SAC hyperparameters (RL-zoo names). ``ent_coef``: a number, ``auto`` (learned) or
    ``auto_0.1`` (learned from 0.1). ``use_sde`` / ``sde_sample_freq`` / ``use_sde_at_warmup``: gSDE
    exploration as in SB3 (the equivariant actor symmetrizes its variance: :mod:`equirl.rl.ac_policies`)."""

    ent_coef: float | str = "auto"
    target_update_interval: PositiveInt = 1
    use_sde: bool = False
    sde_sample_freq: Annotated[int, Range(ge=-1)] = -1
    use_sde_at_warmup: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_sde(self)
        ent = self.ent_coef
        if isinstance(ent, str):
            start = ent[len("auto_") :] if ent.startswith("auto_") else None
            ok = ent == "auto" or (start is not None and _positive(start))
            if not ok:
                raise FieldError("ent_coef", ent, "must be a number > 0, 'auto' or 'auto_<initial value>'")
        elif not ent > 0:
            raise FieldError("ent_coef", ent, "must be a number > 0, 'auto' or 'auto_<initial value>'")

    def sb3_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of SB3's SAC (gSDE's only when ``use_sde`` is on)."""
        return _sde_kwargs(self, super().sb3_kwargs())


def _positive(text: str) -> bool:
    try:
        v = float(text)
    except ValueError:
        return False
    return math.isfinite(v) and v > 0


@dataclass(frozen=True)
class TD3HyperParams(_OffPolicyACHyperParams):
    """SB3 TD3 hyperparameters (RL-zoo names). ``action_noise_std``: the std of the Gaussian exploration
    noise in units of the action range's half-width (0: none; the zoo's ``NormalActionNoise``)."""

    learning_rate: PositiveFloat = 1e-3
    policy_delay: PositiveInt = 2
    target_policy_noise: NonNegativeFloat = 0.2
    target_noise_clip: NonNegativeFloat = 0.5
    action_noise_std: NonNegativeFloat = 0.1

    def sb3_kwargs(self) -> dict[str, Any]:
        """As for SAC, without ``action_noise_std`` (made into an action noise by ``build_model``)."""
        return _kwargs(self, drop=("net_arch", "action_noise_std"))


#: the hyperparameter schema of each algorithm ``equirl pretrain`` / ``train`` runs (the algorithms of
#: :data:`equirl.rl.algos.ALGOS` that name one)
ALGO_HYPERPARAMS: dict[str, type[Any]] = {
    name: {
        c.__name__: c for c in (HyperParams, PPOHyperParams, A2CHyperParams, SACHyperParams, TD3HyperParams)
    }[spec.hyperparams]
    for name, spec in ALGOS.items()
    if spec.hyperparams is not None
}


@dataclass(frozen=True)
class EvalConfig:
    """Periodic evaluation during training (logged as ``equi/eval_return/{method}``)."""

    freq: Annotated[int, Range(ge=0, le=MAX_TIMESTEPS)] = 5000  # 0: no periodic evaluation
    episodes: Annotated[int, Range(ge=1, le=100_000)] = 5
    final_episodes: Annotated[int, Range(ge=1, le=100_000)] = 10
    #: early stopping: end training at the first periodic evaluation whose mean return is >= this
    #: (``None``, the default: always train the whole budget; never set it in a comparison of methods
    #: unless every arm has it)
    stop_at: float | None = None
    #: also evaluate the starting model at step 0 (the first point of the learning curve: a finetuned
    #: agent's zero-shot return); it is in the history, not a candidate for ``best_model.zip``
    at_start: bool = False
    #: after training, the last new bests of the periodic evaluations (up to 3) and the final model are
    #: evaluated again on this many fresh episodes (another seed); the one with the highest mean becomes
    #: ``best_model.zip`` and that figure is the run's reported best (0: keep the best periodic
    #: evaluation, whose few episodes flatter it)
    confirm_episodes: Annotated[int, Range(ge=0, le=100_000)] = 20

    def __post_init__(self) -> None:
        if self.stop_at is not None and self.freq == 0:
            raise FieldError("stop_at", self.stop_at, "needs periodic evaluations (eval.freq > 0)")


@dataclass(frozen=True)
class LogConfig:
    """TensorBoard logging of the ``equi/`` namespace."""

    equi_freq: Count = 1000
    tensorboard: bool = True


@dataclass(frozen=True)
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

    freq: Count | None = None
    replay_buffer: bool | None = None

    def every(self, timesteps: int) -> int:
        """The checkpoint period in env steps for a run of ``timesteps`` (0: none)."""
        return max(1, timesteps // 10) if self.freq is None else self.freq


#: what the scorer of ``canonicalize`` / ``multigroup`` is fitted to: the identity prior or equizero's pick
SCORER_TARGETS = ("identity", EQUIZERO)


@dataclass(frozen=True)
class ScorerConfig:
    """The scorer phase of ``canonicalize`` / ``multigroup`` runs (:func:`equirl.rl.canonical.fit_scorer`),
    before training: ``steps`` Adam steps on ``observations`` rollout observations of the start agent.

    :param target: ``identity`` (the prior of Mondal et al.) or ``equizero`` (distil equizero's pick).
    """

    steps: Count = 0
    observations: PositiveInt = 2000
    target: str = EQUIZERO
    lr: PositiveFloat = 1e-2

    def __post_init__(self) -> None:
        if self.target not in SCORER_TARGETS:
            raise FieldError("target", self.target, f"must be one of {', '.join(SCORER_TARGETS)}")


@dataclass(frozen=True)
class RLConfig:
    """One training run.

    :param env: gymnasium id with a symmetry spec (``equirl envs``).
    :param algo: an algorithm with a hyperparameter schema (:data:`ALGO_HYPERPARAMS`: ``dqn``, ``qrdqn``,
        ``ppo``, ``a2c``, ``sac``, ``td3``).
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
    :param hyperparams: the algorithm's hyperparameters (RL-zoo names), checked against its schema in
        :data:`ALGO_HYPERPARAMS` (:class:`HyperParams` for DQN / QR-DQN, :class:`PPOHyperParams`,
        :class:`A2CHyperParams`, :class:`SACHyperParams`, :class:`TD3HyperParams`); omitted keys take
        that schema's defaults.
    """

    env: str
    algo: str = "dqn"
    seed: Annotated[int, Range(ge=0, le=2**32 - 1)] = 0
    timesteps: Annotated[int, Range(ge=1, le=MAX_TIMESTEPS)] = 50_000
    method: str = BASE
    method_kwargs: dict[str, Any] = field(default_factory=dict)
    symmetry: str | None = None
    init_from: str | None = None
    freeze_backbone: bool | None = None
    partial_fraction: Annotated[float, Range(ge=0, lt=1)] = 0.0
    out: str = "runs"
    #: a mapping in the YAML, made into the algorithm's schema (see :data:`ALGO_HYPERPARAMS`)
    hyperparams: Any = None
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)
    scorer: ScorerConfig = field(default_factory=ScorerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)

    def __post_init__(self) -> None:
        if self.algo not in ALGO_HYPERPARAMS:
            raise FieldError("algo", self.algo, f"must be one of {', '.join(ALGO_HYPERPARAMS)}")
        object.__setattr__(self, "method", canonical_method(self.method))
        object.__setattr__(
            self, "method_kwargs", validate_method_kwargs(self.method, self.method_kwargs, adapter="rl")
        )
        object.__setattr__(self, "hyperparams", _algo_hyperparams(self.algo, self.hyperparams))
        if self.method == MIRROR_LOSS and ALGOS[self.algo].family != "off_policy":
            raise FieldError(
                "method", self.method, f"penalises an actor: it needs SAC, TD3 or TQC, not {self.algo}"
            )

    @property
    def n_envs(self) -> int:
        """Copies of the env trained on at once (``hyperparams.n_envs`` of PPO / A2C; 1 otherwise)."""
        return int(getattr(self.hyperparams, "n_envs", 1))


def _algo_hyperparams(algo: str, hp: Any) -> Any:
    """``hp`` (a mapping, ``None`` or a schema instance) as ``algo``'s hyperparameter schema."""
    cls = ALGO_HYPERPARAMS[algo]
    if isinstance(hp, cls):
        return hp
    if hp is None:
        hp = {}
    elif not isinstance(hp, Mapping):
        if hasattr(hp, "__dataclass_fields__"):
            raise ConfigError(f"hyperparams: {type(hp).__name__} is not {algo}'s schema ({cls.__name__})")
        raise ConfigError(f"hyperparams: expected a section (mapping), got {hp!r}")
    try:
        return from_dict(cls, hp, "hyperparams")
    except FieldError:
        raise
    except ConfigError as exc:  # unknown keys: say which algorithm's keys they were checked against
        raise ConfigError(f"{exc} (algo {algo})") from None


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


def with_run_options(cfg: RLConfig, init_from: str | None = None, method: str | None = None) -> RLConfig:
    """``cfg`` with the agent to finetune and / or the method replaced (``equirl train --init-from /
    --method``). Switching to ``auto`` drops the config's ``method_kwargs`` (they belong to its own
    method; ``auto`` takes its own options); another method re-validates them against the new one.

    :param init_from: a zip, run folder, RL-zoo folder or ``hf://ORG/REPO`` (``None``: the config's).
    :param method: a method name or alias (``None``: the config's).
    """
    from dataclasses import replace

    if init_from:
        cfg = replace(cfg, init_from=init_from)
    if method is not None and canonical_method(method) == AUTO and cfg.method != AUTO:
        return replace(cfg, method=AUTO, method_kwargs={})
    if method:
        return replace(cfg, method=method)
    return cfg


def load_rl_config(path: str | Path, overrides: list[str] | None = None) -> RLConfig:
    """Read and validate a run config (one-line :class:`ConfigError` on any problem)."""
    cfg = load_config(RLConfig, path, overrides, section="rl")
    if not isinstance(cfg, RLConfig):  # pragma: no cover
        raise ConfigError(f"{path}: not an RL config")
    return cfg
