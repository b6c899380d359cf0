"""Pictures, the HTML report, and the state monitor behind the time series."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import sim
from sim.cli import app
from sim.engine.pipeline import Model, run_replication
from sim.present.figures import knee_index, p95_vs_key, tail_breakdown, windowed

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "tests" / "data" / "rag_small.yaml"
QUICK = ["--set", "run.duration_s=40", "--set", "run.warmup_s=5"]
runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sweep")
    r = runner.invoke(
        app,
        [
            "sweep",
            str(SMALL),
            "--grid",
            "workload.users=10,40,80,120",
            "--grid",
            "llm.replicas=1,2",
            "--out",
            str(out),
            "--jobs",
            "2",
            *QUICK,
        ],
    )
    assert r.exit_code in (0, 1, 3), r.output
    return out


def test_report_writes_pngs_and_a_self_contained_html(swept):
    r = runner.invoke(app, ["report", str(swept)])
    assert r.exit_code == 0, r.output
    names = {Path(p).name for p in r.stdout.split()}
    assert names == {"latency_cdf.png", "tail_breakdown.png", "p95_vs_users.png", "timeseries.png", "report.html"}
    for n in names - {"report.html"}:
        assert (swept / "report" / n).read_bytes().startswith(PNG)
    doc = (swept / "report.html").read_text()
    assert doc.count("src='data:image/png;base64,") == 4
    assert not re.search(r"(src|href)=['\"](?!data:)", doc)  # nothing to fetch: opens with no server
    assert "<table>" in doc and "users" in doc


def test_report_options_and_errors(swept):
    r = runner.invoke(app, ["report", str(swept), "--key", "llm.replicas", "--point", "0"])
    assert r.exit_code == 0 and "p95_vs_replicas.png" in r.stdout
    bad = runner.invoke(app, ["report", str(swept), "--key", "llm.gpu"])
    assert bad.exit_code == 2 and "not a swept key" in bad.stderr
    bad = runner.invoke(app, ["report", str(swept / "nope")])
    assert bad.exit_code == 2 and "does not exist" in bad.stderr


def test_a_point_out_of_range_is_refused_before_anything_is_drawn(swept, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(swept, folder, ignore=shutil.ignore_patterns("report", "report.html"))
    bad = runner.invoke(app, ["report", str(folder), "--point", "8"])
    assert bad.exit_code == 2 and "--point 8: expected 0..7" in bad.stderr
    assert not (folder / "report").exists() and not (folder / "report.html").exists()


def test_report_of_a_run_folder(tmp_path):
    r = runner.invoke(app, ["run", str(SMALL), "--out", str(tmp_path), "--jobs", "1", *QUICK])
    assert r.exit_code in (0, 1, 3), r.output
    rep = runner.invoke(app, ["report", str(tmp_path)])
    assert rep.exit_code == 0, rep.output
    assert {"latency_cdf.png", "tail_breakdown.png"} <= {Path(p).name for p in rep.stdout.split()}


def test_knee_of_a_hockey_stick():
    x = [10, 20, 30, 40, 50, 60]
    assert knee_index(x, [100, 105, 112, 125, 300, 900]) == 3
    assert knee_index(x, [1, 2, 3, 4, 5, 6]) is None  # a straight line has no knee
    assert knee_index([1, 2], [1, 5]) is None


def test_breakdown_parts_add_up_to_the_tail_mean(swept):
    import matplotlib

    matplotlib.use("Agg")
    recs = pd.read_parquet(swept / "records.parquet")
    from sim.sweep import load_sweep

    summary = load_sweep(swept)
    w = windowed(recs, summary["summary"]["points"])
    assert w["arrival_s"].min() >= 5 and len(w) < len(recs)
    parts = ["cache_ms", "retrieval_wait_ms", "retrieval_service_ms", "llm_wait_ms", "prefill_ms", "decode_ms"]
    g = w[w["point"] == 0]
    np.testing.assert_allclose(g[parts].sum(axis=1), g["e2e_ms"], rtol=1e-9, atol=1e-6)
    fig = tail_breakdown(w, ["a"] * 8)
    assert len(fig.axes[0].patches) >= 8 * 6
    fig = p95_vs_key(summary["table"], "workload.users", sla=2500)
    assert len(fig.axes[0].lines) >= 3  # one line per replicas value + the SLA


def test_monitor_samples_and_changes_nothing(monkeypatch):
    scn = sim.load_scenario(SMALL, {"run.duration_s": 40, "run.warmup_s": 5, "llm.replicas": 2})
    a = run_replication(scn, 0, records=True)
    ts = a.timeseries
    assert len(ts["t_s"]) == 201 and ts["t_s"][0] == 0 and ts["t_s"][-1] == pytest.approx(40)
    assert ts["llm_running"].shape == (201, 2) and ts["kv_tokens"].shape == (201, 2)
    assert ts["llm_running"].max() > 0 and (ts["kv_tokens"] <= ts["kv_capacity_tokens"]).all()

    def silent(self, out):
        return
        yield

    monkeypatch.setattr(Model, "monitor", silent)
    b = run_replication(scn, 0, records=True)
    for k in a.records:
        np.testing.assert_array_equal(a.records[k], b.records[k])
    assert a.counters == b.counters


def test_p95_over_time_marks_windows_never_answered():
    from sim.present.figures import p95_over_time

    def window(a: float, p95: float | None, requests: float) -> dict:
        ci = [None, None] if p95 is None else [p95 - 5, p95 + 5]
        return {"start_s": a, "end_s": a + 30, "requests": requests, "e2e_ms": {"p95": p95, "ci": {"p95": ci}}}

    tl = {"window_s": 30.0, "windows": [window(0, 200, 50), window(30, None, 80), window(60, None, 0)]}
    fig = p95_over_time([{"timeline": tl}], ["replicas=2"], sla=800)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "simulated time (s), midpoints of 30 s arrival windows"
    marks = [ln for ln in ax.get_lines() if ln.get_label().startswith("P95 infinite")]
    # one mark, at the window with requests and no finite P95 (not at the empty one), drawn at the top
    assert len(marks) == 1 and list(marks[0].get_xdata()) == [45.0]
    assert marks[0].get_ydata()[0] == ax.get_ylim()[1]
