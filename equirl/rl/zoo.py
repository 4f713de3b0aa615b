"""RL-zoo folders, run as their authors ran them, without running code from them.

An RL-zoo run folder is ``{algo}/{env}_{n}/`` with the final model ``{env}.zip``, maybe ``best_model.zip``,
and a subfolder named after the env the agent was *trained* on (``Swimmer-v3/``, also when it now runs as
``Swimmer-v5``) holding ``config.yml`` (the hyperparameters), ``args.yml`` (the command line),
``env_kwargs.yml`` (folders from the Hugging Face hub) and ``vecnormalize.pkl``. rl_zoo3 builds the env an
agent runs in from them, in this order (``rl_zoo3.exp_manager.ExperimentManager.create_envs``, and
``rl_zoo3.utils.create_test_env`` for ``enjoy``)::

    gymnasium.make(env, **env_kwargs) -> Monitor -> env_wrapper(s) -> VecEnv -> VecNormalize -> VecFrameStack

:func:`read_zoo_folder` reads the folder into a :class:`ZooFolder` (YAML through
:func:`equirl.config.load_yaml` with ``zoo=True``: plain data; the ``normalize`` option's strings are
parsed as literals, never evaluated). :func:`zoo_env` turns it into a :class:`ZooEnv`, the recipe of that
env: the ``env_wrapper`` classes come from :data:`ALLOWED_WRAPPERS` only (any other class would be
imported by its dotted path, i.e. run code named by the file; that needs ``--trust-checkpoint``).

The wrappers change what the policy sees, so the symmetry applied to its observation is extended to match
(:func:`extend_symmetry`): a time feature (``TimeFeatureWrapper``: the remaining fraction of the episode)
is invariant, the group acts trivially on it; a frame stack of ``k`` observations is acted on frame by
frame. The symmetrized policy stays exactly equivariant.

The sb3 agents on the Hugging Face hub (``hf://sb3/dqn-LunarLander-v2``) are the same files with the
``{env}/`` subfolder's files at the top of the repository (``vec_normalize.pkl`` for the statistics, the
model as ``{algo}-{env}.zip``): :func:`resolve_agent_path` downloads such a repository once into the hub
cache (:func:`equirl.utils.hub.hub_agent_folder`; offline, the cache or one line at once) and the folder
reads as any other.

Example::

    >>> from equirl.rl.spec import load_spec
    >>> sym = extend_symmetry(load_spec("Pendulum-v1"), extra_features=1, n_stack=2)
    >>> [list(s) for s in sym.obs_generators[0]]
    [[0, 1, 2, 3, 4, 5, 6, 7], [1.0, -1.0, -1.0, 1.0, 1.0, -1.0, -1.0, 1.0]]
"""

from __future__ import annotations

import ast
import dataclasses
import glob
import importlib
import logging
import os
import re
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym

from equirl.errors import CheckpointError, ConfigError, EquirlError, SymmetryError
from equirl.utils.io import printable

__all__ = [
    "ALLOWED_WRAPPERS",
    "RepeatAction",
    "ZooAgent",
    "ZooEnv",
    "ZooFolder",
    "agent_env_id",
    "extend_symmetry",
    "find_agent_zip",
    "open_agent",
    "read_zoo_folder",
    "resolve_agent_path",
    "save_agent_env",
    "zoo_env",
]

log = logging.getLogger(__name__)

#: the files of a zoo folder's ``{env}/`` subfolder
CONFIG, ARGS, ENV_KWARGS, STATS = "config.yml", "args.yml", "env_kwargs.yml", "vecnormalize.pkl"
#: what :meth:`ZooFolder._recorded_statistics` returns for a zip that records no statistics
_UNRECORDED = object()
#: the statistics' name in a hub repository (rl_zoo3's ``push_to_hub``)
HUB_STATS = "vec_normalize.pkl"
#: the flag that lets a non-allowlisted wrapper be imported by its path
TRUST_FLAG = "--trust-checkpoint"

#: how an allowlisted wrapper changes the observation: ``"same"`` (not at all), ``"time_feature"`` (one
#: invariant feature appended), ``"image"`` (Atari preprocessing: the image spec acts on it as on frames)
_SAME, _TIME, _IMAGE = "same", "time_feature", "image"


@dataclass(frozen=True)
class _Allowed:
    """An allowlisted wrapper: where its class is, its keyword options ``{name: (type, low, high)}`` and
    what it does to the observation."""

    module: str
    name: str
    kwargs: Mapping[str, tuple[type, float, float]]
    obs: str


_TIME_FEATURE = _Allowed(
    "sb3_contrib.common.wrappers",
    "TimeFeatureWrapper",
    {"max_steps": (int, 1, 10**9), "test_mode": (bool, 0, 1)},
    _TIME,
)
_TIME_LIMIT = _Allowed("gymnasium.wrappers", "TimeLimit", {"max_episode_steps": (int, 1, 10**9)}, _SAME)
_FRAME_SKIP = _Allowed("equirl.rl.zoo", "RepeatAction", {"skip": (int, 1, 1000)}, _SAME)

#: The ``env_wrapper`` classes a zoo folder may name without ``--trust-checkpoint``, by the dotted paths
#: configs use (the aliases are re-exports of, or behave exactly as, the same class). They only append a
#: time feature, preprocess Atari frames, cut episodes or repeat actions: none of them acts on a policy's
#: inputs in a way the symmetry cannot follow. rl_zoo3's ``FrameSkip`` (repeat the action, sum the rewards)
#: runs as :class:`RepeatAction`, so that rl_zoo3, which patches gymnasium when imported, is not needed.
ALLOWED_WRAPPERS: dict[str, _Allowed] = {
    "sb3_contrib.common.wrappers.TimeFeatureWrapper": _TIME_FEATURE,
    "sb3_contrib.common.wrappers.time_feature.TimeFeatureWrapper": _TIME_FEATURE,
    "rl_zoo3.wrappers.TimeFeatureWrapper": _TIME_FEATURE,
    "utils.wrappers.TimeFeatureWrapper": _TIME_FEATURE,  # rl-baselines3-zoo before rl_zoo3
    "stable_baselines3.common.atari_wrappers.AtariWrapper": _Allowed(
        "stable_baselines3.common.atari_wrappers",
        "AtariWrapper",
        {
            "noop_max": (int, 0, 10_000),
            "frame_skip": (int, 1, 100),
            "screen_size": (int, 1, 1024),
            "terminal_on_life_loss": (bool, 0, 1),
            "clip_reward": (bool, 0, 1),
            "action_repeat_probability": (float, 0.0, 1.0),
        },
        _IMAGE,
    ),
    "gymnasium.wrappers.TimeLimit": _TIME_LIMIT,
    "gymnasium.wrappers.common.TimeLimit": _TIME_LIMIT,
    "gym.wrappers.TimeLimit": _TIME_LIMIT,
    "rl_zoo3.wrappers.FrameSkip": _FRAME_SKIP,
    "utils.wrappers.FrameSkip": _FRAME_SKIP,
}


