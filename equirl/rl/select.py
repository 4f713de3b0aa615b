"""``method: auto``: pick the symmetrization method of a pretrained agent by measurement.

No single method is best for every agent (``docs/rl.md``, "Methods that never hurt"): equitune can cost
a well-trained agent returns (the RL-zoo CartPole agent: 500 → 329) while it doubles a half-trained
one's, and equizero's proxies differ by agent. :func:`select_method` evaluates candidate methods on a
*validation* budget -- seeds disjoint from the ones :func:`~equirl.rl.evaluation.evaluate_methods` and
the run's evaluations use -- and keeps the best. Candidates whose mean return is within the best one's
standard error count as tied, and a tie goes to the cheapest (``base`` first: one network pass, no
change of behaviour), so ``auto`` only moves away from the base agent on evidence.

A candidate is a method name or ``"method:key=value,..."`` (e.g. ``"equizero:proxy=max_value"``); the
choice and its evidence table are saved as ``auto_choice.json`` and ``auto_choice.md``.
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
from equirl.registry import AUTO, BASE, get_method, validate_method_kwargs
from equirl.utils.io import atomic_write_text

__all__ = [
    "DEFAULT_CANDIDATES",
    "VALIDATION_SEED",
    "Candidate",
    "MethodChoice",
    "candidate_label",
    "parse_candidate",
    "resolve_auto",
    "select_method",
]

log = logging.getLogger(__name__)

#: a candidate: ``(method, method_kwargs)``
Candidate = tuple[str, dict[str, Any]]

#: the default candidates (the registry's ``auto`` option ``candidates``)
DEFAULT_CANDIDATES: tuple[str, ...] = tuple(get_method(AUTO).defaults()["candidates"])

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
            "| candidate | mean return | std | sem | episodes | tied with best | chosen |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in self.table:
            lines.append(
                f"| {r['label']} | {r['mean_return']:.2f} | {r['std_return']:.2f} | {r['sem']:.2f} | "
                f"{r['episodes']} | {'yes' if r['tied'] else ''} | {'**yes**' if r['chosen'] else ''} |"
            )
        return "\n".join([*lines, "", self.reason, ""])

    def save(self, folder: str | Path) -> Path:
        """Write ``auto_choice.json`` and ``auto_choice.md`` into ``folder``; returns the JSON path."""
        d = Path(folder)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_text(d / "auto_choice.json", json.dumps(self.to_dict(), indent=2))
        atomic_write_text(d / "auto_choice.md", self.to_markdown())
        return d / "auto_choice.json"


def _default_evaluator(agent: Any, env_id: str, algo: str, which: str, trust_checkpoint: bool) -> Evaluator:
    from equirl.rl.pretrained import evaluate, load_pretrained

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
    algo: str = "dqn",
    which: str = "best",
    trust_checkpoint: bool = False,
    evaluator: Evaluator | None = None,
    first_seed: int = VALIDATION_SEED,
) -> MethodChoice:
    """Evaluate ``candidates`` zero-shot on the agent and return the best (:class:`MethodChoice`).

    A candidate is tied with the best when its mean return is within the best one's standard error
    (``std / sqrt(episodes)``); among tied candidates the cheapest wins (``base``, then learned
    canonicalization, then the orbit methods), then the earlier in ``candidates``.

    :param agent: agent zip, equirl run directory or RL-zoo folder.
    :param env: the env id.
    :param candidates: methods, ``"method:key=value,..."`` strings or ``(method, kwargs)`` pairs
        (default :data:`DEFAULT_CANDIDATES`: base, equitune, equizero with its RL default proxy and with
        ``max_value``).
    :param episodes: validation episodes per seed.
    :param seeds: validation seeds (``first_seed + 1000·s``).
    :param algo: ``dqn`` or ``qrdqn``.
    :param which: in a run directory, ``best`` or ``final``.
    :param trust_checkpoint: see :func:`~equirl.rl.pretrained.load_pretrained`.
    :param evaluator: ``(method, method_kwargs, seed, episodes) -> returns``, replacing the real
        evaluation (tests, or another budget).
    :param first_seed: the first validation seed.
    :raises ConfigError: no candidates, a bad candidate, or a non-positive budget.
    """
    if episodes < 1 or seeds < 1:
        raise ConfigError(f"auto needs positive episodes and seeds, got {episodes} and {seeds}")
    parsed = [parse_candidate(c) for c in (candidates if candidates is not None else DEFAULT_CANDIDATES)]
    unique: list[Candidate] = []
    for c in parsed:
        if all(candidate_label(*c) != candidate_label(*u) for u in unique):
            unique.append(c)
    if not unique:
        raise ConfigError("auto needs at least one candidate method")
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
    for r in table:
        r["tied"] = r["mean_return"] >= best["mean_return"] - best["sem"]
    order = {r["label"]: i for i, r in enumerate(table)}
    chosen = min((r for r in table if r["tied"]), key=lambda r: (r["cost"], order[r["label"]]))
    for r in table:
        r["chosen"] = r is chosen
    if chosen is best:
        why = "the best validation return"
    else:
        why = (
            f"within the best's standard error ({best['label']} {best['mean_return']:.1f} ± "
            f"{best['sem']:.1f}) and cheaper"
        )
        if chosen["method"] == BASE:
            why += ": the agent is kept as it is"
    others = ", ".join(f"{r['label']} {r['mean_return']:.1f}" for r in table if r is not chosen)
    reason = (
        f"auto picked {chosen['label']} ({chosen['mean_return']:.1f} over {chosen['episodes']} validation "
        f"episodes): {why}; others: {others or 'none'}"
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
        candidates=list(opts["candidates"]),
        episodes=int(opts["episodes"]),
        seeds=int(opts["seeds"]),
        algo=cfg.algo,
        trust_checkpoint=trust_checkpoint,
    )
    cfg = dataclasses.replace(cfg, method=choice.method, method_kwargs=dict(choice.method_kwargs))
    return cfg, choice
