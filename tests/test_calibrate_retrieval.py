"""Real retrieval calibration: CLI end to end, profiles, scaling fits, errors.

The end-to-end run is small (a few thousand docs, dim 64) but real: hnswlib,
numpy, pure Python and faiss indexes, timed by forked workers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sim.calibrate.retrieval import fit_law, law_x, write_calibration
from sim.cli.calibrate import calibrate_app as app
from sim.errors import CalibrationError
from sim.physics.retrieval import (
    Calibration,
    RetrievalProfile,
    default_calibration_path,
    load_calibration,
    sample_quantiles,
)

REAL = Path(__file__).parent / "data" / "minilm_l6_v2_4500x384_f16.npy"
SMALL = [
    "--docs",
    "1500,3000",
    "--dim",
    "64",
    "--top-k",
    "5",
    "--queries",
    "80",
    "--index",
    "hnsw,linear_numpy,linear_python,ivf",
    "--ef",
    "10,50",
    "--nprobe",
    "1,8",
    "--threads",
    "1,2",
    "--seed",
    "3",
    "--python-docs",
    "300",
    "--python-queries",
    "10",
]


def invoke(*args: str):
    return CliRunner().invoke(app, ["retrieval", *args])


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, dict, Calibration]:
    out = tmp_path_factory.mktemp("cal") / "cal.json"
    res = invoke(*SMALL, "--out", str(out))
    assert res.exit_code == 0, res.output
    assert "recall@5" in res.stdout and "wrote" in res.stdout
    return out, json.loads(out.read_text()), load_calibration(out)


# ---------------------------------------------------------------- the file


def test_file_has_everything(small):
    _, doc, cal = small
    assert doc["version"] == 1 and doc["kind"] == "capsim.retrieval_calibration"
    assert doc["probs"][0] == 0 and doc["probs"][-1] == 1 and 0.99 in doc["probs"] and len(doc["probs"]) == 101
    m = doc["machine"]
    for key in ("cpu_model", "cpu_count", "blas", "versions", "loadavg_start", "loadavg_end"):
        assert key in m
    assert set(m["versions"]) >= {"python", "numpy", "hnswlib", "faiss"}
    assert doc["corpus"]["source"] == "synthetic" and doc["corpus"]["params"]
    assert doc["command"].startswith("capsim calibrate retrieval --docs 1500,3000")
    # 2 sizes x (2 ef + 2 nprobe + 2 linear) x 2 thread counts
    assert len(doc["records"]) == 2 * 6 * 2
    for r in doc["records"]:
        assert r["dim"] == 64 and r["top_k"] == 5 and r["threads"] in (1, 2)
        assert len(r["values_ms"]) == 101 and r["values_ms"] == sorted(r["values_ms"])
        assert r["values_ms"][0] > 0 and r["memory_bytes"] > 0
        if r["index"] != "linear_python":
            assert r["samples"] == 80 * r["threads"]
    py = [r for r in doc["records"] if r["index"] == "linear_python"]
    assert all(r["scaled_from_docs"] == 300 and "subsample" in r["note"] for r in py)
    # scaled linearly: the 3000-doc record is the 1500-doc one x 2 (same measurement)
    a = next(r for r in py if r["docs"] == 1500 and r["threads"] == 1)
    b = next(r for r in py if r["docs"] == 3000 and r["threads"] == 1)
    assert b["values_ms"][50] == pytest.approx(2 * a["values_ms"][50], rel=1e-4)
    assert {(f["index"], f["knob_value"], f["threads"]) for f in doc["fits"]} >= {("hnsw", 10, 1), ("ivf", 8, 2)}
    assert cal.indexes == ["hnsw", "ivf", "linear_numpy", "linear_python"]


def test_exact_scans_have_recall_one(small):
    _, doc, _ = small
    for r in doc["records"]:
        if r["index"] in ("linear_numpy", "linear_python"):
            assert r["recall"] == 1.0


def test_hnsw_recall_rises_with_ef_and_ivf_with_nprobe(small):
    _, doc, _ = small
    for ix, knob in (("hnsw", [10, 50]), ("ivf", [1, 8])):
        for n in (1500, 3000):
            rc = [
                next(
                    r["recall"]
                    for r in doc["records"]
                    if r["index"] == ix and r["docs"] == n and r["knob_value"] == k and r["threads"] == 1
                )
                for k in knob
            ]
            assert rc == sorted(rc), (ix, n, rc)
            assert rc[-1] > 0.8


def test_profile_exact_match(small):
    _, doc, cal = small
    p = cal.profile("hnsw", docs=3000, dim=64, top_k=5, ef_search=50)
    r = next(
        r
        for r in doc["records"]
        if r["index"] == "hnsw" and r["docs"] == 3000 and r["knob_value"] == 50 and r["threads"] == 1
    )
    assert isinstance(p, RetrievalProfile)
    assert p.values_ms == pytest.approx(r["values_ms"]) and p.recall == r["recall"]
    assert not p.extrapolated and not p.interpolated and "measured" in p.description
    lin = cal.profile("linear_numpy", docs=1500, dim=64, top_k=5, ef_search=999, nprobe=999)  # knobs ignored
    assert lin.recall == 1.0


def test_profile_interpolates_between_ef(small):
    _, doc, cal = small

    def rec(ef):
        return next(
            r
            for r in doc["records"]
            if r["index"] == "hnsw" and r["docs"] == 3000 and r["knob_value"] == ef and r["threads"] == 1
        )

    p = cal.profile("hnsw", docs=3000, dim=64, top_k=5, ef_search=20)
    w = (20 - 10) / (50 - 10)
    want = (1 - w) * np.array(rec(10)["values_ms"]) + w * np.array(rec(50)["values_ms"])
    assert p.interpolated and not p.extrapolated
    assert np.allclose(p.values_ms, np.maximum.accumulate(want), rtol=1e-9)
    assert p.recall == pytest.approx((1 - w) * rec(10)["recall"] + w * rec(50)["recall"])
    assert "interpolated between measured 10 and 50" in p.description


def test_profile_scaling_law_and_workers(small):
    _, _, cal = small
    inside = cal.profile("hnsw", docs=2000, dim=64, top_k=5, ef_search=10)
    assert not inside.extrapolated and "scaling law" in inside.description
    # The fixture times tiny corpora, so a fitted law may fall with N; extrapolated far, such a
    # law is refused (it would give a silent 0 ms search), otherwise it must be sane.
    for index, docs, knob in (("ivf", 100_000, {"nprobe": 8}), ("linear_numpy", 60_000, {})):
        try:
            big = cal.profile(index, docs=docs, dim=64, top_k=5, **knob)
        except CalibrationError as e:
            assert "not a search time" in str(e) and "\n" not in str(e)
            continue
        assert big.extrapolated and "extrapolated" in big.description
        assert list(big.values_ms) == sorted(big.values_ms) and big.values_ms[0] > 0
        assert index != "linear_numpy" or big.recall == 1.0
    w = cal.profile("hnsw", docs=3000, dim=64, top_k=5, ef_search=10, workers=8)
    assert "using the 2-thread measurement" in w.description


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        (
            dict(index="hnsw", ef_search=500),
            "retrieval.ef_search=500 is outside what cal.json measured for hnsw (ef 10, 50); measure it with: capsim calibrate retrieval --ef 500",
        ),
        (dict(index="hnsw", ef_search=5), "--ef 5"),
        (dict(index="hnsw"), "retrieval.ef_search is required"),
        (dict(index="ivf", nprobe=64), "(nprobe 1, 8)"),
        (dict(index="annoy"), "it has hnsw, ivf, linear_numpy, linear_python"),
        (dict(index="hnsw", ef_search=10, dim=768), "retrieval.dim=768"),
        (dict(index="hnsw", ef_search=10, top_k=10), "retrieval.top_k=10"),
        (dict(index="hnsw", ef_search=10, workers=0), "workers"),
    ],
)
def test_profile_errors(small, kwargs, needle):
    _, _, cal = small
    args = dict(docs=3000, dim=64, top_k=5) | kwargs
    with pytest.raises(CalibrationError) as e:
        cal.profile(**args)
    assert needle in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------- pure functions


def test_fit_recovers_log_law():
    rng = np.random.default_rng(7)
    n = np.array([1e3, 3e3, 1e4, 3e4, 1e5, 3e5, 1e6])
    x = np.array([law_x("hnsw", v) for v in n])
    y = 0.05 + 0.02 * np.log(n)
    y_noisy = y * (1 + 0.01 * rng.standard_normal(n.size))
    f = fit_law(x, y_noisy)
    assert f["a"] == pytest.approx(0.05, abs=0.02) and f["b"] == pytest.approx(0.02, rel=0.08)
    assert f["r2"] > 0.98
    exact = fit_law(x, y)
    assert exact["a"] == pytest.approx(0.05) and exact["b"] == pytest.approx(0.02) and exact["r2"] == pytest.approx(1)


def test_law_regressors():
    assert law_x("linear_numpy", 5000) == 5000
    assert law_x("hnsw", math.e**3) == pytest.approx(3)
    assert law_x("ivf", 10_000, nlist=100, nprobe=8) == 100 + 800
    with pytest.raises(CalibrationError):
        law_x("ivf", 10_000)


def test_sample_quantiles_reproduces_stored_quantiles():
    probs = [i / 100 for i in range(101)]
    values = np.sort(np.random.default_rng(1).lognormal(0.0, 0.6, 101))
    x = sample_quantiles(probs, values, np.random.default_rng(2), 200_000)
    for p in (0.5, 0.95, 0.99):
        want = np.interp(p, probs, values)
        assert np.quantile(x, p) == pytest.approx(want, rel=0.01)
    assert x.min() >= values[0] and x.max() <= values[-1]
    with pytest.raises(ValueError):
        sample_quantiles([0, 0.5, 1], [3, 2, 1], np.random.default_rng(0), 3)


# ---------------------------------------------------------------- bad files


def _mutated(small, tmp_path, fn) -> Path:
    _, doc, _ = small
    d = json.loads(json.dumps(doc))
    fn(d)
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(d))
    return p


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: d.update(version=2), "version is 2"),
        (lambda d: d.update(kind="other"), "kind is 'other'"),
        (lambda d: d["records"][0].update(values_ms=[1.0, 0.5]), "records[0].values_ms"),
        (lambda d: d["records"][3].pop("docs"), "records[3] is malformed"),
        (lambda d: d.update(probs=[0.5, 1]), "probs"),
    ],
)
def test_bad_calibration_files(small, tmp_path, mutate, needle):
    p = _mutated(small, tmp_path, mutate)
    with pytest.raises(CalibrationError) as e:
        load_calibration(p)
    assert "bad.json" in str(e.value) and needle in str(e.value)


def test_corrupt_and_missing_files(tmp_path):
    p = tmp_path / "corrupt.json"
    p.write_text('{"version": 1, "kind": "capsim.retrieval_calibration", "rec')
    with pytest.raises(CalibrationError, match="corrupt.json: is not valid JSON"):
        load_calibration(p)
    with pytest.raises(CalibrationError, match="nope.json: does not exist"):
        load_calibration(tmp_path / "nope.json")


def test_write_is_atomic(tmp_path):
    p = tmp_path / "c.json"
    write_calibration({"a": 1}, p)
    with pytest.raises(ValueError):
        write_calibration({"a": float("nan")}, p)
    assert json.loads(p.read_text()) == {"a": 1}
    assert [f.name for f in tmp_path.iterdir()] == ["c.json"]


# ---------------------------------------------------------------- CLI input errors


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--ef", "10,x"], "error: --ef: 'x' is not a positive integer"),
        (["--nprobe", "0"], "error: --nprobe: '0' is not a positive integer"),
        (["--docs", "1000,,2000"], "error: --docs: empty value"),
        (["--threads", "-1"], "error: --threads: '-1' is not a positive integer"),
        (["--index", "hnsw,annoy"], "error: --index: 'annoy' is not one of"),
        (["--docs", "3000", "--nprobe", "500"], "error: --nprobe: 500 is more than nlist="),
        (["--docs", "4"], "error: --docs: 4 must be larger than --top-k 5"),
    ],
)
def test_cli_bad_flags(tmp_path, args, needle):
    out = tmp_path / "o.json"
    res = invoke("--dim", "16", "--queries", "10", *args, "--out", str(out))
    assert res.exit_code == 2, res.output
    assert needle in res.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cli_out_folder_missing(tmp_path):
    out = tmp_path / "missing" / "o.json"
    res = invoke("--docs", "1000", "--dim", "16", "--index", "linear_numpy", "--out", str(out))
    assert res.exit_code == 2 and "error: --out: folder" in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_nan_vectors(tmp_path):
    v = np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32)
    v[17, 3] = np.nan
    f = tmp_path / "vecs.npy"
    np.save(f, v)
    out = tmp_path / "o.json"
    res = invoke("--vectors", str(f), "--queries", "20", "--index", "linear_numpy", "--out", str(out))
    assert res.exit_code == 2
    assert "error: --vectors vecs.npy: 1 row(s) contain NaN or inf" in res.stderr
    assert not out.exists()


def test_cli_wrong_dim_and_too_few_rows(tmp_path):
    f = tmp_path / "vecs.npy"
    np.save(f, np.random.default_rng(0).standard_normal((300, 16)).astype(np.float16))
    out = tmp_path / "o.json"
    res = invoke("--vectors", str(f), "--dim", "32", "--index", "linear_numpy", "--out", str(out))
    assert res.exit_code == 2 and "vectors have dim 16 but --dim is 32" in res.stderr
    res = invoke("--vectors", str(f), "--docs", "290", "--queries", "20", "--index", "linear_numpy", "--out", str(out))
    assert res.exit_code == 2 and "needs 310 rows but --vectors has 300" in res.stderr
    bad = tmp_path / "one_d.npy"
    np.save(bad, np.zeros(10, dtype=np.float32))
    res = invoke("--vectors", str(bad), "--out", str(out))
    assert res.exit_code == 2 and "must be 2-D" in res.stderr
    assert not out.exists()


def test_cli_real_vectors(tmp_path):
    out = tmp_path / "real.json"
    res = invoke(
        "--vectors",
        str(REAL),
        "--docs",
        "1000,2000",
        "--queries",
        "50",
        "--index",
        "hnsw,linear_numpy",
        "--ef",
        "10,40",
        "--out",
        str(out),
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    c = doc["corpus"]
    assert c["source"] == "vectors" and c["file"] == REAL.name and len(c["sha256"]) == 64 and c["dim"] == 384
    cal = load_calibration(out)
    p = cal.profile("hnsw", docs=2000, dim=384, top_k=5, ef_search=40)
    assert p.recall > 0.9 and p.mean_ms > 0


# ---------------------------------------------------------------- the shipped file


def test_shipped_calibration_covers_the_flagship():
    path = default_calibration_path()
    assert path.name == "retrieval_calibration.json" and path.is_file()
    cal = load_calibration()
    assert cal.settings["dim"] == 768 and cal.settings["top_k"] == 5
    for ef in (10, 20, 50, 100, 200):
        p = cal.profile("hnsw", docs=50_000, dim=768, top_k=5, ef_search=ef)
        assert not p.extrapolated and 0 < p.values_ms[50] < p.values_ms[-1]
    for ix in ("linear_numpy", "linear_python"):
        assert cal.profile(ix, docs=50_000, dim=768, top_k=5).recall == 1.0
    for npr in (1, 4, 8, 16, 32):
        cal.profile("ivf", docs=50_000, dim=768, top_k=5, nprobe=npr, workers=2)
    big = cal.profile("hnsw", docs=1_000_000, dim=768, top_k=5, ef_search=64)
    assert big.extrapolated and big.interpolated
    assert path.stat().st_size < 1_000_000


def test_a_scenario_runs_on_a_fresh_calibration_and_reports_its_recall(small):
    """The day-one loop: calibrate on this machine, then simulate with what was measured."""
    import sim

    path, _, cal = small
    rec = next(r for r in json.loads(path.read_text())["records"] if r["index"] == "hnsw")
    scn = {
        "name": "cal",
        "run": {"duration_s": 60, "warmup_s": 5, "replications": 2, "seed": 1},
        "workload": {"mode": "open", "rate_per_s": 20},
        "cache": {"enabled": False},
        "llm": {"enabled": False},
        "retrieval": {
            "index": "hnsw",
            "docs": rec["docs"],
            "dim": rec["dim"],
            "top_k": rec["top_k"],
            "ef_search": rec["knob_value"],
            "workers": 1,
            "calibration": str(path),
        },
    }
    res = sim.simulate(scn)
    point = res.summary["points"][0]
    prof = cal.profile("hnsw", docs=rec["docs"], dim=rec["dim"], top_k=rec["top_k"], ef_search=rec["knob_value"])
    assert point["retrieval"]["recall_at_k"] == pytest.approx(prof.recall)
    assert point["retrieval"]["source"] == str(path)
    # The simulated search times are the measured ones.
    assert point["metrics"]["retrieval_service_ms"]["p50"] == pytest.approx(
        np.interp(0.5, prof.probs, prof.values_ms), rel=0.15
    )


def test_more_threads_than_cores_warns(tmp_path):
    import os

    cores = len(os.sched_getaffinity(0))
    r = invoke(
        "--docs",
        "1500,3000",
        "--dim",
        "64",
        "--queries",
        "40",
        "--index",
        "linear_numpy",
        "--threads",
        str(cores + 2),
        "--seed",
        "3",
        "--out",
        str(tmp_path / "c.json"),
    )
    assert r.exit_code == 0, r.output
    assert f"warning: --threads {cores + 2} on {cores} usable cores" in r.output


def test_own_vectors_carry_their_dimension_into_the_scenario(tmp_path):
    """A day with capsim: calibrate on 384-dim vectors, then run the 768-dim flagship on them."""
    import sim

    cal = tmp_path / "ours.json"
    r = invoke(
        "--vectors",
        str(REAL),
        "--docs",
        "1000,3000",
        "--queries",
        "50",
        "--index",
        "hnsw,linear_numpy",
        "--ef",
        "50",
        "--threads",
        "1",
        "--seed",
        "1",
        "--out",
        str(cal),
    )
    assert r.exit_code == 0, r.output
    res = sim.simulate(
        "scenarios/order_support.yaml",
        {
            "retrieval.calibration": str(cal),
            "retrieval.index": "hnsw",
            "workload.users": 50,
            "run.duration_s": 60,
            "run.warmup_s": 10,
            "run.replications": 2,
        },
    )
    entry = res.points[0].summary.retrieval
    assert entry is not None and "dim 384 of the vectors measured (the scenario says 768)" in entry["description"]