class RepeatAction(gym.Wrapper):  # type: ignore[type-arg]
    """Each action is applied ``skip`` times (or until the episode ends); the rewards are summed and the
    last observation returned (what rl_zoo3's ``FrameSkip`` does).

    :param env: the env to wrap.
    :param skip: how many env steps one action lasts.
    """

    def __init__(self, env: Any, skip: int = 4) -> None:
        super().__init__(env)
        self.skip = int(skip)

    def step(self, action: Any) -> Any:
        total = 0.0
        for _ in range(self.skip):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        return obs, total, terminated, truncated, info


# -- reading the folder ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ZipRecord:
    """What a zip equirl wrote says about the files it runs with, beside it.

    :param statistics: ``(path relative to the zip's folder, sha256)`` of its normalisation statistics,
        ``None``: it runs without.
    :param env_dir: the subfolder holding its RL-zoo env description (``config.yml``...), ``None``: none.
    """

    statistics: tuple[str, str] | None
    env_dir: str | None


#: the ``data`` entry in which equirl records the files a zip runs with: ``{"file", "sha256", "env_dir",
#: "num_timesteps"}`` (null for none); SB3 sets it as a model attribute on load, and keeps it on save
STATISTICS_KEY = "equirl_statistics"


def _plain_name(value: Any) -> bool:
    return (
        isinstance(value, str)
        and re.fullmatch(r"[\w.\-]{1,128}", value) is not None
        and value not in (".", "..")
    )


def record_of(data: dict[str, Any]) -> ZipRecord | None:
    """What an SB3 zip's ``data`` JSON records under :data:`STATISTICS_KEY`, while it still holds."""
    rec = data.get(STATISTICS_KEY)
    if not isinstance(rec, dict) or rec.get("num_timesteps") != data.get("num_timesteps"):
        return None  # not recorded, or the agent trained on since (rl_zoo3 -i) with statistics of its own
    name, digest, env_dir = rec.get("file"), rec.get("sha256"), rec.get("env_dir")
    if env_dir is not None and not _plain_name(env_dir):
        return None
    if name is None and digest is None:
        return ZipRecord(None, env_dir)
    if (
        isinstance(name, str)
        and 1 <= len(name.split("/")) <= 2
        and all(_plain_name(part) for part in name.split("/"))
        and isinstance(digest, str)
        and re.fullmatch(r"[0-9a-f]{64}", digest)
    ):
        return ZipRecord((name, digest), env_dir)
    return None


def missing_agent(p: Path) -> CheckpointError:
    """The one line for an agent path that is not a regular file: missing, a broken link, a FIFO, a
    device (a folder is the caller's to handle)."""
    import os
    import stat

    if not os.path.lexists(p):
        return CheckpointError(f"checkpoint not found: {printable(p, 200)}")
    try:
        mode = p.stat().st_mode
    except OSError:
        return CheckpointError(f"checkpoint {printable(p, 200)} is a broken symbolic link")
    if stat.S_ISDIR(mode):
        return CheckpointError(f"checkpoint {printable(p, 200)} is a directory, not a zip")
    what = (
        "a named pipe (FIFO)"
        if stat.S_ISFIFO(mode)
        else "a device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "not a regular file"
    )
    return CheckpointError(f"checkpoint {printable(p, 200)} is {what}: give the agent's zip or its folder")


