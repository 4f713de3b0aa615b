"""``method: auto``: pick the symmetrization method of a pretrained agent by measurement.

No single method is best for every agent (``docs/rl.md``, "Methods that never hurt"): equitune can cost
a well-trained agent returns (the RL-zoo CartPole agent: 500 → 329) while it doubles a half-trained
one's, and equizero's proxies differ by agent. :func:`select_method` evaluates candidate methods on a
*validation* budget -- seeds disjoint from the ones :func:`~equirl.rl.evaluation.evaluate_methods` and
the run's evaluations use -- and keeps the best. Candidates whose mean return is within the best one's
standard error -- or within :data:`TIE_FRACTION` of the env's score range, a difference too small to
matter (an agent at 9360 whose methods differ by 0.03) -- count as tied, and a tie goes to the cheapest
(``base`` first: one network pass, no change of behaviour), so ``auto`` only moves away from the base
agent on evidence.

A candidate is a method name or ``"method:key=value,..."`` (e.g. ``"equizero:proxy=max_value"``); the
choice and its evidence table are saved as ``auto_choice.json`` and ``auto_choice.md``. The default
candidates depend on the agent (:data:`DEFAULT_CANDIDATES`, by :func:`agent_kind`): every candidate is
checked against the agent's algorithm and action space before any episode is run.

A candidate *collapses* the agent when its normalised validation score falls below half of base's and
the gap exceeds both standard errors (:func:`collapses`; scores normalised by the env's range of
the env spec's ``scores``, raw returns when the env has none and base's is positive):
the reason and the report say so, e.g. ``equitune collapses this agent (return 197.0 vs base 3908.0)``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from equirl.config import parse_yaml
from equirl.errors import ConfigError
from equirl.registry import AUTO, BASE, EQUITUNE, EQUIZERO, get_method, method_names, validate_method_kwargs
from equirl.utils.io import atomic_write_text, printable

__all__ = [
    "DEFAULT_CANDIDATES",
    "VALIDATION_SEED",
    "Candidate",
    "MethodChoice",
    "agent_kind",
    "candidate_label",
    "choice_files",
    "collapses",
    "parse_candidate",
    "resolve_auto",
    "select_method",
]

log = logging.getLogger(__name__)

#: a candidate: ``(method, method_kwargs)``
Candidate = tuple[str, dict[str, Any]]

#: equizero's RL default proxy: the Q-networks' ``action_gap``; for actor-critic agents the critic's value
#: (:mod:`equirl.rl.policies.heads`)
_DEFAULT_PROXY: str = get_method(EQUIZERO).option("proxy").default_for("rl")  # type: ignore[union-attr]

#: the kinds of agent :func:`agent_kind` tells apart
Q, DISCRETE_AC, CONTINUOUS, DETERMINISTIC = "q-values", "discrete actor-critic", "continuous", "deterministic"

#: per kind of agent: the default candidates of ``auto`` (the registry's ``candidates: null``), the methods
#: it loads with and equizero's proxies for it (the RL default first). Q-networks (DQN / QR-DQN) score
#: Q-values with any proxy (``quantile_spread``: QR-DQN only); PPO / A2C with discrete actions score the
#: critic's value (the default) or the action logits; stochastic continuous policies (SAC, TQC, PPO / A2C
#: on ``Box`` actions) the critic's value or the Gaussian's ``log_std`` (``entropy``); deterministic ones
#: (TD3, DDPG) the critic's value only. ``lambda`` is not a default: an untrained λ equals equitune.
AGENT_KINDS: dict[str, dict[str, tuple[str, ...]]] = {
    Q: {
        "candidates": (BASE, EQUITUNE, EQUIZERO, "equizero:proxy=max_value"),
        "methods": method_names(),
        "proxies": ("action_gap", "max_value", "min_spread", "entropy", "max_prob", "nll", "quantile_spread"),
    },
    DISCRETE_AC: {
        "candidates": (BASE, EQUITUNE, EQUIZERO, "equizero:proxy=entropy"),
        "methods": method_names(learned_scorer=False),
        "proxies": (_DEFAULT_PROXY, "entropy", "max_prob", "nll", "max_value", "min_spread"),
    },
    CONTINUOUS: {
        "candidates": (BASE, EQUITUNE, EQUIZERO, "equizero:proxy=entropy"),
        "methods": method_names(learned_scorer=False),
        "proxies": (_DEFAULT_PROXY, "entropy"),
    },
    DETERMINISTIC: {
        "candidates": (BASE, EQUITUNE, EQUIZERO),
        "methods": method_names(learned_scorer=False),
        "proxies": (_DEFAULT_PROXY,),
    },
}

#: the default candidates by kind of agent (:data:`AGENT_KINDS`)
DEFAULT_CANDIDATES: dict[str, tuple[str, ...]] = {k: v["candidates"] for k, v in AGENT_KINDS.items()}

#: returns closer to the best than this fraction of the env's score range (of the best's return when the
#: env has none) are tied with it, whatever the standard error
TIE_FRACTION = 0.01

#: a candidate collapses the agent below this fraction of base's normalised score (:func:`collapses`)
COLLAPSE_FRACTION = 0.5

#: why a method can collapse an agent, for the report
_COLLAPSE_WHY = {
    EQUITUNE: "averaging its outputs with those of the mirrored states destroys what it does",
    EQUIZERO: "the group element its proxy picks acts badly",
}

#: validation seeds are ``VALIDATION_SEED + 1000·s``; evaluations (``equirl eval``, the run's periodic and
#: final ones) use ``1000·s`` and ``seed + 10_000`` / ``seed + 20_000``, so the budgets never share episodes
VALIDATION_SEED = 500_000

#: ``evaluator(method, method_kwargs, seed, episodes) -> returns`` (one seed's episodes)
Evaluator = Callable[[str, dict[str, Any], int, int], list[float]]


def parse_candidate(text: str | Candidate | Sequence[Any]) -> Candidate:
    """``"equizero:proxy=max_value,tie_atol=0"`` -> ``("equizero", {"proxy": "max_value", "tie_atol": 0})``.

    Values are read as YAML scalars. A ``(method, kwargs)`` pair is returned checked. The method is
    canonicalized and its options checked (``rl`` adapter); ``auto`` itself is refused.
    """
    if isinstance(text, str):
        name, _, rest = text.partition(":")
        kwargs: dict[str, Any] = {}
        for item in filter(None, (p.strip() for p in rest.split(","))):
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                raise ConfigError(f"candidate {text!r}: options are written key=value, got {item!r}")
            kwargs[key.strip()] = parse_yaml(value.strip(), f"candidate {text!r}") if value.strip() else ""
    elif isinstance(text, Sequence) and len(text) == 2 and isinstance(text[0], str):
        opts: Any = text[1] or {}
        name, kwargs = str(text[0]), {str(k): v for k, v in dict(opts).items()}
    else:
        raise ConfigError(f"a candidate is 'method' or 'method:key=value,...', got {text!r}")
    spec = get_method(name.strip())
    if spec.pseudo:
        raise ConfigError(f"candidate {text!r}: {spec.name} cannot be its own candidate")
    return spec.name, validate_method_kwargs(spec.name, kwargs, adapter="rl")


def candidate_label(method: str, method_kwargs: dict[str, Any]) -> str:
    """``equizero(proxy=max_value)``; a bare name without options."""
    if not method_kwargs:
        return method
    return f"{method}({', '.join(f'{k}={v}' for k, v in sorted(method_kwargs.items()))})"


def agent_kind(algo: str, continuous: bool) -> str:
    """The row of :data:`AGENT_KINDS` for an agent of ``algo`` with continuous (``Box``) actions or not."""
    from equirl.rl.algos import get_algo

    spec = get_algo(algo)
    if spec.value_based:
        return Q
    if spec.deterministic_actor:
        return DETERMINISTIC
    return CONTINUOUS if continuous else DISCRETE_AC


#: how errors name each kind of agent
_KIND_WORDS = {
    Q: "",
    DISCRETE_AC: " (discrete actions)",
    CONTINUOUS: " (continuous actions)",
    DETERMINISTIC: " (a deterministic continuous policy)",
}


def _check_candidate(text: Any, cand: Candidate, algo: str, kind: str, product_group: bool) -> None:
    """One line when ``cand`` does not apply to an agent of ``algo`` and ``kind`` (``product_group``: its
    env's group is a direct product), naming the valid ones."""
    row = AGENT_KINDS[kind]
    method, kw = cand
    methods = [m for m in row["methods"] if product_group or not get_method(m).needs_product_group]
    what = f"this {algo.upper()} agent{_KIND_WORDS[kind]}"
    valid = f"valid candidates for it: {', '.join(row['candidates'])} (methods: {', '.join(methods)})"
    if method not in methods:
        raise ConfigError(f"auto candidate {printable(text, 60)} does not apply to {what}; {valid}")
    proxy = kw.get("proxy")
    if method == EQUIZERO and isinstance(proxy, str):
        proxies = [p for p in row["proxies"] if algo == "qrdqn" or p != "quantile_spread"]
        if proxy not in proxies:
            shown = [
                f"{p} (the default: the critic's value)" if kind != Q and p == _DEFAULT_PROXY else p
                for p in proxies
            ]
            raise ConfigError(
                f"auto candidate {printable(text, 60)} does not apply to {what}: equizero's proxy for it is "
                f"one of {', '.join(shown)}; {valid}"
            )


def _normalised(env: str) -> Callable[[float], float] | None:
    from equirl.rl.spec import env_scores

    score = env_scores(env)
    if score is None:
        return None
    lo, hi = score["min"], score["max"]
    return lambda r: (r - lo) / (hi - lo)


def _tie_margin(best: dict[str, Any], env: str) -> float:
    """How far below the best a candidate is still tied with it: the best's standard error, or
    :data:`TIE_FRACTION` of the env's score range (of the best's return), the larger."""
    from equirl.rl.spec import env_scores

    score = env_scores(env)
    scale = score["max"] - score["min"] if score is not None else abs(best["mean_return"])
    return max(float(best["sem"]), TIE_FRACTION * scale)


def collapses(row: dict[str, Any], base: dict[str, Any], env: str) -> bool:
    """Whether a candidate's validation ``row`` collapses the agent: its score is under
    :data:`COLLAPSE_FRACTION` of base's -- normalised by the env's score range
    (the env spec's ``scores``), else raw returns when base's is positive -- and
    the gap exceeds both standard errors.

    :param row: a candidate's row of :attr:`MethodChoice.table` (``mean_return``, ``sem``).
    :param base: base's row.
    :param env: the env id.
    """
    norm = _normalised(env)
    if norm is None and base["mean_return"] <= 0:
        return False
    score = norm or (lambda r: r)
    below = score(row["mean_return"]) < COLLAPSE_FRACTION * score(base["mean_return"])
    return below and row["mean_return"] + row["sem"] < base["mean_return"] - base["sem"]


def _collapse_note(table: list[dict[str, Any]], chosen: dict[str, Any], continuous: bool) -> str:
    """``; equitune collapses this agent (return 197.0 vs base 3908.0): ...; kept base`` (or nothing)."""
    base = next((r for r in table if r["method"] == BASE and not r["method_kwargs"]), None)
    notes = []
    for r in table:
        if not r.get("collapses"):
            continue
        why = _COLLAPSE_WHY.get(r["method"], "")
        if r["method"] == EQUITUNE and continuous:
            why = "averaging its actions with their mirror images destroys what it does"
        notes.append(
            f"{r['label']} collapses this agent (return {r['mean_return']:.1f} vs base "
            f"{base['mean_return'] if base else float('nan'):.1f}){': ' + why if why else ''}"
        )
    if not notes:
        return ""
    return (
        "; "
        + "; ".join(notes)
        + f"; {'kept base' if chosen['method'] == BASE else 'picked ' + chosen['label']}"
    )


def _cost(method: str) -> int:
    """Network passes, coarsely: base 1, learned canonicalization 2 (scorer + one pass), orbit methods 3."""
    spec = get_method(method)
    if not spec.symmetrizes:
        return 0
    return 1 if spec.learned_scorer else 2


@dataclass
class MethodChoice:
    """What :func:`select_method` picked, and why.

    :param method: the chosen method (canonical name).
    :param method_kwargs: its options.
    :param label: ``method(key=value, ...)``.
    :param reason: one line for the user.
    :param table: one row per candidate: ``label, method, method_kwargs, mean_return, std_return,
        sem, episodes, cost, tied, chosen``.
    :param seeds: the validation seeds.
    :param episodes: episodes per seed.
    """

    method: str
    method_kwargs: dict[str, Any]
    label: str
    reason: str
    table: list[dict[str, Any]] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    episodes: int = 0
    env: str = ""
    agent: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON)."""
        return {
            "method": self.method,
            "method_kwargs": self.method_kwargs,
            "label": self.label,
            "reason": self.reason,
            "env": self.env,
            "agent": self.agent,
            "validation_seeds": self.seeds,
            "episodes_per_seed": self.episodes,
            "candidates": self.table,
        }

    def to_markdown(self) -> str:
        """The evidence table as markdown, with the reason under it."""
        lines = [
            f"# method: auto on {self.env} ({self.agent})",
            "",
            f"Validation: seeds {self.seeds}, {self.episodes} episodes each.",
            "",
            "| candidate | mean return | std | sem | episodes | tied with best | collapses the agent | chosen |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in self.table:
            lines.append(
                f"| {r['label']} | {r['mean_return']:.2f} | {r['std_return']:.2f} | {r['sem']:.2f} | "
                f"{r['episodes']} | {'yes' if r['tied'] else ''} | {'**yes**' if r.get('collapses') else ''} | "
                f"{'**yes**' if r['chosen'] else ''} |"
            )
        rule = (
            f"A candidate collapses the agent when its score is under {COLLAPSE_FRACTION:.0%} of base's "
            "(normalised by the env's score range) and the gap exceeds both standard errors."
        )
        return "\n".join([*lines, "", self.reason, "", rule, ""])

    def save(self, folder: str | Path) -> Path:
        """Write ``auto_choice.json`` and ``auto_choice.md`` into ``folder``; returns the JSON path."""
        js, md = choice_files(folder)
        js.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(js, json.dumps(self.to_dict(), indent=2))
        atomic_write_text(md, self.to_markdown())
        return js


def choice_files(folder: str | Path) -> tuple[Path, Path]:
    """The files :meth:`MethodChoice.save` writes into ``folder``: ``auto_choice.json`` and ``.md``."""
    d = Path(folder)
    return d / "auto_choice.json", d / "auto_choice.md"


def _default_evaluator(agent: Any, env_id: str, algo: str, which: str, trust_checkpoint: bool) -> Evaluator:
    from equirl.rl.build import load_pretrained
    from equirl.rl.evaluation import evaluate

    cache: dict[str, Any] = {}

    def run(method: str, method_kwargs: dict[str, Any], seed: int, episodes: int) -> list[float]:
        key = candidate_label(method, method_kwargs)
        if key not in cache:
            cache.clear()  # one model at a time
            cache[key] = load_pretrained(
                agent,
                env_id,
                method=method,
                algo=algo,
                method_kwargs=method_kwargs,
                which=which,
                trust_checkpoint=trust_checkpoint,
            )
        return evaluate(cache[key], env_id, n_eval_episodes=episodes, seed=seed)

    return run


def select_method(
    agent: Any,
    env: str,
    candidates: Sequence[str | Candidate] | None = None,
    episodes: int = 5,
    seeds: int = 3,
    algo: str | None = None,
    which: str = "best",
    trust_checkpoint: bool = False,
    evaluator: Evaluator | None = None,
    first_seed: int = VALIDATION_SEED,
) -> MethodChoice:
    """Evaluate ``candidates`` zero-shot on the agent and return the best (:class:`MethodChoice`).

    A candidate is tied with the best when its mean return is within the best one's standard error
    (``std / sqrt(episodes)``) or :data:`TIE_FRACTION` of the env's score range; among tied candidates the cheapest wins (``base``, then learned
    canonicalization, then the orbit methods), then the earlier in ``candidates``. Every option is
    checked before any episode runs: the budget, each candidate's method and options, and that it
    applies to this agent (its algorithm and action space, :data:`AGENT_KINDS`).

    :param agent: agent zip, equirl run directory or RL-zoo folder.
    :param env: the env id.
    :param candidates: methods, ``"method:key=value,..."`` strings or ``(method, kwargs)`` pairs
        (default: the agent's row of :data:`DEFAULT_CANDIDATES`).
    :param episodes: validation episodes per seed.
    :param seeds: validation seeds (``first_seed + 1000·s``).
    :param algo: the agent's algorithm (``None``: read from its zip; with an ``evaluator``, which reads
        no zip, ``None`` checks the candidates as for DQN).
    :param which: in a run directory, ``best`` or ``final``.
    :param trust_checkpoint: see :func:`~equirl.rl.build.load_pretrained`.
    :param evaluator: ``(method, method_kwargs, seed, episodes) -> returns``, replacing the real
        evaluation (tests, or another budget).
    :param first_seed: the first validation seed.
    :raises ConfigError: no candidates, a bad candidate or one that does not apply to the agent, or a
        non-positive budget (one line).
    """
    from equirl.rl.spec import load_spec

    for name, value in (("episodes", episodes), ("seeds", seeds)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"auto needs positive episodes and seeds, got {name} {printable(value, 40)}")
    if evaluator is None:  # the zip's algorithm, or --algo when the zip agrees (one line otherwise)
        from equirl.rl.zipinfo import read_algo

        algo = read_algo(agent, algo, env, which)
    algo = algo or "dqn"
    sym = load_spec(env)
    kind = agent_kind(algo, sym.continuous)
    texts = list(candidates if candidates is not None else DEFAULT_CANDIDATES[kind])
    parsed = [parse_candidate(c) for c in texts]
    for text, cand in zip(texts, parsed, strict=True):
        _check_candidate(text, cand, algo, kind, bool(sym.group.factors))
    unique: list[Candidate] = []
    for c in parsed:
        if all(candidate_label(*c) != candidate_label(*u) for u in unique):
            unique.append(c)
    if not unique:
        raise ConfigError(
            f"auto needs at least one candidate method (for this agent: {', '.join(DEFAULT_CANDIDATES[kind])})"
        )
    run = evaluator or _default_evaluator(agent, env, algo, which, trust_checkpoint)
    seed_list = [first_seed + 1000 * s for s in range(seeds)]
    table: list[dict[str, Any]] = []
    for method, kw in unique:
        rets: list[float] = []
        for s in seed_list:
            rets += [float(r) for r in run(method, dict(kw), s, episodes)]
        mean, std = float(np.mean(rets)), float(np.std(rets))
        table.append(
            {
                "label": candidate_label(method, kw),
                "method": method,
                "method_kwargs": dict(kw),
                "mean_return": mean,
                "std_return": std,
                "sem": std / math.sqrt(len(rets)),
                "episodes": len(rets),
                "cost": _cost(method),
            }
        )
        log.info("auto %s %s: %.2f ± %.2f", env, table[-1]["label"], mean, std)
    best = max(table, key=lambda r: r["mean_return"])
    margin = _tie_margin(best, env)
    for r in table:
        r["tied"] = r["mean_return"] >= best["mean_return"] - margin
    base_row = next((r for r in table if r["method"] == BASE and not r["method_kwargs"]), None)
    for r in table:
        r["collapses"] = base_row is not None and r is not base_row and collapses(r, base_row, env)
    order = {r["label"]: i for i, r in enumerate(table)}
    chosen = min((r for r in table if r["tied"]), key=lambda r: (r["cost"], order[r["label"]]))
    for r in table:
        r["chosen"] = r is chosen
    if chosen is best:
        why = "the best validation return"
    else:
        within = "standard error" if margin <= best["sem"] else f"{TIE_FRACTION:.0%} of the score range"
        why = (
            f"within the best's {within} ({best['label']} {best['mean_return']:.1f} ± {margin:.1f}) "
            "and cheaper"
        )
        if chosen["method"] == BASE:
            why += ": the agent is kept as it is"
    others = ", ".join(f"{r['label']} {r['mean_return']:.1f}" for r in table if r is not chosen)
    reason = (
        f"auto picked {chosen['label']} ({chosen['mean_return']:.1f} over {chosen['episodes']} validation "
        f"episodes): {why}; others: {others or 'none'}{_collapse_note(table, chosen, kind in (CONTINUOUS, DETERMINISTIC))}"
    )
    log.info("%s", reason)
    return MethodChoice(
        method=chosen["method"],
        method_kwargs=dict(chosen["method_kwargs"]),
        label=chosen["label"],
        reason=reason,
        table=table,
        seeds=seed_list,
        episodes=episodes,
        env=env,
        agent=str(agent),
    )


def resolve_auto(cfg: Any, trust_checkpoint: bool = False) -> tuple[Any, MethodChoice | None]:
    """A run config with ``method: auto`` resolved (the config itself and ``None`` otherwise).

    The candidates are evaluated zero-shot on ``cfg.init_from`` (options ``candidates``, ``episodes``,
    ``seeds`` of ``method_kwargs``); the returned config has the chosen method and its options.

    :param cfg: an :class:`~equirl.rl.config.RLConfig`.
    :raises ConfigError: ``auto`` without ``init_from`` (there is no agent to evaluate).
    """
    import dataclasses

    if cfg.method != AUTO:
        return cfg, None
    if not cfg.init_from:
        raise ConfigError("method auto evaluates the candidates on a pretrained agent: set init_from")
    opts = get_method(AUTO).defaults("rl") | dict(cfg.method_kwargs)
    choice = select_method(
        cfg.init_from,
        cfg.env,
        candidates=None if opts["candidates"] is None else list(opts["candidates"]),
        episodes=int(opts["episodes"]),
        seeds=int(opts["seeds"]),
        algo=cfg.algo,
        trust_checkpoint=trust_checkpoint,
    )
    cfg = dataclasses.replace(cfg, method=choice.method, method_kwargs=dict(choice.method_kwargs))
    return cfg, choice
