"""What an SB3 agent zip says about itself, read without unpickling anything.

:func:`inspect_agent_zip` opens the zip's ``data`` JSON and reads the algorithm (from the policy class
entry: its module, annotations and the class path inside the pickled reference, read as bytes) and the
observation shape. :func:`check_agent_zip` turns what it finds into one-line errors that name the real
cause: a missing, unreadable or corrupt file, an agent of the other algorithm, observations of another
size than the env's.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import math
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from equirl.errors import CheckpointError, ConfigError
from equirl.utils.io import check_zip_members, parse_json, printable

__all__ = ["AgentZipInfo", "check_agent_zip", "inspect_agent_zip"]

#: the algorithm names as users pass them (``--algo``) and as errors show them
ALGO_NAMES = {"dqn": "DQN", "qrdqn": "QR-DQN"}


@dataclass(frozen=True)
class AgentZipInfo:
    """:param algo: ``dqn``, ``qrdqn`` or ``None`` when the zip does not say.
    :param obs_shape: the observation shape it was trained on (``None`` when the zip does not say)."""

    algo: str | None
    obs_shape: tuple[int, ...] | None


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
    if not p.exists():
        raise CheckpointError(f"checkpoint not found: {p}")
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
    return AgentZipInfo(_algo(_policy_text(data.get("policy_class"))), _shape(data.get("observation_space")))


def check_agent_zip(
    path: str | Path, algo: str, observation_space: Any = None, env_id: str | None = None
) -> None:
    """One-line :class:`CheckpointError` when the zip at ``path`` cannot be loaded as ``algo`` on an env
    with ``observation_space``: missing, unreadable, corrupt, the other algorithm, another observation size.

    :param path: the agent zip.
    :param algo: ``dqn`` or ``qrdqn`` (what the caller is about to load it as).
    :param observation_space: the env's observation space (skipped when ``None``).
    :param env_id: the env's id, for the message.
    """
    info = inspect_agent_zip(path)
    if info.algo is not None and info.algo != algo and algo in ALGO_NAMES:
        raise CheckpointError(
            f"{path} is a {ALGO_NAMES[info.algo]} agent, not {ALGO_NAMES[algo]}: "
            f"pass --algo {info.algo} (or set algo: {info.algo} in the config)"
        )
    shape = tuple(getattr(observation_space, "shape", None) or ())
    if info.obs_shape is not None and shape and math.prod(info.obs_shape) != math.prod(shape):
        raise CheckpointError(
            f"{path} expects observations of size {math.prod(info.obs_shape)} {info.obs_shape} but "
            f"{env_id or 'the env'} gives size {math.prod(shape)} {shape}: pick the agent's env"
        )