@dataclass(frozen=True)
class ZooFolder:
    """What an agent's folder says about how it ran (plain data; read by :func:`read_zoo_folder`).

    :param folder: the run folder (``{algo}/{env}_{n}/``, or the folder of a zip).
    :param final_zip: the final model (``{env}.zip``), if found; ``best_zip``: ``best_model.zip``.
    :param stats_dir: the subfolder holding ``config.yml`` / ``vecnormalize.pkl`` (named after the
        training env id, whatever id the agent runs as now), ``None`` outside an RL-zoo folder.
    :param trained_env_id: the env id the agent was trained on (``args.yml``'s ``env``, else the
        subfolder's or the folder's name), if the folder names one.
    :param env_wrapper: ``config.yml``'s ``env_wrapper``, as ``((class path, kwargs), ...)``.
    :param vec_env_wrapper: ``config.yml``'s ``vec_env_wrapper``, likewise.
    :param frame_stack: observations stacked (``0``: none).
    :param normalize: ``config.yml``'s ``normalize`` (``None``: the folder has no ``config.yml``).
    :param normalize_kwargs: its options (``norm_obs``, ``norm_reward``...), from a mapping or a string.
    :param env_kwargs: the env's constructor options (``config.yml``, then ``env_kwargs.yml``, then
        ``args.yml``'s when it has some, as rl_zoo3's ``enjoy`` does).
    :param vecnormalize: the ``vecnormalize.pkl`` lying in the folder, if any (see :meth:`statistics`).
    :param given_zip: the zip the folder was read for, when a zip (not a folder) was given.
    :param record: what ``given_zip`` records of the files it runs with (:func:`record_of`), if anything.
    """

    folder: Path
    final_zip: Path | None = None
    best_zip: Path | None = None
    stats_dir: Path | None = None
    trained_env_id: str | None = None
    env_wrapper: tuple[tuple[str, dict[str, Any]], ...] = ()
    vec_env_wrapper: tuple[tuple[str, dict[str, Any]], ...] = ()
    frame_stack: int = 0
    normalize: bool | None = None
    normalize_kwargs: dict[str, Any] = field(default_factory=dict)
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    vecnormalize: Path | None = None
    given_zip: Path | None = None
    record: ZipRecord | None = None

    @property
    def is_zoo(self) -> bool:
        """Whether the folder has an RL-zoo ``{env}/`` subfolder."""
        return self.stats_dir is not None

    @property
    def norm_obs(self) -> bool:
        """Whether the agent saw normalised observations (VecNormalize's default: yes)."""
        return bool(self.normalize) and bool(self.normalize_kwargs.get("norm_obs", True))

    @property
    def norm_reward(self) -> bool:
        """Whether training normalised rewards (irrelevant to evaluation; kept for the record)."""
        return bool(self.normalize) and bool(self.normalize_kwargs.get("norm_reward", True))

    def statistics(self, zip_path: Path | None = None) -> Path | None:
        """The ``vecnormalize.pkl`` the agent runs with: what the zip records where it records it (a zip
        equirl wrote names the statistics saved beside it, or none); else the one in the folder when
        ``config.yml`` says ``normalize`` (without a ``config.yml``: whichever lies there); ``None`` when
        it ran without.

        :param zip_path: the zip to be loaded (default: the one given, else the final one).
        :raises CheckpointError: ``normalize`` is on for observations and no statistics are there (the
            agent would silently run on unnormalised observations); the zip records statistics that are
            missing, or another agent's lie beside it.
        """
        recorded = self._recorded_statistics(zip_path or self.given_zip or self.final_zip)
        if recorded is not _UNRECORDED:
            return recorded  # type: ignore[return-value]
        if self.normalize is None:
            return self.vecnormalize
        if not self.normalize:
            if self.vecnormalize is not None:
                log.info("%s: config.yml says normalize: false, not using %s", self.folder, self.vecnormalize)
            return None
        if self.vecnormalize is None and self.norm_obs:
            where = self.stats_dir if self.stats_dir is not None else self.folder
            raise CheckpointError(
                f"{printable(where, 200)}: config.yml says normalize: {printable(self._normalize_text(), 80)} "
                f"but there is no {STATS} there; the agent was trained on normalised observations and "
                "cannot run without its statistics"
            )
        return self.vecnormalize

    def _recorded_statistics(self, zip_path: Path | None) -> Path | object | None:
        """The statistics ``zip_path`` records (checked: the file beside it, with the recorded SHA-256),
        ``None`` where it records none, :data:`_UNRECORDED` for a zip from elsewhere."""
        from equirl.utils.io import sha256_file

        if zip_path is None:
            return _UNRECORDED
        record = self.record if zip_path == self.given_zip else _zip_record(zip_path)  # read once per zip
        if record is None:
            return _UNRECORDED
        name, rec = printable(zip_path, 200), record.statistics
        if rec is None:
            if self.vecnormalize is not None:
                log.warning(
                    "%s was saved without normalisation statistics: %s is not used", name, self.vecnormalize
                )
            return None
        want = zip_path.parent / rec[0]
        if not want.is_file() or want.stat().st_size > 1 << 28:  # statistics are kilobytes
            raise CheckpointError(
                f"{name} runs with the normalisation statistics {rec[0]} saved beside it, and they are not "
                "there: copy them along with the zip"
            )
        if sha256_file(want) != rec[1]:
            raise CheckpointError(
                f"{printable(want, 200)} is not the statistics {name} was saved with (another agent's?): "
                "keep each agent in a folder of its own, with its own statistics"
            )
        return want

    def _normalize_text(self) -> str:
        return "true" if not self.normalize_kwargs else str(self.normalize_kwargs)


def resolve_agent_path(path: str | Path) -> Path:
    """``path``; the local copy of a hub agent (``hf://ORG/REPO``, see
    :func:`equirl.utils.hub.hub_agent_folder`); or the
    shipped agent a relative ``agents/...`` path names when it does not exist here."""
    from equirl.utils.hub import hub_agent_folder, is_hub_ref

    if is_hub_ref(path):
        return hub_agent_folder(str(path))
    p = Path(path)
    if not p.exists() and not p.is_absolute() and p.parts[:1] == ("agents",):
        from equirl.assets import asset_path

        shipped = asset_path("agents").joinpath(*p.parts[1:])
        if shipped.exists():
            if shipped.resolve() != p.resolve():  # from another folder than the checkout: say which one
                # loudly when this folder has an agents/ of its own (an export to look for here?)
                log.log(
                    logging.WARNING if Path("agents").is_dir() else logging.INFO,
                    "%s is not here: using the shipped agent %s",
                    printable(p, 200),
                    shipped,
                )
            p = shipped
    return p


def absolute_agent_path(path: str | None) -> str | None:
    """A local agent path as an absolute one (a shipped ``agents/...`` name resolved; a hub reference,
    an absolute path or a path that exists nowhere unchanged): what a run's ``config.yaml`` stores, so a
    resume from another folder finds the agent, and what a sweep's trial fingerprints (the same text)."""
    if not path or "://" in path or os.path.isabs(path):
        return path
    found = resolve_agent_path(path)
    return os.path.abspath(found) if found.exists() else path


def _id_variants(env_id: str) -> list[str]:
    """The folder / file names an env id may have been saved under (``ALE/Pong-v5``: ``ALE-Pong-v5``...)."""
    out = [env_id, env_id.replace("/", "-"), env_id.replace("/", "_"), env_id.split("/")[-1]]
    return list(dict.fromkeys(out))


def _name_to_id(name: str) -> str:
    """An env id from a folder name (rl_zoo3 writes ``ALE/Pong-v5`` as ``ALE-Pong-v5``)."""
    return "ALE/" + name[4:] if name.startswith("ALE-") else name


def _stats_dirs(folder: Path) -> list[Path]:
    try:
        # a symlinked {env}/ folder counts (ignoring it ran the agent without its statistics, silently);
        # what is read there goes through the same restricted loaders
        subs = sorted(d for d in folder.iterdir() if d.is_dir())
    except OSError as exc:
        raise CheckpointError(f"cannot read the folder {printable(folder, 200)}: {exc.strerror}") from None
    # rl_zoo3 writes both YAML files into every {env}/ subfolder: statistics alone do not make a
    # subfolder an agent's (a bare zip's folder may hold other agents' folders)
    return [d for d in subs if any((d / n).is_file() for n in (CONFIG, ARGS))]


def _zip_record(path: Path) -> ZipRecord | None:
    """The :class:`ZipRecord` of a zip equirl wrote (``None`` for a folder, or a zip from elsewhere; a
    zip that cannot be read is reported where it is loaded)."""
    from equirl.rl.safe_load import read_zip_data

    if not path.is_file():
        return None
    try:
        return record_of(read_zip_data(path))
    except EquirlError:
        return None


