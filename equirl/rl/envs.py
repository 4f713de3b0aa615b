"""Making the environments named by the symmetry specs (one-line errors when one cannot run here)."""

from __future__ import annotations

import importlib.util
import logging
import os
from typing import Any

from equirl.errors import ConfigError, EquirlError, SymmetryError
from equirl.utils.io import printable

__all__ = [
    "ALLOW_IMPORT_VAR",
    "LEGACY_ENV_IDS",
    "action_meanings",
    "atari_env_kwargs",
    "check_env_id",
    "current_env_id",
    "is_atari",
    "is_minatar",
    "make_env",
    "make_vec_env",
    "prepare_env",
    "resolve_env_id",
]

log = logging.getLogger(__name__)

#: set to ``1`` to let an env id ``"module:EnvName"`` import ``module`` (gymnasium's plugin syntax); off by
#: default, since a config or a spec naming such an id would otherwise run that module's code
ALLOW_IMPORT_VAR = "EQUIRL_ALLOW_ENV_IMPORT"


def check_env_id(env_id: Any) -> str:
    """``env_id`` when gymnasium may make it without importing anything: every env equirl makes goes
    through here (:func:`make_env`, :func:`make_vec_env`).

    gymnasium imports ``module`` for an id ``"module:EnvName"``, so a config or spec file could run code
    by naming one; such ids are refused unless ``$EQUIRL_ALLOW_ENV_IMPORT`` is ``1``.

    :raises ConfigError: one line, for an id that is not a non-empty string or that would import a module.

    Example::

        >>> check_env_id("CartPole-v1")
        'CartPole-v1'
        >>> check_env_id("os:CartPole-v1")
        Traceback (most recent call last):
        ...
        equirl.errors.ConfigError: env id 'os:CartPole-v1' would import the Python module 'os': importing modules from env ids is off; install the env's package (pip install ...) and register the env with gymnasium, or set EQUIRL_ALLOW_ENV_IMPORT=1 to allow it
    """
    if not isinstance(env_id, str) or not env_id.strip():
        raise ConfigError(
            f"env id must be a non-empty string such as CartPole-v1, got {printable(repr(env_id), 80)}"
        )
    if ":" in env_id and os.environ.get(ALLOW_IMPORT_VAR, "").strip() != "1":
        module = env_id.split(":", 1)[0]
        raise ConfigError(
            f"env id '{printable(env_id, 120)}' would import the Python module '{printable(module, 80)}': "
            "importing modules from env ids is off; install the env's package (pip install ...) and register "
            f"the env with gymnasium, or set {ALLOW_IMPORT_VAR}=1 to allow it"
        )
    return env_id


#: MuJoCo envs whose ``-v5`` is gymnasium 1.x's current version (``-v2`` / ``-v3`` need the retired
#: ``mujoco-py``; ``-v4`` still runs, but equirl's specs are written for ``-v5``)
_MUJOCO_V5 = (
    "Ant",
    "HalfCheetah",
    "Hopper",
    "Humanoid",
    "HumanoidStandup",
    "InvertedDoublePendulum",
    "InvertedPendulum",
    "Pusher",
    "Reacher",
    "Swimmer",
    "Walker2d",
)

#: the MuJoCo envs whose ``-v4`` has the observation and action spaces of ``-v5`` (checked with
#: gymnasium 1.4: the others' ``-v5`` observations differ, e.g. InvertedDoublePendulum 11 -> 9)
_MUJOCO_V4_AS_V5 = ("HalfCheetah", "Hopper", "InvertedPendulum", "Pusher", "Swimmer", "Walker2d")

