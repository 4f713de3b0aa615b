"""Loading SB3 zips without running code from them.

An SB3 zip holds a ``data`` JSON whose non-JSON values (the policy class, ``policy_kwargs`` with
objects in it, spaces, schedules, buffers...) are cloudpickled (a dict with a ``":serialized:"`` key),
and ``*.pth`` files with the weights. Unpickling a crafted entry runs its code, so equirl reads the
JSON itself and hands SB3, through ``custom_objects``, a value for *every* pickled entry -- SB3 then
unpickles none of them:

* entries equirl overrides anyway (the spaces come from the env, the schedules are constants, the
  ``_last_obs``-style rollout state is reset) are never read;
* the rest (``policy_class``, ``policy_kwargs``, ``replay_buffer_class``, ``train_freq``...) are read by
  :func:`restricted_loads`, whose allowlist has three parts: numpy / collections data; *classes as
  values* (SB3 / sb3-contrib / equirl policies, buffers, feature extractors, torch activations and
  optimizers, SB3's ``RMSpropTFLike``), handed back as the classes themselves and never called,
  instantiated or given attributes by the pickle; and *plain-data records* (SB3's schedules,
  ``TrainFreq``, action noise, :class:`~equirl.rl.spec.EnvSymmetry`), built from their fields and
  checked to hold plain data only. ``torch.device`` (the RL zoo's SAC ``policy_kwargs`` hold one) is
  built from a device name and index only, and dropped from ``policy_kwargs`` as SB3 does. Anything else
  (a function, ``open``, ``os.system``, ``functools.partial``, cloudpickle's code constructors such as
  the zoo's ``linear_schedule`` closures outside the entries equirl replaces) refuses the file with one
  line naming the entry and the trust option. A ``net_arch`` is checked to be one of SB3's forms (a list
  of widths, ``dict(pi=..., vf=... / qf=...)``, SB3 1.x's ``[dict(...)]``) of widths that fit in RAM.

The ``.pth`` files are read with ``torch.load(..., weights_only=True)`` first (recent SB3 -- 2.9 here --
does the same itself); one that holds Python objects is refused. ``trust_checkpoint=True``
(``--trust-checkpoint``) restores SB3's own loading, which unpickles every ``data`` entry: use it only
for files from a trusted source.
"""

from __future__ import annotations

import base64
import types
import zipfile
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from equirl.config import FieldError
from equirl.errors import CheckpointError, ConfigError
from equirl.utils.io import (
    RefusedGlobal,
    RefusedStructure,
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
    "NormalizeStats",
    "check_tensor_files",
    "pickled_entries",
    "read_vecnormalize",
    "read_zip_data",
    "restricted_loads",
    "safe_custom_objects",
]


@dataclass
class NormalizeStats:
    """The plain statistics of a ``VecNormalize`` (what :func:`load_vecnormalize` reads).

    :param mean: observation running mean; ``var``: its variance; ``count``: the sample count.
    :param clip_obs: observations are clipped to ``±clip_obs`` after normalising.
    :param epsilon: added to the variance.
    :param norm_obs: whether observations are normalised at all.
    :param norm_reward: whether rewards were normalised in training (never at evaluation).
    :param gamma: the reward normaliser's discount; ``clip_reward`` its clip.
    :param ret_mean: the return statistics (``ret_rms``), if any; ``ret_var``, ``ret_count`` likewise.
    """

    mean: np.ndarray
    var: np.ndarray
    count: float
    clip_obs: float = 10.0
    epsilon: float = 1e-8
    norm_obs: bool = True
    norm_reward: bool = False
    gamma: float = 0.99
    clip_reward: float = 10.0
    ret_mean: float = 0.0
    ret_var: float = 1.0
    ret_count: float = 1e-4


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
    # numpy scalar types, as a value (SB3's action noise keeps its dtype so)
    ("numpy", "float16"),
    ("numpy", "float32"),
    ("numpy", "float64"),
}