def _pick_stats_dir(folder: Path, env_id: str | None) -> Path | None:
    """The one subfolder holding ``config.yml`` / ``args.yml`` (and the statistics); among several, the
    one named after ``env_id`` (or an id that runs as the same current env), or after the folder."""
    from equirl.rl.envs import current_env_id

    dirs = _stats_dirs(folder)
    if not dirs and any((folder / n).is_file() for n in (CONFIG, ARGS)):
        return folder  # the hub's layout: the subfolder's files at the top
    if len(dirs) <= 1:
        return dirs[0] if dirs else None
    wanted: list[str] = []
    if env_id:
        wanted += _id_variants(env_id)
    m = re.fullmatch(r"(.+)_\d+", folder.name)
    if m:
        wanted.append(m.group(1))
    for name in wanted:
        for d in dirs:
            if d.name == name:
                return d
    if env_id:
        same = [d for d in dirs if current_env_id(_name_to_id(d.name)) == current_env_id(env_id)]
        if len(same) == 1:
            return same[0]
    names = ", ".join(printable(d.name, 60) for d in dirs[:5])
    raise CheckpointError(
        f"{printable(folder, 200)} holds several env folders ({names}): pass the env the agent ran on"
    )


def _yaml(path: Path) -> dict[str, Any]:
    from equirl.config import load_yaml

    return load_yaml(path, zoo=True) if path.is_file() else {}


def _mapping(value: Any, where: str, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ConfigError(f"{where}: {key} must be a mapping of names to values, got {type(value).__name__}")
    return dict(value)


def _wrapper_list(value: Any, where: str, key: str) -> tuple[tuple[str, dict[str, Any]], ...]:
    """rl_zoo3's ``env_wrapper`` forms -- a class path, ``{path: kwargs}``, or a list of those -- as
    ``((path, kwargs), ...)``."""
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    out: list[tuple[str, dict[str, Any]]] = []
    for item in items:
        if isinstance(item, str):
            out.append((item, {}))
        elif isinstance(item, Mapping) and len(item) == 1 and isinstance(next(iter(item)), str):
            name = next(iter(item))
            out.append((name, _mapping(item[name], where, f"{key}.{printable(name, 80)}")))
        else:
            raise ConfigError(
                f"{where}: {key} must be a class path, {{class path: options}} or a list of those, "
                f"got {printable(repr(item), 80)}"
            )
    return tuple(out)


_LITERAL_HINT = "a mapping such as {'norm_obs': True, 'norm_reward': False} or dict(norm_obs=True)"


def parse_normalize(value: Any, where: str) -> tuple[bool, dict[str, Any]]:
    """``config.yml``'s ``normalize`` as ``(on, options)``: ``true`` / ``false``, a mapping, or a string
    rl_zoo3 would ``eval`` -- here parsed as a literal (``"{'norm_obs': True}"``) or a ``dict(...)`` call
    with literal keyword values, nothing else.

    Example::

        >>> parse_normalize("dict(norm_obs=True, norm_reward=False)", "config.yml")
        (True, {'norm_obs': True, 'norm_reward': False})
        >>> parse_normalize("__import__('os')", "config.yml")
        Traceback (most recent call last):
        ...
        equirl.errors.ConfigError: config.yml: normalize must be true, false or a mapping such as {'norm_obs': True, 'norm_reward': False} or dict(norm_obs=True), got "__import__('os')"
    """
    if value is None or isinstance(value, bool):
        return bool(value), {}
    if isinstance(value, Mapping):
        kwargs = _mapping(value, where, "normalize")
    elif isinstance(value, str):
        kwargs = _literal_kwargs(value, where)
    else:
        raise ConfigError(
            f"{where}: normalize must be true, false or {_LITERAL_HINT}, got {type(value).__name__}"
        )
    for key in ("norm_obs", "norm_reward"):
        if key in kwargs and not isinstance(kwargs[key], bool):
            raise ConfigError(
                f"{where}: normalize's {key} must be true or false, got {printable(repr(kwargs[key]), 40)}"
            )
    return True, kwargs


def _literal(node: ast.expr) -> Any:
    """A literal, or ``float('inf')`` / ``float('-inf')`` / ``float('nan')`` (the zoo writes
    ``clip_obs=float('inf')``): nothing else is evaluated."""
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "float"
        and len(node.args) == 1
        and not node.keywords
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
        and node.args[0].value.strip().lower().lstrip("+-") in ("inf", "infinity", "nan")
    ):
        return float(node.args[0].value)
    return ast.literal_eval(node)


def _literal_kwargs(text: str, where: str) -> dict[str, Any]:
    bad = ConfigError(
        f"{where}: normalize must be true, false or {_LITERAL_HINT}, got {printable(repr(text), 80)}"
    )
    if len(text) > 2000:
        raise bad
    try:
        node = ast.parse(text.strip(), mode="eval").body
        if isinstance(node, ast.Call):  # dict(key=literal, ...) only
            if not (isinstance(node.func, ast.Name) and node.func.id == "dict") or node.args:
                raise bad
            if any(k.arg is None for k in node.keywords):
                raise bad
            return {str(k.arg): _literal(k.value) for k in node.keywords}
        if isinstance(node, ast.Dict):
            if any(k is None for k in node.keys):
                raise bad
            value = {ast.literal_eval(k): _literal(v) for k, v in zip(node.keys, node.values)}  # type: ignore[arg-type]
        else:
            value = ast.literal_eval(node)
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
        raise bad from None
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise bad
    return value


def _int_option(value: Any, where: str, key: str, low: int, high: int) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(
            f"{where}: {key} must be an integer in [{low}, {high}], got {printable(repr(value), 40)}"
        )
    return int(value)


def _find_zips(folder: Path, names: list[str]) -> tuple[Path | None, Path | None]:
    best = folder / "best_model.zip"
    for name in names:
        for variant in _id_variants(name):
            if (folder / f"{variant}.zip").is_file():
                return folder / f"{variant}.zip", best if best.is_file() else None
            hub = sorted(folder.glob(f"*-{glob.escape(variant)}.zip"))  # the hub's {algo}-{env}.zip
            if len(hub) == 1 and hub[0].is_file():
                return hub[0], best if best.is_file() else None
    return None, best if best.is_file() else None