#: The one table of env ids agents were trained on (RL-zoo agents: gym / gymnasium 0.x) that gymnasium 1.x
#: no longer makes, or that equirl runs on a newer version of: ``{old id: current id}``. The observation
#: and action spaces are the same unless noted by a shape check when the agent loads (e.g. ``Ant-v3``'s
#: contact forces, ``Humanoid-v3``'s 376 features: a one-line error then). Ids gymnasium 1.x still makes
#: as they were (``BipedalWalker-v3``, ``CartPole-v1``, ``Acrobot-v1``, ``*NoFrameskip-v4``) are not listed.
LEGACY_ENV_IDS: dict[str, str] = {
    "LunarLander-v2": "LunarLander-v3",
    "LunarLanderContinuous-v2": "LunarLanderContinuous-v3",
    "BipedalWalker-v2": "BipedalWalker-v3",
    "BipedalWalkerHardcore-v2": "BipedalWalkerHardcore-v3",
    "CarRacing-v0": "CarRacing-v3",
    "CarRacing-v1": "CarRacing-v3",
    "CarRacing-v2": "CarRacing-v3",
    "Pendulum-v0": "Pendulum-v1",
    "CliffWalking-v0": "CliffWalking-v1",
    "Taxi-v3": "Taxi-v4",
    **{f"{name}-v{v}": f"{name}-v5" for name in _MUJOCO_V5 for v in (2, 3)},
    # -v4 runs as -v5 only where their spaces are the same; elsewhere (Ant, Humanoid, HumanoidStandup,
    # InvertedDoublePendulum, Reacher: other observations) it runs as itself, which gymnasium still makes
    **{f"{name}-v4": f"{name}-v5" for name in _MUJOCO_V4_AS_V5},
}

#: ``(old, current)`` pairs already warned about (one warning per pair and process)
_WARNED: set[tuple[str, str]] = set()


def current_env_id(env_id: str) -> str:
    """The id ``env_id`` runs as: its entry in :data:`LEGACY_ENV_IDS`, else itself (no warning).

    Example::

        >>> current_env_id("LunarLander-v2"), current_env_id("Swimmer-v3"), current_env_id("CartPole-v1")
        ('LunarLander-v3', 'Swimmer-v5', 'CartPole-v1')
    """
    return LEGACY_ENV_IDS.get(env_id, env_id)


def resolve_env_id(env_id: str, trained_on: str | None = None) -> str:
    """:func:`current_env_id` of ``env_id``, with one ``logging`` warning per process naming both ids when
    the agent runs on another id than the one it was trained on.

    :param env_id: the id asked for (possibly an old one).
    :param trained_on: the id the agent was trained on (an RL-zoo folder's), when known: asking for
        ``Walker2d-v5`` for an agent of ``Walker2d-v3`` warns too.
    """
    new = current_env_id(check_env_id(env_id))
    old = env_id if env_id != new else None
    if trained_on and trained_on != new and current_env_id(trained_on) == new:
        old = trained_on
    if old is not None and (old, new) not in _WARNED:
        _WARNED.add((old, new))
        log.warning(
            "agent trained on %s: running it on %s, the env's current version in gymnasium %s",
            printable(old, 80),
            printable(new, 80),
            _gym_version(),
        )
    return new


def _gym_version() -> str:
    import gymnasium

    return str(gymnasium.__version__)


def is_atari(env_id: str) -> bool:
    return env_id.startswith("ALE/") or env_id.endswith("NoFrameskip-v4")


def is_minatar(env_id: str) -> bool:
    """A MinAtar game (``MinAtar/Breakout-v1``: 10x10 boolean frames, channel-last; Young & Tian 2019)."""
    return env_id.startswith("MinAtar/")


def _register_minatar(env_id: str) -> None:
    """Register MinAtar's gymnasium envs (once; ``minatar.gym.register_envs`` warns when re-registering)."""
    if importlib.util.find_spec("minatar") is None:
        raise EquirlError(f"cannot run {env_id}: minatar is not installed (pip install 'equirl[minatar]')")
    import gymnasium as gym

    if "MinAtar/Breakout-v1" not in gym.registry:
        import minatar.gym

        minatar.gym.register_envs()


