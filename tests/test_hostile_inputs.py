"""The hostile-input campaign as a table: every input once refused a crash,
a hang, an unbounded run or a silent wrong answer; each must now be one line on stderr
with the right exit code (2 bad input unless the row says otherwise), before any work.

To extend: add a :class:`Case` to ``CASES``: an id, a function ``(tmp_path) -> argv``
that builds whatever files the input needs, the exit code and a fragment of the one
line the user must see.  Every row also checks that no traceback leaked and that the
message is one line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import invoke

DATA = Path(__file__).parent / "data"
SMALL = DATA / "rag_small.yaml"
CALIBRATION = Path(__file__).parent.parent / "sim" / "data" / "retrieval_calibration.json"
GPU_HEADER = "batch_size,context_tokens,new_tokens,step_ms\n"
GPU_CSV = DATA / "gpu_steps_synthetic.csv"
TARGET = "llm: {url: 'http://127.0.0.1:9', model_path: m.gguf}\n"  # nothing listens on port 9


@dataclass(frozen=True)
class Case:
    id: str
    argv: Callable[[Path], list]
    code: int
    says: str


def _binary(tmp: Path, name: str = "bin.yaml") -> Path:
    p = tmp / name
    p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe" * 20)
    return p


def _fifo(tmp: Path, name: str = "pipe.yaml") -> Path:
    p = tmp / name
    os.mkfifo(p)
    return p


def _text(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.write_text(text)
    return p


def _extends_binary(tmp: Path) -> list:
    _binary(tmp, "base.yaml")
    return ["run", _text(tmp, "s.yaml", "extends: base.yaml\n")]


def _negative_slope_calibration(tmp: Path) -> list:
    doc = json.loads(CALIBRATION.read_text())
    for f in doc["fits"]:
        if f["index"] == "linear_numpy":
            f["mean"]["b"] = -abs(f["mean"]["b"]) * 10
            f["b"] = [-abs(b) * 10 for b in f["b"]]
    cal = _text(tmp, "neg.json", json.dumps(doc))
    return [
        "run",
        SMALL,
        "--set",
        "retrieval.service_ms=null",
        "--set",
        "retrieval.index=linear_numpy",
        "--set",
        "retrieval.docs=5000000",
        "--set",
        f"retrieval.calibration={cal}",
    ]


def _calibration_dup_key(tmp: Path) -> list:
    text = CALIBRATION.read_text().replace('"version": 1,', '"version": 1, "version": 1,', 1)
    cal = _text(tmp, "dup.json", text)
    return ["run", SMALL, "--set", "retrieval.service_ms=null", "--set", f"retrieval.calibration={cal}"]


def _gpu(tmp: Path, rows: str) -> list:
    return ["calibrate", "gpu", _text(tmp, "steps.csv", rows)]


def _sweep_folder(tmp: Path) -> Path:
    d = tmp / "swept"
    (d / "points").mkdir(parents=True)
    return d


def _run_folder(tmp: Path) -> Path:
    d = tmp / "ran"
    d.mkdir()
    (d / "scenario.resolved.yaml").write_text("name: x\n")
    return d


def _trace_scenario(tmp: Path, trace: Path | str) -> list:
    text = (
        "name: t\nrun: {duration_s: 30, warmup_s: 5, replications: 1, seed: 1}\n"
        f"workload: {{mode: trace, trace: {{path: '{trace}'}}}}\n"
        "retrieval: {workers: 2, service_ms: {dist: lognormal, mean: 25, cv: 0.5}}\n"
        "llm: {gpu: h100-sxm, prompt_tokens: 1200, output_tokens: {dist: exponential, mean: 120}}\n"
    )
    return ["run", _text(tmp, "trace.yaml", text)]


def _routing(tmp: Path, calibration: Path) -> list:
    return ["run", SMALL, "--set", "routing.enabled=true", "--set", f"routing.calibration={calibration}"]


def _target(tmp: Path, target: Path | str) -> list:
    return ["calibrate", "llm", "--target", target, "--out", tmp / "steps.csv"]


def _sealed(tmp: Path, summary: str) -> Path:
    """A run folder whose manifest vouches for a summary.json capsim never wrote."""
    from sim.run.folder import seal

    d = tmp / "sealed"
    d.mkdir()
    f = _text(d, "summary.json", summary)
    seal(d, "run", [f])
    return d


def _file(tmp: Path) -> Path:
    return _text(tmp, "plain.txt", "x")


# ---- inputs of the second campaign (loads that change over time, sizes, calibration files)


def _over(tmp: Path, text: str, name: str = "over.yaml") -> list:
    """A scenario extending rag_small with ``text`` on top."""
    return ["run", _text(tmp, name, f"extends: '{SMALL}'\n{text}"), "--jobs", "1"]


def _big_trace(tmp: Path) -> list:
    rows = "".join(f"{i * 0.0005:.4f}\n" for i in range(50_000))
    trace = _text(tmp, "big.csv", "arrival_s\n" + rows)
    keep = ["--set", "run.records=true"]  # the records are what a trace's length bounds
    return [*_trace_scenario(tmp, trace), *keep, "--replications", "5", "--jobs", "1", "--max-memory", "300M"]


def _trace_rows(tmp: Path, rows: str) -> list:
    return _trace_scenario(tmp, _text(tmp, "t.csv", rows))


def _alias_bomb(tmp: Path) -> list:
    text = "x0: &a0 [1, 2, 3, 4, 5, 6, 7, 8, 9]\n"
    for i in range(1, 9):
        text += f"x{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]\n"
    text += "sweep: {workload.users: *a8}\n"
    return ["run", _text(tmp, "bomb.yaml", text)]


def _sweep_1e8(tmp: Path) -> list:
    values = "[" + ", ".join(str(i) for i in range(1, 101)) + "]"
    keys = ("workload.users", "cache.capacity", "retrieval.workers", "workload.queries.distinct")
    return _over(tmp, "sweep: {" + ", ".join(f"{k}: {values}" for k in keys) + "}\n")


def _empirical(tmp: Path, n: int) -> list:
    samples = ", ".join(["25"] * n)
    return ["run", SMALL, "--set", f"retrieval.service_ms={{dist: empirical, samples: [{samples}]}}"]


def _empirical_file(tmp: Path, n: int) -> list:
    samples = ", ".join(["25"] * n)
    return ["run", _text(tmp, "e.yaml", f"llm: {{output_tokens: {{dist: empirical, samples: [{samples}]}}}}\n")]


def _routing_doc(tmp: Path, change: Callable[[dict], None]) -> list:
    doc = json.loads((CALIBRATION.parent / "routing_calibration.json").read_text())
    change(doc)
    return _routing(tmp, _text(tmp, "r.json", json.dumps(doc)))


def _negative_times(doc: dict) -> None:
    for rec in doc["records"]:
        rec["values_ms"] = [-abs(v) for v in rec["values_ms"]]


def _string_prob(doc: dict) -> None:
    doc["probs"][3] = "0.03"


def _mixed_run_folder(tmp: Path) -> list:
    from sim.run.folder import seal

    d = tmp / "mixed"
    d.mkdir()
    seal(d, "run", [_text(d, "summary.json", '{"points": []}')])
    _text(d, "notes.txt", "someone else's file")
    return ["report", d]


def _npz_named_npy(tmp: Path) -> list:
    import numpy as np

    p = tmp / "v.npy"
    with open(p, "wb") as fh:
        np.savez(fh, a=np.ones((10, 4), dtype=np.float32))
    return ["calibrate", "retrieval", "--vectors", p, "--index", "linear_numpy", "--out", tmp / "c.json"]


CASES = [
    # ---- scenario files that are not scenario files
    Case("scenario-binary", lambda t: ["run", _binary(t)], 2, "not UTF-8 text"),
    Case("scenario-folder", lambda t: ["run", t], 2, "is a folder"),
    Case("scenario-fifo", lambda t: ["run", _fifo(t)], 2, "FIFO"),
    Case("scenario-dev-null", lambda t: ["run", "/dev/null"], 2, "is a device"),
    Case("estimate-fifo", lambda t: ["estimate", _fifo(t)], 2, "FIFO"),
    Case("extends-binary", _extends_binary, 2, "not UTF-8 text"),
    Case("yaml-duplicate-key", lambda t: ["run", _text(t, "d.yaml", "name: a\nname: b\n")], 2, "duplicate key 'name'"),
    Case(
        "yaml-nested-20000",
        lambda t: ["run", _text(t, "n.yaml", "x: " + "[" * 20000 + "]" * 20000 + "\n")],
        2,
        "nested deeper than",
    ),
    Case("yaml-python-tag", lambda t: ["run", _text(t, "p.yaml", "x: !!python/object:os.system [ls]\n")], 2, "YAML"),
    # ---- values
    Case(
        "users-true", lambda t: ["run", SMALL, "--set", "workload.users=true"], 2, "workload.users: true is a boolean"
    ),
    Case(
        "set-1e9-is-a-number",
        lambda t: ["run", SMALL, "--set", "llm.output_tokens=1e9"],
        2,
        "1200 prompt + 1000000000 output tokens",
    ),
    Case("grid-binary-tag", lambda t: ["sweep", SMALL, "--grid", "description=!!binary aGVsbG8=,x"], 2, "bytes"),
    Case(
        "capacity-high-inf",
        lambda t: ["capacity", SMALL, "--vary", "workload.users", "--high", "inf"],
        2,
        "--high inf: must be a finite number",
    ),
    Case(
        "capacity-low-nan",
        lambda t: ["capacity", SMALL, "--vary", "workload.users", "--low", "nan"],
        2,
        "--low nan: must be a finite number",
    ),
    Case("scheduler-ftp", lambda t: ["sweep", SMALL, "--scheduler", "ftp://x"], 2, "not a Dask protocol"),
    Case("max-memory-garbage", lambda t: ["run", SMALL, "--max-memory", "lots"], 2, "expected a size"),
    # ---- bounds before work
    Case("users-1e9", lambda t: ["run", SMALL, "--set", "workload.users=1e9"], 2, "workload.users=1e+09"),
    Case(
        "replicas-1e6", lambda t: ["run", SMALL, "--set", "llm.replicas=1e6", "--max-memory", "4G"], 2, "llm.replicas"
    ),
    Case(
        "distinct-1e8",
        lambda t: ["run", SMALL, "--set", "workload.queries.distinct=1e8", "--max-memory", "2G"],
        2,
        "workload.queries.distinct",
    ),
    Case("duration-1e12", lambda t: ["run", SMALL, "--set", "run.duration_s=1e12"], 2, "run.duration_s"),
    Case("replications-1e6", lambda t: ["run", SMALL, "--replications", "1000000"], 2, "run.replications"),
    Case(
        "target-precision-forever",
        lambda t: [
            "sweep",
            SMALL,
            "--set",
            "run.target_precision=1e-7",
            "--set",
            "run.max_replications=1e6",
        ],
        2,
        "run.max_replications",
    ),
    Case(
        "calibrate-docs-1e9",
        lambda t: ["calibrate", "retrieval", "--docs", "1e9"],
        2,
        "--docs 1,000,000,000: a 768-dim",
    ),
    Case("calibrate-docs-fraction", lambda t: ["calibrate", "retrieval", "--docs", "2.5"], 2, "not a positive integer"),
    # ---- loads that change over time are bounded too, before any expansion
    Case(
        "profile-closed-1e7-shoppers",
        lambda t: _over(
            t,
            "workload: {users: null, profile: {kind: schedule, steps: [{at_s: 0, value: 10}, "
            "{at_s: 30, value: 1e7, ramp_s: 10}]}}\nrun: {warmup_s: 0}\n",
        ),
        2,
        "workload.profile: a peak level of 1e+07",
    ),
    Case(
        "profile-open-sinusoid-1e6",
        lambda t: _over(
            t,
            "workload: {mode: open, users: null, think_s: null, rate_per_s: null, "
            "profile: {kind: sinusoid, mean: 1e6, amplitude: 5e5, period_s: 60}}\nrun: {warmup_s: 0, records: true}\n",
        ),
        2,
        "workload.profile: a peak level of 1.5e+06",
    ),
    Case("trace-50000-rows-bounded", _big_trace, 2, "workload.trace.path: 50,000 requests per replication"),
    Case(
        "timeline-window-1e-6",
        lambda t: _over(t, "timeline: {enabled: true, window_s: 1e-6}\n"),
        2,
        "timeline.window_s: 1e-06 s",
    ),
    Case(
        "timeline-sla-window-tiny",
        lambda t: _over(t, "timeline: {enabled: true, sla_window_s: 1e-3}\n"),
        2,
        "timeline.sla_window_s: 0.001 s cuts",
    ),
    Case("sweep-1e8-points", _sweep_1e8, 2, "is 100,000,000 points, more than the 10,000"),
    Case("yaml-alias-bomb", _alias_bomb, 2, "more than 50,000 values (aliases expanded)"),
    Case("empirical-20001-samples", lambda t: _empirical(t, 20_001), 2, "retrieval.service_ms"),
    Case("empirical-1e6-samples", lambda t: _empirical_file(t, 1_000_000), 2, "at most 1,048,576 are read"),
    # ---- traces that once read wrong
    Case(
        "trace-duplicate-column",
        lambda t: _trace_rows(t, "arrival_s,arrival_s\n0,5\n1,6\n"),
        2,
        "column 'arrival_s' appears more than once",
    ),
    Case(
        "trace-azure-offset-unsorted",  # 10:00+05:00 is 05:00 UTC: before the row above it
        lambda t: _trace_rows(
            t,
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 06:00:00.0000000+00:00,10,10\n"
            "2023-11-16 10:00:00.0000000+05:00,10,10\n",
        ),
        2,
        "earlier than the row before",
    ),
    # ---- calibration and distribution inputs that once reached the code as exceptions
    Case("routing-negative-times", lambda t: _routing_doc(t, _negative_times), 2, "per-record times must be finite"),
    Case("routing-string-probability", lambda t: _routing_doc(t, _string_prob), 2, "routing.calibration: "),
    Case("vectors-npz-named-npy", _npz_named_npy, 2, "an .npz archive, not one .npy array"),
    Case(
        "gpu-field-200000-chars",
        lambda t: _gpu(t, GPU_HEADER + "1,100,1," + "5" * 200_000 + "\n2,200,2,6\n4,400,4,7\n"),
        2,
        "line 2: not a CSV row (field larger than field limit",
    ),
    Case(
        "gpu-context-1e300",
        lambda t: _gpu(t, GPU_HEADER + "1,1e300,1,5\n2,200,2,6\n4,400,4,7\n"),
        2,
        "context_tokens 1e300 is more than",
    ),
    Case(
        "lognormal-cv-1e300",
        lambda t: ["run", SMALL, "--set", "retrieval.service_ms={dist: lognormal, mean: 25, cv: 1e300}"],
        2,
        "retrieval.service_ms.cv: input should be less than or equal to 100",
    ),
    Case(
        "extends-nul-byte",
        lambda t: ["run", _text(t, "nul.yaml", 'extends: "base\\0.yaml"\n')],
        2,
        "it holds a NUL byte",
    ),
    Case(
        "gpu-inline-1e308",
        lambda t: [
            "run",
            SMALL,
            "--set",
            "llm.gpu={name: x, hbm_bandwidth_gbps: 1e308, memory_gb: 80, peak_tflops: 1000}",
        ],
        2,
        "llm.gpu.hbm_bandwidth_gbps: input should be less than or equal to 1000000000",
    ),
    Case("report-mixed-unlisted-file", _mixed_run_folder, 2, "mixed folder: notes.txt not written by the run"),
    # ---- calibration files
    Case(
        "calibration-binary",
        lambda t: ["run", SMALL, "--set", "retrieval.service_ms=null", "--set", f"retrieval.calibration={_binary(t)}"],
        2,
        "not UTF-8 text",
    ),
    Case(
        "calibration-fifo",
        lambda t: ["run", SMALL, "--set", "retrieval.service_ms=null", "--set", f"retrieval.calibration={_fifo(t)}"],
        2,
        "FIFO",
    ),
    Case("calibration-duplicate-key", _calibration_dup_key, 2, "duplicate key 'version'"),
    Case("calibration-negative-slope", _negative_slope_calibration, 2, "not a search time"),
    Case("routing-calibration-fifo", lambda t: _routing(t, _fifo(t, "r.json")), 2, "routing.calibration: "),
    Case("routing-calibration-folder", lambda t: _routing(t, t), 2, "is a folder"),
    Case("routing-calibration-binary", lambda t: _routing(t, _binary(t, "r.json")), 2, "not UTF-8 text"),
    Case("step-table-fifo", lambda t: ["run", SMALL, "--set", f"llm.step_table={_fifo(t, 's.csv')}"], 2, "FIFO"),
    Case("step-table-folder", lambda t: ["run", SMALL, "--set", f"llm.step_table={t}"], 2, "is a folder"),
    Case(
        "step-table-binary",
        lambda t: ["run", SMALL, "--set", f"llm.step_table={_binary(t, 's.csv')}"],
        2,
        "step_table: file",
    ),
    # ---- a replayed trace
    Case("trace-fifo", lambda t: _trace_scenario(t, _fifo(t, "tr.csv")), 2, "workload.trace.path: "),
    Case("trace-folder", lambda t: _trace_scenario(t, t), 2, "is a folder"),
    Case("trace-binary", lambda t: _trace_scenario(t, _binary(t, "tr.csv")), 2, "not UTF-8 text"),
    Case("trace-dev-null", lambda t: _trace_scenario(t, "/dev/null"), 2, "is a device"),
    # ---- the target file of calibrate llm and verify
    Case("target-folder", lambda t: _target(t, t), 2, "is a folder"),
    Case("target-fifo", lambda t: _target(t, _fifo(t)), 2, "FIFO"),
    Case("target-binary", lambda t: _target(t, _binary(t)), 2, "not UTF-8 text"),
    Case("target-dev-null", lambda t: _target(t, "/dev/null"), 2, "is a device"),
    Case("target-duplicate-key", lambda t: _target(t, _text(t, "t.yaml", "llm: {}\nllm: {}\n")), 2, "duplicate key"),
    Case("gpu-1e12-ms", lambda t: _gpu(t, GPU_HEADER + "1,100,1,1e12\n2,200,2,1e12\n4,400,4,1e12\n"), 2, "step_ms"),
    Case("gpu-1e-6-ms", lambda t: _gpu(t, GPU_HEADER + "1,100,1,1e-6\n2,200,2,1e-6\n4,400,4,1e-6\n"), 2, "step_ms"),
    Case("gpu-identical-rows", lambda t: _gpu(t, GPU_HEADER + "8,4000,8,7.5\n" * 50), 2, "1 distinct"),
    Case(
        "gpu-duplicate-column",
        lambda t: _gpu(t, "batch_size,context_tokens,new_tokens,step_ms,step_ms\n1,100,1,5,6\n"),
        2,
        "'step_ms' appears more than once",
    ),
    Case("gpu-extra-fields", lambda t: _gpu(t, GPU_HEADER + "1,100,1,5,99\n2,200,2,6\n4,400,4,7\n"), 2, "extra fields"),
    Case("gpu-csv-fifo", lambda t: ["calibrate", "gpu", _fifo(t, "s.csv")], 2, "FIFO"),
    Case("gpu-csv-binary", lambda t: ["calibrate", "gpu", _binary(t, "s.csv")], 2, "not UTF-8 text"),
    Case("gpu-out-folder", lambda t: ["calibrate", "gpu", DATA / "gpu_steps_synthetic.csv", "--out", t], 2, "folder"),
    Case("gpu-out-in-proc", lambda t: ["calibrate", "gpu", GPU_CSV, "--out", "/proc/f.yaml"], 2, "cannot write in"),
    Case("gpu-out-under-a-file", lambda t: ["calibrate", "gpu", GPU_CSV, "--out", _file(t) / "f.yaml"], 2, "is a file"),
    Case(
        "calibrate-retrieval-out-in-proc",  # refused before measuring, not after
        lambda t: ["calibrate", "retrieval", "--docs", "1000", "--nprobe", "4", "--out", "/proc/c.json"],
        2,
        "cannot write in folder '/proc'",
    ),
    Case(
        "calibrate-routing-out-in-proc",
        lambda t: ["calibrate", "routing", "--out", "/proc/r.json"],
        2,
        "cannot write in",
    ),
    Case(
        "calibrate-llm-out-in-proc",  # before profiling the server
        lambda t: ["calibrate", "llm", "--target", _text(t, "t.yaml", TARGET), "--out", "/proc/s.csv"],
        2,
        "cannot write in",
    ),
    Case(
        "verify-out-under-a-file",  # before measuring the stack
        lambda t: ["verify", SMALL, "--target", _text(t, "t.yaml", TARGET), "--users", "1", "--out", _file(t) / "v"],
        2,
        "cannot create the folder",
    ),
    Case(
        "verify-probe-s-zero",
        lambda t: ["verify", SMALL, "--target", _text(t, "t.yaml", TARGET), "--users", "1", "--probe-s", "0"],
        2,
        "--probe-s: must be in [0.05, 60] seconds",
    ),
    Case(
        "verify-segments-zero",
        lambda t: ["verify", SMALL, "--target", _text(t, "t.yaml", TARGET), "--users", "1", "--segments", "0"],
        2,
        "--segments: must be 1 to 20",
    ),
    Case(
        "verify-seed-negative",
        lambda t: ["verify", SMALL, "--target", _text(t, "t.yaml", TARGET), "--users", "1", "--seed", "-1"],
        2,
        "--seed: must be an integer in [0, 2^32)",
    ),
    # ---- output folders, all refused before simulating
    Case("out-under-a-file", lambda t: ["run", SMALL, "--out", _file(t) / "sub"], 2, "is a file"),
    Case("out-is-a-file", lambda t: ["sweep", SMALL, "--out", _file(t)], 2, "is a file"),
    Case("out-in-proc", lambda t: ["run", SMALL, "--out", "/proc/capsim-out"], 2, "cannot create"),
    Case("run-into-sweep-folder", lambda t: ["run", SMALL, "--out", _sweep_folder(t)], 2, "capsim sweep/capacity"),
    Case("sweep-into-run-folder", lambda t: ["sweep", SMALL, "--out", _run_folder(t)], 2, "capsim run --out folder"),
    Case(
        "capacity-into-run-folder",
        lambda t: ["capacity", SMALL, "--vary", "workload.users", "--out", _run_folder(t)],
        2,
        "capsim run --out folder",
    ),
    Case("out-foreign-folder", lambda t: ["sweep", SMALL, "--out", _file(t).parent], 2, "did not write"),
    # ---- report on what is not a finished capsim folder
    Case("report-json-list", lambda t: ["report", _text(t, "summary.json", "[1]").parent], 2, "not a capsim output"),
    Case("report-foreign", lambda t: ["report", _file(t).parent], 2, "not a capsim output folder"),
    Case("report-partial-sweep", lambda t: ["report", _sweep_folder(t)], 2, "partial sweep folder"),
    Case("report-a-file", lambda t: ["report", _file(t)], 2, "is a file"),
    Case("report-sealed-point-an-int", lambda t: ["report", _sealed(t, '{"points": [1]}')], 2, "point 0 is not"),
    Case("report-sealed-points-a-str", lambda t: ["report", _sealed(t, '{"points": "x"}')], 2, "points is a str"),
    Case("report-sealed-point-empty", lambda t: ["report", _sealed(t, '{"points": [{}]}')], 2, "lacks 'params'"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sim.run.loop

    def no_simulation(*a, **k):  # every refusal must come before the first replication
        raise AssertionError("simulated before refusing")

    monkeypatch.setattr(sim.run.loop, "_run_sweep", no_simulation)
    r = invoke(*case.argv(tmp_path))
    err = r.stderr.strip()
    assert r.exit_code == case.code, (r.exit_code, err, r.exception)
    assert case.says in err, err
    assert "Traceback" not in r.stderr and err.count("\n") == 0, err


def test_the_table_covers_every_campaign_area() -> None:
    ids = {c.id.split("-")[0] for c in CASES}
    assert {"scenario", "yaml", "users", "gpu", "calibration", "out", "report", "replicas"} <= ids
    assert {"routing", "step", "trace", "target"} <= ids
    assert len({c.id for c in CASES}) == len(CASES)
