"""The HTML report answers the question: headline, notes, a table that reads, plots that can be told apart."""

from __future__ import annotations

import html
import re
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from sim.cli import app
from sim.present.figures import KV_FLAT, knee_index, latency_cdf, p95_vs_key, tail_breakdown, timeseries
from sim.present.headline import headline, report_notes
from sim.present.report import summary_rows

matplotlib.use("Agg")
runner = CliRunner()

# An open M/M/1 retrieval service with no LLM: 30 requests/s on one 50 ms worker has no steady state.
OPEN = """\
name: open-small
run: {duration_s: 30, warmup_s: 5, replications: 2, seed: 3}
workload:
  mode: open
  rate_per_s: 10
  queries: {distinct: 2000, hot_fraction: 0.3, hot_keys: 50}
cache: {enabled: false}
retrieval:
  workers: 1
  service_ms: {dist: exponential, mean: 50}
llm: {enabled: false}
sla:
  e2e_ms: {p95: 300}
"""


def _point(params, verdict, stable=True, p95=200.0, cost=0.05, note="", hint=None):
    sla = [] if verdict is None else [{"metric": "e2e_ms", "stat": "p95", "threshold": 800.0, "value": p95}]
    for v in sla:
        v.update(verdict=verdict, ci=[None, None] if p95 is None else [p95 - 10, p95 + 10], hint=hint)
    return {
        "params": params,
        "metrics": {
            "e2e_ms": {
                "p50": 150.0,
                "p95": p95,
                "p99": None if p95 is None else p95 * 1.2,
                "ci": {"p95": [None, None] if p95 is None else [p95 - 10, p95 + 10]},
            }
        },
        "throughput_per_s": 10.0,
        "stability": {"stable": stable, "kind": None if stable else "overloaded", "note": note},
        "cost": None if cost is None else {"per_1000_answers": cost},
        "sla": sla,
        "warmup": {"method": "fixed", "cut_s": 30.0, "dropped_fraction": 0.1, "cut_s_by_replication": [30.0]},
        "retrieval": {"source": "retrieval_calibration.json", "recall_at_k": 0.98, "extrapolated": False},
    }


def flagship_like():
    """The issue's sweep: three indexes x 50/500/1000 shoppers, linear_python overloaded from 500."""
    busy = "retrieval busy 100.0% of the time: queues grow without bound, so ..."
    out = []
    for index in ("linear_python", "linear_numpy", "hnsw"):
        for users in (50, 500, 1000):
            py = index == "linear_python"
            out.append(
                _point(
                    {"retrieval.index": index, "workload.users": users},
                    "fail" if py or users == 1000 else "pass",
                    stable=not (py and users > 50),
                    p95=None if py and users == 1000 else 1500.0,
                    cost=None,
                    note=busy if py and users > 50 else "",
                )
            )
    return out


def test_headline_answers_per_load_and_per_configuration():
    lines = headline(flagship_like(), "workload.users")
    assert lines == [
        "At users=1,000: no configuration passes: linear_python fails (no steady state); linear_numpy and hnsw fail",
        "At users=500: pass with linear_numpy and hnsw; linear_python fails (no steady state)",
        "index=linear_python: passes at none of the swept users values (fails at users=50; no steady state at users=500, 1,000)",
        "index=linear_numpy: passes up to users=500 (fails at users=1,000)",
        "index=hnsw: passes up to users=500 (fails at users=1,000)",
    ]


def test_headline_with_one_key_and_without_an_sla():
    pts = [_point({"workload.users": u}, v) for u, v in ((20, "pass"), (40, "pass"), (80, "inconclusive"))]
    assert headline(pts, "workload.users") == ["Passes up to users=40 (inconclusive at users=80)"]
    bare = [_point({"workload.users": 20}, None), _point({"workload.users": 80}, None, stable=False)]
    assert headline(bare, "workload.users") == [
        "No SLA is set, so there are no verdicts.",
        "No steady state at users=80: the system cannot keep up there.",
    ]


def test_headline_names_the_fewest_that_pass_when_more_helps():
    # a replicas sweep (the flash sale): 2 fails, 3 and 4 pass -> the answer is "from 3 up", not "up to 4"
    pts = [_point({"llm.replicas": r}, v) for r, v in ((2, "fail"), (3, "pass"), (4, "pass"))]
    assert headline(pts, "llm.replicas") == ["Passes from replicas=3 up (fails at replicas=2)"]
    # passing on both sides of a failure: no direction to claim
    pts = [_point({"llm.replicas": r}, v) for r, v in ((2, "pass"), (3, "fail"), (4, "pass"))]
    assert headline(pts, "llm.replicas") == ["Passes up to replicas=4 (fails at replicas=3)"]


