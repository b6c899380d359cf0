"""The routing stage in the model: calibration loader, key model, metrics, hit rate."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

import sim
from sim.engine.cache import LRUCache
from sim.engine.routing import KEPT_RAW, OFF, ROUTED, WRONG, Utterances, routing_setup
from sim.errors import CalibrationError, ConfigError
from sim.physics.routing import (
    RoutingAccuracy,
    default_routing_calibration_path,
    load_routing_calibration,
    novel_share_from_cardinality,
)
from sim.spec.schema import validate_scenario


@pytest.fixture(scope="module")
def cal():
    return load_routing_calibration(default_routing_calibration_path())


def test_novel_share_solves_the_cardinality_equation_by_hand() -> None:
    # One question, n = 2: E(u) = 2u + 1 - (1 - (1 - u))^2 = 2u + 1 - u^2; E = 1.75 at u = 0.5.
    assert novel_share_from_cardinality(1.75, 2, np.array([1.0])) == pytest.approx(0.5, abs=1e-9)  # type: ignore[arg-type]
    assert novel_share_from_cardinality(1, 2, np.array([1.0])) == 0.0
    assert novel_share_from_cardinality(2, 2, np.array([1.0])) == 1.0


def test_profile_uses_the_record_at_a_measured_size_and_the_law_elsewhere(cal) -> None:
    rec = next(r for r in cal.data["records"] if r["impl"] == "two_row" and r["questions"] == 400)
    p = cal.profile("two_row", 400)
    assert p.mean_ms == rec["cpu_time"]["mean_ms"] and not p.extrapolated
    fit = next(f for f in cal.data["fits"] if f["impl"] == "two_row")["cpu_time_mean_ms"]
    recs = [r for r in cal.data["records"] if r["impl"] == "two_row"]
    x = np.mean([r["mean_len_u"] for r in recs]) * np.mean([r["mean_len_q"] for r in recs]) * 3000
    big = cal.profile("two_row", 3000)
    assert big.mean_ms == pytest.approx(fit["a_ms"] + fit["b_ms_per_cell"] * x)
    assert big.extrapolated
    # the shape is the largest record's: p95 / mean as measured
    shape = rec["values_ms"][95] / rec["mean_ms"]
    assert big.values_ms[95] / big.mean_ms == pytest.approx(shape)
    assert list(big.values_ms) == sorted(big.values_ms)


def test_article_loop_is_slowest_per_utterance(cal) -> None:
    means = {ix: cal.profile(ix, 2000).mean_ms for ix in ("rapidfuzz", "two_row", "numpy_table")}
    assert means["rapidfuzz"] < means["two_row"] < means["numpy_table"]


def test_unmeasured_threshold_and_missing_impl_are_one_line_errors(cal, tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match=r"routing.threshold=0.33 was not measured .* \(it has 0.1"):
        cal.accuracy(400, 0.33)
    data = dict(cal.data, records=[r for r in cal.data["records"] if r["impl"] != "two_row"])
    p = tmp_path / "r.json"
    p.write_text(json.dumps(data))
    with pytest.raises(CalibrationError, match="routing.impl='two_row' is not in r.json"):
        load_routing_calibration(p).profile("two_row", 100)
    with pytest.raises(CalibrationError, match="does not exist"):
        load_routing_calibration(tmp_path / "nope.json")


def _acc(correct: float, wrong: float, none: float, false_route: float = 0.0) -> RoutingAccuracy:
    return RoutingAccuracy(correct, wrong, none, false_route, 100, 0.3, False)


def test_utterances_exact_cases() -> None:
    ids = itertools.count(-1, -1)
    rng = np.random.default_rng(1)
    # variants only, no routing: every text new, keys -1, -2, ...
    u = Utterances(1.0, None, 10, rng, ids)
    assert [u(3) for _ in range(3)] == [(-1, OFF), (-2, OFF), (-3, OFF)]
    # routing always right: a canonical question's key whatever was typed
    u = Utterances(1.0, _acc(1.0, 0.0, 0.0), 10, rng, ids)
    assert {u(3) for _ in range(50)} == {(3, ROUTED)}
    # outside the canonical set (key >= questions): the raw key is kept
    k, o = u(12)
    assert o == KEPT_RAW and k < 0
    # always wrong: another canonical question, never the asked one
    u = Utterances(0.0, _acc(0.0, 1.0, 0.0), 10, rng, ids)
    got = [u(3) for _ in range(200)]
    assert all(o == WRONG and k != 3 and 0 <= k < 10 for k, o in got)
    assert {k for k, _ in got} == set(range(10)) - {3}
    # never routed, clean text: the question's own key
    u = Utterances(0.0, _acc(0.0, 0.0, 1.0), 10, rng, ids)
    assert u(3) == (3, KEPT_RAW)


def test_variant_model_reproduces_the_calibrations_measured_lru_hit_rates(cal) -> None:
    """The calibration routed 2,000 real generated utterances (Zipf 1 over 100 questions, 10 %
    off-topic) through an LRU; the simulator's key model, fitted only to the count of distinct
    raw texts, must give the same hit rates raw and routed."""
    ck = cal.data["cache_keys"]
    q, n = ck["questions"], ck["utterances"]
    off = cal.data["settings"]["generator"]["unmatched_share"]
    novel, acc = cal.novel_share(), cal.accuracy(q, ck["threshold"])
    w = 1.0 / np.arange(1, q + 1) ** ck["zipf_s"]
    for routed, name in ((False, "raw_text"), (True, "routed")):
        for cap in ck["capacities"]:
            rates = []
            for seed in range(20):
                rng = np.random.default_rng([seed, 0])
                qs = np.where(rng.random(n) < off, q + np.arange(n), rng.choice(q, size=n, p=w / w.sum()))
                ut = Utterances(
                    novel, acc if routed else None, q, np.random.default_rng([seed, 1]), itertools.count(-1, -1)
                )
                cache, hits = LRUCache(cap), 0
                for x in qs.tolist():
                    k, _ = ut(x)
                    if cache.lookup(k):
                        hits += 1
                    else:
                        cache.insert(k)
                rates.append(hits / n)
            measured = ck[name]["lru_hit_rate"][str(cap)]
            assert np.mean(rates) == pytest.approx(measured, abs=0.02), (name, cap)


BASE = {
    "run": {"duration_s": 200, "warmup_s": 20, "replications": 2, "seed": 7},
    "workload": {
        "mode": "closed",
        "users": 20,
        "think_s": {"dist": "exponential", "mean": 2.0},
        "queries": {"distinct": 2000, "hot_fraction": 0.5, "hot_keys": 20, "zipf_s": 1.0},
    },
    "cache": {"capacity": 200, "lookup_ms": 1},
    "retrieval": {"service_ms": 5, "workers": 4},
    "llm": {"enabled": False},
    "routing": {"variants": True, "questions": 500, "impl": "two_row", "workers": 2},
}


def test_routing_raises_the_hit_rate_and_has_its_own_metrics() -> None:
    off = sim.simulate(BASE).points[0].summary
    on = (
        sim.simulate({**BASE, "routing": {**BASE["routing"], "enabled": True}, "sla": {"routing_ms": {"p95": 5000}}})
        .points[0]
        .summary
    )
    assert "routing_ms" not in off["metrics"] and "routing" not in off["utilization"]
    assert off["routing"]["novel_keys"] > 0.7
    assert on["cache_hit_rate"] > off["cache_hit_rate"] + 0.3
    m = on["metrics"]
    for k in ("routing_ms", "routing_wait_ms", "routing_service_ms"):
        assert k in m
    # the service times are the calibrated ones
    _, _, _, info = routing_setup(validate_scenario({**BASE, "routing": {**BASE["routing"], "enabled": True}}))
    assert m["routing_service_ms"]["mean"] == pytest.approx(info["mean_service_ms"], rel=0.1)
    assert on["sla"][0]["metric"] == "routing_ms"
    assert 0 < on["utilization"]["routing"] < 1
    assert on["routing"]["outcomes"]["routed"] > 0.2  # keys >= 500 are outside the canonical set


def test_routing_sla_needs_the_stage() -> None:
    with pytest.raises(ConfigError, match="sla.routing_ms: the routing stage is disabled"):
        validate_scenario({**BASE, "sla": {"routing_ms": {"p95": 10}}})


def test_default_scenarios_have_no_routing_columns_in_use() -> None:
    res = sim.simulate({**BASE, "routing": {}, "run": {**BASE["run"], "replications": 1}}, keep_records=True)
    rep = res.points[0].replications[0]
    assert (rep.records["routing_outcome"] == -1).all()
    assert (rep.records["question"] == rep.records["query_key"]).all()
