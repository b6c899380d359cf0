"""Checks the engine must pass: simulated queues against exact queueing theory.

Each scenario here is one an exact formula describes (open Poisson arrivals
into exponential servers: M/M/c and Erlang C; closed users in front of one
exponential server: MVA), run through capsim end to end.  The simulated
statistic must contain the formula's value in its (99 %) confidence interval
and sit within a few per cent of it.  Seeds are fixed, so nothing is flaky;
the bands are a few standard errors wide, so a different but correct random
stream would pass too.  Short forms run by default; ``CAPSIM_LONG=1`` runs
the full forms with tighter bands (see ``tests/conftest.py``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import sim
from sim.analysis.summary import summarize_point
from sim.cli import app
from sim.physics import queueing as analytic
from sim.run.executors import LocalExecutor
from sim.spec.scenario import expand


def open_mmc(
    c: int,
    rho: float,
    mean_ms: float,
    duration_s: float,
    warmup_s: float | str,
    replications: int,
    seed: int = 1,
    confidence: float = 0.99,
) -> dict:
    lam = rho * c / (mean_ms / 1e3)
    return {
        "name": f"mm{c}",
        "run": {
            "duration_s": duration_s,
            "warmup_s": warmup_s,
            "replications": replications,
            "seed": seed,
            "confidence": confidence,
        },
        "workload": {"mode": "open", "rate_per_s": lam},
        "cache": {"enabled": False},
        "llm": {"enabled": False},
        "retrieval": {"service_ms": {"dist": "exponential", "mean": mean_ms}, "workers": c},
    }


def closed_one_server(
    users: int,
    think_s: float,
    mean_ms: float,
    duration_s: float,
    warmup_s: float | str,
    replications: int,
    seed: int = 1,
    confidence: float = 0.99,
) -> dict:
    return {
        "name": "closed",
        "run": {
            "duration_s": duration_s,
            "warmup_s": warmup_s,
            "replications": replications,
            "seed": seed,
            "confidence": confidence,
        },
        "workload": {"mode": "closed", "users": users, "think_s": {"dist": "exponential", "mean": think_s}},
        "cache": {"enabled": False},
        "llm": {"enabled": False},
        "retrieval": {"service_ms": {"dist": "exponential", "mean": mean_ms}, "workers": 1},
    }


def rows(summary: dict) -> dict[str, dict]:
    return {r["quantity"].split(" (")[0]: r for r in summary["analytic"]["compare"]}


def agrees(row: dict, rel_tol: float) -> None:
    lo, hi = row["ci"]
    assert lo <= row["analytic"] <= hi, row
    assert abs(row["rel_error"]) <= rel_tol, row


@pytest.mark.slow
def test_mm1_wait_matches_erlang_c(size):
    # rho = 0.5: W_q = rho / (mu - lambda) = 100 ms, P95 of W_q = ln(C / 0.05) / (mu - lambda) = 460.5 ms.
    reps, dur, tol = size((8, 3000, 0.06), (16, 20000, 0.025))
    res = sim.simulate(open_mmc(1, 0.5, 100, dur, 100, reps), jobs=2)
    s = res.points[0].summary
    a = s["analytic"]
    assert a["model"] == "M/M/1"
    exact = analytic.mmc(1, 5.0, 10.0)
    assert a["mean_wait_ms"] == pytest.approx(100.0)
    assert a["p95_wait_ms"] == pytest.approx(exact.wait_quantile_s(0.95) * 1e3)
    r = rows(s)
    agrees(r["mean wait"], tol)
    agrees(r["p95 wait"], tol)
    agrees(r["P(wait)"], tol / 2)
    agrees(r["mean response"], tol)
    agrees(r["throughput_per_s"], 0.01)
    assert s["utilization"]["retrieval"] == pytest.approx(0.5, rel=0.02)


@pytest.mark.slow
def test_mmc_ten_servers_at_rho_0_9_matches_erlang_c(size):
    # c = 10, rho = 0.9 (a = 9 Erlangs): C(10, 9) = 0.6687, W_q = C / (c mu - lambda) = 66.9 ms.
    # Waits at rho = 0.9 are strongly autocorrelated: the short form's interval is ~±20 %,
    # so its band is wide; the long form runs ~15x longer.
    reps, dur, tol = size((8, 300, 0.15), (16, 3000, 0.05))
    res = sim.simulate(open_mmc(10, 0.9, 100, dur, 20, reps), jobs=2)
    s = res.points[0].summary
    a = s["analytic"]
    assert a["model"] == "M/M/10" and a["p_wait"] == pytest.approx(analytic.erlang_c(10, 9.0))
    r = rows(s)
    agrees(r["mean wait"], tol)
    agrees(r["p95 wait"], tol)
    agrees(r["P(wait)"], tol / 3)
    agrees(r["throughput_per_s"], 0.01)


@pytest.mark.slow
def test_closed_users_match_exact_mva(size):
    # N = 10 users, Z = 1 s exponential, one exponential server of mean 100 ms (N* = 11).
    reps, dur, tol_x, tol_r = size((8, 2000, 0.02, 0.05), (16, 10000, 0.01, 0.02))
    res = sim.simulate(closed_one_server(10, 1.0, 100, dur, 100, reps), jobs=2)
    s = res.points[0].summary
    a = s["analytic"]
    exact = analytic.mva(10, 1.0, [0.1])
    assert a["model"] == "MVA"
    assert a["throughput_per_s"] == pytest.approx(exact.throughput_per_s)
    assert a["mean_response_ms"] == pytest.approx(exact.response_s * 1e3)
    r = rows(s)
    agrees(r["throughput_per_s"], tol_x)
    agrees(r["mean response"], tol_r)
    assert s["utilization"]["retrieval"] == pytest.approx(exact.utilization[0], rel=0.02)


@pytest.mark.slow
def test_nominal_95_percent_interval_covers_mm1_mean_wait(size):
    """Coverage: many small independent experiments, each a 5-replication t interval.

    One run makes ``K * 5`` replications (independent streams by construction);
    consecutive groups of 5 form the experiments, each summarised by the same
    code a real run uses.  The fraction of intervals holding the true
    W_q = 100 ms must be close to 0.95 (short form: K = 100, band 0.87-0.99,
    over 3 binomial standard deviations; long form K = 400, band 0.915-0.98).
    """
    k, lo, hi = size((100, 0.87, 0.99), (400, 0.915, 0.98))
    per = 5
    pt = expand(open_mmc(1, 0.5, 100, 100, 10, per, seed=2024, confidence=0.95))[0]
    reps = LocalExecutor(2).map([(pt.scenario, r) for r in range(k * per)])
    true_ms = 100.0
    covered = 0
    for e in range(k):
        s = summarize_point(pt.scenario, reps[e * per : (e + 1) * per])
        c_lo, c_hi = s["metrics"]["retrieval_wait_ms"]["ci"]["mean"]
        covered += c_lo <= true_ms <= c_hi
    assert lo <= covered / k <= hi, covered / k


def test_mser5_finds_the_transient_of_a_run_started_empty_at_high_load():
    # 200 users (Z = 1 s) in front of one 10 ms server: N* = 101, so it saturates.
    # Started empty, the queue fills within a few seconds and the response time rises
    # from ~10 ms to the MVA value N*D - Z = 1,000 ms.
    d = closed_one_server(200, 1.0, 10, 40, "auto", 5, seed=3, confidence=0.95)
    auto = sim.simulate(d, jobs=2, keep_records=True).points[0]
    none = sim.simulate(d, {"run.warmup_s": 0}, jobs=2).points[0]
    w = auto.summary["warmup"]
    assert w["method"] == "mser5"
    cuts = w["cut_s_by_replication"]
    assert all(c > 0.5 for c in cuts), cuts
    assert 0.5 < float(np.median(cuts)) < 10, cuts
    assert auto.summary["warmup_s"] == cuts or auto.summary["warmup_s"] == cuts[0]
    before, after = [], []
    for rep, cut in zip(auto.replications, cuts):
        t, y = rep.records["arrival_s"], rep.records["e2e_ms"]
        before.append(y[t < cut])
        after.append(y[(t >= cut) & (t < 40)])
    assert np.concatenate(before).mean() < 0.8 * np.concatenate(after).mean()
    assert auto.summary["stability"]["stable"]
    exact_ms = analytic.mva(200, 1.0, [0.01]).response_s * 1e3
    assert exact_ms == pytest.approx(1000, rel=1e-3)
    cut_mean = auto.summary["metrics"]["e2e_ms"]["mean"]
    uncut_mean = none.summary["metrics"]["e2e_ms"]["mean"]
    assert uncut_mean < cut_mean  # the empty start biases the uncut estimate low
    assert abs(cut_mean - exact_ms) < abs(uncut_mean - exact_ms)


def test_same_seed_any_number_of_processes_gives_identical_summaries(tmp_path):
    d = open_mmc(2, 0.7, 50, 200, "auto", 3, seed=5)
    d["sla"] = {"retrieval_ms": {"p95": 400}}
    d["sweep"] = {"retrieval.workers": [2, 3]}
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(d))
    runner = CliRunner()
    one = runner.invoke(app, ["run", str(p), "--json", "--jobs", "1"])
    two = runner.invoke(app, ["run", str(p), "--json", "--jobs", "2"])
    assert one.exit_code in (0, 1, 3), one.output
    assert one.exit_code == two.exit_code
    assert json.loads(one.stdout) == json.loads(two.stdout)
    assert one.stdout == two.stdout
