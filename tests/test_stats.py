"""Output-analysis statistics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim.analysis.stats import (
    STATS,
    batch_means_interval,
    ci_half_width_ratio,
    mser5,
    sla_verdict,
    stat_value,
    summarize,
    t_interval,
)

# --------------------------------------------------------------------------
# Point statistics
# --------------------------------------------------------------------------


def test_stat_value_small_array_by_hand() -> None:
    values = np.array([4.0, 1.0, 3.0, 2.0, 5.0])  # sorted: 1 2 3 4 5
    assert stat_value(values, "mean") == 3.0
    assert stat_value(values, "max") == 5.0
    # linear method: h = (n-1)·q = 4·q
    assert stat_value(values, "p50") == 3.0  # h = 2
    assert stat_value(values, "p90") == pytest.approx(4.6)  # h = 3.6 → 4 + 0.6·1
    assert stat_value(values, "p95") == pytest.approx(4.8)  # h = 3.8
    assert stat_value(values, "p99") == pytest.approx(4.96)  # h = 3.96


def test_summarize_small_array_by_hand() -> None:
    # sorted 0, 10, 20, 30 → h = 3·q
    summary = summarize([30.0, 0.0, 20.0, 10.0])
    assert list(summary) == list(STATS)
    assert summary == pytest.approx({"mean": 15.0, "p50": 15.0, "p90": 27.0, "p95": 28.5, "p99": 29.7, "max": 30.0})


def test_empty_gives_nan() -> None:
    assert math.isnan(stat_value(np.array([]), "p99"))
    assert all(math.isnan(v) for v in summarize([]).values())


def test_unknown_stat_rejected() -> None:
    with pytest.raises(ValueError):
        stat_value(np.array([1.0]), "p42")


def test_single_value() -> None:
    assert summarize([7.0]) == {stat: 7.0 for stat in STATS}


# --------------------------------------------------------------------------
# Confidence intervals
# --------------------------------------------------------------------------


def test_t_interval_by_hand() -> None:
    # mean 3, s = sqrt(10/4) = 1.5811, t_{0.975,4} = 2.7764
    # half width = 2.7764·1.5811/√5 = 1.9632 → [1.0368, 4.9632]
    low, high = t_interval([1, 2, 3, 4, 5], 0.95)
    assert low == pytest.approx(1.0368, abs=1e-4)
    assert high == pytest.approx(4.9632, abs=1e-4)


def test_t_interval_degenerate() -> None:
    assert all(math.isnan(v) for v in t_interval([1.0]))
    assert all(math.isnan(v) for v in t_interval([]))
    assert t_interval([2.0, 2.0, 2.0]) == (2.0, 2.0)
    with pytest.raises(ValueError):
        t_interval([1.0, 2.0], confidence=1.0)


def test_t_interval_coverage() -> None:
    # 2,000 experiments × 10 replications × mean of 200 Exp(1) draws.
    # True mean 1.0; a 95 % interval should cover it 95 % of the time
    # (binomial sd 0.49 %, so the band is ±3 sd).
    rng = np.random.default_rng(20240601)
    rep_means = rng.exponential(1.0, size=(2000, 10, 200)).mean(axis=2)
    covered = 0
    for row in rep_means:
        low, high = t_interval(row, 0.95)
        covered += low <= 1.0 <= high
    assert 0.935 <= covered / 2000 <= 0.965


def test_batch_means_mean_equals_overall_mean() -> None:
    rng = np.random.default_rng(7)
    values = rng.normal(5.0, 2.0, size=20_000)
    low, high = batch_means_interval(values, "mean", 0.95, n_batches=20)
    assert (low + high) / 2 == pytest.approx(values.mean(), rel=1e-12)
    assert low < 5.0 < high
    # iid data: batch-mean sd ≈ σ/√b, so half width ≈ t_{.975,19}·σ/√n = 2.093·2/√20000
    assert (high - low) / 2 == pytest.approx(2.093 * 2.0 / math.sqrt(20_000), rel=0.4)


def test_batch_means_drops_leftover_from_start_and_centres_on_batches() -> None:
    values = np.arange(205, dtype=float)  # b = 10, first 5 values dropped
    low, high = batch_means_interval(values, "p50", n_batches=20)
    # batch j holds 5+10j .. 14+10j, median 9.5+10j; mean over j = 9.5 + 95 = 104.5
    assert (low + high) / 2 == pytest.approx(104.5)
    low, high = batch_means_interval(values, "max", n_batches=20)
    assert (low + high) / 2 == pytest.approx(109.0)  # mean of 14+10j


def test_batch_means_too_few_values() -> None:
    assert all(math.isnan(v) for v in batch_means_interval(np.ones(199), "mean", n_batches=20))
    assert not any(math.isnan(v) for v in batch_means_interval(np.ones(200), "mean", n_batches=20))


def test_batch_means_wider_than_naive_for_correlated_series() -> None:
    # AR(1) with φ = 0.9: the iid standard error understates the real one by
    # about sqrt((1+φ)/(1-φ)) ≈ 4.4; batch means must see that.
    rng = np.random.default_rng(11)
    phi, n = 0.9, 40_000
    noise = rng.normal(size=n)
    x = np.empty(n)
    x[0] = noise[0]
    for i in range(1, n):
        x[i] = phi * x[i - 1] + noise[i]
    low, high = batch_means_interval(x, "mean", n_batches=20)
    naive_low, naive_high = t_interval(x)
    assert (high - low) > 2.5 * (naive_high - naive_low)


# --------------------------------------------------------------------------
# Warm-up
# --------------------------------------------------------------------------


def test_mser5_finds_exponential_transient() -> None:
    # 5 + 10·e^{-t/50} + N(0,1): the bias drops below 0.1 sd near t = 230.
    rng = np.random.default_rng(3)
    t = np.arange(4000)
    series = 5.0 + 10.0 * np.exp(-t / 50.0) + rng.normal(0.0, 1.0, t.size)
    cut = mser5(series)
    assert 100 <= cut <= 400
    assert cut % 5 == 0


def test_mser5_no_transient_and_short_series() -> None:
    assert mser5(np.full(1000, 3.0)) == 0
    assert mser5(np.arange(9.0)) == 0
    # A pure ramp would be cut as late as allowed: never past the first half.
    ramp = np.arange(1000.0)[::-1]
    assert mser5(ramp) <= 500


def test_mser5_by_hand() -> None:
    # Batch means z = (10, 0, 0, 0): MSER(0) = 75/16, MSER(1) = 0 → d* = 1.
    series = np.array([10.0] * 5 + [0.0] * 15)
    assert mser5(series) == 5


# --------------------------------------------------------------------------
# SLA verdicts
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, low, high, threshold, expected",
    [
        (700.0, 650.0, 750.0, 800.0, "pass"),
        (700.0, 650.0, 800.0, 800.0, "pass"),  # high == threshold still meets ≤
        (900.0, 850.0, 950.0, 800.0, "fail"),
        (790.0, 760.0, 820.0, 800.0, "inconclusive"),
        (810.0, 800.0, 820.0, 800.0, "inconclusive"),  # low == threshold: not > threshold
        (700.0, math.nan, math.nan, 800.0, "inconclusive"),  # no interval: the data cannot decide
        (900.0, math.nan, math.nan, 800.0, "inconclusive"),
        (math.nan, math.nan, math.nan, 800.0, "inconclusive"),
    ],
)
def test_sla_verdict(value: float, low: float, high: float, threshold: float, expected: str) -> None:
    assert sla_verdict(value, low, high, threshold) == expected


def test_ci_half_width_ratio() -> None:
    assert ci_half_width_ratio(90.0, 110.0, 100.0) == pytest.approx(0.1)
    assert ci_half_width_ratio(-110.0, -90.0, -100.0) == pytest.approx(0.1)
    assert math.isnan(ci_half_width_ratio(math.nan, math.nan, 1.0))
    assert ci_half_width_ratio(-1.0, 1.0, 0.0) == math.inf
    assert ci_half_width_ratio(0.0, 0.0, 0.0) == 0.0


@pytest.mark.parametrize(
    "verdicts, want",
    [
        ([], "none"),
        (["pass", "pass"], "pass"),
        (["pass", "inconclusive"], "inconclusive"),
        (["inconclusive", "fail", "pass"], "fail"),
    ],
)
def test_one_verdict_aggregation_everywhere(verdicts: list[str], want: str) -> None:
    """The point's verdict (exit codes, tables), the report's and a windowed SLA's all come
    from :func:`sim.analysis.stats.combine_verdicts`."""
    from sim.analysis.stats import combine_verdicts
    from sim.present.headline import point_verdict

    assert combine_verdicts(verdicts) == want
    assert point_verdict({"sla": [{"verdict": v} for v in verdicts]}) == (None if want == "none" else want)


def test_t_quantile_by_hand() -> None:
    from sim.analysis.stats import t_quantile

    # dof 1 (Cauchy): tan(pi (p - 1/2)); dof 2: (2p - 1) / sqrt(2p(1-p)) = 0.95 / sqrt(0.04875)
    assert t_quantile(0.975, 1) == pytest.approx(12.706204736174698, rel=1e-14)
    assert t_quantile(0.975, 2) == pytest.approx(0.95 / math.sqrt(0.04875), rel=1e-14)
    # dof 4 (closed form): a = 4p(1-p) = 0.0975, q = cos(arccos(sqrt a) / 3) / sqrt a, t = 2 sqrt(q - 1)
    a = 4 * 0.975 * 0.025
    q = math.cos(math.acos(math.sqrt(a)) / 3) / math.sqrt(a)
    assert t_quantile(0.975, 4) == pytest.approx(2 * math.sqrt(q - 1), rel=1e-12)
    assert t_quantile(0.025, 4) == -t_quantile(0.975, 4) and t_quantile(0.5, 7) == 0.0


def test_t_quantile_agrees_with_scipy() -> None:
    from scipy.special import stdtrit

    from sim.analysis.stats import t_quantile

    for dof in [*range(1, 61), 99, 500, 999, 1000, 5000, 10**6]:
        for p in (0.6, 0.75, 0.9, 0.95, 0.975, 0.99, 0.995, 0.9995):
            assert t_quantile(p, dof) == pytest.approx(float(stdtrit(dof, p)), rel=1e-11), (dof, p)
