"""Loading SB3 zips without running code from them.

An SB3 zip holds a ``data`` JSON whose non-JSON values (the policy class, ``policy_kwargs`` with
objects in it, spaces, schedules, buffers...) are cloudpickled (a dict with a ``":serialized:"`` key),
and ``*.pth`` files with the weights. Unpickling a crafted entry runs its code, so equirl reads the
JSON itself and hands SB3, through ``custom_objects``, a value for *every* pickled entry -- SB3 then
unpickles none of them:

* entries equirl overrides anyway (the spaces come from the env, the schedules are constants, the
  ``_last_obs``-style rollout state is reset) are never read;
* the rest (``policy_class``, ``policy_kwargs``, ``replay_buffer_class``, ``train_freq``...) are read by
  :class:`RestrictedUnpickler`, which resolves only an allowlist of plain classes (SB3 / sb3-contrib /
  equirl policies, buffers, schedules, feature extractors, torch activations and optimizers, numpy
  arrays, :class:`~equirl.rl.spec.EnvSymmetry`) -- anything else (a function, ``open``, ``os.system``,
  cloudpickle's code constructors) refuses the file with one line naming the entry and the trust option.

The ``.pth`` files are read with ``torch.load(..., weights_only=True)`` first (recent SB3 -- 2.9 here --
does the same itself); one that holds Python objects is refused. ``trust_checkpoint=True``
(``--trust-checkpoint``) restores SB3's own loading, which unpickles every ``data`` entry: use it only
for files from a trusted source.
"""

from __future__ import annotations

import base64
import zipfile
from collections import deque
from pathlib import Path
from typing import Any

from equirl.errors import CheckpointError, ConfigError
from equirl.utils.io import (
    RefusedGlobal,
    check_zip_members,
    find_global,
    parse_json,
    printable,
    refusal,
    torch_load_weights,
    trusted_loads,
)
from equirl.utils.io import restricted_loads as _restricted_loads

__all__ = [
    "TRUST_HINT",
    "check_tensor_files",
    "pickled_entries",
    "read_vecnormalize",
    "read_zip_data",
    "restricted_loads",
    "safe_custom_objects",
]

#: the option that restores SB3's unrestricted unpickling
TRUST_HINT = "pass --trust-checkpoint (trust_checkpoint=True) only if you trust its source"

#: rollout state SB3 rebuilds on the next ``learn`` (reset, never unpickled)
_RESET_TO_NONE = ("_last_obs", "_last_original_obs", "_last_episode_starts", "_last_dones")
_RESET_TO_DEQUE = ("ep_info_buffer", "ep_success_buffer")

#: numpy / stdlib globals plain data needs (the same kind torch's ``weights_only`` loader allows)
_DATA_GLOBALS = {
    ("collections", "deque"),
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "complex"),
    ("builtins", "slice"),
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}

_CLASS_GLOBALS = {
    "equirl.rl.spec": ("EnvSymmetry",),
    "stable_baselines3.common.buffers": (
        "ReplayBuffer",
        "DictReplayBuffer",
        "RolloutBuffer",
        "DictRolloutBuffer",
    ),
    "equirl.rl.augment": ("AugmentedReplayBuffer", "AugmentedRolloutBuffer"),
    "stable_baselines3.common.type_aliases": ("TrainFreq", "TrainFrequencyUnit"),
    "stable_baselines3.common.utils": ("ConstantSchedule", "FloatSchedule", "LinearSchedule"),
    "stable_baselines3.common.torch_layers": ("FlattenExtractor", "NatureCNN", "CombinedExtractor"),
    "stable_baselines3.common.sb2_compat.rmsprop_tf_like": ("RMSpropTFLike",),
    "torch.nn.modules.activation": ("ReLU", "Tanh", "ELU", "LeakyReLU", "GELU", "SiLU", "Sigmoid", "Mish"),
    "torch.nn.modules.linear": ("Identity",),
    "torch.optim.adam": ("Adam",),
    "torch.optim.adamw": ("AdamW",),
    "torch.optim.rmsprop": ("RMSprop",),
    "torch.optim.sgd": ("SGD",),
}