def read_zoo_folder(path: str | Path, env_id: str | None = None) -> ZooFolder:
    """Read an agent's folder: an RL-zoo run folder, or the folder of a zip (a plain zip gives a
    :class:`ZooFolder` with nothing but its folder, and the statistics lying beside it if any).

    The ``{env}/`` subfolder is found whatever ``env_id`` is passed: it is the one subfolder holding
    ``config.yml`` / ``args.yml`` / ``vecnormalize.pkl`` (named after the training env id, e.g.
    ``Walker2d-v3`` for an agent now run as ``Walker2d-v5``); ``env_id`` only chooses among several.

    :param path: a zoo folder, an equirl run folder, or a zip (its folder is read).
    :param env_id: the env the agent is to run on (optional).
    :raises CheckpointError: the path does not exist or cannot be read (one line).
    :raises ConfigError: a YAML file is malformed, uses a tag other than the zoo's ``OrderedDict``, or an
        option has the wrong type (one line naming the file).
    """
    p = resolve_agent_path(path)
    if not p.is_file() and not p.is_dir():
        raise missing_agent(p)
    folder = p if p.is_dir() else p.parent
    record = _zip_record(p)
    if record is None:
        stats_dir = _pick_stats_dir(folder, env_id)
    else:  # a zip equirl wrote names its env description's subfolder (or none): no other agent's is read
        stats_dir = folder / record.env_dir if record.env_dir is not None else None
        if stats_dir is not None and not stats_dir.is_dir():
            raise CheckpointError(
                f"{printable(p, 200)} runs with the env description in {printable(stats_dir, 200)}, and it "
                "is not there: copy that folder along with the zip"
            )
    cfg = args = extra = {}
    if stats_dir is not None:
        cfg, args, extra = _yaml(stats_dir / CONFIG), _yaml(stats_dir / ARGS), _yaml(stats_dir / ENV_KWARGS)
    where = printable(stats_dir / CONFIG, 200) if stats_dir is not None else printable(folder, 200)
    trained = args.get("env")
    if not isinstance(trained, str) or not trained.strip():
        trained = None
    if trained is None and stats_dir is not None:
        trained = _name_to_id(stats_dir.name)
    m = re.fullmatch(r"(.+)_\d+", folder.name)
    names = [n for n in (trained, env_id, m.group(1) if m else None) if n]
    final, best = _find_zips(folder, names)
    if trained is None and m and final is not None:
        trained = _name_to_id(m.group(1))
    env_kwargs = _mapping(cfg.get("env_kwargs"), where, "env_kwargs")
    env_kwargs.update(_mapping(extra, printable(stats_dir or folder, 200) + "/" + ENV_KWARGS, "env_kwargs"))
    if args.get("env_kwargs") is not None:  # the command line's overrode the config's (rl_zoo3's enjoy)
        env_kwargs = _mapping(
            args["env_kwargs"], printable(stats_dir or folder, 200) + "/" + ARGS, "env_kwargs"
        )
    normalize: bool | None = None
    norm_kwargs: dict[str, Any] = {}
    if stats_dir is not None and (stats_dir / CONFIG).is_file():
        normalize, norm_kwargs = parse_normalize(cfg.get("normalize"), where)
    stats: Path | None = None
    dirs = ([stats_dir] if stats_dir is not None else []) + [folder]
    for cand in [d / n for d in dirs for n in (STATS, HUB_STATS)]:
        if cand.is_file():
            stats = cand
            break
    return ZooFolder(
        folder=folder,
        final_zip=final,
        best_zip=best,
        stats_dir=stats_dir,
        trained_env_id=trained,
        env_wrapper=_wrapper_list(cfg.get("env_wrapper"), where, "env_wrapper"),
        vec_env_wrapper=_wrapper_list(cfg.get("vec_env_wrapper"), where, "vec_env_wrapper"),
        frame_stack=_int_option(cfg.get("frame_stack"), where, "frame_stack", 1, 1024),
        normalize=normalize,
        normalize_kwargs=norm_kwargs,
        env_kwargs=env_kwargs,
        vecnormalize=stats,
        given_zip=p if p.is_file() else None,
        record=record,
    )


#: which zip of a run directory :func:`find_agent_zip` takes
WHICH = ("best", "final")


def find_agent_zip(path: str | Path, env_id: str | None = None, which: str = "best") -> Path:
    """The model zip at ``path``: a zip file, an equirl run directory or an RL-zoo folder.

    In a folder, ``which="best"`` takes ``best_model.zip`` (the best periodic evaluation) when there is
    one, else the final model; ``which="final"`` the final model: ``{env}.zip`` (RL-zoo layout, named
    after the env the agent was *trained* on, found whatever ``env_id`` is: ``Swimmer-v3.zip`` for
    ``Swimmer-v5``) or ``model.zip`` (equirl run directory). A relative ``agents/...`` path that does not
    exist here names a shipped agent (the shipped configs say
    ``init_from: agents/dqn/CartPole-v1/CartPole-v1_partial.zip``), so it works from any folder.

    :param path: zip file or folder.
    :param env_id: the env (RL-zoo folders name the zip after it).
    :param which: ``"best"`` or ``"final"``.
    """
    if which not in WHICH:
        raise EquirlError(f"which must be one of {list(WHICH)}, got {which!r}")
    p = resolve_agent_path(path)
    if p.is_file():
        return p
    if p.is_dir():
        if which == "best" and (p / "best_model.zip").is_file():
            log.info("%s: taking best_model.zip (which='final' for the final model)", p)
            return p / "best_model.zip"
        names = [f"{env_id.replace('/', '_')}.zip", f"{env_id.split('/')[-1]}.zip"] if env_id else []
        for name in [*names, "model.zip"]:
            if (p / name).is_file():
                return p / name
        final = read_zoo_folder(p, env_id).final_zip  # the zoo's {trained env}.zip
        if final is not None:
            return final
        zips = [z for z in sorted(p.glob("*.zip")) if z.name != "best_model.zip" or which == "best"]
        if len(zips) == 1:
            return zips[0]
        if (p / "run.json").is_file():  # an equirl run that has not finished: no model.zip yet
            from equirl.rl.lifecycle import effective_status, read_run
            from equirl.utils.runs import resume_command

            try:
                info = read_run(p)
            except CheckpointError:
                info = {}
            state = effective_status(info, p)
            raise CheckpointError(
                f"{p} is a run that has not finished ({printable(state, 40)} at step "
                f"{printable(str(info.get('steps_done', '?')), 20)}): no model.zip yet; continue it with "
                f"{resume_command(p, info.get('command'))}"
            )
        if len(zips) > 1:
            shown = ", ".join(printable(z.name, 60) for z in zips[:5]) + (", ..." if len(zips) > 5 else "")
            raise CheckpointError(f"{p} holds several model zips ({shown}): give the one to use")
        raise CheckpointError(f"no model zip in {p} (expected {env_id}.zip or model.zip)")
    raise missing_agent(p)