#: classes an entry names as values (a policy, an activation, an optimizer, a feature extractor, a buffer
#: class): the unpickler hands out a stand-in that refuses to be called or instantiated and to have
#: attributes set on it, and the stand-in is replaced by the class itself in what it returns
_CLASS_GLOBALS = {
    "stable_baselines3.common.buffers": (
        "ReplayBuffer",
        "DictReplayBuffer",
        "RolloutBuffer",
        "DictRolloutBuffer",
    ),
    "equirl.rl.augment": ("AugmentedReplayBuffer", "AugmentedRolloutBuffer"),
    "stable_baselines3.common.torch_layers": ("FlattenExtractor", "NatureCNN", "CombinedExtractor"),
    "stable_baselines3.common.sb2_compat.rmsprop_tf_like": ("RMSpropTFLike",),
    "torch.nn.modules.activation": (
        "ReLU",
        "ReLU6",
        "Tanh",
        "ELU",
        "SELU",
        "CELU",
        "LeakyReLU",
        "PReLU",
        "GELU",
        "SiLU",
        "Mish",
        "Sigmoid",
        "LogSigmoid",
        "Softplus",
        "Softsign",
        "Hardtanh",
        "Hardswish",
        "Hardsigmoid",
        "Tanhshrink",
    ),
    "torch.nn.modules.linear": ("Identity",),
    "torch.optim.adam": ("Adam",),
    "torch.optim.adamw": ("AdamW",),
    "torch.optim.rmsprop": ("RMSprop",),
    "torch.optim.sgd": ("SGD",),
}

#: plain-data classes an entry may hold instances of (SB3's schedules, train frequency and action noise,
#: equirl's symmetry spec): built as records of the pickle's fields -- never by calling the class with
#: the pickle's arguments -- checked to hold plain data only, then turned into instances
_DATA_CLASSES = {
    "equirl.rl.spec": ("EnvSymmetry", "Score"),
    "stable_baselines3.common.utils": ("ConstantSchedule", "FloatSchedule", "LinearSchedule"),
    "stable_baselines3.common.noise": (
        "NormalActionNoise",
        "OrnsteinUhlenbeckActionNoise",
        "VectorizedActionNoise",  # what SB3 makes of the noise of an off-policy agent with n_envs > 1
    ),
    "stable_baselines3.common.type_aliases": ("TrainFreq", "TrainFrequencyUnit"),
}

#: ``torch.device``, as torch pickles it (``torch.device("cpu")`` / ``("cuda", 0)``): built by a checked
#: function from a device name and an optional index only
_DEVICE = ("torch", "device")

#: how deep :func:`_finish` walks what the unpickler returns (plain ``policy_kwargs`` are a few levels)
_MAX_DEPTH = 100


def _merged_state(state: Any) -> Any:
    """A pickle's ``BUILD`` state as one mapping: ``(dict state, slots state)`` pairs merged."""
    if isinstance(state, tuple) and len(state) == 2 and all(isinstance(p, (dict, type(None))) for p in state):
        return {**(state[0] or {}), **(state[1] or {})}
    return state


#: where equirl's policy classes were before :mod:`equirl.rl.policies` became a package: the module an
#: agent zip saved then names its policy class by -> the modules its classes are in now
_OLD_POLICY_MODULES: dict[str, tuple[str, ...]] = {
    "equirl.rl.policies": ("equirl.rl.policies.q",),
    "equirl.rl.ac_policies": ("equirl.rl.policies.on_policy", "equirl.rl.policies.off_policy"),
}


def _policy_classes() -> dict[tuple[str, str], type]:
    """The policy classes of the algorithms equirl loads (SB3's, sb3-contrib's and equirl's), by
    ``(module, name)``; equirl's also by the module they had before (:data:`_OLD_POLICY_MODULES`)."""
    from sb3_contrib import QRDQN, TQC
    from stable_baselines3 import A2C, DDPG, DQN, PPO, SAC, TD3
    from stable_baselines3.common.policies import ActorCriticPolicy

    import equirl.rl.policies  # noqa: F401  (equirl.rl registers the aliases read below)

    classes: set[type] = {ActorCriticPolicy}
    for algo in (DQN, QRDQN, PPO, A2C, SAC, TD3, DDPG, TQC):
        classes.update(algo.policy_aliases.values())
    found = {(c.__module__, c.__qualname__): c for c in classes}
    for old, new in _OLD_POLICY_MODULES.items():
        found.update({(old, n): c for (m, n), c in list(found.items()) if m in new})
    return found


