"""Verdicts the data cannot support are inconclusive; unfinished requests count; throughput is delivered work."""

import math

import numpy as np
import pytest

import sim
from sim.analysis.summary import hist_stat
from sim.engine.digest import RELATIVE_ERROR, Histogram


def mm1(**run):
    return {
        "name": "mm1",
        "run": {"duration_s": 60, "warmup_s": 0, "replications": 1, "seed": 2, **run},
        "workload": {"mode": "open", "rate_per_s": 2.0},
        "cache": {"enabled": False},
        "llm": {"enabled": False},
        "retrieval": {"workers": 1, "service_ms": {"dist": "exponential", "mean": 400}},
    }


def verdict(res):
    return res.summary["points"][0]["sla"][0]


def test_one_short_replication_gives_no_p99_verdict():
    # ~120 requests: far too few for a p99 interval (exact p99 of M/M/1 at rho 0.8 is 9.2 s).
    v = verdict(sim.simulate({**mm1(), "sla": {"e2e_ms": {"p99": 6000}}}))
    assert v["verdict"] == "inconclusive" and v["ci"] == [None, None]
    assert "no confidence interval for p99" in v["hint"]


def test_many_tiny_replications_do_not_narrow_a_biased_p99():
    # M/M/1 with lambda 1/s, mu 10/s, 40 replications of ~20 requests: the exact p99 of the
    # response is ln(100) / (10 - 1) = 512 ms, and the mean of per-replication p99s is biased
    # low with a narrow t interval around the wrong value; capsim must not call p99 <= 480 a pass.
    d = mm1(replications=40, duration_s=20)
    d["workload"]["rate_per_s"] = 1.0
    d["retrieval"]["service_ms"] = {"dist": "exponential", "mean": 100}
    v = verdict(sim.simulate({**d, "sla": {"e2e_ms": {"p99": 480}}}))
    assert v["verdict"] == "inconclusive" and v["ci"] == [None, None]


def test_censored_percentiles_by_hand():
    values = np.arange(1.0, 100.0)  # 1..99
    h = Histogram.of(values)
    # With one unfinished request the 100 values are 1..99 and +inf:
    # p95 sits at rank 0.95 * 99 = 94.05 -> 95 + 0.05 = 95.05; p99 at rank 98.01 -> past 99: inf.
    # Percentiles are read from the histogram: within its relative error; mean and max exact.
    assert hist_stat(h, "p95", 1) == pytest.approx(95.05, rel=RELATIVE_ERROR)
    assert math.isinf(hist_stat(h, "p99", 1)) and math.isinf(hist_stat(h, "max", 1))
    assert hist_stat(h, "p95", 0) == pytest.approx(np.percentile(values, 95), rel=RELATIVE_ERROR)
    assert hist_stat(h, "mean", 5) == pytest.approx(50.0) and hist_stat(h, "max", 0) == 99.0


def test_throughput_never_exceeds_the_bottleneck_while_filling():
    # 200 users with no think time in front of one 10 ms server: at most 100 answers/s.
    d = {
        "name": "fill",
        "run": {"duration_s": 30, "warmup_s": "auto", "replications": 2, "seed": 1},
        "workload": {"mode": "closed", "users": 200, "think_s": {"dist": "exponential", "mean": 0.001}},
        "cache": {"enabled": False},
        "llm": {"enabled": False},
        "retrieval": {"workers": 1, "service_ms": 10},
    }
    x = sim.simulate(d).summary["points"][0]["throughput_per_s"]
    assert 95 < x <= 100.0 + 1e-9


def test_bins_by_hand():
    from sim.engine.records import Bins

    b = Bins(10, 110, n=10)  # bin 0 = [0, 10), then ten bins of 10 s
    b.add(5, 25, 20)  # 1 per second: 5 in [0,10), 10 in [10,20), 5 in [20,30)
    assert b.values[:4] == [5.0, 10.0, 5.0, 0.0]
    assert b.total == 15.0 and b.total_from(0) == 20.0
    assert b.total_from(15) == pytest.approx(5.0 + 5.0)  # half of [10,20) plus [20,30)
    b.add(50, 50, 1)  # an event at t = 50 lands in [50, 60)
    b.add(200, 300, 7)  # past the window: dropped
    assert b.values[5] == 1.0 and b.total == 16.0


