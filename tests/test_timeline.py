"""Load that changes over time: profiles, trace replay, results per window, windowed SLAs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

import sim
from sim.analysis.timeline import censored_stat, recovery, window_verdict
from sim.engine.load_profile import Presence, level, peak
from sim.errors import ConfigError
from sim.spec.schema import ScheduleProfile, SinusoidProfile, validate_scenario
from sim.spec.trace import TraceError, load_trace
from tests.helpers import invoke

SPIKE = ScheduleProfile(
    kind="schedule",
    steps=[{"at_s": 0, "value": 50}, {"at_s": 120, "value": 1000, "ramp_s": 120}, {"at_s": 540, "value": 50}],  # type: ignore[list-item]
)


def test_schedule_levels_by_hand() -> None:
    got = level(SPIKE, [0, 119.9, 120, 180, 240, 539.9, 540.1, 10_000])
    assert got.tolist() == pytest.approx([50, 50, 50, 525, 1000, 1000, 50, 50])
    assert peak(SPIKE, 900) == 1000 and peak(SPIKE, 180) == pytest.approx(525)


def test_sinusoid_by_hand() -> None:
    s = SinusoidProfile(kind="sinusoid", mean=10, amplitude=4, period_s=100, peak_at_s=25)
    assert level(s, [25, 75, 50]).tolist() == pytest.approx([14, 6, 10])
    assert peak(s, 1000) == 14


def test_presence_brings_a_user_back_when_the_ramp_reaches_them() -> None:
    pr = Presence(SPIKE, 900)
    assert pr.max_users == 1000
    assert pr.present(10, 0) and not pr.present(500, 0)
    # user 500 is present once the level rounds above 500: 120 + 120 * (500.5 - 50) / 950 = 176.9 s
    assert pr.next_arrival(500, 0) == pytest.approx(120 + 120 * 450.5 / 950, abs=0.05)
    assert pr.next_arrival(500, 600) is None


NO_LLM = {
    "run": {"duration_s": 200, "warmup_s": 0, "replications": 2, "seed": 11},
    "cache": {"enabled": False},
    "retrieval": {"service_ms": 10, "workers": 4},
    "llm": {"enabled": False},
}


def test_open_rate_profile_gives_the_integral_of_the_rate() -> None:
    # rate 2/s for 100 s then 10/s: 1,200 arrivals expected per replication (Poisson: sd ~35)
    scn = {
        **NO_LLM,
        "workload": {
            "mode": "open",
            "profile": {"kind": "schedule", "steps": [{"at_s": 0, "value": 2}, {"at_s": 100, "value": 10}]},
        },
        "timeline": {"window_s": 50},
    }
    p = sim.simulate(scn, keep_records=True).points[0]
    recs = p.records
    for _, r in recs.groupby("replication"):
        a = r["arrival_s"].to_numpy()
        assert abs((a < 100).sum() - 200) < 5 * math.sqrt(200)
        assert abs((a >= 100).sum() - 1000) < 5 * math.sqrt(1000)
    ws = p.summary["timeline"]["windows"]
    assert ws[0]["requests"] == pytest.approx(100, abs=30)
    assert ws[-1]["requests"] == pytest.approx(500, abs=70)
    assert p.summary["stability"]["trend"] == {}  # no steady-state trend test on a varying load


def test_open_sinusoid_windows_hold_the_integral_of_the_rate() -> None:
    # 5 + 4 cos(2 pi (t - 50) / 200): per 50 s window 250 +- 400/pi * 1 = 377.3, 377.3, 122.7, 122.7
    scn = {
        **NO_LLM,
        "workload": {
            "mode": "open",
            "profile": {"kind": "sinusoid", "mean": 5, "amplitude": 4, "period_s": 200, "peak_at_s": 50},
        },
        "timeline": {"window_s": 50},
    }
    ws = sim.simulate(scn).points[0].summary["timeline"]["windows"]
    expect = [250 + 400 / math.pi, 250 + 400 / math.pi, 250 - 400 / math.pi, 250 - 400 / math.pi]
    for w, e in zip(ws, expect, strict=True):
        assert w["requests"] == pytest.approx(e, abs=5 * math.sqrt(e / 2))


def test_closed_users_follow_the_schedule() -> None:
    # think exactly 1 s, 10 ms service: each present user asks about once a second
    scn = {
        **NO_LLM,
        "workload": {
            "mode": "closed",
            "think_s": 1.0,
            "profile": {
                "kind": "schedule",
                "steps": [{"at_s": 0, "value": 5}, {"at_s": 100, "value": 20}, {"at_s": 160, "value": 5}],
            },
        },
    }
    p = sim.simulate(scn, keep_records=True).points[0]
    r = p.records[p.records["replication"] == 0]
    a = r["arrival_s"].to_numpy()
    assert r[a < 100]["user"].max() == 4 and r[(a > 102) & (a < 160)]["user"].max() == 19
    # after the drop the users 5..19 leave when their think time ends (at most 1 s later)
    assert r[a > 161.1]["user"].max() == 4
    assert ((a >= 110) & (a < 160)).sum() == pytest.approx(20 * 50 / 1.01, rel=0.03)


def test_auto_warmup_is_refused_for_a_varying_load() -> None:
    scn = {
        **NO_LLM,
        "run": {**NO_LLM["run"], "warmup_s": "auto"},
        "workload": {"mode": "open", "profile": SPIKE.model_dump()},
    }
    with pytest.raises(ConfigError, match="run.warmup_s: auto .* steady state"):
        validate_scenario(scn)


# --------------------------------------------------------------------------- traces


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_azure_layout(tmp_path: Path) -> None:
    p = write(
        tmp_path / "AzureLLMInferenceTrace_conv.csv",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:50.9951690,396,109\n"
        "2023-11-16 18:15:51.0000000,879,20\n",
    )
    t = load_trace(p)
    assert t.format == "azure"
    assert t.arrival_s.tolist() == pytest.approx([0.0, 4.314579, 4.31941], abs=1e-6)
    assert t.prompt_tokens.tolist() == [374, 396, 879] and t.output_tokens.tolist() == [44, 109, 20]  # type: ignore[union-attr]


def test_burstgpt_layout_and_time_scale(tmp_path: Path) -> None:
    p = write(
        tmp_path / "BurstGPT_1.csv",
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
        "5,ChatGPT,472,18,490,Conversation log\n"
        "45,ChatGPT,1087,251,1338,Conversation log\n"
        "118,GPT-4,417,0,417,API log\n",
    )
    t = load_trace(p, time_scale=0.5)
    assert t.format == "burstgpt"
    assert t.arrival_s.tolist() == [0.0, 20.0, 56.5]
    assert t.output_tokens.tolist() == [18, 251, 0]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "text,message",
    [
        ("Model,Request tokens\nx,1\n", r"t.csv:1: no timestamp column"),
        ("Timestamp,Model,Request tokens,Total tokens\n1,a,2,3\n", r"t.csv:1: missing column 'Response tokens'"),
        ("arrival_s,prompt_tokens\n1,10\n0.5,10\n", r"t.csv:3: column 'arrival_s': '0.5' is earlier .* \(unsorted\)"),
        ("arrival_s\n-1\n", r"t.csv:2: column 'arrival_s': '-1' must be a finite time >= 0"),
        ("arrival_s,prompt_tokens\n1,ten\n", r"t.csv:2: column 'prompt_tokens': 'ten' is not a number"),
        ("arrival_s\nsoon\n", r"t.csv:2: column 'arrival_s': 'soon' is not a timestamp"),
        ("arrival_s,output_tokens\n1,2\n3\n", r"t.csv:3: column 'output_tokens': missing value"),
        # Azure stamps given as seconds rather than dates must not be negative either
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n-5,10,4\n", r"t.csv:2: column 'TIMESTAMP': '-5' must be .* >= 0"),
        (
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,10,4\n2023-11-16 18:15:45,1,1\n",
            r"t.csv:3: column 'TIMESTAMP': .* earlier .* \(unsorted\)",
        ),
        (
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-13-45 18:15:46,10,4\n",
            r"t.csv:2: column 'TIMESTAMP': .* is not a timestamp",
        ),
        (
            "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n5,GPT-4,1.5,1,2,Conversation log\n",
            r"t.csv:2: column 'Request tokens': '1.5' must be a whole number",
        ),
    ],
)
def test_malformed_traces_name_file_line_and_column(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(TraceError, match=message):
        load_trace(write(tmp_path / "t.csv", text))


def test_trace_replay_through_the_model_and_the_cli(tmp_path: Path) -> None:
    times = np.round(np.cumsum(np.full(300, 0.5)), 3)
    lines = "".join(f"{t},{100 + i},{5 + i % 7},{i % 3}\n" for i, t in enumerate(times))
    write(tmp_path / "trace.csv", "arrival_s,prompt_tokens,output_tokens,query_key\n" + lines)
    scn = {
        "run": {"duration_s": 100, "warmup_s": 0, "replications": 1},
        "workload": {"mode": "trace", "trace": {"path": "trace.csv"}},
        "retrieval": {"service_ms": 5},
        "llm": {"enabled": False},
    }

    (tmp_path / "s.yaml").write_text(yaml.safe_dump(scn))
    r = sim.simulate(tmp_path / "s.yaml", keep_records=True).points[0].records
    assert r["arrival_s"].tolist() == pytest.approx((times[times < 100 + 0.5] - 0.5).tolist())
    assert r["prompt_tokens"].tolist()[:3] == [100, 101, 102]
    assert set(r["query_key"]) == {0, 1, 2}
    # a malformed trace: one line, exit 2, nothing written
    write(tmp_path / "trace.csv", "arrival_s,prompt_tokens\n1,10\nx,3\n")
    res = invoke("run", tmp_path / "s.yaml", "--out", tmp_path / "out")
    assert res.exit_code == 2
    assert res.stderr.strip() == "error: trace.csv:3: column 'arrival_s': 'x' is not a timestamp"
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- windows


def test_censored_stat_by_hand() -> None:
    v = np.arange(1.0, 11.0)  # 1..10
    assert censored_stat(v, "p50", 0) == pytest.approx(5.5)
    # 10 values + 10 unfinished: rank 0.5 * 19 = 9.5 > 9 -> infinite
    assert math.isinf(censored_stat(v, "p50", 10))
    # + 2 unfinished: rank 0.5 * 11 = 5.5 -> percentile 5.5 / 9 of the finished values
    assert censored_stat(v, "p50", 2) == pytest.approx(np.percentile(v, 100 * 5.5 / 9))


def test_window_verdicts_and_recovery_by_hand() -> None:
    assert window_verdict(np.array([700.0, 720.0]), 650.0, 790.0, 800) == "pass"
    assert window_verdict(np.array([900.0, 950.0]), None, None, 800) == "fail"
    assert window_verdict(np.array([700.0, 950.0]), None, None, 800) == "inconclusive"
    edges = np.arange(0, 70, 10.0)
    per = np.array([[100, 900, 900, 900, 100, 100], [100, 900, 900, 100, 100, 100]], dtype=float)
    r = recovery(per, edges, 800, after_s=30.0, conf=0.95)
    assert [b["recovered_at_s"] for b in r["by_replication"]] == [40.0, 30.0]
    assert r["tail_s"] == pytest.approx(5.0)  # (10 + 0) / 2
    assert r["time_over_s"] == pytest.approx(25.0)
    stuck = recovery(np.array([[100, 900.0]]), np.array([0, 10, 20.0]), 800, 5.0, 0.95)
    assert not stuck["recovered"] and stuck["tail_s"] is None


def spike_scenario(workers: int) -> dict:
    """A retrieval-only shop under a spike: 10 -> 60 users (think 1 s, search 50 ms)."""
    return {
        "run": {"duration_s": 240, "warmup_s": 0, "replications": 3, "seed": 5, "drain_s": 60},
        "workload": {
            "mode": "closed",
            "think_s": {"dist": "exponential", "mean": 1.0},
            "profile": {
                "kind": "schedule",
                "steps": [
                    {"at_s": 0, "value": 10},
                    {"at_s": 60, "value": 60, "ramp_s": 30},
                    {"at_s": 150, "value": 10},
                ],
            },
        },
        "cache": {"enabled": False},
        "retrieval": {"service_ms": {"dist": "exponential", "mean": 50}, "workers": workers},
        "llm": {"enabled": False},
        "timeline": {"window_s": 30, "sla": {"e2e_ms": {"p95": 300}}},
    }


def test_windowed_sla_verdicts_recovery_and_exit_codes() -> None:
    # 60 users at ~1/s each need 3 searches of 50 ms per second: 2 workers drown, 4 hold.
    small = sim.simulate(spike_scenario(2))
    big = sim.simulate(spike_scenario(5))
    vs, vb = small.points[0].summary, big.points[0].summary
    ws = [v for v in vs["sla"] if v.get("window_s") == 30.0]
    assert ws and ws[0]["verdict"] == "fail" and "windows starting at" in ws[0]["hint"]
    assert [v["verdict"] for v in vb["sla"]] == ["pass"]
    assert small.exit_code == 1 and big.exit_code == 0
    rec = vs["timeline"]["recovery"]
    assert rec["spike_end_s"] == 150.0 and rec["recovered"] and rec["time_over_s"] >= 30 and rec["tail_s"] >= 0
    assert vb["timeline"]["recovery"]["time_over_s"] == 0
    # queues and utilisation per window: the spike shows in both
    w = vs["timeline"]["windows"]
    assert max(x["queue"]["retrieval"] for x in w) > 5 > w[0]["queue"]["retrieval"]
    assert w[0]["load_level"] == 10 and max(x["load_level"] for x in w) == 60
    assert max(x["utilization"]["retrieval"] for x in w) > 0.95


@pytest.mark.slow
def test_flash_sale_answer(size) -> None:
    """README "Load that changes over time": 2 replicas hold P95 <= 800 ms in every minute;
    with 1 the tail runs past the end of the sale.  Long form only (the scenario as written,
    about 3 minutes on two cores); the short form of these checks is
    test_windowed_sla_verdicts_recovery_and_exit_codes."""
    if not size.long:
        pytest.skip("long form only (CAPSIM_LONG=1): 15 runs of 15 simulated minutes at up to 1,000 shoppers")
    res = sim.simulate(Path(__file__).parent.parent / "scenarios" / "flash_sale.yaml", jobs=2)
    fewer, enough = res.point(**{"llm.replicas": 1}).summary, res.point(**{"llm.replicas": 2}).summary
    assert fewer.verdict == "fail" and enough.verdict == "pass"
    assert fewer["timeline"]["recovery"]["tail_s"] >= 30
    assert enough["timeline"]["recovery"]["time_over_s"] == 0


def test_report_draws_p95_over_time_with_the_sla_line(tmp_path: Path) -> None:
    scn = spike_scenario(2)
    scn["run"]["replications"] = 2
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(scn))
    assert invoke("run", tmp_path / "s.yaml", "--out", tmp_path / "out", "--jobs", "1").exit_code == 1
    r = invoke("report", tmp_path / "out")
    assert r.exit_code == 0, r.output
    png = tmp_path / "out" / "report" / "p95_over_time.png"
    assert png.stat().st_size > 10_000
    page = (tmp_path / "out" / "report.html").read_text()
    assert "p95_over_time" in page
    # the over-time answer (worst window, time over the SLA, the tail) is in the report, as on the terminal
    assert "<b>over time</b>: at the scenario: worst 30 s window P95" in page and "ms for " in page
    assert "dropped (run.warmup_s" not in page  # warmup_s 0: nothing was cut, nothing to say
    assert page.split("<figure><img alt='")[1].startswith("p95_over_time'")  # the figure that answers comes first