def _extractor_classes() -> dict[tuple[str, str], type]:
    """equirl's feature extractors a config can name (:data:`equirl.rl.algos.FEATURE_EXTRACTORS`), by
    ``(module, name)``: an agent trained with one names its class in ``policy_kwargs``."""
    from equirl.rl.algos import FEATURE_EXTRACTORS

    paths = (path.partition(":") for path in FEATURE_EXTRACTORS.values() if path is not None)
    return {(module, name): find_global(module, name) for module, _, name in paths}


class _StandIn(type):
    """The metaclass of what the unpickler hands out for an allowlisted class.

    A *reference* stand-in (``_record`` false) refuses a call (``REDUCE``), an instance (``NEWOBJ``) and
    an attribute set on it (a ``BUILD`` on the class itself would monkeypatch it for the whole process);
    :func:`_finish` replaces it by the class. A *record* stand-in builds a :class:`_Built` record of the
    arguments and fields instead of an instance; :func:`_finish` checks and converts it."""

    _real: type
    _path: str
    _record: bool

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if not cls._record:
            raise RefusedGlobal(f"a call of {cls._path}")
        return _Built(cls, args, kwargs, called=True)

    def __setattr__(cls, name: str, value: Any) -> None:
        raise RefusedGlobal(f"an attribute set on {cls._path}")


def _stand_in_new(cls: Any, *args: Any, **kwargs: Any) -> Any:
    """``NEWOBJ``'s ``cls.__new__(cls, *args)`` on a stand-in."""
    if not cls._record:
        raise RefusedGlobal(f"an instance of {cls._path}")
    return _Built(cls, args, kwargs, called=False)


def _stand_in(real: type, path: str, record: bool) -> type:
    return _StandIn(
        real.__name__, (), {"_real": real, "_path": path, "_record": record, "__new__": _stand_in_new}
    )


class _Built:
    """A record of a plain-data object the pickle builds: the stand-in it was built from, the arguments
    (``called``: a call, else ``NEWOBJ``) and the fields a ``BUILD`` sets. Nothing runs."""

    def __init__(self, cls: Any, args: tuple[Any, ...], kwargs: dict[str, Any], called: bool) -> None:
        self.cls, self.args, self.kwargs, self.called = cls, args, kwargs, called
        self.fields: dict[Any, Any] = {}
        self.bad_state = False

    def __setstate__(self, state: Any) -> None:
        state = _merged_state(state)
        if isinstance(state, dict):
            self.fields.update(state)
        else:
            self.bad_state = True


def _device_builder() -> Callable[..., Any]:
    """``torch.device(name[, index])``, refusing any other argument (a fresh function per load)."""

    def device(*args: Any) -> Any:
        import torch

        name, index = (*args, None)[:2] if 1 <= len(args) <= 2 else (None, None)
        if not (
            isinstance(name, str)
            and len(name) <= 32
            and (index is None or (type(index) is int and 0 <= index < 2**16))
        ):
            got = ", ".join(type(a).__name__ for a in args) or "nothing"
            raise RefusedStructure(f"a pickle that builds torch.device from {got}, not a device name")
        return torch.device(name) if index is None else torch.device(name, index)

    return device


def _fresh(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A per-load wrapper of a Python function the allowlist names (a ``BUILD`` on it then changes the
    wrapper, never the library's function)."""

    def call(*args: Any) -> Any:
        return fn(*args)

    return call


def _data_global(module: str, name: str) -> Any:
    obj = find_global(module, name)
    return _fresh(obj) if isinstance(obj, types.FunctionType) else obj


class _Resolver:
    """The allowlist of SB3 zips' pickled entries, one per load: plain data (numpy, collections),
    class references and plain-data records (through stand-ins), ``torch.device``."""

    def __init__(self) -> None:
        self.cache: dict[tuple[str, str], Any] = {}

    def __call__(self, module: str, name: str) -> Any:
        key = (module, name)
        if key not in self.cache:
            self.cache[key] = self._find(module, name)
        return self.cache[key]

    def _find(self, module: str, name: str) -> Any:
        if (module, name) in _DATA_GLOBALS:
            return _data_global(module, name)
        if (module, name) == _DEVICE:
            return _device_builder()
        path = f"{module}.{name}"
        if name in _CLASS_GLOBALS.get(module, ()):
            return _stand_in(find_global(module, name), path, record=False)
        if name in _DATA_CLASSES.get(module, ()):
            return _stand_in(find_global(module, name), path, record=True)
        policy = _policy_classes().get((module, name)) or _extractor_classes().get((module, name))
        if policy is not None:
            return _stand_in(policy, path, record=False)
        raise RefusedGlobal(path)


def _record_types() -> tuple[type, ...]:
    return tuple(find_global(m, n) for m, names in _DATA_CLASSES.items() for n in names)


def _is_plain(value: Any, records: tuple[type, ...], depth: int = 0) -> bool:
    """Plain data: numbers, strings, numpy arrays and scalars, containers of them, converted records."""

    if depth > _MAX_DEPTH:
        return False
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes, np.generic, records)):
        return True
    if isinstance(value, np.ndarray):
        return value.dtype != object
    if isinstance(value, type) and issubclass(value, np.generic):  # a dtype given as its scalar type
        return value is not np.object_
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v, records, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v, records, depth + 1) for k, v in value.items())
    return False


