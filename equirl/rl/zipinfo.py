"""What an SB3 agent zip says about itself, read without unpickling anything.

:func:`inspect_agent_zip` opens the zip's ``data`` JSON and reads the algorithm, the observation shape and
the kind of action space. The algorithm comes from the policy class entry (its ``__module__`` and the
class path inside the pickled reference, read as opcodes, never run): a Q-policy is DQN or QR-DQN, SAC /
TD3 / TQC policies are named by their class, and an ``ActorCriticPolicy`` is PPO when the data holds PPO's
``clip_range`` / ``n_epochs``, else A2C (TD3 with ``policy_delay`` 1 and no target noise clip is DDPG).
:func:`check_agent_zip` turns what it finds into one-line errors that name the real cause: a missing,
unreadable or corrupt file, an agent of another algorithm, observations of another size than the env's;
:func:`read_algo` is the algorithm to load an agent with (``--algo`` when given and consistent, else the
zip's).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import math
import pickletools
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from equirl.errors import CheckpointError, ConfigError, EquirlError
from equirl.rl.algos import ALGOS, OTHER_ALGO_MODULES, AlgoSpec
from equirl.rl.zoo import missing_agent
from equirl.utils.io import check_zip_members, parse_json, printable

__all__ = ["ALGO_NAMES", "AgentZipInfo", "check_agent_zip", "inspect_agent_zip", "read_algo"]

#: the algorithm names as users pass them (``--algo``) and as errors show them
ALGO_NAMES = {name: spec.title for name, spec in ALGOS.items()}
#: an ``ActorCriticPolicy``: PPO or A2C, told apart by the data's keys
_ON_POLICY = "on-policy"


log = logging.getLogger(__name__)


def _by_policy(spec: AlgoSpec) -> str:
    return _ON_POLICY if spec.on_policy else spec.name


#: SB3's and sb3-contrib's policy modules -> algorithm (the first algorithm naming a module)
_MODULE_ALGOS = {"stable_baselines3.common.policies": _ON_POLICY}
for _spec in ALGOS.values():
    for _module in _spec.policy_modules:
        _MODULE_ALGOS.setdefault(_module, _by_policy(_spec))
#: equirl's equivariant policy classes -> algorithm (the first algorithm naming a class)
_EQUIRL_CLASSES: dict[str, str] = {}
for _spec in ALGOS.values():
    for _name in _spec.policies:
        _EQUIRL_CLASSES.setdefault(_name, _by_policy(_spec))


@dataclass(frozen=True)
class AgentZipInfo:
    """:param algo: one of :data:`ALGO_NAMES` or ``None`` when the zip does not say.
    :param obs_shape: the observation shape it was trained on (``None`` when the zip does not say).
    :param policy: the policy class, ``module.Name`` (``None`` when the zip does not say).
    :param continuous: whether its action space is a ``Box`` (``None`` when the zip does not say).
    :param other: an algorithm equirl does not load (``MaskablePPO``, ``TRPO``...), when the zip names one.
    :param obs_bounds: a Box observation space's ``(low, high)`` as saved (each a tuple of floats), when
        its text gives every value.
    :param obs_kind: the observation space's class (``Box``, ``Dict``, ``Discrete``...), when it says.
    """

    algo: str | None
    obs_shape: tuple[int, ...] | None
    policy: str | None = None
    continuous: bool | None = None
    other: str | None = None
    obs_kind: str | None = None
    obs_bounds: tuple[tuple[float, ...], tuple[float, ...]] | None = None


def _open(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except PermissionError:
        raise CheckpointError(f"cannot read checkpoint {path}: permission denied") from None
    except IsADirectoryError:
        raise CheckpointError(f"checkpoint {path} is a directory, not a zip") from None
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        why = "not a zip archive" if zipfile.is_zipfile(path) is False else str(exc)
        raise CheckpointError(f"corrupt checkpoint {path}: {why} (truncated or not an SB3 agent)") from None


def _policy_text(entry: Any) -> str:
    """The policy class entry as text: module, annotations and the pickled class path (as bytes)."""
    if not isinstance(entry, dict):
        return str(entry)
    parts = [str(entry.get(k, "")) for k in ("__module__", "__annotations__")]
    blob = entry.get(":serialized:")
    if isinstance(blob, str):
        with contextlib.suppress(binascii.Error, ValueError):
            parts.append(base64.b64decode(blob).decode("latin-1"))
    return " ".join(parts)


def _class_path(entry: Any) -> tuple[str, str] | None:
    """``(module, name)`` of the class a policy class entry pickles by reference (its opcodes read,
    never run)."""
    if not isinstance(entry, dict) or not isinstance(entry.get(":serialized:"), str):
        return None
    try:
        blob = base64.b64decode(entry[":serialized:"][:65536])
        strings: list[str] = []
        for op, arg, _ in pickletools.genops(blob):
            if op.name == "GLOBAL" and isinstance(arg, str):
                module, _, name = arg.partition(" ")
                return module, name
            if op.name == "STACK_GLOBAL" and len(strings) >= 2:
                return strings[-2], strings[-1]
            if isinstance(arg, str):
                strings.append(arg)
    except Exception:  # malformed: the algorithm is then unknown
        return None
    return None


def _algo_of_class(module: str, name: str) -> str | None:
    if module in _MODULE_ALGOS:
        return _MODULE_ALGOS[module]
    if module.startswith("equirl.rl."):
        return _EQUIRL_CLASSES.get(name)
    return None


def _refine(algo: str | None, data: dict[str, Any]) -> tuple[str | None, str | None]:
    """PPO / A2C (and TRPO) from an ``ActorCriticPolicy``, DDPG from TD3's policy, by the data's keys;
    returns ``(algo, other)``."""
    if algo == _ON_POLICY:
        if "clip_range" in data or "n_epochs" in data:
            return "ppo", None
        if "cg_max_steps" in data or "n_critic_updates" in data:
            return None, "TRPO"
        return "a2c", None
    if algo == "td3" and data.get("policy_delay") == 1 and data.get("target_noise_clip") in (0, 0.0):
        return "ddpg", None
    return algo, None


def _space_kind(entry: Any) -> str | None:
    """The class name in a space's ``:type:`` (``"<class 'gymnasium.spaces.dict.Dict'>"`` -> ``Dict``)."""
    kind = str(entry.get(":type:", ""))[:200] if isinstance(entry, dict) else ""
    m = re.search(r"\.(\w+)'>$", kind)
    return m.group(1) if m else None


