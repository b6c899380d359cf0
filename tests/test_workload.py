"""Query popularity and arrivals."""

import numpy as np
import pytest

import sim
from sim.engine.workload import Popularity, QueryKeys
from sim.rng import stream
from sim.spec.schema import QueriesConfig


def test_hot_fraction_and_zipf_tail():
    pop = Popularity(QueriesConfig(distinct=1000, hot_fraction=0.7, hot_keys=10, zipf_s=1.0))
    keys = QueryKeys(pop, stream(1, 0, "q")).sample(300_000)
    assert np.mean(keys < 10) == pytest.approx(0.7, abs=0.005)
    cold = keys[keys >= 10] - 10
    # Zipf s=1 over 990 ranks: P(rank 1) = 1 / H_990, H_990 = 7.4753
    assert np.mean(cold == 0) == pytest.approx(1 / 7.4753, rel=0.03)
    p = pop.probabilities()
    assert p.sum() == pytest.approx(1.0) and p[0] == pytest.approx(0.07)


def test_zipf_zero_is_uniform_and_all_hot_works():
    keys = QueryKeys(
        Popularity(QueriesConfig(distinct=4, hot_fraction=0, hot_keys=0, zipf_s=0)), stream(1, 0, "q")
    ).sample(40_000)
    assert np.bincount(keys, minlength=4) / 40_000 == pytest.approx([0.25] * 4, abs=0.01)
    keys = QueryKeys(Popularity(QueriesConfig(distinct=5, hot_fraction=1, hot_keys=5)), stream(1, 0, "q")).sample(100)
    assert keys.max() < 5


def test_open_poisson_rate_is_respected():
    d = {
        "name": "open",
        "run": {"duration_s": 1000, "warmup_s": 0, "replications": 1},
        "workload": {"mode": "open", "rate_per_s": 20},
        "cache": {"enabled": False},
        "retrieval": {"workers": 100, "service_ms": 1},
        "llm": {"enabled": False},
    }
    res = sim.simulate(d)
    assert res.summary["points"][0]["throughput_per_s"] == pytest.approx(20, rel=0.03)


def test_gamma_arrivals_are_burstier_but_same_rate():
    d = {
        "name": "open",
        "run": {"duration_s": 2000, "warmup_s": 0, "replications": 1},
        "workload": {"mode": "open", "rate_per_s": 10, "arrival": "gamma", "cv": 3},
        "cache": {"enabled": False},
        "retrieval": {"workers": 100, "service_ms": 1},
        "llm": {"enabled": False},
    }
    rec = sim.simulate(d, keep_records=True).records
    gaps = np.diff(np.sort(rec["arrival_s"].to_numpy()))
    assert gaps.mean() == pytest.approx(0.1, rel=0.08)
    assert gaps.std() / gaps.mean() == pytest.approx(3, rel=0.15)


def test_closed_users_see_the_same_think_times_whatever_the_system():
    """Common random numbers: user u's requests and keys do not depend on the configuration."""
    base = {
        "name": "crn",
        "run": {"duration_s": 200, "warmup_s": 0, "replications": 1, "seed": 4},
        "workload": {"mode": "closed", "users": 5, "think_s": {"dist": "exponential", "mean": 2}},
        "cache": {"enabled": False},
        "llm": {"enabled": False},
        "retrieval": {"workers": 1, "service_ms": 10},
    }
    a = sim.simulate(base, keep_records=True).records
    b = sim.simulate(base, {"retrieval.service_ms": 300}, keep_records=True).records
    for u in range(5):
        ka = a[a.user == u].query_key.to_numpy()
        kb = b[b.user == u].query_key.to_numpy()
        n = min(len(ka), len(kb))
        assert n > 10 and np.array_equal(ka[:n], kb[:n])