def test_notes_carry_the_terminals_notes():
    pts = flagship_like()
    pts[0]["sla"][0].update(verdict="inconclusive", hint="the interval straddles the threshold")
    kinds = report_notes(pts)
    text = " | ".join(f"{k}: {t}" for k, t in kinds)
    assert "unstable: at index=linear_python, users=500: retrieval busy" in text
    assert "search times and recall@k measured in retrieval_calibration.json" in text
    assert "warm-up: requests that arrived before 30 s dropped" in text
    assert "inconclusive: e2e_ms p95 at index=linear_python, users=50: the interval straddles" in text


def test_table_verdict_first_words_not_booleans_dashes_not_none():
    pts = flagship_like()
    pts[0]["cost"] = {"per_1000_answers": 0.0441}  # one point with a cost keeps the column
    head, rows = summary_rows(pts)
    assert head[:2] == ["verdict", "stability"] and len(head) <= 10
    cells = [t for r in rows for _, t in r]
    assert not {"None", "True", "False", "nan"} & {w for c in cells for w in re.split(r"[\s()]+", c)}
    assert rows[0][-1][1] == "$0.044" and rows[1][-1][1] == "-"
    assert rows[0][1][1] == "stable"
    assert rows[1][1][1] == "unstable (retrieval busy 100.0% of the time)"
    assert rows[2][4][1] == "∞"  # a censored P95 (more unfinished than the percentile allows)
    assert rows[1][0][1].startswith("fail\ne2e p95 1,500 (SLA ≤ 800)")
    no_cost, _ = summary_rows(flagship_like())
    assert "$ / 1000 answers" not in no_cost  # no cost anywhere: no column of dashes


@pytest.fixture(scope="module")
def unstable_folder(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("open")
    (tmp / "open.yaml").write_text(OPEN)
    r = runner.invoke(
        app, ["sweep", str(tmp / "open.yaml"), "--grid", "workload.rate_per_s=5,10,30", "--out", str(tmp / "out")]
    )
    assert r.exit_code in (1, 3), r.output
    rep = runner.invoke(app, ["report", str(tmp / "out")])
    assert rep.exit_code == 0, rep.output
    return tmp / "out"


def test_report_html_opens_with_the_answer(unstable_folder):
    doc = (unstable_folder / "report.html").read_text()
    answer = doc.index('class="answer"')
    assert answer < doc.index("<table>") < doc.index("<img")
    assert "rate_per_s=30" in html.unescape(doc[answer : doc.index("<table>")])
    assert re.search(r"<thead><tr><th>verdict</th><th>stability</th>", doc)
    assert "unstable (retrieval offered load 1.50 ≥ 1" in html.unescape(doc)
    assert not re.search(r">(None|True|False|nan)<", doc)
    assert "max-width: 1340px" in doc  # fits a 1,400 px laptop window
    notes = html.unescape(doc[doc.index('class="notes"') : doc.index("<table>")])
    assert "warm-up" in notes and "unstable" in notes and "inconclusive" in notes
    # the time series shows the most loaded point that still has a steady state
    assert "of point 1 (rate_per_s=10): the most loaded point that still reaches a steady state" in html.unescape(doc)


def _records(n_points=3, slow_point=2):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n_points):
        scale = 1000.0 if i == slow_point else 1.0
        for _ in range(400):
            parts = rng.exponential([1, 5 * scale, 20, 5, 10, 100])
            rows.append([i, *parts, parts.sum()])
    cols = ["cache_ms", "retrieval_wait_ms", "retrieval_service_ms", "llm_wait_ms", "prefill_ms", "decode_ms"]
    return pd.DataFrame(rows, columns=["point", *cols, "e2e_ms"])


def test_tail_breakdown_keeps_stable_bars_readable():
    recs = _records()
    fig = tail_breakdown(recs, ["a", "b", "c"], unstable=[False, False, True])
    ax = fig.axes[0]
    totals = {}
    for bar in ax.patches:
        y = round(bar.get_y() + bar.get_height() / 2)
        totals[y] = max(totals.get(y, 0.0), bar.get_x() + bar.get_width())
    assert ax.get_xlim()[1] < totals[2] / 10  # scaled to the stable bars, not the unstable one
    assert ax.get_xlim()[1] >= max(totals[0], totals[1])
    assert any(b.get_hatch() == "//" for b in ax.patches)
    assert [t.get_text() for t in ax.get_yticklabels()][2] == "c (unstable)"
    assert any(t.get_text().endswith("ms →") for t in ax.texts)
    plain = tail_breakdown(recs, ["a", "b", "c"]).axes[0]
    assert plain.get_xlim()[1] >= totals[2]  # without the flag nothing is cut