def _policy_classes() -> dict[tuple[str, str], type]:
    """The policy classes of the algorithms equirl loads (SB3's, sb3-contrib's and equirl's), by
    ``(module, name)``."""
    from sb3_contrib import QRDQN, TQC
    from stable_baselines3 import A2C, DDPG, DQN, PPO, SAC, TD3
    from stable_baselines3.common.policies import ActorCriticPolicy

    import equirl.rl.ac_policies
    import equirl.rl.policies  # noqa: F401

    classes: set[type] = {ActorCriticPolicy}
    for algo in (DQN, QRDQN, PPO, A2C, SAC, TD3, DDPG, TQC):
        classes.update(algo.policy_aliases.values())
    return {(c.__module__, c.__qualname__): c for c in classes}


def _resolve(module: str, name: str) -> Any:
    """The allowlist of SB3 zips' pickled entries: plain data classes and the algorithms' policies."""
    if (module, name) in _DATA_GLOBALS or name in _CLASS_GLOBALS.get(module, ()):
        return find_global(module, name)
    policy = _policy_classes().get((module, name))
    if policy is not None:
        return policy
    raise RefusedGlobal(f"{module}.{name}")


def restricted_loads(blob: bytes) -> Any:
    """Unpickle ``blob`` through the file layer's restricted unpickler with this module's allowlist.

    :raises RefusedGlobal: it references anything outside the allowlist (or breaks a size limit).
    """
    return _restricted_loads(blob, _resolve)


#: the largest ``data`` entry of an SB3 zip equirl parses
_MAX_DATA_BYTES = 64 * 2**20


