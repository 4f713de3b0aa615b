"""The schema layer: strict YAML in, typed config objects out, one-line errors.

A schema is a (possibly nested) dataclass whose annotations declare each field's type and bounds
(``gamma: Annotated[float, Range(ge=0, le=1)] = 0.99``). :func:`load_config` reads a YAML file with the
strict loader (:func:`parse_yaml`: duplicate keys, alias bombs and deep nesting refused), applies
``--set key=value`` overrides and builds the dataclass through :func:`from_dict`, which validates every
field with pydantic (types, bounds, no NaN / inf) and refuses unknown and missing keys; the dataclass's
``__post_init__`` adds the rules that involve several fields. Every error is one
:class:`~equirl.errors.ConfigError` line naming the dotted key, the value and what it must be. Nothing
is ever ``eval``-ed or constructed from a YAML tag.

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

import dataclasses
import functools
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
    "Range",
    "apply_overrides",
    "check_range",
    "from_dict",
    "load_config",
    "load_yaml",
    "parse_yaml",
    "to_dict",
    "validate_field",
]

C = TypeVar("C")


def _shown(value: Any) -> str:
    """``repr(value)`` for a message, short: an integer too long to print (Python refuses ints of more
    than 4,300 digits) by its size, anything else cut at 200 characters."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"<an integer of {value.bit_length()} bits>"
    try:
        text = repr(value)
    except ValueError:
        return f"<a {type(value).__name__}>"
    return text if len(text) <= 200 else text[:199] + "…"


