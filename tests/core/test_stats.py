"""The report statistics: IQM, stratified bootstrap intervals, probability of improvement, Kaplan--Meier."""

from __future__ import annotations

import numpy as np
import pytest

from equirl.utils.stats import (
    iqm,
    kaplan_meier,
    median_ci,
    probability_of_improvement,
    stratified_bootstrap_ci,
)


def test_iqm_on_known_data() -> None:
    assert iqm([1, 2, 3, 4, 5, 6, 7, 8]) == pytest.approx(4.5)  # mean of 3, 4, 5, 6
    assert iqm([100, 3, 2, 1, -50, 4, 5, 6]) == pytest.approx(3.5)  # outliers dropped, order irrelevant
    # n = 5: the middle 2.5 samples, with weights 0.75, 1, 0.75 on 2, 3, 4
    assert iqm([1, 2, 3, 4, 100]) == pytest.approx((0.75 * 2 + 3 + 0.75 * 4) / 2.5)
    assert iqm([7.0]) == 7.0
    assert np.isnan(iqm([]))


def test_iqm_matches_a_25_percent_trimmed_mean() -> None:
    from scipy.stats import trim_mean

    x = np.random.default_rng(1).normal(size=40)
    assert iqm(x) == pytest.approx(trim_mean(x, 0.25))


def test_bootstrap_interval_covers_the_true_mean() -> None:
    rng = np.random.default_rng(0)
    covered = 0
    trials = 200
    for k in range(trials):
        x = rng.normal(3.0, 1.0, size=30)
        ci = stratified_bootstrap_ci([x], lambda s: float(np.mean(s[0])), reps=400, seed=k)
        assert ci.low <= ci.value <= ci.high
        covered += ci.low <= 3.0 <= ci.high
    assert 0.88 <= covered / trials <= 0.99  # nominal 95 %


def test_bootstrap_resamples_within_strata() -> None:
    a, b = np.zeros(3), np.full(7, 10.0)
    sizes = []

    def stat(s: list[np.ndarray]) -> float:
        sizes.append((s[0].size, s[1].size))
        return float(np.mean(np.concatenate(s)))

    ci = stratified_bootstrap_ci([a, b], stat, reps=50)
    # every replicate keeps 3 zeros and 7 tens: the pooled mean never moves
    assert set(sizes) == {(3, 7)}
    assert ci.low == ci.high == ci.value == pytest.approx(7.0)


def test_probability_of_improvement() -> None:
    assert probability_of_improvement([[5, 6, 7]], [[1, 2, 3]]).value == 1.0
    assert probability_of_improvement([[1, 2, 3]], [[5, 6, 7]]).value == 0.0
    assert probability_of_improvement([[1, 2]], [[1, 2]]).value == 0.5  # ties count half
    # two tasks: X always wins on one, always loses on the other
    p = probability_of_improvement([[9, 9], [0, 0]], [[1, 1], [5, 5]])
    assert p.value == 0.5


def test_kaplan_meier_by_hand() -> None:
    # runs: events at 2, 3, 5; censored at 3, 8, 8 (never reached the threshold)
    km = kaplan_meier([2, 3, 3, 5, 8, 8], [True, True, False, True, False, False], horizon=10)
    # S(2) = 5/6; S(3) = 5/6 * 4/5; S(5) = that * 2/3 (3 at risk: 5, 8, 8)
    np.testing.assert_allclose(km.times, [2, 3, 5])
    np.testing.assert_allclose(km.survival, [5 / 6, 2 / 3, 4 / 9])
    assert km.median == 5.0  # first time S <= 1/2
    assert km.restricted_mean == pytest.approx(2 * 1 + 1 * 5 / 6 + 2 * 2 / 3 + 5 * 4 / 9)
    assert (km.events, km.n) == (3, 6)


def test_kaplan_meier_censoring_is_not_an_event() -> None:
    km = kaplan_meier([100, 100, 100], [False, False, False], horizon=100)
    assert km.median is None  # unknown, beyond the budget: never "the budget"
    assert km.restricted_mean == 100.0
    km = kaplan_meier([10, 100, 100], [True, False, False], horizon=100)
    assert km.median is None  # S = 2/3 > 1/2
    assert km.restricted_mean == pytest.approx(10 + 90 * 2 / 3)


@pytest.mark.parametrize("n", [6, 9, 15])
def test_median_interval_covers_the_true_median_at_its_level(n: int) -> None:
    """Over many samples of a skewed distribution (lognormal, median 1), the order-statistic interval
    holds the true median at least 95 % of the time, and not trivially (it is narrower than the range
    once n allows)."""
    rng = np.random.default_rng(0)
    trials, hits, narrower = 4000, 0, 0
    for _ in range(trials):
        x = rng.lognormal(0.0, 0.5, size=n)
        lo, hi = median_ci(x)  # type: ignore[misc]
        hits += lo <= 1.0 <= hi
        narrower += (hi - lo) < (x.max() - x.min())
    assert hits / trials >= 0.95 - 3 * (0.05 * 0.95 / trials) ** 0.5
    assert (narrower > 0) == (n > 6)


def test_median_interval_needs_six_values_at_95_percent() -> None:
    assert median_ci([1.0, 2.0, 3.0, 4.0, 5.0]) is None
    assert median_ci([3.0, 1.0, 2.0, 6.0, 5.0, 4.0]) == (1.0, 6.0)
    assert median_ci(range(1, 10)) == (2.0, 8.0)  # P(Bin(9, 1/2) <= 1) = 10/512: coverage 0.961


def test_median_interval_drops_nans_and_takes_many_values() -> None:
    assert median_ci([float("nan"), *range(1, 10)]) == (2.0, 8.0)  # the 9 numbers, not a shifted 10
    lo, hi = median_ci(np.arange(2000.0))  # type: ignore[misc]  # 2**2000 overflows a float
    assert lo < 999.5 < hi and hi - lo < 100
    with pytest.raises(ValueError, match="level"):
        median_ci([1.0] * 10, level=1.0)
