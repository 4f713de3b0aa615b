"""Strict YAML configs: dataclass schemas, unknown keys rejected, ``--set key=value`` overrides.

A schema is a (possibly nested) dataclass. :func:`load_config` reads a YAML file, applies overrides
and builds the dataclass, refusing unknown keys and values of the wrong type with one-line
:class:`~equirl.errors.ConfigError` messages. Values are parsed by YAML's safe loader only: nothing is
ever ``eval``-ed.

Example::

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Train:
    ...     steps: int = 1000
    ...     lr: float = 1e-3
    >>> cfg = from_dict(Train, apply_overrides({"lr": 3e-4}, ["steps=50"]))
    >>> cfg.steps, cfg.lr
    (50, 0.0003)
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from equirl.errors import ConfigError

__all__ = [
    "FieldError",
    "apply_overrides",
    "check_range",
    "from_dict",
    "load_config",
    "load_yaml",
    "parse_yaml",
    "to_dict",
]

C = TypeVar("C")


class FieldError(ConfigError):
    """A config value out of its range: names the key (a dotted path once :func:`from_dict` has added
    the sections above it), the value and the valid range, on one line.

    :param key: the field name (``gamma``, ``net_arch[1]``...).
    :param value: the offending value.
    :param detail: what the value must be (``must lie in [0, 1]``).
    """

    def __init__(self, key: str, value: Any, detail: str) -> None:
        self.key, self.value, self.detail = key, value, detail
        super().__init__(f"{key} = {value!r}: {detail}")

    def under(self, where: str) -> FieldError:
        """The same error with ``where.`` in front of the key."""
        return FieldError(f"{where}.{self.key}" if where else self.key, self.value, self.detail)


def _bound(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def check_range(
    key: str,
    value: float,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> None:
    """Raise :class:`FieldError` unless ``value`` is a finite number within the given bounds.

    Example::

        >>> check_range("gamma", 0.99, ge=0, le=1)
        >>> check_range("gamma", -3.0, ge=0, le=1)
        Traceback (most recent call last):
        ...
        equirl.config.FieldError: gamma = -3.0: must lie in [0, 1]
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FieldError(key, value, "must be a number")
    if not math.isfinite(value):
        raise FieldError(key, value, "must be a finite number")
    low = ge if ge is not None else gt
    high = le if le is not None else lt
    ok = (
        (ge is None or value >= ge)
        and (gt is None or value > gt)
        and (le is None or value <= le)
        and (lt is None or value < lt)
    )
    if ok:
        return
    if low is not None and high is not None:
        left, right = "[" if ge is not None else "(", "]" if le is not None else ")"
        raise FieldError(key, value, f"must lie in {left}{_bound(low)}, {_bound(high)}{right}")
    if low is not None:
        raise FieldError(key, value, f"must be {'>=' if ge is not None else '>'} {_bound(low)}")
    assert high is not None
    raise FieldError(key, value, f"must be {'<=' if le is not None else '<'} {_bound(high)}")


