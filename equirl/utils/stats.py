"""Statistics for reports over seeds (numpy only): interquartile mean, stratified bootstrap confidence
intervals, probability of improvement, and Kaplan--Meier estimates for censored steps-to-threshold.

The recipes follow Agarwal et al., "Deep RL at the edge of the statistical precipice" (NeurIPS 2021):
aggregate over runs with the IQM (robust to outlier seeds, more efficient than the median), report
95 % intervals from a bootstrap that resamples runs *within* each task (stratified), and compare two
methods by the probability that a run of one beats a run of the other.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Interval",
    "KaplanMeier",
    "iqm",
    "kaplan_meier",
    "median_ci",
    "probability_of_improvement",
    "stratified_bootstrap_ci",
    "welch_z",
]

Strata = Sequence[Sequence[float]] | Sequence[np.ndarray]


def iqm(values: Sequence[float] | np.ndarray) -> float:
    """The interquartile mean: the mean of the middle 50 % of ``values`` (the lowest and highest 25 %
    dropped, with fractional weights at the cut points so that every sample size is handled exactly,
    as ``scipy.stats.trim_mean`` does for sizes divisible by four).

    :param values: the samples (any shape; flattened); ``nan`` for an empty input.
    """
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    n = x.size
    if n == 0:
        return float("nan")
    # each sample covers [i, i+1) of [0, n); keep the part of it inside [n/4, 3n/4)
    lo, hi = n / 4.0, 3.0 * n / 4.0
    idx = np.arange(n)
    w = np.clip(np.minimum(idx + 1, hi) - np.maximum(idx, lo), 0.0, 1.0)
    return float(np.sum(w * x) / np.sum(w))


@dataclass(frozen=True)
class Interval:
    """A point estimate with a confidence interval."""

    value: float
    low: float
    high: float


def _strata(data: Strata) -> list[np.ndarray]:
    out = [np.asarray(s, dtype=np.float64).ravel() for s in data]
    if not out or any(s.size == 0 for s in out):
        raise ValueError("every stratum needs at least one sample")
    return out


def stratified_bootstrap_ci(
    data: Strata,
    statistic: Callable[[list[np.ndarray]], float],
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """A percentile bootstrap interval of ``statistic`` that resamples with replacement *within* each
    stratum (task / env), keeping every stratum's size.

    :param data: one array of samples (runs) per stratum.
    :param statistic: maps the list of (resampled) strata to a number.
    :param reps: bootstrap replicates.
    :param confidence: the coverage (0.95: the 2.5 and 97.5 percentiles).
    :param seed: the resampling seed (reports are reproducible).
    """
    strata = _strata(data)
    rng = np.random.default_rng(seed)
    point = float(statistic(strata))
    stats = np.empty(reps)
    for r in range(reps):
        stats[r] = statistic([s[rng.integers(0, s.size, s.size)] for s in strata])
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return Interval(point, float(low), float(high))


def _poi(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) + P(X = Y) / 2 for one X and one Y drawn uniformly from the samples."""
    diff = x[:, None] - y[None, :]
    return float(np.mean((diff > 0) + 0.5 * (diff == 0)))


def probability_of_improvement(
    x: Strata, y: Strata, reps: int = 2000, confidence: float = 0.95, seed: int = 0
) -> Interval:
    """The probability that a run of X beats a run of Y on a task, averaged over tasks, with a
    stratified bootstrap interval (runs of X and of Y resampled independently within each task).

    :param x: per task, the scores of X's runs; ``y``: the same tasks, Y's runs.
    """
    xs, ys = _strata(x), _strata(y)
    if len(xs) != len(ys):
        raise ValueError("x and y need the same tasks")
    k = len(xs)

    def stat(s: list[np.ndarray]) -> float:
        return float(np.mean([_poi(s[i], s[k + i]) for i in range(k)]))

    return stratified_bootstrap_ci([*xs, *ys], stat, reps=reps, confidence=confidence, seed=seed)