def _make(built: _Built, records: tuple[type, ...], depth: int) -> Any:
    """The object a :class:`_Built` record stands for, if it holds plain data as its class expects."""
    from stable_baselines3.common.type_aliases import TrainFreq, TrainFrequencyUnit

    real, path = built.cls._real, built.cls._path
    args = tuple(_finish(a, records, depth + 1) for a in built.args)
    fields = {k: _finish(v, records, depth + 1) for k, v in built.fields.items()}
    if built.kwargs or built.bad_state:
        raise RefusedStructure(f"a pickle that builds {path} from something other than plain fields")
    if real is TrainFrequencyUnit:  # an enum: looked up by its value
        if not (built.called and len(args) == 1 and isinstance(args[0], str) and not fields):
            raise RefusedStructure(f"a pickle that builds {path} from something other than its name")
        try:
            return TrainFrequencyUnit(args[0])
        except ValueError:
            raise RefusedStructure(f"a pickle with an unknown {path} {printable(args[0], 20)}") from None
    if real is TrainFreq:  # a named tuple (frequency, unit)
        ok = len(args) == 2 and type(args[0]) is int and isinstance(args[1], TrainFrequencyUnit)
        if not ok or fields:
            raise RefusedStructure(f"a pickle that builds {path} from something other than (int, unit)")
        return TrainFreq(*args)
    if built.called or args:
        raise RefusedGlobal(f"a call of {path}")
    for key, value in fields.items():
        if not (isinstance(key, str) and key.isidentifier() and not key.startswith("__")):
            raise RefusedStructure(f"a pickle that sets the field {printable(key, 40)} of {path}")
        if not _is_plain(value, records):
            raise RefusedStructure(f"a pickle whose {path} holds a {type(value).__name__}, not plain data")
    obj = object.__new__(real)
    obj.__dict__.update(fields)
    return obj


def _finish(obj: Any, records: tuple[type, ...], depth: int = 0) -> Any:
    """What the unpickler returned, with every stand-in replaced by its class and every record by the
    object it stands for (checked)."""
    if depth > _MAX_DEPTH:
        raise RefusedStructure(f"a pickle nested deeper than {_MAX_DEPTH} levels")
    if isinstance(obj, _StandIn):
        return obj._real
    if isinstance(obj, _Built):
        return _make(obj, records, depth)
    kind = type(obj)
    if kind in (list, tuple, set, frozenset):
        return kind(_finish(v, records, depth + 1) for v in obj)
    if kind in (dict, OrderedDict):
        return kind((_finish(k, records, depth + 1), _finish(v, records, depth + 1)) for k, v in obj.items())
    if kind is deque:
        return deque((_finish(v, records, depth + 1) for v in obj), maxlen=obj.maxlen)
    return obj


def restricted_loads(blob: bytes) -> Any:
    """Unpickle ``blob`` through the file layer's restricted unpickler with this module's allowlist:
    class references come back as the classes (never called), plain-data records as checked instances,
    ``torch.device`` only from a device name.

    :raises RefusedGlobal: it references anything outside the allowlist, calls or instantiates a class,
        or breaks a size limit.
    """
    return _finish(_restricted_loads(blob, _Resolver()), _record_types())


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