def test_auto_warmup_cuts_stage_counters_where_it_cuts_records():
    """Utilisation with warmup auto equals a fixed warm-up at the cut MSER-5 chose."""
    d = {
        "name": "cut",
        "run": {"duration_s": 400, "warmup_s": "auto", "replications": 1, "seed": 6},  # a seed whose cut is > 0
        "workload": {"mode": "open", "rate_per_s": 8.0},
        "cache": {"enabled": False},
        "llm": {"enabled": False},
        "retrieval": {"workers": 1, "service_ms": {"dist": "exponential", "mean": 100}},
    }
    auto = sim.simulate(d).summary["points"][0]
    cut = auto["warmup"]["cut_s"]
    assert cut > 0
    fixed = sim.simulate({**d, "run": {**d["run"], "warmup_s": cut}}).summary["points"][0]
    assert auto["utilization"]["retrieval"] == pytest.approx(fixed["utilization"]["retrieval"], rel=0.01)
    assert auto["utilization"]["retrieval"] == pytest.approx(0.8, abs=0.05)


def test_no_percentile_above_the_maximum_and_hit_rate_counts_arrivals():
    """No p99 printed above the max, and no overloaded point reading "cache hit 100 %" because
    only hits finished."""
    import numpy as np

    import sim

    res = sim.simulate(
        "scenarios/order_support.yaml",
        {
            "retrieval.index": "linear_python",
            "workload.users": 1000,
            "sweep": {},
            "expect": [],
            "run.duration_s": 90,
            "run.warmup_s": 10,
            "run.replications": 2,
        },
        keep_records=True,
    )
    p = res.points[0]
    s = p.summary
    for name, m in s.metrics.items():
        v = m.values
        for st in ("p50", "p90", "p95", "p99"):
            if v[st] is not None and v["max"] is not None:
                assert v[st] <= v["max"] + 1e-9, (name, st)
    finished = np.concatenate([r.records["cache_hit"][r.records["arrival_s"] >= 10] for r in p.replications])
    assert not s.stable
    assert s.cache_hit_rate is not None and s.cache_hit_rate < finished.mean() - 0.05


def test_gpu_load_is_throughput_over_capacity_and_shows_headroom():
    """'gpu busy 100 %' must not read as saturation while estimate says 63 %. The load figure
    is answers/s over what the replicas deliver at a full batch, checked against the estimate."""
    import sim
    from sim.analysis.estimate import estimate

    base = {
        "workload": {"mode": "open", "rate_per_s": 1.0},
        "cache": {"enabled": False},
        "retrieval": {"enabled": False},
        "llm": {"prompt_tokens": 500, "output_tokens": 80, "max_batch": 32},
        "run": {"duration_s": 120, "warmup_s": 20, "replications": 2},
    }
    cap = estimate(sim.load_scenario(base))["replica_capacity"]["requests_per_s"]
    for share in (0.3, 0.7):
        res = sim.simulate({**base, "workload": {"mode": "open", "rate_per_s": share * cap}})
        s = res.points[0].summary
        assert s.gpu["load"] == pytest.approx(s.throughput_per_s / cap, rel=1e-9)
        assert s.gpu["load"] == pytest.approx(share, abs=0.08)


def test_summary_table_carries_gpu_headroom_not_a_busy_share_named_utilisation():
    """In summary.csv and ``result.table()``: the share of time a replica has any request in
    flight is 1.0 from half load on, so a column of it alone would read as saturation where half
    the capacity is free.  The table carries ``gpu_load`` (the headroom the
    terminal shows as "gpu load") and names the other ``gpu_in_use``."""
    import sim

    res = sim.simulate(
        {
            "workload": {"mode": "open", "rate_per_s": 2.0},
            "cache": {"enabled": False},
            "retrieval": {"enabled": False},
            "llm": {"prompt_tokens": 500, "output_tokens": 80, "max_batch": 32},
            "run": {"duration_s": 60, "warmup_s": 10, "replications": 1},
        }
    )
    row = res.table().iloc[0]
    s = res.points[0].summary
    assert "gpu_utilization" not in row.index
    assert row["gpu_load"] == pytest.approx(s.gpu["load"]) and row["gpu_load"] < 0.2
    assert row["gpu_in_use"] == pytest.approx(s.utilization["gpu"])


def test_a_small_latency_and_its_half_width_share_their_decimals():
    """Three significant digits for a value under 10 ms and its half-width to the same
    decimals: 0.2976 ± 0.0089 reads "0.298 ± 0.009" (it read "0.3 ± 0.0089")."""
    from sim.present.tables import _fmt_small

    def cell(v: float, lo: float, hi: float) -> str:
        return _fmt_small({"p95": v, "ci": {"p95": [lo, hi]}}, "p95")

    assert cell(0.2976, 0.2887, 0.3065) == "0.298 ± 0.009"
    assert cell(2.246, 2.236, 2.256) == "2.25 ± 0.01"
    assert cell(9.5, 9.0, 10.0) == "9.50 ± 0.50"
    assert cell(412.0, 394.0, 430.0) == "412 ± 18"  # 10 ms and above: whole milliseconds
    assert _fmt_small({"p95": 0.2976, "ci": {"p95": [None, None]}}, "p95") == "0.298"