_NUMBER = re.compile(r"[-+]?(?:inf|nan|\d+\.?\d*(?:e[-+]?\d+)?|\.\d+(?:e[-+]?\d+)?)", re.IGNORECASE)


def _bounds(entry: Any) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """A Box's ``low`` / ``high`` from their saved text (numpy's ``str``), when it lists every value (a
    long array's text is summarised with ``...`` and gives ``None``)."""
    if not isinstance(entry, dict) or _space_kind(entry) != "Box":
        return None
    shape = _shape(entry)
    out = []
    for key in ("low", "high"):
        text = str(entry.get(key, ""))[:20000]
        if not text or "..." in text:
            return None
        vals = tuple(float(v) for v in _NUMBER.findall(text))
        if shape is None or len(vals) != math.prod(shape):
            return None
        out.append(vals)
    return out[0], out[1]


def _continuous(entry: Any) -> bool | None:
    kind = str(entry.get(":type:", "")) if isinstance(entry, dict) else ""
    if ".Box'" in kind:
        return True
    if "Discrete'" in kind or "MultiBinary'" in kind:
        return False
    return None


def _algo(text: str) -> str | None:
    low = text.lower()
    if "qrdqn" in low or "quantile" in low:
        return "qrdqn"
    if "dqn" in low or "q_net" in low:
        return "dqn"
    return None


def _shape(entry: Any) -> tuple[int, ...] | None:
    if not isinstance(entry, dict):
        return None
    raw = entry.get("_shape", entry.get("shape"))
    if raw is None:
        return None
    dims = re.findall(r"\d+", str(raw)[:1000])
    if len(dims) > 32 or any(len(d) > 10 or int(d) >= 2**31 for d in dims):
        raise CheckpointError(
            f"malformed checkpoint: its observation shape {printable(raw, 60)} is not a shape"
        )
    return tuple(int(d) for d in dims) if dims else None