#: the most aliases (``*name``) one YAML document may use, and the most nodes it may expand to
MAX_ALIASES = 1000
MAX_EXPANDED_NODES = 1_000_000
#: the deepest nesting a YAML document may have (a config is a few levels deep)
MAX_YAML_DEPTH = 64


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, stricter: a key given twice in one mapping is an error (not "the last one
    wins"), nesting is at most :data:`MAX_YAML_DEPTH` deep, and aliases are limited in number and in
    the size they expand to (a "billion laughs" document is refused before it is built)."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _YamlLimit(f"more than {MAX_ALIASES} aliases")
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            raise _YamlLimit(f"nested deeper than {MAX_YAML_DEPTH} levels")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = (
                self.construct_object(key_node, deep=True) if isinstance(key_node, yaml.ScalarNode) else None
            )
            if key is None and not isinstance(key_node, yaml.ScalarNode):
                continue
            try:
                hash(key)
            except TypeError:
                continue
            if key in seen:
                raise _YamlLimit(
                    f"key {key!r} appears twice in one mapping (lines {seen[key] + 1} and "
                    f"{key_node.start_mark.line + 1})"
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _ordered_dict(loader: yaml.SafeLoader, node: yaml.Node) -> dict[Any, Any]:
    """``!!python/object/apply:collections.OrderedDict [[[k, v], ...]]`` (RL-zoo files) as a plain
    dict; the only object-constructing tag the zoo loader accepts."""
    args = loader.construct_sequence(node, deep=True) if isinstance(node, yaml.SequenceNode) else None
    pairs = args[0] if args and isinstance(args[0], list) else None
    if pairs is None or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
        raise _YamlLimit("a collections.OrderedDict tag that is not a list of [key, value] pairs")
    return {k: v for k, v in pairs}


class _ZooLoader(_StrictLoader):
    """:class:`_StrictLoader` that also reads RL-zoo's ``OrderedDict`` tag (and nothing else that
    constructs objects)."""


_ZooLoader.add_constructor("tag:yaml.org,2002:python/object/apply:collections.OrderedDict", _ordered_dict)


class _YamlLimit(Exception):
    """A YAML document broke one of the strict loader's rules."""


def _expanded_size(root: Any, limit: int) -> int:
    """How many nodes ``root`` would be with every alias expanded (memoised, no recursion); a
    recursive alias is refused."""
    memo: dict[int, int] = {}
    visiting: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        n, done = stack.pop()
        if done:
            visiting.discard(id(n))
            memo[id(n)] = min(limit + 1, 1 + sum(memo[id(k)] for k in _children(n)))
            continue
        if id(n) in memo:
            continue
        if id(n) in visiting:
            raise _YamlLimit("a recursive alias (a value that contains itself)")
        visiting.add(id(n))
        stack.append((n, True))
        for k in _children(n):
            if id(k) in visiting:
                raise _YamlLimit("a recursive alias (a value that contains itself)")
            if id(k) not in memo:
                stack.append((k, False))
    return memo[id(root)]


def _children(n: Any) -> list[Any]:
    if isinstance(n, yaml.SequenceNode):
        return list(n.value)
    if isinstance(n, yaml.MappingNode):
        return [x for pair in n.value for x in pair]
    return []


def parse_yaml(text: str, what: str = "YAML", zoo: bool = False) -> Any:
    """Parse one YAML document with the strict safe loader (see :class:`_StrictLoader`): one-line
    :class:`ConfigError` messages naming ``what`` and the line.

    :param text: the YAML text.
    :param what: how messages name the source (``config runs/x/config.yaml``).
    :param zoo: also accept RL-zoo's ``collections.OrderedDict`` tag (read as a plain dict).

    Example::

        >>> parse_yaml("a: 1\\na: 2")
        Traceback (most recent call last):
        ...
        equirl.errors.ConfigError: YAML: key 'a' appears twice in one mapping (lines 1 and 2)
    """
    loader = (_ZooLoader if zoo else _StrictLoader)(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if loader._aliases and _expanded_size(node, MAX_EXPANDED_NODES) > MAX_EXPANDED_NODES:
            raise _YamlLimit(f"its aliases expand to more than {MAX_EXPANDED_NODES:,} values")
        return loader.construct_document(node)
    except _YamlLimit as exc:
        raise ConfigError(f"{what}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{what}: nested too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"malformed YAML in {what}{where}: {problem}") from None
    finally:
        loader.dispose()


def load_yaml(path: str | Path, zoo: bool = False) -> dict[str, Any]:
    """Read a YAML mapping through :func:`equirl.utils.io.read_text` (size-limited, one-line errors for
    missing, unreadable and binary files) and :func:`parse_yaml` (strict: duplicate keys, alias bombs
    and deep nesting refused).

    :param zoo: accept RL-zoo's ``OrderedDict`` tag (``config.yml`` / ``args.yml`` of a zoo folder).
    """
    from equirl.utils.io import read_text

    path = Path(path)
    text = read_text(path, "config")
    data = parse_yaml(text, str(path), zoo=zoo)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must contain a mapping of keys to values, got {type(data).__name__}")
    return data


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str] | None) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML scalars/lists) to a nested mapping."""
    out: dict[str, Any] = _deepcopy(dict(data))
    for item in overrides or ():
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. train.steps=5000)")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = parse_yaml(raw, f"override {item!r}") if raw.strip() else ""
        except ConfigError:
            raise ConfigError(f"override {item!r}: cannot parse the value {raw!r}") from None
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a section")
            node = nxt
        node[parts[-1]] = value
    return out


def _deepcopy(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _deepcopy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deepcopy(v) for v in d]
    return d


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is typing.Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{where}: must be one of {list(get_args(tp))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a section (mapping), got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        seq = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(seq) if origin is tuple or tp is tuple else seq
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        args = get_args(tp)
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        number: float | None = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            with contextlib.suppress(ValueError):
                number = float(value)  # YAML reads "1e-3" as a string
        if number is None:
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(number):  # no NaN / inf anywhere in a config
            raise FieldError(where, number, "must be a finite number")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def from_dict(cls: type[C], data: Mapping[str, Any], where: str = "") -> C:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and wrong types."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls} is not a dataclass")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(prefix + str(k) for k in unknown)}; "
            f"allowed{' in ' + where if where else ''}: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for k, v in data.items():
        kwargs[k] = _coerce(v, hints[k], f"{where}.{k}" if where else k)
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"missing required key{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")
    try:
        obj = cls(**kwargs)
    except FieldError as exc:
        raise exc.under(where) from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}" if where else str(exc)) from None
    return obj


def to_dict(obj: Any) -> Any:
    """A dataclass (nested) as plain dicts/lists, ready for ``yaml.safe_dump``."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def load_config(cls: type[C], path: str | Path | None = None, overrides: Sequence[str] | None = None) -> C:
    """Read YAML ``path`` (or start from the defaults), apply ``overrides`` and validate into ``cls``.

    ``path`` may also name a shipped config (``CartPole-v1-finetune-equizero``, ``rl/CartPole-v1``):
    see :func:`equirl.assets.find_config`.
    """
    if path is not None:
        from equirl.assets import find_config

        path = find_config(path)
    data = load_yaml(path) if path is not None else {}
    return from_dict(cls, apply_overrides(data, overrides))
