"""capsim sweep: grids, the point store, resume after a crash, Dask, cost."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from sim.cli import app
from sim.errors import CapsimError, ConfigError
from sim.spec.scenario import expand
from sim.sweep import PointStore, check_key, parse_grid, point_id, rank_by_cost, run_sweep, summary_table, sweep

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "tests" / "data" / "rag_small.yaml"
QUICK = ["--set", "run.duration_s=40", "--set", "run.warmup_s=5"]
QUICK_OV = {"run.duration_s": 40, "run.warmup_s": 5}
runner = CliRunner()


def cli(*args: str, env: dict | None = None):
    return runner.invoke(app, [str(a) for a in args], env=env)


# --------------------------------------------------------------------------- grids


def test_parse_grid_reads_yaml_scalars():
    g = parse_grid(
        ["workload.users=50,100", "llm.gpu=h100-sxm,h200", "llm.bw_efficiency=0.5,0.8", "cache.enabled=true,false"]
    )
    assert g == {
        "workload.users": [50, 100],
        "llm.gpu": ["h100-sxm", "h200"],
        "llm.bw_efficiency": [0.5, 0.8],
        "cache.enabled": [True, False],
    }
    assert parse_grid(["llm.output_tokens=[50, {dist: exponential, mean: 60}]"]) == {
        "llm.output_tokens": [50, {"dist": "exponential", "mean": 60}]
    }


@pytest.mark.parametrize(
    "item, words",
    [
        ("workload.usrs=1,2", ["workload.usrs", "did you mean 'users'"]),
        ("nosuch.key=1", ["nosuch", "allowed"]),
        ("workload.users", ["KEY=V1,V2"]),
        ("workload.users=1,,2", ["empty value"]),
    ],
)
def test_parse_grid_rejects(item, words):
    with pytest.raises(ConfigError) as e:
        parse_grid([item])
    for w in words:
        assert w in str(e.value)


def test_check_key_accepts_nested_and_free_form_keys():
    for key in ("llm.gpu.memory_gb", "retrieval.service_ms.mean", "sla.e2e_ms.p95", "workload.queries.zipf_s"):
        check_key(key)


def test_point_id_is_a_hash_of_the_resolved_scenario():
    a, a2, b = expand(SMALL, QUICK_OV, {"workload.users": [10, 10, 20]})
    c = expand(SMALL, {**QUICK_OV, "run.seed": 12})[0]
    ids = [point_id(p.scenario) for p in (a, b)]
    assert ids[0] != ids[1] and len(ids[0]) == 20 and point_id(a2.scenario) == ids[0]
    assert point_id(expand(SMALL, {**QUICK_OV, "workload.users": 10})[0].scenario) == ids[0]
    assert point_id(c.scenario) != point_id(expand(SMALL, QUICK_OV)[0].scenario)  # the seed is in it


@pytest.mark.parametrize(
    "args, words",
    [
        (["--grid", "workload.usrs=1,2"], ["did you mean 'users'"]),
        (["--grid", "workload.users=a,b"], ["workload.users", "integer", "'a'"]),
        (["--grid", "llm.gpu=h100-sxm,h900"], ["llm.gpu", "h900"]),
        (["--set", "workload.usres=3"], ["--set workload.usres", "did you mean 'users'"]),
        (["--rank", "speed"], ["--rank"]),
        (["--scheduler", "nonsense"], ["--scheduler", "tcp://host:8786"]),
    ],
)
def test_sweep_bad_input_is_one_line_exit_2(args, words):
    r = cli("sweep", SMALL, *args)
    assert r.exit_code == 2, r.output
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ")
    for w in words:
        assert w in r.stderr


def test_unreachable_scheduler_times_out_with_one_line():
    r = cli(
        "sweep",
        SMALL,
        "--grid",
        "workload.users=5,6",
        "--scheduler",
        "tcp://127.0.0.1:9",
        env={"CAPSIM_DASK_TIMEOUT_S": "1"},
    )
    assert r.exit_code == 2
    assert "cannot reach the Dask scheduler within 1 s" in r.stderr
    assert r.stderr.count("\n") == 1


# --------------------------------------------------------------------------- results


def test_sweep_json_is_the_run_document(tmp_path):
    scn = tmp_path / "s.yaml"
    scn.write_text(f"extends: {SMALL}\nsweep: {{workload.users: [10, 30]}}\n")
    a = cli("run", scn, "--json", "--jobs", "1", *QUICK)
    b = cli("sweep", SMALL, "--json", "--jobs", "1", "--grid", "workload.users=10,30", *QUICK)
    assert a.exit_code == b.exit_code and a.exit_code in (0, 1, 3), (a.output, b.output)
    assert json.loads(a.stdout) == json.loads(b.stdout)
    assert "computed 2 of 2 points" in b.stderr


def test_local_and_dask_give_identical_summaries():
    from sim.run.dask import DaskExecutor

    grid = {"workload.users": [10, 40], "llm.replicas": [1, 2]}
    local = sweep(SMALL, QUICK_OV, grid, jobs=1, keep_records=True)
    with DaskExecutor("local-dask", n_workers=2, processes=False) as ex:
        assert ex.jobs == 2
        dask = sweep(SMALL, QUICK_OV, grid, executor=ex, keep_records=True)
        reps = ex.map([(p.scenario, 1) for p in local.points[:2]])
    assert json.dumps(local.summary) == json.dumps(dask.summary)
    assert [r.replication for r in reps] == [1, 1]
    pd.testing.assert_frame_equal(local.records, dask.records)


def test_folder_is_readable_by_pandas(tmp_path):
    out = tmp_path / "sw"
    r = cli(
        "sweep",
        SMALL,
        "--grid",
        "workload.users=10,30",
        "--grid",
        "llm.gpu=h100-sxm,h200",
        "--out",
        out,
        "--jobs",
        "2",
        "--rank",
        "cost",
        *QUICK,
    )
    assert r.exit_code in (0, 1, 3), r.output
    assert "$/1000 answers" in r.stdout
    table = pd.read_csv(out / "summary.csv")
    assert len(table) == 4 and table["workload.users"].tolist() == [10, 10, 30, 30]
    assert table["llm.gpu"].tolist() == ["h100-sxm", "h200", "h100-sxm", "h200"]
    for col in (
        "e2e_p50_ms",
        "e2e_p95_ms",
        "e2e_p95_ci_low_ms",
        "e2e_p95_ci_high_ms",
        "e2e_p99_ms",
        "throughput_per_s",
        "cost_per_hour",
        "cost_per_1000_answers",
        "verdict",
        "sla_e2e_ms_p95",
    ):
        assert col in table, col
    pd.testing.assert_frame_equal(
        pd.read_parquet(out / "summary.parquet").drop(columns="id"), table.drop(columns="id"), check_dtype=False
    )
    recs = pd.read_parquet(out / "records.parquet")
    assert set(recs.groupby("point")["workload.users"].first()) == {10, 30}
    assert pd.api.types.is_string_dtype(recs["llm.gpu"]) and {"e2e_ms", "arrival_s", "replication"} <= set(recs.columns)
    ts = pd.read_parquet(out / "timeseries.parquet")
    assert {"t_s", "retrieval_queue", "llm_running", "kv_tokens", "point"} <= set(ts.columns)
    doc = json.loads((out / "summary.json").read_text())
    assert len(doc["points"]) == 4
    assert len(list((out / "points").iterdir())) == 4
    for d in (out / "points").iterdir():
        assert {"summary.json", "records.parquet", "timeseries.parquet", "scenario.yaml"} <= {
            f.name for f in d.iterdir()
        }


def test_resume_after_a_crash_computes_only_the_missing_points(tmp_path):
    out, ref = tmp_path / "crashed", tmp_path / "clean"
    args = ["sweep", str(SMALL), "--grid", "workload.users=10,20,30,40", "--jobs", "1", "--json", *QUICK]
    # The child dies by SIGKILL right after saving its second point, as a crash or an
    # out-of-memory kill would; the hook lives here, not in the package.
    crash_after_two = (
        "import os, signal, sim.sweep as sw\n"
        "save, saved = sw.PointStore.save, []\n"
        "def dying_save(self, *a, **k):\n"
        "    save(self, *a, **k)\n"
        "    saved.append(1)\n"
        "    if len(saved) == 2:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "sw.PointStore.save = dying_save\n"
        "from sim.cli import main; main()\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", crash_after_two, *args, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == -9, p.stderr  # SIGKILL, as an out-of-memory kill or a crash
    done = [d for d in (out / "points").iterdir() if (d / "summary.json").is_file()]
    assert len(done) == 2 and not (out / "summary.json").exists()
    assert list(out.glob(".records.parquet.*.partial")), "the first point's records were streamed before the kill"
    again = cli(*args, "--out", out)
    assert "computed 2 of 4 points, reused 2" in again.stderr, again.output
    assert not list(out.glob(".*.partial")), "the killed run's streamed files were left behind"
    clean = cli(*args, "--out", ref)
    assert again.exit_code == clean.exit_code and clean.exit_code in (0, 1, 3)
    assert "computed 4 of 4 points, reused 0" in clean.stderr
    assert again.stdout == clean.stdout
    assert (out / "summary.json").read_text() == (ref / "summary.json").read_text()
    pd.testing.assert_frame_equal(pd.read_parquet(out / "records.parquet"), pd.read_parquet(ref / "records.parquet"))
    # A third run computes nothing; a wider grid computes only the new point.
    assert "computed 0 of 4 points, reused 4" in cli(*args, "--out", out).stderr
    wider = [a if a != "workload.users=10,20,30,40" else "workload.users=10,20,30,40,50" for a in args]
    assert "computed 1 of 5 points, reused 4" in cli(*wider, "--out", out).stderr


def test_folder_files_are_the_same_bytes_whatever_order_points_finish(tmp_path):
    """The folder's records and time series are streamed point by point as points finish.
    On 2 workers the heavy first point finishes after the light second one; the files are
    byte for byte those of 1 worker, where points finish in order."""
    args = ["sweep", SMALL, "--grid", "workload.users=120,10,20", "--json", *QUICK]
    one = cli(*args, "--jobs", "1", "--out", tmp_path / "one")
    two = cli(*args, "--jobs", "2", "--out", tmp_path / "two")
    assert one.exit_code == two.exit_code and one.exit_code in (0, 1, 3), one.output
    assert one.stdout == two.stdout
    for name in ("records.parquet", "timeseries.parquet", "summary.json", "summary.csv", "summary.parquet"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    recs = pd.read_parquet(tmp_path / "two" / "records.parquet", columns=["point", "workload.users"])
    assert recs.groupby("point")["workload.users"].first().tolist() == [120, 10, 20]
    assert recs["point"].is_monotonic_increasing
    assert not list((tmp_path / "two").glob(".*.partial"))


def test_the_sweep_loop_forks_its_workers_before_loading_pandas_and_scipy():
    """The parent loads pandas and scipy beside the first replications, not before them."""
    code = (
        "import sys, sim.run.loop, sim.run.sweep, sim.run.store, sim.cli.sweep, sim.cli.main\n"
        "print(sorted({'pandas', 'scipy'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_an_incomplete_point_folder_is_recomputed(tmp_path):
    pts = expand(SMALL, {**QUICK_OV, "run.replications": 1}, {"workload.users": [10, 20]})
    first = run_sweep(pts, tmp_path, jobs=1)
    assert first.computed == 2
    store = PointStore(tmp_path)
    (store.folder(first.points[1].id) / "summary.json").unlink()  # killed between two writes
    second = run_sweep(pts, tmp_path, jobs=1)
    assert (second.computed, second.reused) == (1, 1)
    assert second.summary == first.summary


# --------------------------------------------------------------------------- cost


def test_cost_figures_by_hand():
    res = sweep(
        SMALL, {**QUICK_OV, "run.replications": 1, "llm.replicas": 2, "retrieval.workers": 3}, jobs=1, keep_records=True
    )
    s = res.points[0].summary
    per_hour = 2.5 * 2 + 0.05 * 3
    assert s["cost"]["per_hour"] == pytest.approx(per_hour)
    assert s["cost"]["per_1000_answers"] == pytest.approx(per_hour / (3600 * s["throughput_per_s"]) * 1000)
    recs = res.points[0].records
    end_s = recs["arrival_s"] + recs["e2e_ms"] / 1e3
    delivered = recs[(end_s >= 5) & (end_s < 40)]  # answers delivered in the 35 s window
    assert s["throughput_per_s"] == pytest.approx(len(delivered) / 35.0)
    tokens_per_s = delivered["output_tokens"].sum() / 35.0
    assert s["cost"]["per_million_output_tokens"] == pytest.approx(per_hour / (3600 * tokens_per_s) * 1e6)
    none = sweep(SMALL, {**QUICK_OV, "run.replications": 1, "cost": None}, jobs=1)
    assert none.points[0].summary["cost"] is None
    with pytest.raises(CapsimError, match="cost: section"):
        rank_by_cost(none.table())


def test_rank_by_cost_puts_passing_points_first():
    pts = [
        {
            "params": {"k": k},
            "cost": {"per_1000_answers": c, "per_hour": 1.0},
            "sla": [{"metric": "e2e_ms", "stat": "p95", "verdict": v}],
        }
        for k, c, v in [(1, 0.3, "pass"), (2, 0.1, "fail"), (3, 0.2, "pass"), (4, 0.05, "inconclusive")]
    ]
    assert rank_by_cost(summary_table(pts))["k"].tolist() == [3, 1, 4, 2]


def test_cost_counts_every_gpu_and_worker():
    import sim
    from sim.analysis.dollars import per_hour

    s = sim.load_scenario(SMALL, {"llm.replicas": 3, "llm.tensor_parallel": 2, "retrieval.workers": 4})
    assert per_hour(s) == pytest.approx(2.5 * 3 * 2 + 0.05 * 4)
    assert per_hour(sim.load_scenario(SMALL, {"llm.enabled": False})) == pytest.approx(0.05 * 2)
    assert per_hour(sim.load_scenario(SMALL, {"cost": None})) is None


def _point(metrics: dict, **extra) -> dict:
    ms = {m: {st: v, "ci": {st: [v - 1, v + 1]}, "n": 10} for m, (st, v) in metrics.items()}
    return {"params": {}, "metrics": ms, "utilization": {}, **extra}


def test_table_columns_come_from_the_metric_registry(monkeypatch):
    """summary.csv's and the terminal table's latency columns are the registry's
    ``Metric.table`` statistics; a stage that is off everywhere gets none."""
    from sim.analysis import table
    from sim.spec.metrics import TABLE_COLUMNS

    assert TABLE_COLUMNS == (
        ("e2e_ms", "p50"),
        ("e2e_ms", "p95"),
        ("e2e_ms", "p99"),
        ("ttft_ms", "p95"),
        ("routing_ms", "p95"),
    )
    no_llm = summary_table([_point({"e2e_ms": ("p95", 50.0)})])
    assert "e2e_p95_ci_high_ms" in no_llm and "ttft_p95_ms" not in no_llm and "routing_p95_ms" not in no_llm
    with_llm = summary_table([_point({"e2e_ms": ("p95", 50.0), "ttft_ms": ("p95", 9.0)})])
    assert with_llm["ttft_p95_ms"].tolist() == [9.0] and with_llm["ttft_p95_ci_low_ms"].tolist() == [8.0]
    # one more statistic in the registry is one more column, with its interval
    monkeypatch.setattr(table, "TABLE_COLUMNS", (*TABLE_COLUMNS, ("tpot_ms", "p50")))
    more = summary_table([_point({"e2e_ms": ("p95", 50.0), "tpot_ms": ("p50", 4.0)})])
    assert more["tpot_p50_ms"].tolist() == [4.0] and more["tpot_p50_ci_high_ms"].tolist() == [5.0]


def test_a_parallel_sweep_hands_out_the_heaviest_replications_first():
    """Longest processing time first: with two workers, a sweep of 20..80 users submits the
    80-user replications first (ties in point order), and the summaries are the same as
    in point order."""
    from sim.run.executors import LocalExecutor, _run_task

    class Recording(LocalExecutor):
        def __init__(self):
            super().__init__(2)
            self.order: list[int] = []

        def as_completed(self, tasks):
            self.order = [t[0].workload.users for t in tasks]
            for i, t in enumerate(tasks):  # in this process: the order is what is checked
                yield i, _run_task(t)

    pts = expand(
        SMALL, {"run.duration_s": 30, "run.warmup_s": 5, "run.replications": 2}, {"workload.users": [20, 80, 40]}
    )
    ex = Recording()
    got = run_sweep(pts, executor=ex)
    assert ex.order == [80, 80, 40, 40, 20, 20]
    ref = run_sweep(pts, jobs=1)
    assert [p.summary.to_dict() for p in got.points] == [p.summary.to_dict() for p in ref.points]
