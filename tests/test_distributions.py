"""Distributions know their moments; samplers reproduce them."""

import math

import numpy as np
import pytest

from sim import distributions as D
from sim.rng import stream
from sim.spec.schema import LognormalSpec, build_distribution


@pytest.mark.parametrize(
    "dist,mean,var",
    [
        (D.Constant(3.0), 3.0, 0.0),
        (D.Exponential(2.0), 2.0, 4.0),
        (D.Lognormal(10.0, 0.5), 10.0, 25.0),
        (D.Gamma(4.0, 0.25), 4.0, 1.0),
        (D.Uniform(2.0, 6.0), 4.0, 16 / 12),
        (D.Empirical((1.0, 2.0, 3.0, 4.0)), 2.5, 1.25),
    ],
)
def test_sample_moments_match_exact_moments(dist, mean, var):
    x = dist.sample(np.random.default_rng(0), 400_000)
    assert dist.mean == pytest.approx(mean)
    assert dist.variance == pytest.approx(var)
    assert x.mean() == pytest.approx(mean, rel=0.01, abs=1e-9)
    assert x.var() == pytest.approx(var, rel=0.03, abs=1e-9)


def test_lognormal_parameters_by_hand():
    # mean 10, cv 0.5: sigma^2 = ln(1.25) = 0.22314, mu = ln 10 - 0.11157 = 2.19101
    d = D.Lognormal(10.0, 0.5)
    assert d.sigma**2 == pytest.approx(0.2231435513)
    assert d.mu == pytest.approx(2.1910133173)


def test_quantile_distribution_mean_and_inverse_cdf():
    # Uniform on [0, 10] stored as two quantiles: mean 5, var 100/12.
    q = D.Quantile((0.0, 1.0), (0.0, 10.0))
    assert q.mean == pytest.approx(5.0) and q.variance == pytest.approx(100 / 12)
    x = q.sample(np.random.default_rng(1), 200_000)
    assert np.percentile(x, 95) == pytest.approx(9.5, abs=0.05)


def test_a_quantile_table_of_observations_reproduces_their_percentiles():
    obs = np.random.default_rng(2).lognormal(0, 1, 50_000)
    probs = np.linspace(0.0, 1.0, 101)
    q = D.Quantile(tuple(probs), tuple(np.quantile(obs, probs)))
    x = q.sample(np.random.default_rng(3), 400_000)
    for p in (50, 95, 99):
        assert np.percentile(x, p) == pytest.approx(np.percentile(obs, p), rel=0.02)


def test_sampler_is_the_same_sequence_as_block_draws():
    s = D.Sampler(D.Exponential(1.0), stream(1, 0, "x"), block=7)
    got = [s() for _ in range(20)]
    rng = stream(1, 0, "x")
    want = np.concatenate([rng.exponential(1.0, 7) for _ in range(3)])[:20]
    assert got == pytest.approx(want.tolist())


def test_sampler_adds_the_next_values_as_calls_and_a_running_sum_would() -> None:
    """``add_next(k)``: the next ``k`` values summed in order from 0.0, inside a block or across
    its end (a block of 7 drawn 5 at a time: 5, then 2 + 3 of the next block)."""
    a = D.Sampler(D.Lognormal(150.0, 0.4), stream(1, 0, "docs"), block=7)
    b = D.Sampler(D.Lognormal(150.0, 0.4), stream(1, 0, "docs"), block=7)
    for _ in range(9):
        want = 0.0
        for _ in range(5):
            want += b()
        assert a.add_next(5) == want  # exact: the same additions in the same order
    assert a() == b()  # and the sequence goes on where the calls would have left it


def test_streams_are_independent_of_each_other_and_stable():
    a = stream(5, 0, "arrivals").random(3)
    b = stream(5, 0, "arrivals").random(3)
    c = stream(5, 1, "arrivals").random(3)
    d = stream(5, 0, "query").random(3)
    assert np.array_equal(a, b) and not np.array_equal(a, c) and not np.array_equal(a, d)


def test_cv_zero_is_constant():
    x = build_distribution(LognormalSpec(dist="lognormal", mean=4, cv=0)).sample(np.random.default_rng(0), 5)
    assert np.all(x == 4.0) and not math.isnan(x[0])
