"""Queueing formulas against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.physics.queueing import (
    closed_response_lower_bound_s,
    closed_saturation_users,
    closed_throughput_bound,
    erlang_b,
    erlang_c,
    mmc,
    mva,
    saturation_rate_per_s,
    utilization,
)

# --------------------------------------------------------------------------
# Erlang B / C
# --------------------------------------------------------------------------


def test_erlang_c_single_server_is_utilisation() -> None:
    # M/M/1: P(wait) = ρ = a.
    assert erlang_c(1, 0.5) == pytest.approx(0.5, rel=1e-15)
    assert erlang_c(1, 0.0) == 0.0


def test_erlang_b_two_servers_by_hand() -> None:
    # B(2, 1) = (1²/2!) / (1 + 1 + 1/2) = 0.5 / 2.5 = 0.2
    assert erlang_b(2, 1.0) == pytest.approx(0.2, rel=1e-15)


def test_erlang_c_two_servers_by_hand() -> None:
    # C(2, 1) = 2·B / (2 - 1·(1 - B)) with B = 0.2  →  0.4 / 1.2 = 1/3
    assert erlang_c(2, 1.0) == pytest.approx(1.0 / 3.0, rel=1e-14)


def test_erlang_c_ten_servers_rho_090() -> None:
    # c = 10, a = 9 (ρ = 0.9), textbook form:
    #   Σ_{k=0}^{9} 9^k/k!          = 4759.818303571429
    #   (9^10/10!)·10/(10-9)        = 3486784401/3628800·10 = 9608.643080357144
    #   C = 9608.643080357144 / (4759.818303571429 + 9608.643080357144)
    #     = 0.668731524107697
    assert erlang_c(10, 9.0) == pytest.approx(0.668731524107697, rel=1e-12)


def test_erlang_c_large_c_does_not_overflow() -> None:
    # 1000 servers at ρ = 0.99: factorial form would overflow; recursion is fine.
    value = erlang_c(1000, 990.0)
    assert 0.0 < value < 1.0


@pytest.mark.parametrize("c, a", [(1, 1.0), (2, 2.5), (3, -0.1), (0, 0.5)])
def test_erlang_c_rejects_unstable_or_bad_input(c: int, a: float) -> None:
    with pytest.raises(ValueError):
        erlang_c(c, a)


@given(
    c=st.integers(min_value=1, max_value=60),
    f1=st.floats(min_value=0.0, max_value=0.999),
    f2=st.floats(min_value=0.0, max_value=0.999),
)
def test_erlang_c_increases_with_offered_load(c: int, f1: float, f2: float) -> None:
    a_low, a_high = sorted((f1 * c, f2 * c))
    low, high = erlang_c(c, a_low), erlang_c(c, a_high)
    assert 0.0 <= low <= 1.0 and 0.0 <= high <= 1.0
    assert low <= high + 1e-12


@given(
    a=st.floats(min_value=0.0, max_value=50.0),
    extra=st.integers(min_value=1, max_value=20),
)
def test_erlang_c_decreases_with_servers(a: float, extra: int) -> None:
    c = math.floor(a) + 1  # smallest stable c
    assert erlang_c(c + extra, a) <= erlang_c(c, a) + 1e-12


# --------------------------------------------------------------------------
# M/M/c
# --------------------------------------------------------------------------


def test_mm1_rho_090() -> None:
    # λ = 0.9, μ = 1: Wq = ρ/(μ-λ) = 0.9/0.1 = 9 s; W = 10 s; Lq = 8.1.
    q = mmc(1, 0.9, 1.0)
    assert q.utilization == pytest.approx(0.9)
    assert q.p_wait == pytest.approx(0.9)
    assert q.mean_wait_s == pytest.approx(9.0, rel=1e-12)
    assert q.mean_response_s == pytest.approx(10.0, rel=1e-12)
    assert q.mean_queue_length == pytest.approx(8.1, rel=1e-12)
    assert q.mean_in_system == pytest.approx(9.0, rel=1e-12)
    # Response ~ Exp(μ-λ = 0.1): P95 = ln(20)/0.1 = 29.957322735539908
    assert q.response_quantile_s(0.95) == pytest.approx(29.957322735539908, rel=1e-12)
    # Wait: 0 w.p. 0.1; P95 = -ln(0.05/0.9)/0.1 = 10·ln(18) = 28.903717578961647
    assert q.wait_quantile_s(0.95) == pytest.approx(28.903717578961647, rel=1e-12)
    assert q.wait_quantile_s(0.05) == 0.0


def test_mm2_by_hand() -> None:
    # c = 2, λ = 1, μ = 1: a = 1, ρ = 0.5, C = 1/3, Wq = C/(cμ-λ) = 1/3 s.
    q = mmc(2, 1.0, 1.0)
    assert q.utilization == pytest.approx(0.5)
    assert q.p_wait == pytest.approx(1.0 / 3.0, rel=1e-12)
    assert q.mean_wait_s == pytest.approx(1.0 / 3.0, rel=1e-12)
    assert q.mean_response_s == pytest.approx(4.0 / 3.0, rel=1e-12)
    # Wait quantile: p ≤ 2/3 → 0; P90 = -ln(0.1·3)/1 = ln(10/3)
    assert q.wait_quantile_s(0.5) == 0.0
    assert q.wait_quantile_s(0.9) == pytest.approx(math.log(10.0 / 3.0), rel=1e-12)
    # Response: θ = cμ-λ = 1 = μ (the degenerate hypoexponential case), so
    #   P(T > t) = (2/3)e^{-t} + (1/3)(1+t)e^{-t} = e^{-t}(1 + t/3)
    # and the P95 solves e^{-t}(1 + t/3) = 0.05 → t = 3.8164603051681...
    p95 = q.response_quantile_s(0.95)
    assert math.exp(-p95) * (1.0 + p95 / 3.0) == pytest.approx(0.05, rel=1e-10)
    assert p95 == pytest.approx(3.8164603051681, rel=1e-9)


def test_mmc_ten_servers_rho_090() -> None:
    # c = 10, μ = 1, λ = 9: C = 0.668731524107697 (see Erlang C test),
    # Wq = C/(10-9) = 0.668731524107697 s, W = 1.668731524107697 s.
    q = mmc(10, 9.0, 1.0)
    assert q.mean_wait_s == pytest.approx(0.668731524107697, rel=1e-12)
    assert q.mean_response_s == pytest.approx(1.668731524107697, rel=1e-12)
    # θ = 1 = μ again: P(T>t) = e^{-t}(1 - C + C(1+t)) = e^{-t}(1 + C t)
    p99 = q.response_quantile_s(0.99)
    assert math.exp(-p99) * (1.0 + 0.668731524107697 * p99) == pytest.approx(0.01, rel=1e-9)


@pytest.mark.parametrize("c, lam, mu", [(1, 0.3, 1.0), (3, 2.0, 1.0), (4, 3.9, 1.0), (8, 1.0, 2.0)])
def test_mmc_response_quantile_matches_mean_and_cdf(c: int, lam: float, mu: float) -> None:
    q = mmc(c, lam, mu)
    for p in (0.1, 0.5, 0.9, 0.99, 0.9999):
        t = q.response_quantile_s(p)
        assert 1.0 - q.response_survival(t) == pytest.approx(p, abs=1e-10)
    # E[T] = ∫ P(T>t) dt, by the trapezoid rule on a fine grid.
    grid = np.linspace(0.0, q.response_quantile_s(1 - 1e-12), 4001)
    survival = np.array([q.response_survival(t) for t in grid])
    integral = np.trapezoid(survival, grid)
    assert integral == pytest.approx(q.mean_response_s, rel=1e-4)


def test_mmc_rejects_unstable() -> None:
    with pytest.raises(ValueError):
        mmc(2, 2.0, 1.0)
    with pytest.raises(ValueError):
        mmc(1, 1.5, 1.0)


def test_open_utilisation_and_saturation() -> None:
    assert utilization(10.0, 0.2, 4) == pytest.approx(0.5)
    assert saturation_rate_per_s(0.2, 4) == pytest.approx(20.0)
    assert saturation_rate_per_s(0.0, 1) == math.inf


# --------------------------------------------------------------------------
# Closed networks: MVA and bounds
# --------------------------------------------------------------------------


def test_mva_single_station_one_user() -> None:
    # N = 1: no queueing, X = 1/(Z + D) = 1/(2 + 0.5) = 0.4
    r = mva(1, 2.0, [0.5])
    assert r.throughput_per_s == pytest.approx(0.4, rel=1e-15)
    assert r.response_s == pytest.approx(0.5, rel=1e-15)
    assert r.utilization == pytest.approx((0.2,))


def test_mva_two_users_no_think() -> None:
    # N = 2, Z = 0, D = 1: X(1) = 1, Q(1) = 1; R(2) = 1·(1+1) = 2; X(2) = 2/2 = 1
    r = mva(2, 0.0, [1.0])
    assert r.throughput_per_s == 1.0
    assert r.response_s == 2.0
    assert r.queue_length == (2.0,)


def test_mva_two_stations_hand_iterated() -> None:
    # Z = 1, D = (1, 0.5), N = 3.
    # n=1: R = (1, 0.5),            X = 1/(1+1.5) = 0.4,   Q = (0.4, 0.2)
    # n=2: R = (1.4, 0.6),          X = 2/(1+2.0) = 2/3,   Q = (14/15, 0.4)
    # n=3: R = (1+14/15, 0.5·1.4) = (29/15, 0.7),
    #      X = 3/(1 + 29/15 + 0.7) = 45/54.5 = 90/109,
    #      Q = (90/109·29/15, 90/109·0.7) = (174/109, 63/109)
    # Check: ΣQ + X·Z = (174 + 63 + 90)/109 = 3 users.
    r = mva(3, 1.0, [1.0, 0.5])
    np.testing.assert_allclose(r.throughput_per_s_by_n, [0.4, 2.0 / 3.0, 90.0 / 109.0], rtol=1e-14)
    np.testing.assert_allclose(r.station_response_s_by_n, [[1.0, 0.5], [1.4, 0.6], [29.0 / 15.0, 0.7]], rtol=1e-14)
    np.testing.assert_allclose(r.queue_length, [174.0 / 109.0, 63.0 / 109.0], rtol=1e-14)
    assert r.response_s == pytest.approx(29.0 / 15.0 + 0.7, rel=1e-14)
    np.testing.assert_allclose(r.utilization, [90.0 / 109.0, 45.0 / 109.0], rtol=1e-14)
    np.testing.assert_array_equal(r.populations, [1, 2, 3])


def test_mva_two_server_station_by_hand() -> None:
    # One station with m = 2 servers, D = 1, Z = 1, N = 2.  Product form:
    # j at the station has weight Z^{2-j}/(2-j)! · D^j/Π_{k≤j} min(k,2):
    #   j=0: 1/2, j=1: 1, j=2: 1/2  → probabilities (1/4, 1/2, 1/4),
    #   X = E[min(j,2)]/D = 1/2 + 2/4 = 1,  Q = 1/2 + 2/4 = 1,  R = Q/X = 1.
    r = mva(2, 1.0, [1.0], servers=[2])
    assert r.throughput_per_s == pytest.approx(1.0, rel=1e-14)
    assert r.queue_length == pytest.approx((1.0,), rel=1e-14)
    assert r.utilization == pytest.approx((0.5,), rel=1e-14)


@pytest.mark.parametrize("users, think_s, servers", [(100, 10.0, 8), (1000, 5.0, 8), (300, 50.0, 16)])
def test_mva_multi_server_matches_machine_repairman(users: int, think_s: float, servers: int) -> None:
    # Finite-source birth-death chain (machine repairman), computed directly in
    # log space: P(j) ∝ Z^{N-j}/(N-j)! · D^j / Π_{k≤j} min(k, m), D = 1.
    demand_s = 1.0
    j = np.arange(users + 1)
    log_alpha = np.log(np.minimum(np.arange(1, users + 1), servers))
    log_w = (users - j) * math.log(think_s) - np.array([math.lgamma(users - k + 1) for k in j])
    log_w += j * math.log(demand_s) - np.concatenate([[0.0], np.cumsum(log_alpha)])
    prob = np.exp(log_w - log_w.max())
    prob /= prob.sum()
    expected_x = float((prob * np.minimum(j, servers)).sum()) / demand_s
    expected_q = float((prob * j).sum())
    r = mva(users, think_s, [demand_s], servers=[servers])
    assert r.throughput_per_s == pytest.approx(expected_x, rel=1e-9)
    assert r.queue_length[0] == pytest.approx(expected_q, rel=1e-9)


def test_mva_bounds_and_monotonicity() -> None:
    think_s, demands = 2.0, [0.3, 0.5, 0.1]
    r = mva(60, think_s, demands)
    x = r.throughput_per_s_by_n
    assert np.all(np.diff(x) > 0.0)
    for n, xn in zip(r.populations, x):
        assert xn <= closed_throughput_bound(int(n), think_s, demands) * (1 + 1e-12)
        assert r.response_s_by_n[n - 1] >= closed_response_lower_bound_s(int(n), think_s, demands) * (1 - 1e-12)
    # Far past N* the bottleneck (D = 0.5) saturates: X → 2/s.
    assert x[-1] == pytest.approx(2.0, rel=1e-6)
    # Little's law over the whole network: ΣQ_i + X·Z = N.
    np.testing.assert_allclose(r.queue_length_by_n.sum(axis=1) + x * think_s, r.populations, rtol=1e-12)


def test_closed_asymptotes_by_hand() -> None:
    # Z = 2, D = (0.3, 0.5, 0.1): ΣD = 0.9, D_max = 0.5
    # N* = (2 + 0.9)/0.5 = 5.8;  X(3) ≤ min(3/2.9, 2) = 1.0345;  X(10) ≤ 2
    assert closed_saturation_users(2.0, [0.3, 0.5, 0.1]) == pytest.approx(5.8)
    assert closed_throughput_bound(3, 2.0, [0.3, 0.5, 0.1]) == pytest.approx(3 / 2.9)
    assert closed_throughput_bound(10, 2.0, [0.3, 0.5, 0.1]) == pytest.approx(2.0)
    # With 4 servers at the 0.5 s station, D_max = max(0.3, 0.125, 0.1) = 0.3
    assert closed_saturation_users(2.0, [0.3, 0.5, 0.1], servers=[1, 4, 1]) == pytest.approx(2.9 / 0.3)
    # R(10) ≥ max(0.9, 10·0.5 - 2) = 3
    assert closed_response_lower_bound_s(10, 2.0, [0.3, 0.5, 0.1]) == pytest.approx(3.0)


def test_mva_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        mva(0, 1.0, [1.0])
    with pytest.raises(ValueError):
        mva(3, 0.0, [0.0])
    with pytest.raises(ValueError):
        mva(3, 1.0, [1.0], servers=[0])
    with pytest.raises(ValueError):
        mva(3, 1.0, [1.0, 2.0], servers=[1])
