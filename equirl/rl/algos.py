"""The algorithms equirl runs: one :class:`AlgoSpec` per Stable-Baselines3 / sb3-contrib algorithm, the one
table every other module reads (loading, training, evaluation, augmentation, the loss guard, reading an
agent's algorithm from its zip, the policy aliases).

The table is plain data (class and policy paths as strings, resolved on use), so reading it imports
neither torch nor SB3.

Example::

    >>> get_algo("ppo").family, get_algo("sac").actions
    ('on_policy', 'Box')
    >>> [a.name for a in ALGOS.values() if a.trainable]
    ['dqn', 'qrdqn', 'ppo', 'a2c', 'sac', 'td3']
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Literal

from equirl.errors import EquirlError

__all__ = [
    "ALGOS",
    "FEATURE_EXTRACTORS",
    "OTHER_ALGO_MODULES",
    "AlgoSpec",
    "feature_extractor",
    "get_algo",
    "register_policy_aliases",
]

#: sb3-contrib algorithms equirl does not load, by the module of their policies (to name them when a zip
#: holds one; TRPO's policy is SB3's own: recognised by its keys)
OTHER_ALGO_MODULES: dict[str, str] = {
    "sb3_contrib.common.maskable.policies": "MaskablePPO",
    "sb3_contrib.common.recurrent.policies": "RecurrentPPO",
    "sb3_contrib.ars.policies": "ARS",
    "sb3_contrib.crossq.policies": "CrossQ",
}

#: value-based (a Q-network), on-policy actor-critic (a rollout buffer), off-policy actor-critic
Family = Literal["q", "on_policy", "off_policy"]

#: where equirl's equivariant policies are
_POLICIES = "equirl.rl.policies"


def _resolve(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class AlgoSpec:
    """One algorithm.

    :param name: its name in configs and on the command line (``dqn``).
    :param cls_path: the SB3 class, ``module:Name``.
    :param family: ``q`` (DQN-style Q-network), ``on_policy`` (PPO / A2C) or ``off_policy`` (SAC / TD3 /
        DDPG / TQC).
    :param actions: the action space type it needs (``Discrete`` / ``Box``; ``None``: either).
    :param policies: equirl's equivariant policies, ``(MLP, CNN)`` class names in :mod:`equirl.rl.policies`,
        registered as ``EquiMlpPolicy`` / ``EquiCnnPolicy`` on the SB3 class.
    :param policy_modules: the modules of SB3's own policies of this algorithm (how an agent's zip names
        its algorithm; ``ActorCriticPolicy``'s common module is PPO's or A2C's, told apart by its data).
    :param hyperparams: the hyperparameter schema in :mod:`equirl.rl.config` (``None``: equirl loads and
        evaluates the algorithm's agents but does not train it from a run config).
    :param loss_keys: the loss scalars its ``train()`` records (what the non-finite guard reads).
    :param loads_as: another algorithm whose agents this one loads (DDPG is TD3 with one critic update).
    :param title: the name messages show (``QR-DQN``); default: the class name.
    :param deterministic_actor: the actor outputs an action, not a distribution (TD3, DDPG).
    """

    name: str
    cls_path: str
    family: Family
    actions: str | None
    policies: tuple[str, str]
    policy_modules: tuple[str, ...]
    hyperparams: str | None
    loss_keys: tuple[str, ...]
    loads_as: str | None = None
    title: str = ""
    deterministic_actor: bool = False

    def __post_init__(self) -> None:
        if not self.title:
            object.__setattr__(self, "title", self.cls_path.partition(":")[2])

    @property
    def cls(self) -> Any:
        """The SB3 algorithm class."""
        return _resolve(self.cls_path)

    @property
    def on_policy(self) -> bool:
        """A rollout buffer (no replay buffer)."""
        return self.family == "on_policy"

    @property
    def value_based(self) -> bool:
        """A Q-network policy (DQN / QR-DQN)."""
        return self.family == "q"

    @property
    def trainable(self) -> bool:
        """``equirl pretrain`` / ``train`` run it (it has a hyperparameter schema)."""
        return self.hyperparams is not None

    @property
    def augment_buffer(self) -> str:
        """The buffer the augmentation baseline mirrors: ``rollout`` or ``replay``."""
        return "rollout" if self.on_policy else "replay"

    def policy_classes(self) -> tuple[Any, Any]:
        """``(MLP, CNN)`` equivariant policy classes."""
        return _resolve(f"{_POLICIES}:{self.policies[0]}"), _resolve(f"{_POLICIES}:{self.policies[1]}")


_SB3, _CONTRIB = "stable_baselines3", "sb3_contrib"
_ACTOR_CRITIC = ("EquiActorCriticPolicy", "EquiActorCriticCnnPolicy")
_SAC_LOSSES = ("train/actor_loss", "train/critic_loss", "train/ent_coef_loss")
_TD3_LOSSES = ("train/actor_loss", "train/critic_loss")

#: name -> :class:`AlgoSpec`, the algorithms equirl loads (in this order on the command line)
ALGOS: dict[str, AlgoSpec] = {
    a.name: a
    for a in (
        AlgoSpec(
            "dqn",
            f"{_SB3}:DQN",
            "q",
            "Discrete",
            ("EquiDQNPolicy", "EquiCnnDQNPolicy"),
            (f"{_SB3}.dqn.policies",),
            "HyperParams",
            ("train/loss",),
        ),
        AlgoSpec(
            "qrdqn",
            f"{_CONTRIB}:QRDQN",
            "q",
            "Discrete",
            ("EquiQRDQNPolicy", "EquiCnnQRDQNPolicy"),
            (f"{_CONTRIB}.qrdqn.policies",),
            "HyperParams",
            ("train/loss",),
            title="QR-DQN",
        ),
        AlgoSpec(
            "ppo",
            f"{_SB3}:PPO",
            "on_policy",
            None,
            _ACTOR_CRITIC,
            (f"{_SB3}.ppo.policies",),
            "PPOHyperParams",
            ("train/loss", "train/value_loss", "train/policy_gradient_loss"),
        ),
        AlgoSpec(
            "a2c",
            f"{_SB3}:A2C",
            "on_policy",
            None,
            _ACTOR_CRITIC,
            (f"{_SB3}.a2c.policies",),
            "A2CHyperParams",
            ("train/policy_loss", "train/value_loss", "train/entropy_loss"),
        ),
        AlgoSpec(
            "sac",
            f"{_SB3}:SAC",
            "off_policy",
            "Box",
            ("EquiSACPolicy", "EquiSACCnnPolicy"),
            (f"{_SB3}.sac.policies",),
            "SACHyperParams",
            _SAC_LOSSES,
        ),
        AlgoSpec(
            "td3",
            f"{_SB3}:TD3",
            "off_policy",
            "Box",
            ("EquiTD3Policy", "EquiTD3CnnPolicy"),
            (f"{_SB3}.td3.policies", f"{_SB3}.ddpg.policies"),
            "TD3HyperParams",
            _TD3_LOSSES,
            loads_as="ddpg",
            deterministic_actor=True,
        ),
        AlgoSpec(
            "ddpg",
            f"{_SB3}:DDPG",
            "off_policy",
            "Box",
            ("EquiTD3Policy", "EquiTD3CnnPolicy"),
            (),
            None,
            _TD3_LOSSES,
            loads_as="td3",
            deterministic_actor=True,
        ),
        AlgoSpec(
            "tqc",
            f"{_CONTRIB}:TQC",
            "off_policy",
            "Box",
            ("EquiTQCPolicy", "EquiTQCCnnPolicy"),
            (f"{_CONTRIB}.tqc.policies",),
            None,
            _SAC_LOSSES,
        ),
    )
}


#: the feature extractors a DQN / QR-DQN config can name (``hyperparams.features_extractor``), as class
#: paths (``auto``: SB3's own choice, a flatten for vectors, NatureCNN for frames); the config schema, the
#: model builder and the restricted zip loader (which allows exactly these classes) all read this table
FEATURE_EXTRACTORS: dict[str, str | None] = {
    "auto": None,
    "minatar-cnn": "equirl.rl.extractors:MinAtarCNN",  # Young & Tian 2019's MinAtar network
}


def feature_extractor(name: str) -> Any:
    """The class of extractor ``name`` of :data:`FEATURE_EXTRACTORS` (``None`` for ``auto``)."""
    path = FEATURE_EXTRACTORS[name]
    return None if path is None else _resolve(path)


def get_algo(name: str) -> AlgoSpec:
    """The :class:`AlgoSpec` of ``name``; one line listing the algorithms otherwise."""
    spec = ALGOS.get(name) if isinstance(name, str) else None
    if spec is None:
        raise EquirlError(f"unknown algo {name!r}; choose one of {', '.join(ALGOS)}")
    return spec


def register_policy_aliases() -> None:
    """Add ``EquiMlpPolicy`` / ``EquiCnnPolicy`` to every algorithm's ``policy_aliases`` (a new dict each
    time: SB3's class attributes are not mutated in place), so ``PPO("EquiMlpPolicy", env)`` and
    ``PPO.load`` of an equivariant agent work once :mod:`equirl.rl` is imported."""
    for spec in ALGOS.values():
        cls = spec.cls
        mlp, cnn = spec.policy_classes()
        cls.policy_aliases = {**cls.policy_aliases, "EquiMlpPolicy": mlp, "EquiCnnPolicy": cnn}