def agent_env_id(path: str | Path) -> str | None:
    """The env id an agent's files name, if any: an RL-zoo folder's (``args.yml``'s ``env``, its
    ``{env}/`` subfolder or ``{env}_{n}`` folder name), else an equirl run's / shipped agent's
    ``config.yaml`` ``env``, else the zip's or its folder's name when gymnasium knows it (or it is in
    :data:`~equirl.rl.envs.LEGACY_ENV_IDS`). As trained: map it with
    :func:`~equirl.rl.envs.resolve_env_id`.

    :param path: what :func:`read_zoo_folder` takes.
    """
    from equirl.config import load_yaml
    from equirl.rl.envs import LEGACY_ENV_IDS

    folder = read_zoo_folder(path)
    if folder.trained_env_id is not None:
        return folder.trained_env_id
    run_cfg = folder.folder / "config.yaml"
    if run_cfg.is_file():
        env = load_yaml(run_cfg).get("env")
        if isinstance(env, str) and env.strip():
            return env
    import gymnasium

    from equirl.utils.hub import is_hub_ref

    p = resolve_agent_path(path)
    names = ([p.stem] if p.is_file() else []) + [folder.folder.name]
    if is_hub_ref(path):  # the repository's name (the local copy is a folder named by its commit)
        names.append(str(path).split("@", 1)[0].rstrip("/").rsplit("/", 1)[-1])
    for name in names:
        # the name, or the name after an ``{algo}-`` prefix (the hub's and SB3's ``ppo-CartPole-v1``)
        head, _, rest = name.partition("-")
        for cand in (name, rest) if head.lower() in _algo_prefixes() and rest else (name,):
            env = _name_to_id(cand)
            if env in gymnasium.envs.registry or env in LEGACY_ENV_IDS:
                return env
    return None


def agent_runs(path: str | Path) -> list[str]:
    """The subfolders holding a zip of a folder that holds none itself (rl_zoo3's ``{algo}/`` folder of
    ``{env}_{n}`` runs), by name; ``[]`` for anything else."""
    folder = Path(path)
    if not folder.is_dir() or any(folder.glob("*.zip")):
        return []
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and any(d.glob("*.zip")))


def _algo_prefixes() -> frozenset[str]:
    """Algorithm names that prefix an agent's name on the hub and in SB3's examples (``a2c-Pendulum-v1``):
    equirl's algorithms and the ones it names but does not load."""
    from equirl.rl.algos import ALGOS, OTHER_ALGO_MODULES

    return frozenset([*ALGOS, "ddpg", "trpo", *(n.lower() for n in OTHER_ALGO_MODULES.values())])


def save_agent_env(path: str | Path, env_id: str | None, dest: str | Path) -> list[Path]:
    """Copy what makes the env the agent ``path`` ran in into the run folder ``dest``, so that the run's
    models load in that env too (``equirl eval RUN_DIR``): an RL-zoo folder's ``{env}/`` files
    (``config.yml``, ``args.yml``, ``env_kwargs.yml`` and the statistics, as ``dest/{env}/``), or the
    statistics lying beside a zip (as ``dest/vecnormalize.pkl``). Nothing for a bare agent.

    :returns: the files written.
    """
    from equirl.utils.io import atomic_copy

    folder = read_zoo_folder(path, env_id)
    stats = folder.statistics()
    out: list[Path] = []
    if folder.stats_dir is not None:
        name = folder.stats_dir.name if folder.stats_dir != folder.folder else None
        sub = Path(dest) / (name or str(folder.trained_env_id or env_id or "env").replace("/", "-"))
        for f in (CONFIG, ARGS, ENV_KWARGS):
            if (folder.stats_dir / f).is_file():
                out.append(atomic_copy(folder.stats_dir / f, sub / f))
        if stats is not None:
            out.append(atomic_copy(stats, sub / STATS))
    elif stats is not None:
        out.append(atomic_copy(stats, Path(dest) / STATS))
    return out


# -- the env the agent ran in ------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedWrapper:
    """A wrapper class to apply, with its options and its effect on observations (``"same"``,
    ``"time_feature"``, ``"image"``, or ``"unknown"`` for a trusted non-allowlisted class)."""

    path: str
    cls: Any
    kwargs: dict[str, Any]
    obs: str