def inspect_agent_zip(path: str | Path) -> AgentZipInfo:
    """The algorithm and observation shape an SB3 zip was saved with (nothing is unpickled).

    :raises CheckpointError: one line for a missing, unreadable or corrupt file.
    """
    p = Path(path)
    if not p.is_file():
        raise missing_agent(p)
    with _open(p) as z:
        try:
            names = z.namelist()
            if "data" not in names:
                raise CheckpointError(f"corrupt checkpoint {p}: no 'data' entry (not an SB3 agent zip)")
            check_zip_members(z, f"checkpoint {p}")
            if z.getinfo("data").file_size > 64 * 2**20:
                raise CheckpointError(f"checkpoint {p}: its 'data' entry is larger than 64 MiB: refused")
            data = parse_json(z.read("data").decode("utf-8"), f"checkpoint {p} 'data' entry")
        except CheckpointError:
            raise
        except ConfigError as exc:
            raise CheckpointError(str(exc)) from None
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CheckpointError(f"corrupt checkpoint {p}: {first}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"corrupt checkpoint {p}: its 'data' entry is not a JSON object")
    entry = data.get("policy_class")
    cls = _class_path(entry)
    algo, other = _refine(_algo_of_class(*cls) if cls else None, data)
    if cls and cls[0] in OTHER_ALGO_MODULES:
        other = OTHER_ALGO_MODULES[cls[0]]
    if algo is None and other is None:
        algo = _algo(_policy_text(entry))  # older or hand-made zips: the DQN / QR-DQN names in its text
    return AgentZipInfo(
        algo,
        _shape(data.get("observation_space")),
        policy=printable(".".join(cls), 120) if cls else None,
        continuous=_continuous(data.get("action_space")),
        other=other,
        obs_kind=_space_kind(data.get("observation_space")),
        obs_bounds=_bounds(data.get("observation_space")),
    )


def _article(algo: str) -> str:
    return "an" if ALGO_NAMES[algo].startswith("A") else "a"


def _check_algo(path: Any, info: AgentZipInfo, algo: str) -> None:
    """One line when the zip at ``path`` holds an agent of another algorithm than ``algo``."""
    if info.other is not None:
        raise CheckpointError(
            f"{path} is an agent of {info.other}, which equirl does not load (it loads "
            f"{', '.join(ALGO_NAMES)})"
        )
    if info.algo is None or algo not in ALGO_NAMES or info.algo in (algo, ALGOS[algo].loads_as):
        return
    raise CheckpointError(
        f"{path} is {_article(info.algo)} {ALGO_NAMES[info.algo]} agent, not {ALGO_NAMES[algo]}: "
        f"pass --algo {info.algo} (eval, symmetrize) or train with a config whose algo is {info.algo}"
    )


def _warn_bounds(path: Any, info: AgentZipInfo, space: Any, env_id: str | None) -> None:
    """One warning when the agent's saved Box bounds differ from the env's (same size): a wrapper that
    clips or rescales observations is probably missing (SB3's own load refuses such a zip)."""
    low, high = getattr(space, "low", None), getattr(space, "high", None)
    if info.obs_bounds is None or low is None or high is None:
        return
    import numpy as np

    def unbounded(x: Any) -> Any:  # older gym wrote float32's largest value for an unbounded feature
        x = np.asarray(x, dtype=np.float64).ravel()
        return np.where(np.abs(x) >= 3.4e38, np.copysign(np.inf, x), x)

    lo, hi = unbounded(low), unbounded(high)
    a_lo, a_hi = unbounded(info.obs_bounds[0]), unbounded(info.obs_bounds[1])
    if a_lo.shape != lo.shape or a_hi.shape != hi.shape:
        return
    differs = ~np.isclose(a_lo, lo, rtol=1e-5, atol=1e-6, equal_nan=True) | ~np.isclose(
        a_hi, hi, rtol=1e-5, atol=1e-6, equal_nan=True
    )
    if differs.any():
        k = int(np.argmax(differs))
        log.warning(
            "%s was trained on observations bounded [%g, %g] in feature %d, but %s gives [%g, %g]: a wrapper "
            "that clips or rescales its observations may be missing",
            path, a_lo[k], a_hi[k], k, env_id or "the env", lo[k], hi[k],
        )  # fmt: skip


def _agent_env(path: Any) -> str | None:
    """The env id the agent's folder or zip names, if any (``None`` also when it cannot be read)."""
    from equirl.rl.zoo import agent_env_id

    try:
        return agent_env_id(path)
    except EquirlError:
        return None


def _named_env(path: Any, env_id: str | None) -> str:
    """`` (its files name X)`` when the agent's folder or zip names an env other than ``env_id``."""
    named = _agent_env(path)
    return f" (its files name {printable(named, 80)})" if named and named != env_id else ""


def read_algo(
    agent: str | Path, algo: str | None = None, env_id: str | None = None, which: str = "best"
) -> str:
    """The algorithm to load ``agent`` with: ``algo`` when given (and the zip does not contradict it),
    else the one its zip was saved with.

    :param agent: agent zip, equirl run directory or RL-zoo folder.
    :param algo: the algorithm the user passed (``--algo``; ``None``: read it from the zip).
    :param env_id: the env (RL-zoo folders name the zip after it).
    :param which: in a folder, ``"best"`` or ``"final"``.
    :raises CheckpointError: missing / corrupt zip, a contradiction, or a zip that does not say (one line
        naming ``--algo``).
    """
    from equirl.rl.zoo import find_agent_zip

    if algo is not None and algo not in ALGO_NAMES:
        raise ConfigError(f"unknown algo {algo!r}; choose one of {list(ALGO_NAMES)}")
    zpath = find_agent_zip(agent, env_id, which=which)
    info = inspect_agent_zip(zpath)
    if algo is not None:
        _check_algo(zpath, info, algo)
        return algo
    if info.algo is None:
        _check_algo(zpath, info, "dqn")  # an algorithm equirl does not load: said as such
        raise CheckpointError(
            f"cannot tell which algorithm {zpath} was trained with (its policy class is "
            f"{info.policy or 'not recorded'}): pass --algo ({', '.join(ALGO_NAMES)})"
        )
    return info.algo


def check_agent_zip(
    path: str | Path, algo: str, observation_space: Any = None, env_id: str | None = None
) -> None:
    """One-line :class:`CheckpointError` when the zip at ``path`` cannot be loaded as ``algo`` on an env
    with ``observation_space``: missing, unreadable, corrupt, the other algorithm, another observation size.

    :param path: the agent zip.
    :param algo: one of :data:`ALGO_NAMES` (what the caller is about to load it as).
    :param observation_space: the env's observation space (skipped when ``None``).
    :param env_id: the env's id, for the message.
    """
    info = inspect_agent_zip(path)
    _check_algo(path, info, algo)
    kind = type(observation_space).__name__ if observation_space is not None else None
    if info.obs_kind is not None and kind is not None and info.obs_kind != kind:
        raise CheckpointError(
            f"{path} was trained on {info.obs_kind} observations but {env_id or 'the env'} gives {kind} ones: "
            + ("equirl's specs act on Box observations; " if "Box" in (kind, info.obs_kind) else "")
            + "pick the agent's env"
            + _named_env(path, env_id)
        )
    shape = tuple(getattr(observation_space, "shape", None) or ())
    _warn_bounds(path, info, observation_space, env_id)
    if info.obs_shape is not None and shape and math.prod(info.obs_shape) != math.prod(shape):
        sizes = (
            f"{path} expects observations of size {math.prod(info.obs_shape)} {info.obs_shape} but "
            f"{env_id or 'the env'} gives size {math.prod(shape)} {shape}"
        )
        from equirl.rl.envs import current_env_id

        named = _agent_env(path)
        if named and env_id and named != env_id and current_env_id(named) == env_id:
            # the user did pick the agent's env: equirl runs it as a newer version, of other observations
            older = named
            raise CheckpointError(
                f"{sizes}: the agent's env {printable(older, 80)} runs here as {env_id}, the version equirl "
                f"has a spec for, and {env_id}'s observations differ from {printable(older, 80)}'s (equirl "
                "cannot run this agent)"
            )
        raise CheckpointError(
            f"{sizes}: pick the agent's env"
            + (f" (its files name {printable(named, 80)})" if named and named != env_id else "")
        )