@dataclass(frozen=True)
class KaplanMeier:
    """A Kaplan--Meier estimate of a time-to-event distribution.

    :param times: the distinct event times, ascending.
    :param survival: S(t) just after each of them (the probability the event has not happened yet).
    :param median: the smallest time with S(t) <= 0.5; ``None`` when the curve never gets there (over
        half the runs censored before it): the median is then only known to exceed the horizon.
    :param restricted_mean: the area under S(t) from 0 to ``horizon`` (the restricted mean time to the
        event: censored runs count as surviving up to their censoring time, never as an event).
    :param events: how many runs had the event; ``n``: how many runs.
    """

    times: np.ndarray
    survival: np.ndarray
    median: float | None
    restricted_mean: float
    events: int
    n: int


def kaplan_meier(
    durations: Sequence[float] | np.ndarray, observed: Sequence[bool] | np.ndarray, horizon: float
) -> KaplanMeier:
    """The product-limit estimator: at each event time t, S drops by the factor ``1 - d/n`` (``d`` events
    at t, ``n`` runs still at risk just before t); a censored run leaves the risk set after its time.

    :param durations: per run, the time of the event or of censoring (the budget, for a run that never
        reached the threshold).
    :param observed: per run, whether the event happened (``False``: censored).
    :param horizon: the end of the restricted mean (the budget).
    """
    t = np.asarray(durations, dtype=np.float64).ravel()
    e = np.asarray(observed, dtype=bool).ravel()
    if t.shape != e.shape:
        raise ValueError("durations and observed differ in length")
    times = np.unique(t[e])
    surv = np.empty(times.size)
    s = 1.0
    for i, ti in enumerate(times):
        at_risk = np.sum(t >= ti)
        d = np.sum((t == ti) & e)
        s *= 1.0 - d / at_risk
        surv[i] = s
    below = np.nonzero(surv <= 0.5)[0]
    median = float(times[below[0]]) if below.size else None
    # area under the step function S (1 before the first event) from 0 to horizon
    edges = np.concatenate([[0.0], np.minimum(times, horizon), [horizon]])
    levels = np.concatenate([[1.0], surv])
    rmst = float(np.sum(levels * np.diff(edges)))
    return KaplanMeier(times, surv, median, rmst, int(e.sum()), int(t.size))


def median_ci(values: Sequence[float] | np.ndarray, level: float = 0.95) -> tuple[float, float] | None:
    """A distribution-free interval for the median: the order statistics ``(x_(k), x_(n+1-k))`` with the
    largest ``k`` whose coverage ``1 - 2·P(Binomial(n, ½) < k)`` is at least ``level``; ``None`` when
    even the sample's range falls short (fewer than 6 values at 95 %). NaNs are dropped.

    It needs no resampling and holds for any continuous distribution of the values (timings, here).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    x = np.asarray(values, dtype=np.float64).ravel()
    x = np.sort(x[~np.isnan(x)])
    n = int(x.size)
    tail, k, best = 0, 0, 0  # tail: 2^n · P(Binomial(n, 1/2) <= k), exact integers (no overflow)
    while k < n // 2:
        tail += math.comb(n, k)
        if 1.0 - 2 * tail / (1 << n) < level:
            break
        k += 1
        best = k
    if best == 0:
        return None
    return float(x[best - 1]), float(x[n - best])


def welch_z(x: np.ndarray, y: np.ndarray, zero_tol: float = 1e-12) -> tuple[np.ndarray, np.ndarray]:
    """Per column of two samples (rows: observations), ``mean(x) - mean(y)`` and its Welch z-score
    (signed; a difference above ``zero_tol`` without variance is ``inf``, none is 0).

    :param x: ``(n, k)`` sample (``n >= 2``).
    :param y: ``(m, k)`` sample (``m >= 2``).
    :param zero_tol: the largest difference that counts as none when both columns are constant.
    """
    diff = x.mean(0) - y.mean(0)
    se = np.sqrt(x.var(0, ddof=1) / len(x) + y.var(0, ddof=1) / len(y))
    z = np.where(
        se > 0, np.abs(diff) / np.maximum(se, 1e-300), np.where(np.abs(diff) > zero_tol, np.inf, 0.0)
    )
    return diff, np.sign(diff) * z