class FieldError(ConfigError):
    """A config value out of its range: names the key (a dotted path once :func:`from_dict` has added
    the sections above it), the value and the valid range, on one line.

    :param key: the field name (``gamma``, ``net_arch[1]``...).
    :param value: the offending value.
    :param detail: what the value must be (``must lie in [0, 1]``).
    """

    def __init__(self, key: str, value: Any, detail: str) -> None:
        self.key, self.value, self.detail = key, value, detail
        super().__init__(f"{key} = {_shown(value)}: {detail}")

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
    if isinstance(value, float) and not math.isfinite(value):
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
    except (ValueError, OverflowError) as exc:  # a scalar YAML reads but Python refuses (a 5,000-digit int)
        raise ConfigError(f"malformed YAML in {what}: {str(exc).splitlines()[0][:120]}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        if "tag:yaml.org,2002:merge" in problem:  # the loader builds plain data only, without merge keys
            problem = (
                "merge keys (`<<: *anchor`) are not supported: write the keys out (anchors and aliases work)"
            )
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
    from equirl.utils.io import printable

    for item in overrides or ():
        shown = repr(printable(item, 120))
        if "=" not in item:
            raise ConfigError(f"override {shown} must look like key=value (e.g. train.steps=5000)")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {shown} has an empty key")
        try:
            value = parse_yaml(raw, f"override {shown}") if raw.strip() else ""
        except ConfigError as exc:
            why = str(exc).split(": ", 1)[-1] if "nested" in str(exc) or "alias" in str(exc) else ""
            raise ConfigError(
                f"override {shown}: cannot parse the value{': ' + why if why else ''}"
            ) from None
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {shown}: {p!r} is not a section")
            node = nxt
        node[parts[-1]] = value
    return out


def _deepcopy(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _deepcopy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deepcopy(v) for v in d]
    return d


@dataclasses.dataclass(frozen=True)
class Range:
    """The bounds of a numeric schema field, declared in its annotation and enforced by the schema
    engine (:func:`from_dict`)::

        gamma: Annotated[float, Range(ge=0, le=1)] = 0.99

    :param ge: / :param gt: / :param le: / :param lt: inclusive / exclusive lower / upper bounds.
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def constraints(self) -> list[Any]:
        import annotated_types as at

        out: list[Any] = []
        for name, kind in (("ge", at.Ge), ("gt", at.Gt), ("le", at.Le), ("lt", at.Lt)):
            bound = getattr(self, name)
            if bound is not None:
                out.append(kind(bound))
        return out

    def check(self, key: str, value: Any) -> None:
        """Raise :class:`FieldError` unless ``value`` lies within the bounds."""
        check_range(key, value, ge=self.ge, gt=self.gt, le=self.le, lt=self.lt)


def _int_in(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("expected an integer")
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


#: the largest magnitude a float option may have: torch computes in float32, where anything larger is inf
FLOAT32_MAX = 3.4028234663852886e38


def _float_in(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("expected a number")
    if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
        try:
            value = float(value)
        except ValueError:
            raise ValueError("expected a number") from None
    if isinstance(value, (int, float)) and math.isfinite(value) and abs(value) > FLOAT32_MAX:
        raise ValueError(f"must be at most {FLOAT32_MAX:.3g} in size (float32, what torch computes in)")
    return value


def _pydantic_type(tp: Any) -> Any:
    """``tp`` as the schema engine validates it: bools, ints, strings strict (no ``"yes"`` for true, no
    ``1`` for ``"1"``); integral floats accepted as ints; numeric strings as floats; no NaN / inf;
    :class:`Range` markers made into pydantic constraints; nested dataclasses built by :func:`from_dict`."""
    from pydantic import AllowInfNan, BeforeValidator, PlainValidator, Strict

    if tp is Any:
        return Any
    origin = get_origin(tp)
    if origin is typing.Annotated:
        base, *meta = get_args(tp)
        out: list[Any] = []
        for m in meta:
            out.extend(m.constraints() if isinstance(m, Range) else [m])
        return typing.Annotated[(_pydantic_type(base), *out)]
    if origin in (Union, types.UnionType):
        return Union[tuple(_pydantic_type(a) for a in get_args(tp))]  # noqa: UP007
    if origin is typing.Literal:
        return tp
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        cls = tp

        def build(value: Any) -> Any:
            if isinstance(value, cls):
                return value
            if not isinstance(value, Mapping):
                raise ValueError("expected a section (mapping)")
            return from_dict(cls, value)

        return typing.Annotated[Any, PlainValidator(build)]
    if origin in (list, Sequence) or tp is list:
        args = get_args(tp)
        return list[_pydantic_type(args[0]) if args else Any]  # type: ignore[misc]
    if origin is tuple or tp is tuple:
        args = get_args(tp)
        if not args:
            return tuple[Any, ...]
        if args[-1] is Ellipsis:
            return tuple[_pydantic_type(args[0]), ...]  # type: ignore[misc]
        return tuple[tuple(_pydantic_type(a) for a in args)]  # type: ignore[misc]
    if origin in (dict, Mapping) or tp is dict:
        args = get_args(tp)
        return dict[str, _pydantic_type(args[1]) if len(args) == 2 else Any]  # type: ignore[misc]
    if tp is bool:
        return typing.Annotated[bool, Strict()]
    if tp is int:
        return typing.Annotated[int, Strict(), BeforeValidator(_int_in)]
    if tp is float:
        return typing.Annotated[float, AllowInfNan(False), BeforeValidator(_float_in)]
    if tp is str:
        return typing.Annotated[str, Strict()]
    return tp


@functools.cache
def _field_schemas(cls: type) -> dict[str, tuple[Any, Any]]:
    """Each init field of dataclass ``cls``: its annotation and a cached pydantic validator."""
    from pydantic import ConfigDict, TypeAdapter

    hints = get_type_hints(cls, include_extras=True)
    out = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        out[f.name] = (tp, TypeAdapter(_pydantic_type(tp), config=ConfigDict(arbitrary_types_allowed=True)))
    return out


def _type_name(tp: Any) -> str:
    if get_origin(tp) is typing.Annotated:
        return _type_name(get_args(tp)[0])
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is bool:
        return "true/false"
    if tp is str:
        return "a string"
    if get_origin(tp) in (list, tuple, Sequence) or tp in (list, tuple):
        return "a list"
    if get_origin(tp) in (dict, Mapping) or tp is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a section (mapping)"
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _loc(where: str, loc: tuple[Any, ...]) -> str:
    """A pydantic error location inside a field as ``net_arch[1]`` / ``kwargs.proxy``."""
    key = where
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        elif isinstance(part, str) and part.isidentifier() is False and "[" in part:
            continue  # a validator's name (``function-before[...]``), not a place
        elif isinstance(part, str) and part in ("int", "float", "str", "bool", "list", "dict", "tuple"):
            continue
        else:
            key += f".{part}"
    return key


def _range_of(tp: Any, loc: tuple[Any, ...]) -> tuple[Range, Any] | None:
    """The :class:`Range` (and the numeric type it bounds) that applies at ``loc`` inside a field of
    type ``tp`` (``net_arch[1]``: the list's item type)."""
    for part in (*loc, None):
        if get_origin(tp) in (Union, types.UnionType):  # ``X | None``: the bound is on X
            tp = next((a for a in get_args(tp) if a is not type(None)), tp)
        if get_origin(tp) is typing.Annotated:
            base, *meta = get_args(tp)
            rng = next((m for m in meta if isinstance(m, Range)), None)
            if rng is not None:
                return rng, base
            tp = base
        if part is None:
            return None
        if isinstance(part, int) and get_origin(tp) in (list, Sequence, tuple):
            tp = get_args(tp)[0]
        elif get_origin(tp) in (Union, types.UnionType):
            tp = next((a for a in get_args(tp) if a is not type(None)), tp)
    return None


def _validation_error(exc: Any, where: str, tp: Any, value: Any) -> ConfigError:
    """One line for a pydantic :class:`~pydantic.ValidationError` of the field at ``where``."""
    errors = exc.errors(include_url=False)
    inner = [e for e in errors if e.get("ctx", {}).get("error") is not None]
    for e in inner:  # an error raised by a nested schema or a validator: keep its own message
        err = e["ctx"]["error"]
        if isinstance(err, FieldError):
            return err.under(_loc(where, tuple(e["loc"])[:-1])) if e["loc"] else err.under(where)
        if isinstance(err, ConfigError):
            return err
    origin = get_origin(tp[0] if isinstance(tp, tuple) else tp)
    if origin in (Union, types.UnionType) and len(errors) > 1:
        names = [_type_name(a) for a in get_args(tp) if a is not type(None)]
        return ConfigError(f"{where}: expected {' or '.join(names)}, got {_shown(value)}")
    e = errors[0]
    key = _loc(where, tuple(e["loc"]))
    kind, got = e["type"], e.get("input")
    bound = _range_of(tp, tuple(e["loc"]))
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than") and bound is not None:
        rng, base = bound
        if base is float and isinstance(got, (int, str)) and not isinstance(got, bool):
            got = float(_float_in(got))  # the value as the field reads it (``0`` -> ``0.0``)
        try:
            rng.check(key, got)
        except FieldError as fe:
            return fe
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        return FieldError(key, got, e["msg"].replace("Input should be", "must be"))
    if kind == "finite_number":
        return FieldError(key, got, "must be a finite number")
    if kind == "literal_error":
        choices = list(get_args(tp)) if get_origin(tp) is typing.Literal else []
        shown = ", ".join(map(str, choices)) if choices else str(e["ctx"].get("expected"))
        return FieldError(key, got, f"must be one of {shown}")
    if kind.startswith("bool"):
        return ConfigError(f"{key}: expected true/false, got {_shown(got)}")
    if kind.startswith("int") or (kind == "value_error" and "integer" in e["msg"]):
        return ConfigError(f"{key}: expected an integer, got {_shown(got)}")
    if kind.startswith("float") or (kind == "value_error" and "number" in e["msg"]):
        return ConfigError(f"{key}: expected a number, got {_shown(got)}")
    if kind.startswith("string"):
        return ConfigError(f"{key}: expected a string, got {_shown(got)}")
    if kind in ("list_type", "tuple_type"):
        return ConfigError(f"{key}: expected a list, got {_shown(got)}")
    if kind in ("too_short", "too_long"):
        return ConfigError(
            f"{key}: expected {e['ctx'].get('max_length') or e['ctx'].get('min_length')} values"
        )
    if kind in ("dict_type", "mapping_type"):
        return ConfigError(f"{key}: expected a mapping, got {_shown(got)}")
    if kind == "value_error":
        return ConfigError(f"{key}: {e['msg'].removeprefix('Value error, ')}, got {_shown(got)}")
    return ConfigError(f"{key}: {e['msg']}, got {_shown(got)}")


def validate_field(cls: type, name: str, value: Any, where: str = "") -> Any:
    """``value`` validated (and coerced) as field ``name`` of schema ``cls``: its type and declared
    :class:`Range`, by pydantic; one-line :class:`ConfigError` / :class:`FieldError` naming ``where``."""
    from pydantic import ValidationError

    tp, adapter = _field_schemas(cls)[name]
    key = f"{where}.{name}" if where else name
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        raise _validation_error(exc, key, tp, value) from None
    except FieldError as exc:
        raise exc.under(key) from None


def _section_type(tp: Any) -> type | None:
    """The schema dataclass of a nested section's field type (``X``, ``Annotated[X, ...]`` or an optional
    ``X | None``), else ``None``: a section given as a mapping is built by :func:`from_dict`, so its
    errors name its dotted keys."""
    if get_origin(tp) is typing.Annotated:
        tp = get_args(tp)[0]
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        tp = args[0] if len(args) == 1 else None
    return tp if isinstance(tp, type) and dataclasses.is_dataclass(tp) else None


def from_dict(cls: type[C], data: Mapping[str, Any], where: str = "") -> C:
    """Build schema ``cls`` (a dataclass whose fields declare their types and :class:`Range` markers) from
    ``data``: unknown keys, missing keys, wrong types and values out of range refused in one line (by
    pydantic, field by field, so the message names the dotted key); then the dataclass's own
    ``__post_init__`` checks what involves several fields."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls} is not a dataclass")
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or 'config'}: expected a section (mapping), got {_shown(data)}")
    schemas = _field_schemas(cls)
    unknown = [k for k in data if k not in schemas]
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(prefix + str(k) for k in unknown)}; "
            f"allowed{' in ' + where if where else ''}: {', '.join(sorted(schemas))}"
        )
    kwargs: dict[str, Any] = {}
    for k, v in data.items():
        base = _section_type(schemas[k][0])
        if base is not None and isinstance(v, Mapping):
            kwargs[k] = from_dict(base, v, f"{where}.{k}" if where else k)
        else:
            kwargs[k] = validate_field(cls, k, v, where)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"missing required key{'s' if len(missing) > 1 else ''}: {', '.join(prefix + m for m in missing)}"
        )
    try:
        obj = cls(**kwargs)
    except FieldError as exc:
        raise exc.under(where) from None
    except ConfigError:
        raise
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


def load_config(
    cls: type[C],
    path: str | Path | None = None,
    overrides: Sequence[str] | None = None,
    section: str | None = None,
) -> C:
    """Read YAML ``path`` (or start from the defaults), apply ``overrides`` and validate into ``cls``.

    ``path`` may also name a shipped config (``dqn-CartPole-v1-finetune-equizero``, ``rl/dqn-CartPole-v1``):
    see :func:`equirl.assets.find_config`; ``section`` (``"rl"``, ``"vision"``...) is the family it is
    looked up in first, and the only one an unknown name's error lists.
    """
    if path is not None:
        from equirl.assets import find_config

        path = find_config(path, section=section)
    data = load_yaml(path) if path is not None else {}
    return from_dict(cls, apply_overrides(data, overrides))
