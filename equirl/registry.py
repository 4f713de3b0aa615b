"""The symmetrization methods by name: one registry for the core, the adapters and the CLI.

Every method equirl knows -- the un-symmetrized baseline ``base``, ``equitune``, ``equizero``,
``lambda`` (λ-equitune), ``canonicalize`` and ``multigroup`` -- is described once here by a
:class:`MethodSpec`: its canonical name, the aliases accepted on input, a one-line summary with the
paper it comes from, what it needs (a direct-product group, a learned scorer) and its options with
their types, defaults and allowed values. Everything else in the package refers to methods through
this module (the constants :data:`BASE`, :data:`EQUITUNE`... and the spec properties), so a name is
spelled in one place and the baseline is called ``base`` everywhere (``plain`` is accepted on input).

The module is torch-free (it sits with :mod:`equirl.groups` at the bottom of the package), so the
CLI can build its ``--method`` choices without importing torch.

Example::

    >>> from equirl.registry import canonical_method, get_method, method_names, validate_method_kwargs
    >>> canonical_method("λ-equitune"), canonical_method("plain")
    ('lambda', 'base')
    >>> method_names(learned_scorer=False)
    ('base', 'equitune', 'equizero', 'lambda')
    >>> get_method("multigroup").needs_product_group
    True
    >>> validate_method_kwargs("equizero", {"proxy": "max_value"})
    {'proxy': 'max_value'}
    >>> validate_method_kwargs("equizero", {"proxi": "max_value"})
    Traceback (most recent call last):
    ...
    equirl.errors.ConfigError: unknown option 'proxi' for method equizero; valid options: chunk_size, fold, max_call_bytes, max_call_rows, proxy, straight_through, tie_atol, tie_break, tie_rtol
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from equirl.errors import ConfigError

__all__ = [
    "ADAPTERS",
    "AUGMENT",
    "AUTO",
    "BASE",
    "CANONICALIZE",
    "EQUITUNE",
    "EQUIZERO",
    "EQUIZERO_PROXIES",
    "LAMBDA",
    "METHODS",
    "MULTIGROUP",
    "PSEUDO_METHODS",
    "MethodOption",
    "MethodSpec",
    "canonical_method",
    "describe_methods",
    "get_method",
    "method_names",
    "validate_method_kwargs",
]

#: the un-symmetrized model (the baseline every table compares against)
BASE: Final = "base"
#: orbit average (Basu et al., AAAI 2023)
EQUITUNE: Final = "equitune"
#: the orbit element minimising a proxy loss (Basu et al., NeurIPS 2023)
EQUIZERO: Final = "equizero"
#: λ-equitune, a learned softmax over the orbit (Basu et al., NeurIPS 2023)
LAMBDA: Final = "lambda"
#: learned canonicalization (Kaba et al., ICML 2023; Mondal et al., NeurIPS 2023)
CANONICALIZE: Final = "canonicalize"
#: one canonicalizer per factor of a direct product group (Baltaji et al.)
MULTIGROUP: Final = "multigroup"
#: the data-augmentation baseline: a plain network trained on every transition and its mirror images
AUGMENT: Final = "augment"
#: the mirror-symmetry-loss baseline: a plain actor penalised for its asymmetry (Yu et al., SIGGRAPH 2018)
MIRROR_LOSS: Final = "mirror-loss"
#: a pseudo-method: evaluate candidate methods on a validation budget and use the best
#: (:func:`equirl.rl.select.select_method`); it resolves to a concrete method before any model is built
AUTO: Final = "auto"

#: the named equizero proxies (:data:`equirl.symmetrizers.proxies.PROXIES` holds their code)
EQUIZERO_PROXIES: Final = (
    "entropy",
    "max_prob",
    "max_value",
    "nll",
    "action_gap",
    "min_spread",
    "quantile_spread",
)

#: where an option can apply: ``core`` is :func:`equirl.symmetrize` itself, the others are the adapters
#: (each of which passes the core options through)
ADAPTERS: Final = ("core", "rl", "language", "vision")


@dataclass(frozen=True)
class MethodOption:
    """One keyword option of a method (a ``method_kwargs`` key).

    :param name: the keyword.
    :param value_type: the Python type of a value (``int`` values are accepted for ``float``; ``tuple``
        is a sequence of ``item_type`` given as a list or a tuple; ``object`` accepts anything).
    :param default: the default value (in the core symmetrizer; see ``adapter_defaults``).
    :param help: one line.
    :param choices: the allowed values (for a string option), if restricted.
    :param literals: special values allowed besides ``value_type`` (e.g. ``"auto"`` for ``chunk_size``).
    :param minimum: smallest allowed number (``exclusive``: the bound itself is not allowed).
    :param exclusive: whether ``minimum`` is excluded.
    :param item_type: for ``value_type=tuple``, the type of each item.
    :param nullable: ``None`` is allowed.
    :param callable_ok: a callable (a function or a torch module) is allowed as well.
    :param adapters: where the option applies (empty: everywhere, it is a core option).
    :param adapter_defaults: ``(adapter, default)`` pairs where an adapter's default differs.
    """

    name: str
    value_type: Any  # a type, or collections.abc.Callable
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    literals: tuple[Any, ...] = ()
    minimum: float | None = None
    exclusive: bool = False
    item_type: type | None = None
    nullable: bool = False
    callable_ok: bool = False
    adapters: tuple[str, ...] = ()
    adapter_defaults: tuple[tuple[str, Any], ...] = ()

    def applies_to(self, adapter: str | None) -> bool:
        """Whether the option is accepted by ``adapter`` (``None``: by some part of equirl)."""
        return adapter is None or not self.adapters or adapter in self.adapters

    def default_for(self, adapter: str | None = None) -> Any:
        """The default value under ``adapter`` (``None`` or ``core``: the core symmetrizer's)."""
        return dict(self.adapter_defaults).get(adapter or "core", self.default)

    @property
    def type_name(self) -> str:
        """What a valid value is, in words (for messages and ``--help``)."""
        if self.choices is not None:
            text = "one of " + ", ".join(str(c) for c in self.choices)
        elif self.value_type is tuple:
            text = f"a list of {_type_word(self.item_type or object)}s"
        else:
            text = _type_word(self.value_type)
        if self.minimum is not None:
            text += f" {'>' if self.exclusive else '>='} {self.minimum:g}"
        if self.literals:
            text += "".join(f" or {v!r}" for v in self.literals)
        if self.callable_ok:
            text += " or a callable"
        if self.nullable:
            text += " or null"
        return text

    def check(self, value: Any) -> str | None:
        """Why ``value`` is not valid for this option, or ``None`` when it is."""
        if value is None:
            return None if self.nullable else f"expected {self.type_name}"
        if self.callable_ok and callable(value) and not isinstance(value, (str, type)):
            return None
        if self.literals and isinstance(value, str) and _in_choices(value, self.literals):
            return None
        if self.choices is not None:
            return None if _in_choices(value, self.choices) else f"expected {self.type_name}"
        if self.value_type is tuple:
            if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
                return f"expected {self.type_name}"
            for v in value:
                if not _is_type(v, self.item_type or object) or (
                    self.minimum is not None and v < self.minimum
                ):
                    return f"expected {self.type_name}"
            return None
        if not _is_type(value, self.value_type):
            return f"expected {self.type_name}"
        if self.minimum is not None:
            too_small = value <= self.minimum if self.exclusive else value < self.minimum
            if too_small:
                return f"must be {'>' if self.exclusive else '>='} {self.minimum:g}"
        return None


def _type_word(tp: Any) -> str:
    words = {
        bool: "true/false",
        int: "integer",
        float: "number",
        str: "string",
        Callable: "a callable (a module)",
    }
    return words.get(tp, getattr(tp, "__name__", str(tp)))


def _in_choices(value: Any, choices: tuple[Any, ...]) -> bool:
    try:
        return value in choices
    except Exception:  # pragma: no cover - objects whose __eq__ raises
        return False


def _is_type(value: Any, tp: Any) -> bool:
    if tp is object:
        return True
    if tp is Callable:
        return callable(value) and not isinstance(value, (str, type))
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    return isinstance(value, tp)


@dataclass(frozen=True)
class MethodSpec:
    """One symmetrization method.

    :param name: the canonical name (what tables, CSVs and saved configs say).
    :param title: the name in prose (``λ-equitune``).
    :param aliases: other names accepted on input (matched case-insensitively).
    :param summary: one line.
    :param reference: the paper.
    :param symmetrizes: ``False`` for the baselines, which leave the model as it is.
    :param needs_product_group: the group must be a direct product (``G_1 × ... × G_k``).
    :param learned_scorer: a small scorer network picks the orbit element (it can be trained).
    :param learned_weights: a λ network weighs the orbit (it can be trained).
    :param weights_tag: the tag (under ``equi/``) the RL callback logs the orbit weights with, if any.
    :param options: the keyword options (``method_kwargs``).
    :param augments_data: a training-time baseline that augments the data instead of the model (the
        network stays plain).
    :param training_baseline: a way to *train* a plain network towards symmetry (mirrored data, a
        penalty) rather than a symmetrizer: at evaluation its agent is a plain one; listed by
        :func:`method_names` only with ``augment=True``.
    :param pseudo: not a symmetrizer but a rule that resolves to one (``auto``); never in :data:`METHODS`.
    """

    name: str
    title: str
    aliases: tuple[str, ...]
    summary: str
    reference: str
    symmetrizes: bool = True
    needs_product_group: bool = False
    learned_scorer: bool = False
    learned_weights: bool = False
    weights_tag: str | None = None
    options: tuple[MethodOption, ...] = ()
    augments_data: bool = False
    training_baseline: bool = False
    pseudo: bool = False

    @property
    def own_weights(self) -> bool:
        """Whether the method adds weights of its own to the model (a λ network or a scorer)."""
        return self.learned_weights or self.learned_scorer

    @property
    def names(self) -> tuple[str, ...]:
        """The canonical name and the aliases."""
        return (self.name, *self.aliases)

    def option_names(self, adapter: str | None = None) -> tuple[str, ...]:
        """The option keywords accepted under ``adapter`` (``None``: anywhere), sorted."""
        return tuple(sorted(o.name for o in self.options if o.applies_to(adapter)))

    def option(self, name: str) -> MethodOption | None:
        """The option called ``name``, if the method has one."""
        return next((o for o in self.options if o.name == name), None)

    def defaults(self, adapter: str | None = None) -> dict[str, Any]:
        """``{option: default}`` under ``adapter``."""
        return {o.name: o.default_for(adapter) for o in self.options if o.applies_to(adapter)}


_CHUNK_OPTIONS = (
    MethodOption(
        "chunk_size",
        int,
        "auto",
        "samples per batched model call ('auto': by max_call_bytes / max_call_rows, null: never chunk)",
        minimum=1,
        literals=("auto",),
        nullable=True,
    ),
    MethodOption(
        "max_call_bytes", int, 1 << 23, "the auto chunk's budget for one call's input, in bytes", minimum=1
    ),
    MethodOption("max_call_rows", int, 512, "the auto chunk's cap on rows per call", minimum=1),
    MethodOption(
        "fold",
        bool,
        True,
        "equitune on batches of >= 16: carry the group through a CNN's leading convolutions by transforming "
        "its kernels instead of its input images (the same outputs; the other methods ignore it)",
    ),
)

_TIE_BREAK = MethodOption(
    "tie_break",
    str,
    "average",
    "'average' averages tied elements (exactly equivariant), 'first' takes the lowest index",
    choices=("average", "first"),
)


def _tolerances(default: float) -> tuple[MethodOption, ...]:
    return (
        MethodOption(
            "tie_atol", float, default, "absolute tolerance under which two scores count as tied", minimum=0
        ),
        MethodOption("tie_rtol", float, default, "relative tolerance (times the best score)", minimum=0),
    )


def _scorer_options() -> tuple[MethodOption, ...]:
    return (
        *_CHUNK_OPTIONS,
        MethodOption(
            "scorer",
            Callable,
            None,
            "the scorer network h: rows (N, ...) -> (N,) scores",
            nullable=True,
        ),
        MethodOption(
            "scorer_hidden", tuple, (64,), "hidden sizes of the default scorer", item_type=int, minimum=1
        ),
        MethodOption(
            "prior_weight", float, 1.0, "weight of the prior towards the identity element", minimum=0
        ),
        MethodOption(
            "temperature",
            float,
            1.0,
            "softmax temperature of the scorer's distribution",
            minimum=0,
            exclusive=True,
        ),
        _TIE_BREAK,
        *_tolerances(1e-5),
    )


_SPECS = (
    MethodSpec(
        BASE,
        "base",
        ("plain", "none"),
        "the pretrained model as it is, not symmetrized (the baseline)",
        "-",
        symmetrizes=False,
    ),
    MethodSpec(
        EQUITUNE,
        "equitune",
        ("equi-tune",),
        "average g⁻¹·M(g·x) uniformly over the group",
        "Basu et al., Equi-Tuning: Group Equivariant Fine-Tuning of Pretrained Models, AAAI 2023",
        options=_CHUNK_OPTIONS,
    ),
    MethodSpec(
        EQUIZERO,
        "equizero",
        ("equi-zero",),
        "keep g⁻¹·M(g·x) for the element g minimising a proxy loss (ties averaged)",
        "Basu et al., Efficient Equivariant Transfer Learning from Pretrained Models, NeurIPS 2023",
        weights_tag="equizero_pick",
        options=(
            *_CHUNK_OPTIONS,
            MethodOption(
                "proxy",
                str,
                "entropy",
                "the proxy loss minimised over the group (RL: action_gap, the most decisive element)",
                choices=EQUIZERO_PROXIES,
                callable_ok=True,
                adapter_defaults=(("rl", "action_gap"),),
            ),
            MethodOption(
                "straight_through",
                bool,
                True,
                "in training, forward is equizero and the gradient equitune's (finetuning through the argmin)",
            ),
            _TIE_BREAK,
            *_tolerances(1e-6),
        ),
    ),
    MethodSpec(
        LAMBDA,
        "λ-equitune",
        ("λ", "λ-equitune", "lambda-equitune", "lambda_equitune"),
        "a learned softmax weight λ(g·x) per group element instead of the uniform average",
        "Basu et al., Efficient Equivariant Transfer Learning from Pretrained Models, NeurIPS 2023",
        learned_weights=True,
        weights_tag="lambda_weight",
        options=(
            *_CHUNK_OPTIONS,
            MethodOption(
                "lambda_net",
                Callable,
                None,
                "the λ network: rows (N, ...) -> (N,) logits",
                nullable=True,
            ),
            MethodOption(
                "lambda_in_features",
                int,
                None,
                "input size of the default λ network (null: inferred)",
                minimum=1,
                nullable=True,
            ),
            MethodOption(
                "lambda_hidden",
                tuple,
                (64,),
                "hidden sizes of the default λ network (RL default []: a linear λ)",
                item_type=int,
                minimum=1,
                adapter_defaults=(("rl", ()),),
            ),
            MethodOption(
                "lambda_features",
                Callable,
                None,
                "λ's input: null for the transformed input g·x, or a callable rows -> features",
                nullable=True,
            ),
            MethodOption("detach_features", bool, True, "stop λ's gradient at the feature callable"),
            MethodOption(
                "lambda_reg",
                float,
                0.0,
                "RL finetuning: pull λ back toward its start (uniform for a fresh λ) by this rate per update",
                minimum=0,
                adapters=("rl",),
            ),
            MethodOption(
                "lambda_input",
                str,
                "obs+q",
                "what the RL λ network reads: the observation g·s, or it and the Q-values Q(g·s)",
                choices=("obs", "obs+q"),
                adapters=("rl",),
            ),
        ),
    ),
    MethodSpec(
        CANONICALIZE,
        "canonicalize",
        ("canonicalization", "canonicalise"),
        "a learned scorer picks one group element; the model runs once, on the canonical input",
        "Kaba et al., Equivariance with Learned Canonicalization Functions, ICML 2023; "
        "Mondal et al., Equivariant Adaptation of Large Pretrained Models, NeurIPS 2023",
        learned_scorer=True,
        options=_scorer_options(),
    ),
    MethodSpec(
        MULTIGROUP,
        "multigroup",
        ("multi-group", "multi_group"),
        "one canonicalization per factor of a direct product: Σ|G_i| - k + 1 passes instead of Π|G_i|",
        "Baltaji et al., Efficient Model-Agnostic Multi-Group Equivariant Networks",
        needs_product_group=True,
        learned_scorer=True,
        options=_scorer_options(),
    ),
    MethodSpec(
        AUGMENT,
        "augment",
        ("augmentation", "data-augmentation"),
        "a plain network trained on every transition and its mirror images g·(s, a, r, s')",
        "data augmentation baseline, e.g. Laskin et al., Reinforcement Learning with Augmented Data, NeurIPS 2020",
        symmetrizes=False,
        augments_data=True,
        training_baseline=True,
    ),
    MethodSpec(
        MIRROR_LOSS,
        "mirror loss",
        ("mirror_loss", "mirror-symmetry-loss"),
        "a plain actor trained with the penalty w·Σ_{g≠e} ‖π(g·s) − g·π(s)‖² (SAC, TD3, TQC)",
        "Yu, Turk & Liu, Learning Symmetric and Low-Energy Locomotion, ACM TOG (SIGGRAPH) 2018",
        symmetrizes=False,
        training_baseline=True,
        options=(
            MethodOption(
                "weight",
                float,
                1.0,
                "the penalty's weight in every actor update",
                minimum=0,
                exclusive=True,
                adapters=("rl",),
            ),
        ),
    ),
)

_PSEUDO_SPECS = (
    MethodSpec(
        AUTO,
        "auto",
        (),
        "evaluate candidate methods on validation episodes and use the best (ties: the cheaper, base first)",
        "-",
        pseudo=True,
        options=(
            MethodOption(
                "candidates",
                tuple,
                None,
                "the methods tried, as 'method' or 'method:key=value,...' (null: the defaults for the "
                "agent's algorithm and action space, equirl.rl.select.DEFAULT_CANDIDATES)",
                item_type=str,
                nullable=True,
            ),
            MethodOption("episodes", int, 5, "validation episodes per seed", minimum=1),
            MethodOption("seeds", int, 3, "validation seeds (disjoint from the evaluation seeds)", minimum=1),
        ),
    ),
)

#: the methods by canonical name, in the order tables list them
METHODS: Final[Mapping[str, MethodSpec]] = {s.name: s for s in _SPECS}
#: the pseudo-methods (``auto``), which resolve to a method of :data:`METHODS`
PSEUDO_METHODS: Final[Mapping[str, MethodSpec]] = {s.name: s for s in _PSEUDO_SPECS}

_LOOKUP: dict[str, str] = {n.lower(): s.name for s in (*_SPECS, *_PSEUDO_SPECS) for n in s.names}


def _valid_names() -> str:
    alias = "; ".join(f"{', '.join(s.aliases)} = {s.name}" for s in _SPECS if s.aliases)
    return f"{', '.join([*METHODS, *PSEUDO_METHODS])} (aliases: {alias})"


def canonical_method(name: str) -> str:
    """The canonical name of a method given by its name or an alias (case-insensitive).

    :param name: e.g. ``"λ"``, ``"lambda-equitune"``, ``"plain"``.
    :raises ConfigError: one line listing the valid names and aliases.
    """
    key = name.strip().lower() if isinstance(name, str) else None
    if key is None or key not in _LOOKUP:
        raise ConfigError(f"unknown method {name!r}; choose one of {_valid_names()}")
    return _LOOKUP[key]


def get_method(name: str) -> MethodSpec:
    """The :class:`MethodSpec` of a method (or of the pseudo-method ``auto``) given by its name or an alias."""
    name = canonical_method(name)
    return METHODS[name] if name in METHODS else PSEUDO_METHODS[name]


def method_names(
    *,
    base: bool = True,
    learned_scorer: bool = True,
    product_group: bool = True,
    aliases: bool = False,
    augment: bool = False,
    pseudo: bool = False,
) -> tuple[str, ...]:
    """Canonical method names, in table order, filtered.

    :param base: include the un-symmetrized baseline (``False``: symmetrizing methods only).
    :param learned_scorer: include the methods driven by a learned scorer (canonicalize, multigroup).
    :param product_group: include the methods that need a direct-product group (multigroup).
    :param aliases: also list each kept method's aliases (after its name).
    :param augment: include the training baselines (``augment``, ``mirror-loss``: training methods; at
        evaluation their agents are plain ones).
    :param pseudo: also list the pseudo-methods (``auto``), last.
    """
    out: list[str] = []
    for s in _SPECS:
        if s.training_baseline and not augment:
            continue
        if (not base and not s.symmetrizes and not s.training_baseline) or (
            not learned_scorer and s.learned_scorer
        ):
            continue
        if not product_group and s.needs_product_group:
            continue
        out.extend(s.names if aliases else (s.name,))
    if pseudo:
        out.extend(s.name for s in _PSEUDO_SPECS)
    return tuple(out)


def validate_method_kwargs(
    method: str, kwargs: Mapping[str, Any] | None, adapter: str | None = None
) -> dict[str, Any]:
    """Check a method's keyword options; returns them as a new dict.

    :param method: the method (name or alias).
    :param kwargs: the options (e.g. a config's ``method_kwargs``).
    :param adapter: ``core`` (:func:`equirl.symmetrize`), ``rl``, ``language`` or ``vision``: accept
        only the options that apply there (``None``: any option of the method).
    :raises ConfigError: one line naming the unknown key and the valid ones, or the key, the value and
        why it is not valid.
    """
    spec = get_method(method)
    if adapter is not None and adapter not in ADAPTERS:
        raise ConfigError(f"unknown adapter {adapter!r}; choose one of {', '.join(ADAPTERS)}")
    if kwargs is None:
        return {}
    if not isinstance(kwargs, Mapping):
        raise ConfigError(f"method_kwargs of {spec.name} must be a mapping, got {kwargs!r}")
    valid = spec.option_names(adapter)
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        opt = spec.option(str(key))
        if opt is None or not opt.applies_to(adapter):
            where = f" under {adapter}" if adapter and opt is not None else ""
            listed = f"valid options: {', '.join(valid)}" if valid else "it takes no options"
            raise ConfigError(f"unknown option {key!r} for method {spec.name}{where}; {listed}")
        why = opt.check(value)
        if why is not None:
            raise ConfigError(f"method {spec.name}, option {key}: {why}, got {_short(value)}")
        out[str(key)] = value
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def describe_methods(names: Iterable[str] | None = None) -> list[dict[str, str]]:
    """Rows ``{method, aliases, summary, reference}`` (e.g. for a CLI listing or the docs)."""
    return [
        {"method": s.name, "aliases": ", ".join(s.aliases), "summary": s.summary, "reference": s.reference}
        for s in (get_method(n) for n in (names if names is not None else [*METHODS, *PSEUDO_METHODS]))
    ]
