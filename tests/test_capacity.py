"""capsim capacity: bracketing + bisection on the SLA verdict, checked against exact MVA."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sim.cli import app
from sim.errors import ConfigError
from sim.physics.queueing import mva
from sim.sweep import capacity, default_direction

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "tests" / "data" / "rag_small.yaml"
runner = CliRunner()

# Closed network simple enough for exact MVA: no cache, no LLM, one retrieval worker with
# exponential service (100 ms), exponential think (1 s).  Product form holds, so the mean
# response time R(N) of MVA is exact; the SLA is on the mean e2e.
THINK_S, SERVICE_S, THRESHOLD_MS = 1.0, 0.1, 860.0


def mva_scenario(tmp_path: Path) -> Path:
    p = tmp_path / "mva.yaml"
    p.write_text(f"""
name: mva-check
run: {{duration_s: 2000, warmup_s: 100, replications: 4, seed: 5}}
workload: {{mode: closed, users: 10, think_s: {{dist: exponential, mean: {THINK_S}}}}}
cache: {{enabled: false}}
retrieval: {{workers: 1, service_ms: {{dist: exponential, mean: {SERVICE_S * 1000}}}}}
llm: {{enabled: false}}
sla: {{e2e_ms: {{mean: {THRESHOLD_MS}}}}}
""")
    return p


def test_capacity_matches_exact_mva(tmp_path):
    r = mva(40, THINK_S, [SERVICE_S])
    ok = np.flatnonzero(r.response_s_by_n * 1e3 <= THRESHOLD_MS)
    exact = int(r.populations[ok[-1]])  # largest N with R(N) <= threshold
    assert exact == 18  # R(18) = 813 ms, R(19) = 907 ms
    res = runner.invoke(
        app, ["capacity", str(mva_scenario(tmp_path)), "--vary", "workload.users", "--json", "--jobs", "2"]
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["key"] == "workload.users" and doc["direction"] == "max"
    assert abs(doc["capacity"] - exact) <= 1  # within one step of the search grid
    tried = {t["value"]: t for t in doc["tried"]}
    assert tried[doc["capacity"]]["verdict"] == "pass"
    assert tried[doc["capacity"] + 1]["verdict"] != "pass"  # bisection ended on adjacent values
    for t in doc["tried"]:
        assert {"value", "verdict", "verdicts", "p95_e2e_ms", "ci", "throughput_per_s"} <= set(t)
        assert t["verdicts"][0]["metric"] == "e2e_ms" and t["verdicts"][0]["stat"] == "mean"
    # The tried points print one line each in the text form, on stderr with --json.
    assert res.stderr.count("tried workload.users=") == len(doc["tried"])


def test_capacity_smallest_resource(tmp_path):
    """Smallest retrieval.workers meeting the SLA (direction min): exact multi-server MVA."""
    scn = mva_scenario(tmp_path)
    r_by_c = {c: mva(30, THINK_S, [SERVICE_S], servers=[c]).response_s * 1e3 for c in range(1, 6)}
    exact = min(c for c, rt in r_by_c.items() if rt <= 250)
    res = capacity(
        scn, "retrieval.workers", {"workload.users": 30, "sla.e2e_ms.mean": 250, "run.duration_s": 1000}, jobs=2
    )
    assert res.direction == "min" and res.capacity == exact == 3
    assert [t.value for t in res.tried][:1] == [1]  # starts at the scenario's value and grows
    assert all(t.passed == (t.value >= exact) for t in res.tried)


def test_direction_defaults_and_override():
    assert default_direction("workload.users")[0] == "max"
    assert default_direction("workload.rate_per_s")[0] == "max"
    for key in ("llm.replicas", "retrieval.workers", "cache.capacity", "workload.think_s.mean", "llm.max_batch"):
        assert default_direction(key)[0] == "min", key
    assert default_direction("retrieval.ef_search")[0] == "max"


QUICK = ["--set", "run.duration_s=40", "--set", "run.warmup_s=5"]


@pytest.mark.parametrize(
    "args, words",
    [
        (["--vary", "llm.router"], ["--vary llm.router", "not a numeric key"]),
        (["--vary", "llm.gpu"], ["not a numeric key"]),
        (["--vary", "workload.usrs"], ["did you mean 'users'"]),
        (["--vary", "workload.rate_per_s"], ["closed", "workload.users"]),
        (["--vary", "workload.users", "--low", "50", "--high", "10"], ["--low 50 must be below --high 10"]),
        (["--vary", "workload.users", "--low", "0"], ["--low 0", "[1,"]),
        (["--vary", "workload.users", "--direction", "up"], ["--direction", "max or min"]),
        (["--vary", "workload.users", "--set", "sla={}"], ["needs an SLA"]),
    ],
)
def test_capacity_bad_input_exit_2(args, words):
    r = runner.invoke(app, ["capacity", str(SMALL), *args, *QUICK])
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1
    for w in words:
        assert w in r.stderr


def test_capacity_when_nothing_passes_exit_1():
    r = runner.invoke(
        app,
        [
            "capacity",
            str(SMALL),
            "--vary",
            "workload.users",
            "--low",
            "20",
            "--high",
            "40",
            "--set",
            "sla.e2e_ms.p95=50",
            "--json",
            "--replications",
            "4",  # 2 leave the interval wide enough to hold 50 ms: inconclusive, not a failure
            *QUICK,
        ],
    )
    assert r.exit_code == 1
    doc = json.loads(r.stdout)
    assert doc["capacity"] is None and [t["value"] for t in doc["tried"]] == [20]
    assert doc["best"]["value"] == 20
    assert "no value meets the SLA" in r.stderr and "users=20" in r.stderr


def test_capacity_whole_range_passes_reports_the_end():
    res = capacity(
        SMALL,
        "workload.users",
        {"run.duration_s": 40, "run.warmup_s": 5, "sla": {"e2e_ms": {"mean": 60000}}},
        low=5,
        high=20,
        jobs=1,
    )
    assert res.capacity == 20 and "at least 20" in res.note
    assert [t.value for t in res.tried] == [5, 20]


def test_numeric_key_validation_without_running():
    with pytest.raises(ConfigError, match="not a numeric key"):
        capacity(SMALL, "cache.policy")


def test_capacity_band_searches_with_fast_central_and_slow_step_costs(tmp_path):
    r = CliRunner().invoke(
        app,
        [
            "capacity",
            "tests/data/rag_small.yaml",
            "--vary",
            "workload.users",
            "--low",
            "10",
            "--high",
            "400",
            "--step",
            "100",
            "--band",
            "--json",
            "--set",
            "run.duration_s=40",
            "--set",
            "run.warmup_s=5",
        ],
    )
    assert r.exit_code in (0, 1, 3), r.output  # 3: every value tried inconclusive at this length
    doc = json.loads(r.stdout)
    caps = {p: doc["band"][p]["capacity"] for p in ("published-fast", "published", "published-slow")}
    assert doc["capacity"] == caps["published"]
    known = [c for c in caps.values() if c is not None]
    assert known == sorted(known, reverse=True)  # a slower engine never serves more shoppers


def test_load_search_without_bounds_starts_near_the_estimated_saturation():
    from sim.analysis.estimate import estimate
    from sim.spec.scenario import load_scenario

    ov = {"run.duration_s": 40, "run.warmup_s": 5, "run.replications": 2}
    sat = estimate(load_scenario("tests/data/rag_small.yaml", ov))["saturation"]["users"]
    tried = []
    capacity("tests/data/rag_small.yaml", "workload.users", ov, step=10_000, max_steps=1, on_try=tried.append)
    assert tried[0].value == round(0.9 * sat)


def test_capacity_by_engine_searches_with_each_engine_preset():
    from sim.run.capacity import capacity_band

    ov = {"run.duration_s": 60, "run.warmup_s": 10, "run.replications": 3, "llm.model": "llama-3-8b"}
    ov |= {"workload.users": 40, "llm.max_batch": 4}
    res = capacity_band(SMALL, "llm.replicas", ov, by="engine", low=1, high=6)
    assert list(res) == ["vllm", "trtllm", "sglang"]
    p95 = {p: r.tried[0].to_dict()["p95_e2e_ms"] for p, r in res.items()}
    assert len({round(v) for v in p95.values()}) == 3  # each preset's scheduler and step costs tell
    with pytest.raises(ConfigError, match="--engines: it sets llm.engine itself"):
        capacity_band(SMALL, "workload.users", {"llm.engine": "vllm"}, by="engine")


def test_the_engine_answer_is_the_one_that_asks_most():
    from sim.run.capacity import CapacityResult, conservative

    def res(direction, *caps):
        return {e: CapacityResult("k", direction, c) for e, c in zip(("vllm", "trtllm", "sglang"), caps)}

    assert conservative(res("min", 1, 2, 1)) == "trtllm"  # the most replicas
    assert conservative(res("max", 900, 700, 800)) == "trtllm"  # the fewest shoppers held
    assert conservative(res("min", 1, None, 3)) == "trtllm"  # no answer asks most of all


def test_band_and_engines_together_is_a_one_line_error():
    r = CliRunner().invoke(
        app, ["capacity", "tests/data/rag_small.yaml", "--vary", "workload.users", "--band", "--engines"]
    )
    assert r.exit_code == 2 and "--band and --engines: choose one" in r.output