def prepare_env(env_id: str) -> None:
    """Check ``env_id`` and register what it needs (ALE's and MinAtar's envs), before it is made.

    :raises EquirlError: an id that would import a module, or a missing optional dependency (one line
        naming what to install).
    """
    check_env_id(env_id)  # equirl's own envs are registered when equirl.rl is imported
    if is_atari(env_id):
        if importlib.util.find_spec("ale_py") is None:
            raise EquirlError(f"cannot run {env_id}: ale-py is not installed (pip install ale-py)")
        import ale_py
        import gymnasium as gym

        gym.register_envs(ale_py)
        # ALE's C++ core prints its banner on stderr with every first ROM load: warnings and errors only
        ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Warning)
    if is_minatar(env_id):
        _register_minatar(env_id)
    if env_id.startswith("LunarLander") and importlib.util.find_spec("Box2D") is None:
        raise EquirlError(f"cannot run {env_id}: Box2D is not installed (pip install 'gymnasium[box2d]')")


def make_env(env_id: str, seed: int | None = None, **kwargs: Any) -> Any:
    """``gymnasium.make(env_id)`` after registering equirl's, ALE's and MinAtar's envs.

    :raises EquirlError: unknown env id, an id that would import a module (:func:`check_env_id`), or a
        missing optional dependency (one line).
    """
    import gymnasium as gym

    prepare_env(env_id)
    try:
        env = gym.make(env_id, **kwargs)
    except gym.error.Error as exc:
        raise SymmetryError(f"cannot make env {env_id!r}: {str(exc).splitlines()[0]}") from None
    except ImportError as exc:  # missing optional dependency (box2d, mujoco...)
        raise EquirlError(f"cannot run {env_id}: {exc}") from None
    except TypeError as exc:  # an option the env's constructor does not take (an RL-zoo env_kwargs)
        if not kwargs:
            raise
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        names = ", ".join(sorted(kwargs))
        raise ConfigError(
            f"cannot make env {env_id!r} with the options {names}: {printable(first, 160)}"
        ) from None
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def atari_env_kwargs(env_id: str) -> dict[str, Any]:
    """What ``gymnasium.make`` gets for an Atari game under SB3's ``AtariWrapper``: the wrapper skips 4
    frames itself (max-pooling the last two), so an ``ALE/*-v5`` game, which skips 4 of its own, is made
    with ``frameskip=1`` (its sticky actions, 0.25, stay); ``*NoFrameskip-v4`` ids need nothing. Without
    it every agent step would be 16 emulator frames, not the zoo's 4."""
    return {"frameskip": 1} if env_id.startswith("ALE/") else {}


def make_vec_env(env_id: str, n_envs: int = 1, seed: int = 0) -> Any:
    """A SB3 vec env; Atari games get the usual wrappers (SB3's ``AtariWrapper``: no-op starts, 4 frames
    skipped and max-pooled, 84x84 grey frames, episodic lives, clipped rewards; 4 stacked frames, as the
    RL zoo runs them; see :func:`atari_env_kwargs`)."""
    prepare_env(env_id)
    if is_atari(env_id):
        from stable_baselines3.common.env_util import make_atari_env
        from stable_baselines3.common.vec_env import VecFrameStack

        vec = make_atari_env(env_id, n_envs=n_envs, seed=seed, env_kwargs=atari_env_kwargs(env_id))
        return VecFrameStack(vec, n_stack=4)
    from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env

    return sb3_make_vec_env(lambda: make_env(env_id), n_envs=n_envs, seed=seed)


#: MinAtar's action letters (``Env.action_map``) as ALE's action names
_MINATAR_ACTION_NAMES = {"n": "NOOP", "l": "LEFT", "u": "UP", "r": "RIGHT", "d": "DOWN", "f": "FIRE"}


def action_meanings(env: Any) -> list[str] | None:
    """``env.unwrapped.get_action_meanings()`` when the env has it (Atari); for a MinAtar game the names of
    its action set (``minatar.gym.BaseEnv.action_set`` indexing the game's ``action_map``: ``MinAtar/
    Breakout-v1`` has ``[NOOP, LEFT, RIGHT]``); else ``None``."""
    base = env.unwrapped
    fn = getattr(base, "get_action_meanings", None)
    if callable(fn):
        return list(fn())
    letters = getattr(getattr(getattr(base, "game", None), "env", None), "action_map", None)
    action_set = getattr(base, "action_set", None)
    if isinstance(letters, list) and isinstance(action_set, list):
        return [_MINATAR_ACTION_NAMES.get(letters[i], str(letters[i])) for i in action_set]
    return None