def _layer_lists(arch: Any) -> list[Any]:
    """The layer lists of a ``net_arch`` in SB3's forms: ``[64, 64]``, ``dict(pi=[..], vf=[..])`` /
    ``dict(pi=[..], qf=[..])``, and SB3 1.x's ``[dict(pi=[..], vf=[..])]``.

    :raises ValueError: why it is none of them.
    """
    if isinstance(arch, list) and len(arch) == 1 and isinstance(arch[0], dict):
        arch = arch[0]  # SB3 1.x's form (SB3's load converts it the same way)
    if isinstance(arch, dict):
        if not arch or any(k not in ("pi", "vf", "qf") for k in arch):
            raise ValueError("a dict net_arch has the keys pi, vf and / or qf")
        return list(arch.values())
    if isinstance(arch, list) and any(isinstance(a, dict) for a in arch):
        raise ValueError(
            "shared layers before a dict (SB3 1.x's [64, dict(pi=..., vf=...)]) are not built by SB3 2"
        )
    return [arch]


def _check_net_arch(zpath: Any, arch: Any) -> None:
    """A ``net_arch`` in one of SB3's forms, of positive integer widths that fit in RAM."""
    from equirl.rl.config import check_net_memory

    try:
        layers = _layer_lists(arch)
        for layer in layers:
            ok = isinstance(layer, list) and all(type(w) is int and 0 < w < 2**31 for w in layer)
            if not ok:
                raise ValueError("each layer list holds positive integer widths")
            check_net_memory([1, *layer, 1])
    except (ValueError, ConfigError) as exc:
        why = exc.detail if isinstance(exc, FieldError) else str(exc)
        raise CheckpointError(
            f"{zpath}: its policy_kwargs net_arch {printable(arch, 80)} is refused: {why}"
        ) from None


def _plain_policy_kwargs(zpath: Any, pk: Any, symmetry: Any) -> dict[str, Any]:
    if not isinstance(pk, dict):
        raise _refuse(zpath, "policy_kwargs", f"is a {type(pk).__name__}, not a mapping")
    pk = dict(pk)
    pk.pop("device", None)  # a torch.device of the saving machine: SB3's load drops it too
    if pk.get("net_arch") is not None:  # None: the policy's default
        _check_net_arch(zpath, pk["net_arch"])
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


def saved_symmetry(zpath: str | Path) -> Any:
    """The symmetry spec an agent equirl saved carries in its ``policy_kwargs`` (read as data, nothing
    run), as an :class:`~equirl.rl.spec.EnvSymmetry`; ``None`` for a zip that has none or cannot say."""
    from equirl.errors import EquirlError
    from equirl.rl.spec import EnvSymmetry, parse_spec

    try:
        data = read_zip_data(zpath)
        entry = data.get("policy_kwargs")
        pk = (
            _unpickle_entry(zpath, "policy_kwargs", entry)
            if isinstance(entry, dict) and ":serialized:" in entry
            else entry
        )
        sym = pk.get("symmetry") if isinstance(pk, dict) else None
        if isinstance(sym, EnvSymmetry):
            sym = sym.to_dict()
        return parse_spec(sym, source=f"{zpath} (saved with the agent)") if isinstance(sym, dict) else None
    except (EquirlError, AttributeError, TypeError, ValueError):
        return None


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
                weights = torch_load_weights(archive.read(name), f"{zpath}: {name}")
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
            if name == "policy.pth" and isinstance(weights, dict):  # the network an agent acts with
                bad = [k for k, v in weights.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
                       and not bool(torch.isfinite(v).all())]  # fmt: skip
                if bad:
                    raise CheckpointError(
                        f"{zpath}: policy.pth holds non-finite weights ({printable(bad[0], 80)}"
                        + (f" and {len(bad) - 1} more" if len(bad) > 1 else "")
                        + "): not a usable agent (did its training diverge?)"
                    )
                if any(str(k).startswith("mlp_extractor.shared_net.") for k in weights):
                    raise CheckpointError(
                        f"{zpath}: its actor and critic share layers (mlp_extractor.shared_net: SB3 1.x's "
                        "net_arch=[64, dict(pi=..., vf=...)]), which SB3 2 no longer builds: equirl cannot "
                        "load this agent (SB3 < 1.8 can)"
                    )


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
        state = _merged_state(state)
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
        return _data_global(module, name)
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