def _table():
    rows = []
    for j, hue in enumerate(("a", "b")):
        for x, y in ((10, 100), (20, 110), (40, 130), (80, 900)):
            unstable = hue == "b" and x == 80
            rows.append(
                {
                    "point": len(rows),
                    "workload.users": x,
                    "retrieval.index": hue,
                    "e2e_p95_ms": np.nan if unstable else y * (1 + j),
                    "e2e_p95_ci_low_ms": y * (1 + j) - 5,
                    "e2e_p95_ci_high_ms": y * (1 + j) + 5,
                    "stable": not unstable,
                }
            )
    return pd.DataFrame(rows)


def test_p95_lines_differ_and_unstable_points_get_an_x():
    ax = p95_vs_key(_table(), "workload.users", sla=500).axes[0]
    data = [ln for ln in ax.lines if len(ln.get_xdata()) == 4]
    assert len(data) == 2
    assert data[0].get_marker() != data[1].get_marker() and data[0].get_linestyle() != data[1].get_linestyle()
    crosses = [c for c in ax.collections if len(c.get_offsets()) and c.get_label().startswith("no steady state")]
    assert len(crosses) == 1 and crosses[0].get_offsets()[0][0] == 80  # censored: drawn on the top edge
    assert "censored" in crosses[0].get_label()


def test_knee_only_where_the_curve_bends_beyond_its_noise():
    x = [10, 20, 30, 40, 50, 60]
    hockey = [100, 105, 112, 125, 300, 900]
    assert knee_index(x, hockey) == 3
    assert knee_index(x, hockey, half_width=[5] * 6) == 3
    assert knee_index(x, hockey, half_width=[400] * 6) is None  # the bend is within the intervals
    assert knee_index(x, [100, 210, 300, 420, 500, 640]) is None  # a noisy straight line
    assert knee_index([50, 500, 1000], [213, 365, 1008]) is None  # 3 points locate no knee


def test_cdf_lines_can_be_told_apart():
    recs = pd.DataFrame(
        {"point": np.repeat(np.arange(12), 50), "e2e_ms": np.random.default_rng(1).exponential(100, 600) + 1}
    )
    ax = latency_cdf(recs, [f"p{i}" for i in range(12)]).axes[0]
    styles = {
        (tuple(np.round(ln.get_color(), 3)), ln.get_linestyle()) for ln in ax.lines if ln.get_label().startswith("p")
    }
    assert len(styles) == 12
    assert len({s[0] for s in styles}) == 12  # twelve colours, and line styles on top
    assert ax.get_legend() is not None and len(ax.get_legend().get_texts()) == 12


def test_cdf_of_many_points_is_panels_each_told_apart_not_a_gradient():
    """A 22-point CDF (notebook 01's users x replicas) must name every line, not fall back to one
    gradient with a colour bar of point numbers.  Beyond 20 points the
    CDF is panels of at most ten lines, every line in a legend, each distinct within its panel."""
    n = 22
    recs = pd.DataFrame(
        {"point": np.repeat(np.arange(n), 50), "e2e_ms": np.random.default_rng(1).exponential(100, 50 * n) + 1}
    )
    fig = latency_cdf(recs, [f"p{i}" for i in range(n)], sla=300)
    axes = [a for a in fig.axes if a.get_legend() is not None]
    assert len(fig.axes) == len(axes) == 3  # no colour bar axis
    named = [t.get_text() for a in axes for t in a.get_legend().get_texts()]
    assert sorted(named) == sorted(f"p{i}" for i in range(n))
    for ax in axes:
        lines = [ln for ln in ax.lines if ln.get_label().startswith("p")]
        assert len(lines) <= 10
        assert len({(tuple(np.round(ln.get_color(), 3)), ln.get_linestyle()) for ln in lines}) == len(lines)
        assert len({tuple(np.round(ln.get_color(), 3)) for ln in lines}) == len(lines)


def _ts(kv_tokens: float):
    t = np.linspace(0, 10, 11)
    return pd.DataFrame(
        {
            "t_s": t,
            "replication": 0,
            "replica": 0,
            "retrieval_queue": 1,
            "retrieval_busy": 1,
            "llm_waiting": 0,
            "llm_running": 3,
            "kv_tokens": kv_tokens,
            "kv_capacity_tokens": 1000.0,
        }
    )


def test_timeseries_hides_a_flat_kv_panel():
    assert len(timeseries(_ts(0.0)).axes) == 2
    assert len(timeseries(_ts(1000 * KV_FLAT / 2)).axes) == 2
    assert len(timeseries(_ts(300.0)).axes) == 3
