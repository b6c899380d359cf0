"""Bounds before work: the memory/time estimate, worked by hand, and its refusals."""

from __future__ import annotations

import pytest

from sim.errors import CapsimError
from sim.run import bounds as B
from sim.spec.scenario import expand
from tests.helpers import small_scenario


def _points(**over):
    d = small_scenario()
    for k, v in over.items():
        sec, key = k.split("__")
        d.setdefault(sec, {})[key] = v
    return expand(d)


def test_estimate_by_hand_closed_loop():
    # 30 users, exponential think mean 5 s -> 6 requests/s x 60 s x 2 replications = 720
    est = B.estimate_run(_points(), jobs=1)
    assert est.requests == pytest.approx(720)
    assert est.terms["requests"] == pytest.approx(720 * B.BYTES_PER_REQUEST)
    assert est.terms["workload.users"] == 30 * B.BYTES_PER_USER
    assert est.terms["llm.replicas"] == 1 * B.BYTES_PER_REPLICA
    assert est.terms["workload.queries.distinct"] == 500 * B.BYTES_PER_KEY
    assert est.memory_bytes == pytest.approx(sum(est.terms.values()) + B.BYTES_PER_PROCESS)
    assert est.cpu_s == pytest.approx(720 * B.CPU_S_PER_REQUEST + 30 * B.CPU_S_PER_USER * 2)


def test_streaming_holds_one_digest_per_replication_whatever_the_requests():
    # records not kept: 2 replications x one digest, however long the run
    for duration in (60, 60_000):
        est = B.estimate_run(_points(run__duration_s=duration), jobs=1, keep_records=False)
        assert "requests" not in est.terms
        assert est.terms["run.replications"] == 2 * B.BYTES_PER_DIGEST
    # run.records: true keeps them whatever the caller's default
    kept = B.estimate_run(_points(run__records=True), jobs=1, keep_records=False)
    assert kept.terms["requests"] == pytest.approx(720 * B.BYTES_PER_REQUEST)


def test_a_run_that_would_never_finish_is_refused_even_without_records():
    # 6 requests/s x 1e10 s x 2 replications x 70 us = 8.4e6 s: 97 days, over 30
    with pytest.raises(CapsimError, match=r"run\.duration_s=1e\+10: the run would take about .* days of work"):
        B.check_bounds(_points(run__duration_s=1e10), max_memory="1T", jobs=1, keep_records=False)


def test_estimate_by_hand_open_loop_and_jobs():
    pts = expand(
        {
            **small_scenario(),
            "workload": {"mode": "open", "rate_per_s": 10.0},
            "run": {"duration_s": 100, "warmup_s": 10, "replications": 3},
        }
    )
    est = B.estimate_run(pts, jobs=2)
    assert est.requests == pytest.approx(10 * 100 * 3)
    # per-process terms count once per worker; CPU time divides among them
    assert est.terms["llm.replicas"] == 2 * B.BYTES_PER_REPLICA
    assert est.cpu_s == pytest.approx(3000 * B.CPU_S_PER_REQUEST / 2)


def test_target_precision_counts_the_worst_case_replications():
    d = small_scenario()
    d["run"] = {**d["run"], "target_precision": 0.05, "max_replications": 40}
    est = B.estimate_run(expand(d), jobs=1)
    assert est.requests == pytest.approx(6 * 60 * 40)
    assert est.driver() == "run.max_replications"


@pytest.mark.parametrize(
    "over, key",
    [
        ({"workload__users": 10**8}, "workload.users"),
        ({"llm__replicas": 10**6}, "llm.replicas"),
        ({"run__duration_s": 1e9}, "run.duration_s"),
    ],
)
def test_refusal_names_the_driving_key(over, key):
    with pytest.raises(CapsimError, match=key.replace(".", r"\.")):
        B.check_bounds(_points(**over), max_memory="4G", jobs=1)


def test_warns_above_half_the_limit_and_for_long_runs():
    said: list[str] = []
    est = B.check_bounds(
        _points(), max_memory=int(B.estimate_run(_points()).memory_bytes * 1.5), jobs=1, warn=said.append
    )
    assert est.requests > 0 and len(said) == 1 and "may use about" in said[0]
    said.clear()
    B.check_bounds(_points(run__duration_s=1e7), max_memory="1T", jobs=1, warn=said.append)
    assert any("estimated at about" in s for s in said)
    said.clear()
    B.check_bounds(_points(), max_memory="1T", jobs=1, warn=said.append)
    assert said == []


@pytest.mark.parametrize(
    "text, value", [("8G", 8 * 1024**3), ("500M", 500 * 1024**2), ("1.5GiB", int(1.5 * 1024**3)), ("1000", 1000)]
)
def test_parse_size(text, value):
    assert B.parse_size(text) == value


@pytest.mark.parametrize("text", ["lots", "-1G", "8X", ""])
def test_parse_size_refuses(text):
    with pytest.raises(CapsimError, match="--max-memory"):
        B.parse_size(text)


def test_available_memory_is_positive():
    assert B.available_memory_bytes() > 0