def _check_kwargs(name: str, allowed: _Allowed, kwargs: Mapping[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key not in allowed.kwargs:
            raise ConfigError(
                f"{where}: {printable(name, 80)} has no option {printable(key, 40)}; "
                f"its options: {', '.join(allowed.kwargs) or 'none'}"
            )
        typ, low, high = allowed.kwargs[key]
        ok = (
            isinstance(value, bool)
            if typ is bool
            else (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and (typ is float or isinstance(value, int))
            )
        )
        if not ok or (typ is not bool and not low <= value <= high):
            want = "true or false" if typ is bool else f"{typ.__name__} in [{low:g}, {high:g}]"
            raise ConfigError(
                f"{where}: {printable(name, 80)}'s {key} must be {want}, got {printable(repr(value), 40)}"
            )
        out[key] = typ(value)
    return out


def _import_class(path: str, what: str) -> Any:
    module, _, name = path.rpartition(".")
    if not module or not name:
        raise CheckpointError(f"{what} {printable(path, 120)} is not a dotted class path")
    try:
        return getattr(importlib.import_module(module), name)
    except Exception as exc:  # an import error, or anything the module raises on import
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"cannot import {what} {printable(path, 120)}: {printable(first, 160)}"
        ) from None


def _resolve(
    items: tuple[tuple[str, dict[str, Any]], ...], key: str, where: str, trust: bool
) -> tuple[ResolvedWrapper, ...]:
    out: list[ResolvedWrapper] = []
    for name, kwargs in items:
        allowed = ALLOWED_WRAPPERS.get(name) if key == "env_wrapper" else None
        if allowed is not None:
            cls = _import_class(f"{allowed.module}.{allowed.name}", key)
            out.append(ResolvedWrapper(name, cls, _check_kwargs(name, allowed, kwargs, where), allowed.obs))
            continue
        if not trust:
            raise CheckpointError(
                f"{where}: {key} {printable(name, 120)} is not one equirl applies without importing code "
                f"named by the folder (allowed: TimeFeatureWrapper, AtariWrapper, TimeLimit, FrameSkip); "
                f"pass {TRUST_FLAG} to import it as rl_zoo3 does"
            )
        log.warning(
            "importing %s %s named by %s (%s); equirl does not know what it does to observations and "
            "actions: a symmetrized agent assumes the env's symmetry spec still holds through it",
            key,
            printable(name, 120),
            where,
            TRUST_FLAG,
        )
        out.append(ResolvedWrapper(name, _import_class(name, key), dict(kwargs), "unknown"))
    return tuple(out)


@dataclass(frozen=True)
class ZooEnv:
    """How to make the env an agent ran in: ``make(env_id, **env_kwargs)`` → Monitor → ``wrappers`` →
    VecEnv → ``vec_wrappers`` → (the agent's normalisation, applied by the caller) → :meth:`stack`.

    :param env_id: the (current) env id.
    :param wrappers: the env wrappers, in order; ``vec_wrappers``: the VecEnv wrappers (trusted only).
    :param env_kwargs: the env's constructor options.
    :param frame_stack: observations stacked (``0``: none).
    """

    env_id: str
    wrappers: tuple[ResolvedWrapper, ...] = ()
    vec_wrappers: tuple[ResolvedWrapper, ...] = ()
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    frame_stack: int = 0

    @property
    def extra_features(self) -> int:
        """Invariant features the wrappers append to each observation (time features)."""
        return sum(1 for w in self.wrappers if w.obs == _TIME)

    @property
    def is_plain(self) -> bool:
        """Nothing beyond the bare env (then equirl's own env construction applies, e.g. Atari's)."""
        return not (self.wrappers or self.vec_wrappers or self.env_kwargs or self.frame_stack)

    def make_base(self, n_envs: int = 1, seed: int = 0) -> Any:
        """The VecEnv up to (not including) the normalisation: env, Monitor, env wrappers, VecEnv wrappers."""
        from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env

        from equirl.rl.envs import make_env, make_vec_env

        if self.is_plain:
            return make_vec_env(self.env_id, n_envs=n_envs, seed=seed)
        env_id, kwargs = self.env_id, dict(self.env_kwargs)
        make_env(env_id, **kwargs).close()  # one-line errors (unknown id, bad option) before SB3's own
        vec = sb3_make_vec_env(
            lambda: make_env(env_id, **kwargs), n_envs=n_envs, seed=seed, wrapper_class=self._wrap_monitored
        )
        for w in self.vec_wrappers:
            vec = self._apply(w, vec)
        return vec

    def _wrap(self, env: Any) -> Any:
        for w in self.wrappers:
            env = self._apply(w, env)
        return env

    def _wrap_monitored(self, env: Any) -> Any:
        """The wrappers; with a ``TimeLimit`` among them, a ``Monitor`` outside them too (SB3 puts its own
        inside, under the wrappers): an episode the limit cuts short (``TimeLimit(100)`` on Pendulum) then
        ends for ``evaluate_policy`` too (it counted none, and evaluated forever), as rl_zoo3's ``enjoy``
        counts it. Not with ``AtariWrapper`` or a wrapper equirl does not know: those may end an
        "episode" at a lost life or change the rewards, and the returns are the inner ``Monitor``'s, the
        whole game's (what ``enjoy`` reports for Atari)."""
        from gymnasium.wrappers import TimeLimit
        from stable_baselines3.common.monitor import Monitor

        env = self._wrap(env)
        cuts = any(isinstance(w.cls, type) and issubclass(w.cls, TimeLimit) for w in self.wrappers)
        alters = any(w.obs in (_IMAGE, "unknown") for w in self.wrappers)
        return Monitor(env) if cuts and not alters else env

    def _apply(self, w: ResolvedWrapper, env: Any) -> Any:
        try:
            return w.cls(env, **w.kwargs)
        except EquirlError:
            raise
        except Exception as exc:  # the wrapper's asserts / type errors, as one line
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CheckpointError(
                f"cannot apply {printable(w.path, 120)} to {self.env_id}: {printable(first, 160)}"
            ) from None

    def stack(self, vec: Any) -> Any:
        """``vec`` with the folder's frame stack (after the normalisation, as rl_zoo3 does), if any."""
        if not self.frame_stack:
            return vec
        from stable_baselines3.common.vec_env import VecFrameStack

        return VecFrameStack(vec, self.frame_stack)

    def symmetries(self, sym: Any) -> tuple[Any, Any]:
        """``(normalisation's, policy's)``: the spec acting on the observations the normalisation sees (time
        features appended) and on those the policy sees (frames stacked as well)."""
        norm_sym = extend_symmetry(sym, extra_features=self.extra_features)
        return norm_sym, extend_symmetry(norm_sym, n_stack=max(self.frame_stack, 1))


def zoo_env(folder: ZooFolder, env_id: str, trust_checkpoint: bool = False) -> ZooEnv:
    """The :class:`ZooEnv` of ``folder`` for the (current) ``env_id``.

    :raises CheckpointError: a wrapper that is not in :data:`ALLOWED_WRAPPERS`, unless
        ``trust_checkpoint`` (then it is imported by its dotted path, as rl_zoo3 does).
    :raises ConfigError: an allowlisted wrapper with an unknown or ill-typed option.
    """
    where = (
        printable(folder.stats_dir / CONFIG, 200)
        if folder.stats_dir is not None
        else printable(folder.folder, 200)
    )
    wrappers = _resolve(folder.env_wrapper, "env_wrapper", where, trust_checkpoint)
    vec_wrappers = _resolve(folder.vec_env_wrapper, "vec_env_wrapper", where, trust_checkpoint)
    kwargs = dict(folder.env_kwargs)
    if kwargs.pop("render_mode", None) is not None:
        log.info("%s: not rendering (render_mode dropped from env_kwargs)", where)
    return ZooEnv(env_id, wrappers, vec_wrappers, kwargs, folder.frame_stack)


@dataclass(frozen=True)
class ZooAgent:
    """Everything about an agent to load, read in one go by :func:`open_agent` (and handed down, so that
    the loader, :func:`equirl.rl.build.load_pretrained`, comes back to this module only to make the env).

    :param folder: the agent's folder (:func:`read_zoo_folder`).
    :param env_id: the (current) env id it runs on (``None``: a VecEnv without an id).
    :param recipe: the env it ran in (:func:`zoo_env`).
    :param norm_sym: the spec acting on what its normalisation sees; ``sym``: on what its policy sees
        (:meth:`ZooEnv.symmetries`).
    :param zip: its zip (:func:`find_agent_zip`; not read yet: see
        :func:`equirl.rl.zipinfo.inspect_agent_zip`).
    """

    folder: ZooFolder
    env_id: str | None
    recipe: ZooEnv
    norm_sym: Any
    sym: Any
    zip: Path


def open_agent(
    path: str | Path,
    env: str | None,
    env_id: str | None,
    sym: Any,
    which: str = "best",
    trust_checkpoint: bool = False,
) -> ZooAgent:
    """The :class:`ZooAgent` of ``path``: its folder, the env id it runs on, the env it ran in, the spec
    extended to that env's wrappers, its zip.

    :param path: what :func:`find_agent_zip` takes.
    :param env: the env id as asked for (an older id runs as its current version, with one warning when
        the agent was trained on another: :func:`equirl.rl.envs.resolve_env_id`); ``None``: the caller
        has its own VecEnv, of id ``env_id``.
    :param env_id: the current env id (chooses among several ``{env}/`` subfolders).
    :param sym: the env's :class:`~equirl.rl.spec.EnvSymmetry` (its ``env_id`` names the env when
        ``env_id`` is ``None``).
    :param which: ``"best"`` or ``"final"`` (see :func:`find_agent_zip`).
    :param trust_checkpoint: see :func:`zoo_env`.
    """
    from equirl.rl.envs import resolve_env_id

    folder = read_zoo_folder(path, env_id)
    if env is not None:  # one warning when the agent was trained on an older id
        env_id = resolve_env_id(env, trained_on=folder.trained_env_id)
    # the env as the zoo run made it: env wrappers -> VecEnv -> normalisation -> frame stack
    recipe = zoo_env(folder, str(env_id or sym.env_id), trust_checkpoint=trust_checkpoint)
    norm_sym, policy_sym = recipe.symmetries(sym)
    return ZooAgent(folder, env_id, recipe, norm_sym, policy_sym, find_agent_zip(path, env_id, which=which))


# -- the symmetry of the wrapped observation -----------------------------------------------------------


def extend_symmetry(sym: Any, extra_features: int = 0, n_stack: int = 1) -> Any:
    """The spec ``sym`` acting on wrapped observations: ``extra_features`` invariant features appended to
    each observation (the group acts trivially on them), then ``n_stack`` observations concatenated (the
    group acts on each frame). For image specs the action is on the spatial dims, frame by frame already:
    stacked frames need no change (and time features do not apply).

    :param sym: an :class:`~equirl.rl.spec.EnvSymmetry`.
    :returns: a validated :class:`~equirl.rl.spec.EnvSymmetry` (``sym`` itself when nothing changes).
    :raises SymmetryError: extra features for an image spec.
    """
    from equirl.rl.spec import parse_spec

    if extra_features < 0 or n_stack < 1:
        raise SymmetryError(f"cannot extend a spec by {extra_features} features and {n_stack} frames")
    if extra_features == 0 and n_stack == 1:
        return sym
    if sym.obs_type != "signed_permutation":
        if extra_features:
            raise SymmetryError(
                f"{sym.env_id}: a time feature needs a feature-vector observation, the spec acts on images"
            )
        return sym
    gens = []
    for src, signs in sym.obs_generators:
        d = len(src) + extra_features
        one_src = list(src) + list(range(len(src), d))
        one_signs = list(signs) + [1.0] * extra_features
        gens.append(
            (
                tuple(k * d + s for k in range(n_stack) for s in one_src),
                tuple(float(v) for _ in range(n_stack) for v in one_signs),
            )
        )
    notes = []
    if extra_features:
        notes.append(f"{extra_features} invariant time feature{'s' if extra_features > 1 else ''}")
    if n_stack > 1:
        notes.append(f"{n_stack} stacked frames")
    out = dataclasses.replace(
        sym, obs_generators=tuple(gens), description=f"{sym.description} (+ {', '.join(notes)})".strip()
    )
    return parse_spec(out.to_dict(), source=f"{sym.source or sym.env_id} + {', '.join(notes)}")


#: for :mod:`equirl.rl.build`: a model's :class:`ZooEnv`, by the model (see :func:`remember_env`)
_ENVS: weakref.WeakKeyDictionary[Any, ZooEnv] = weakref.WeakKeyDictionary()


def remember_env(model: Any, env: ZooEnv) -> None:
    """Keep the env recipe ``model`` was loaded with (for :func:`equirl.rl.evaluation.evaluate`): not
    saved with the model, gone with it."""
    _ENVS[model] = env


def env_of(model: Any) -> ZooEnv | None:
    """The :class:`ZooEnv` ``model`` was loaded with by :func:`~equirl.rl.build.load_pretrained`."""
    return _ENVS.get(model)


def find_vecnormalize(path: str | Path, env_id: str | None, which: str = "best") -> Path | None:
    """The ``vecnormalize.pkl`` an agent runs with, if any: in an RL-zoo folder the one in its ``{env}/``
    subfolder (named after the env it was trained on, whatever ``env_id`` is), when its ``config.yml``
    says ``normalize``; elsewhere one beside the zip (or in the folder).

    :param path: what :func:`equirl.rl.zoo.find_agent_zip` takes.
    :param env_id: the env (chooses among several ``{env}/`` subfolders).
    :param which: unused (the statistics are the run's, for either zip); kept for the callers.
    :raises CheckpointError: the folder says ``normalize`` and holds no statistics (see
        :meth:`equirl.rl.zoo.ZooFolder.statistics`).
    """
    return read_zoo_folder(path, env_id).statistics()