def read_zip_data(zpath: str | Path) -> dict[str, Any]:
    """The ``data`` JSON of an SB3 zip, as plain JSON (nothing unpickled)."""
    try:
        with zipfile.ZipFile(zpath) as archive:
            check_zip_members(archive, f"checkpoint {zpath}")
            if archive.getinfo("data").file_size > _MAX_DATA_BYTES:
                raise CheckpointError(f"checkpoint {zpath}: its 'data' entry is larger than 64 MiB: refused")
            raw = archive.read("data")
        data = parse_json(raw.decode("utf-8"), f"checkpoint {zpath} 'data' entry")
    except KeyError:
        raise CheckpointError(f"{zpath} is not an SB3 checkpoint: no 'data' entry") from None
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None
    except (zipfile.BadZipFile, UnicodeDecodeError, OSError, EOFError) as exc:
        raise CheckpointError(f"corrupt checkpoint {zpath}: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"corrupt checkpoint {zpath}: its 'data' entry is not a JSON object")
    return data


def pickled_entries(data: dict[str, Any]) -> list[str]:
    """The keys SB3 would unpickle (a dict value with ``":serialized:"``, SB3's own test)."""
    return [k for k, v in data.items() if isinstance(v, dict) and ":serialized:" in v]


def _refuse(zpath: Any, key: str, why: str) -> CheckpointError:
    return CheckpointError(f"{zpath}: data entry {key!r} {why}; not loaded ({TRUST_HINT})")


def _unpickle_entry(zpath: Any, key: str, entry: dict[str, Any]) -> Any:
    try:
        blob = base64.b64decode(str(entry[":serialized:"]).encode(), validate=True)
    except (ValueError, TypeError):
        raise _refuse(zpath, key, "is not valid base64") from None
    try:
        return restricted_loads(blob)
    except RefusedGlobal as exc:
        raise _refuse(zpath, key, refusal(exc)) from None
    except Exception as exc:  # a malformed pickle of allowlisted classes
        raise _refuse(zpath, key, f"cannot be read as plain data ({type(exc).__name__})") from None


def _saved_shape(entry: Any) -> tuple[int, ...] | None:
    """The shape a pickled space's plain fields record (``shape`` / ``_shape``), if any."""
    if not isinstance(entry, dict):
        return None
    shape = entry.get("_shape", entry.get("shape"))
    if isinstance(shape, list) and all(isinstance(s, int) for s in shape):
        if len(shape) > 32 or not all(0 <= s < 2**31 for s in shape):
            raise CheckpointError(
                f"malformed checkpoint: a space's shape {printable(shape, 80)} is not a shape"
            )
        return tuple(shape)
    return None


def _check_space(zpath: Any, key: str, entry: Any, space: Any) -> None:
    """The env's space must match the shape (and ``n``) the checkpoint recorded beside its pickle."""
    shape = _saved_shape(entry)
    if shape is not None and shape != tuple(space.shape or ()):
        raise CheckpointError(
            f"{zpath} was saved for {key} shape {shape}, the env's is {tuple(space.shape or ())}"
        )
    n = entry.get("n") if isinstance(entry, dict) else None
    if n is not None and hasattr(space, "n"):
        try:
            saved_n = int(n)
        except (TypeError, ValueError):
            return
        if saved_n != int(space.n):
            raise CheckpointError(f"{zpath} was saved for {saved_n} actions, the env has {int(space.n)}")


def _plain_policy_kwargs(zpath: Any, pk: Any, symmetry: Any) -> dict[str, Any]:
    if not isinstance(pk, dict):
        raise _refuse(zpath, "policy_kwargs", f"is a {type(pk).__name__}, not a mapping")
    pk = dict(pk)
    from equirl.rl.spec import EnvSymmetry

    if symmetry is not None and "symmetry" in pk:
        pk["symmetry"] = symmetry
    elif isinstance(pk.get("symmetry"), EnvSymmetry):  # re-validated by the policy from plain data
        try:
            pk["symmetry"] = pk["symmetry"].to_dict()
        except Exception as exc:  # fields the pickle set to nonsense
            raise _refuse(
                zpath, "policy_kwargs", f"holds a malformed symmetry ({type(exc).__name__})"
            ) from None
    return pk


def safe_custom_objects(
    zpath: str | Path,
    algo_cls: Any,
    overrides: dict[str, Any],
    symmetry: Any = None,
) -> dict[str, Any]:
    """``custom_objects`` for ``algo_cls.load`` that cover every pickled entry of the zip's ``data``.

    :param zpath: the SB3 zip.
    :param algo_cls: ``DQN``, ``QRDQN``, ``PPO``, ``A2C``, ``SAC``, ``TD3``, ``DDPG`` or ``TQC`` (the
        policy class must be one of its policies).
    :param overrides: values used instead of the saved ones (the env's spaces, constant schedules...);
        ``observation_space`` / ``action_space`` are checked against the shapes recorded in the zip.
    :param symmetry: replaces a saved ``policy_kwargs["symmetry"]`` (``None``: keep the saved one).
    :raises CheckpointError: an entry that cannot be read without unpickling arbitrary objects (one
        line naming the entry and the trust option).
    """
    data = read_zip_data(zpath)
    custom = dict(overrides)
    for key in ("observation_space", "action_space"):
        if key in custom:
            _check_space(zpath, key, data.get(key), custom[key])
    for key in pickled_entries(data):
        if key in custom:
            continue  # replaced, never read
        if key in _RESET_TO_NONE:
            custom[key] = None
        elif key in _RESET_TO_DEQUE:
            window = data.get("_stats_window_size", 100)
            custom[key] = deque(maxlen=window if isinstance(window, int) and window > 0 else 100)
        else:
            custom[key] = _unpickle_entry(zpath, key, data[key])
    policy = custom.get("policy_class", data.get("policy_class"))
    if isinstance(policy, str):  # an alias ("MlpPolicy") stored as plain JSON
        policy = algo_cls.policy_aliases.get(policy)
    base = algo_cls.policy_aliases.get("MlpPolicy")
    if not (isinstance(policy, type) and base is not None and issubclass(policy, base)):
        name = getattr(policy, "__name__", repr(policy))
        raise CheckpointError(f"{zpath}: its policy {name} is not a {algo_cls.__name__} policy")
    custom["policy_class"] = policy
    pk = custom.get("policy_kwargs", data.get("policy_kwargs"))
    if pk is not None:
        custom["policy_kwargs"] = _plain_policy_kwargs(zpath, pk, symmetry)
    return custom


def check_tensor_files(zpath: str | Path) -> None:
    """Read every ``*.pth`` of the zip with ``torch.load(..., weights_only=True)``.

    :raises CheckpointError: one holds Python objects beyond tensors and plain containers.
    """
    with zipfile.ZipFile(zpath) as archive:
        check_zip_members(archive, f"checkpoint {zpath}")
        for name in archive.namelist():
            if not name.endswith(".pth"):
                continue
            try:
                torch_load_weights(archive.read(name), f"{zpath}: {name}")
            except CheckpointError as exc:
                why = (
                    "holds pickled Python objects, not only tensors"
                    if "pickled Python objects" in str(exc)
                    else f"cannot be read as weights ({exc})"
                )
                raise CheckpointError(
                    f"{zpath}: {name} {why}; not loaded (equirl reads weights with "
                    f"torch.load(weights_only=True); {TRUST_HINT})"
                ) from None


# ------------------------------------------------------------------------------------------------------
# VecNormalize statistics (``vecnormalize.pkl``)
# ------------------------------------------------------------------------------------------------------
#: the classes a ``vecnormalize.pkl`` pickles; each is built as a :class:`_Record` (its fields only)
_RECORD_MODULES = ("gym.spaces.", "gymnasium.spaces.")
_RECORD_CLASSES = {
    ("stable_baselines3.common.vec_env.vec_normalize", "VecNormalize"),
    ("stable_baselines3.common.running_mean_std", "RunningMeanStd"),
    ("equirl.rl.normalize", "SymmetricVecNormalize"),
}
#: numpy random-state constructors (a space's ``_np_random``): replaced by a record, never called
_RANDOM_CTORS = (
    "__randomstate_ctor",
    "__bit_generator_ctor",
    "__generator_ctor",
    "__pyx_unpickle_SeedSequence",
)
_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64", "SeedSequence")


class _Record:
    """A stand-in for a pickled object: it keeps the fields the pickle sets and runs nothing."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Record:
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.fields: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        if (
            isinstance(state, tuple)
            and len(state) == 2
            and all(isinstance(p, (dict, type(None))) for p in state)
        ):
            state = {**(state[0] or {}), **(state[1] or {})}  # (dict state, slots state)
        self.fields = dict(state) if isinstance(state, dict) else {"state": state}

    def __setitem__(self, key: Any, value: Any) -> None:  # pragma: no cover - dict-like pickles
        self.fields[str(key)] = value


def _new_record(*args: Any, **kwargs: Any) -> _Record:
    return _Record()


def _resolve_vecnormalize(module: str, name: str) -> Any:
    """Reads a ``vecnormalize.pkl`` as records: numpy data, the wrapper's and the spaces' fields."""
    if (module, name) in _RECORD_CLASSES or module.startswith(_RECORD_MODULES):
        return _Record
    if module in ("numpy.random._pickle", "numpy.random.bit_generator") and name in _RANDOM_CTORS:
        return _new_record
    if module.startswith("numpy.random.") and name in _BIT_GENERATORS:  # a ctor's argument only
        return _Record
    if (module, name) in _DATA_GLOBALS:
        return find_global(module, name)
    raise RefusedGlobal(f"{module}.{name}")


def _number(fields: dict[str, Any], key: str, default: float) -> float:
    value = fields.get(key, default)
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise CheckpointError(
            f"malformed normalisation statistics: {key} is {type(value).__name__}"
        ) from None
    return out


def _rms(fields: dict[str, Any], key: str) -> tuple[Any, Any, float] | None:
    import numpy as np

    rec = fields.get(key)
    if rec is None:
        return None
    if not isinstance(rec, _Record):
        raise CheckpointError(f"malformed normalisation statistics: {key} is not a RunningMeanStd")
    f = rec.fields
    try:
        mean = np.asarray(f["mean"], dtype=np.float64)
        var = np.asarray(f["var"], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(
            f"malformed normalisation statistics: {key} lacks a numeric mean / var"
        ) from None
    if mean.shape != var.shape or not (np.all(np.isfinite(mean)) and np.all(var >= 0)):
        raise CheckpointError(f"malformed normalisation statistics: {key} has a bad mean / var")
    return mean, var, _number(f, "count", 1e-4)


def read_vecnormalize(path: str | Path, trust_checkpoint: bool = False) -> Any:
    """The statistics of a pickled ``VecNormalize`` as :class:`~equirl.rl.normalize.NormalizeStats`.

    Without ``trust_checkpoint`` the pickle is read by a restricted unpickler that builds only numpy
    arrays and plain records of the ``VecNormalize``, ``RunningMeanStd`` and space objects (their
    fields, nothing constructed or called); any other global refuses the file with one line.

    :param path: the ``vecnormalize.pkl``.
    :param trust_checkpoint: unpickle it with :mod:`pickle` (runs any code it holds).
    :raises CheckpointError: missing, malformed, or a pickle that would run code.
    """
    import numpy as np

    from equirl.rl.normalize import NormalizeStats

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"normalisation statistics not found: {p}")
    blob = p.read_bytes()
    if trust_checkpoint:
        obj = trusted_loads(blob)  # the caller trusts the file
        fields = dict(vars(obj))
        fields["obs_rms"] = _as_record(getattr(obj, "obs_rms", None))
        fields["ret_rms"] = _as_record(getattr(obj, "ret_rms", None))
    else:
        try:
            obj = _restricted_loads(blob, _resolve_vecnormalize)
        except RefusedGlobal as exc:
            raise CheckpointError(f"{p} {refusal(exc)}; not loaded ({TRUST_HINT})") from None
        except Exception as exc:
            raise CheckpointError(
                f"{p}: cannot be read as normalisation statistics ({type(exc).__name__})"
            ) from None
        if not isinstance(obj, _Record):
            raise CheckpointError(f"{p}: not a pickled VecNormalize")
        fields = obj.fields
    if isinstance(fields.get("obs_rms"), dict):
        raise CheckpointError(f"{p}: dict-observation statistics are not supported")
    obs = _rms(fields, "obs_rms")
    ret = _rms(fields, "ret_rms")
    norm_obs = bool(fields.get("norm_obs", True))
    if obs is None and norm_obs:
        raise CheckpointError(f"{p}: no observation statistics (obs_rms)")
    mean, var, count = obs if obs is not None else (np.zeros(0), np.ones(0), 1e-4)
    return NormalizeStats(
        mean=mean,
        var=var,
        count=count,
        clip_obs=_number(fields, "clip_obs", 10.0),
        epsilon=_number(fields, "epsilon", 1e-8),
        norm_obs=norm_obs,
        norm_reward=bool(fields.get("norm_reward", False)),
        gamma=_number(fields, "gamma", 0.99),
        clip_reward=_number(fields, "clip_reward", 10.0),
        ret_mean=float(np.asarray(ret[0]).reshape(-1)[0]) if ret is not None and np.size(ret[0]) else 0.0,
        ret_var=float(np.asarray(ret[1]).reshape(-1)[0]) if ret is not None and np.size(ret[1]) else 1.0,
        ret_count=ret[2] if ret is not None else 1e-4,
    )


def _as_record(obj: Any) -> _Record | None:
    if obj is None:
        return None
    rec = _Record()
    rec.fields = dict(vars(obj))
    return rec
