"""Output folders with integrity: one writer at a time, a manifest written last that
report checks, per-point hashes that resume checks, and workers that die with capsim."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from sim.run.folder import LOCK, MANIFEST, locked, prepare_out, sha256_file, verify
from tests.helpers import invoke

ROOT = Path(__file__).parent.parent
SMALL = ROOT / "tests" / "data" / "rag_small.yaml"
QUICK = ["--set", "run.duration_s=30", "--set", "run.warmup_s=5", "--set", "run.replications=2"]


def _sweep(out: Path, *extra):
    return invoke("sweep", SMALL, "--grid", "workload.users=20,40", "--out", out, "--jobs", "1", *QUICK, *extra)


def test_sweep_folder_is_sealed_and_report_checks_it(tmp_path):
    out = tmp_path / "s"
    r = _sweep(out)
    assert r.exit_code in (0, 1, 3), r.stderr
    m = json.loads((out / MANIFEST).read_text())
    assert m["kind"] == "sweep" and m["command"].startswith("capsim") and len(m["points"]) == 2
    for name, digest in m["files"].items():
        assert sha256_file(out / name) == digest
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))
    verify(out)
    # a file changed after the fact is named
    (out / "summary.csv").write_text("edited\n")
    r = invoke("report", out)
    assert r.exit_code == 2 and "summary.csv: changed since capsim wrote it" in r.stderr
    # a folder whose final write was interrupted (no manifest) is partial
    (out / MANIFEST).unlink()
    r = invoke("report", out)
    assert r.exit_code == 2 and "partial sweep folder" in r.stderr


def test_run_folder_mixed_with_sweep_files_is_named(tmp_path):
    out = tmp_path / "r"
    r = invoke("run", SMALL, "--out", out, *QUICK)
    assert r.exit_code in (0, 1, 3), r.stderr
    assert json.loads((out / MANIFEST).read_text())["kind"] == "run"
    verify(out)
    (out / "timeseries.parquet").write_bytes(b"stale from another command")
    r = invoke("report", out)
    assert r.exit_code == 2 and "mixed folder: timeseries.parquet" in r.stderr
    # and a sweep is refused before simulating into it
    r = _sweep(out)
    assert r.exit_code == 2 and "capsim run --out folder" in r.stderr


def test_a_corrupt_stored_point_is_recomputed_not_reused(tmp_path):
    out = tmp_path / "s"
    assert _sweep(out).exit_code in (0, 1, 3)
    before = pd.read_parquet(out / "records.parquet")
    points = sorted((out / "points").iterdir())
    points[0].joinpath("records.parquet").write_bytes(b"PAR1 truncated")  # a torn write
    points[1].joinpath("summary.json").write_text("{}")  # an emptied summary
    r = _sweep(out)
    assert r.exit_code in (0, 1, 3), r.stderr
    assert "computed 2 of 2 points, reused 0" in r.stderr
    pd.testing.assert_frame_equal(pd.read_parquet(out / "records.parquet"), before)
    r = _sweep(out)
    assert "computed 0 of 2 points, reused 2" in r.stderr


def test_a_point_summary_that_is_a_list_is_recomputed(tmp_path):
    out = tmp_path / "s"
    assert _sweep(out).exit_code in (0, 1, 3)
    p = sorted((out / "points").iterdir())[0]
    (p / "summary.json").write_text("[1]")
    digests = json.loads((p / "hashes.json").read_text())
    digests["summary.json"] = sha256_file(p / "summary.json")  # even with matching hashes
    (p / "hashes.json").write_text(json.dumps(digests))
    r = _sweep(out)
    assert r.exit_code in (0, 1, 3) and "computed 1 of 2 points, reused 1" in r.stderr


_HOLD = """
import sys, time
from pathlib import Path
from sim.run.folder import locked
with locked(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_writer_fails_fast_with_one_line(tmp_path):
    out = tmp_path / "s"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(out)], cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        t = time.perf_counter()
        r = _sweep(out)
        assert time.perf_counter() - t < 30
        err = r.stderr.strip()
        assert r.exit_code == 2 and err.count("\n") == 0
        assert "another capsim" in err and f"pid {holder.pid}" in err
        r = invoke("run", SMALL, "--out", tmp_path / "other", *QUICK)  # other folders are free
        assert r.exit_code in (0, 1, 3)
    finally:
        holder.kill()
        holder.wait()
    # the lock dies with its holder
    assert _sweep(out).exit_code in (0, 1, 3)


_TRY = """
import sys
from pathlib import Path
from sim.errors import CapsimError
from sim.run.folder import locked
try:
    with locked(Path(sys.argv[1])):
        print("free")
except CapsimError as e:
    print(e)
"""


def test_a_forked_child_does_not_keep_the_lock(tmp_path):
    """The CI flake behind #13's resume test: a ``--jobs 2`` pool is forked while the
    folder is locked; a worker still winding down after its sibling died must not
    keep the folder locked once the parent has let go of it."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    stop = ctx.Event()
    with locked(tmp_path):
        child = ctx.Process(target=stop.wait, args=(60,))
        child.start()
    try:
        r = subprocess.run([sys.executable, "-c", _TRY, str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
        assert r.stdout.strip() == "free", r.stdout + r.stderr
    finally:
        stop.set()
        child.join(10)


def test_lock_is_reentrant_in_one_process(tmp_path):
    with locked(tmp_path), locked(tmp_path):
        assert (tmp_path / LOCK).is_file()
    with locked(tmp_path):
        pass


def test_a_sweep_into_a_folder_another_capsim_writes_is_refused_and_changes_nothing(tmp_path):
    """Two sweeps into one folder: while one holds it (here a process that took the lock as
    a sweep does), the second is refused at once with one line naming the holder, and the
    folder (a finished sweep's) keeps every byte; once the holder is gone it reads back whole."""
    out = tmp_path / "s"
    assert _sweep(out).exit_code in (0, 1, 3)
    before = {p.relative_to(out): sha256_file(p) for p in out.rglob("*") if p.is_file()}
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(out)], cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        r = _sweep(out)
        err = r.stderr.strip()
        assert r.exit_code == 2 and err.count("\n") == 0 and "Traceback" not in err, err
        assert "another capsim" in err and f"pid {holder.pid}" in err, err
        after = {p.relative_to(out): sha256_file(p) for p in out.rglob("*") if p.is_file() and p.name != LOCK}
        assert after == before
    finally:
        holder.kill()
        holder.wait()
    verify(out)
    pd.read_parquet(out / "records.parquet")
    assert invoke("report", out).exit_code == 0


def test_path_problems_are_found_before_simulating(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(Exception, match="is a file"):
        prepare_out(f / "sub", "run")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.geteuid() != 0:  # root writes anywhere
            with pytest.raises(Exception, match="cannot create|not writable"):
                prepare_out(ro / "x", "run")
    finally:
        ro.chmod(0o700)


def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            kids += [int(x) for x in (task / "children").read_text().split()]
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_for_workers(parent: subprocess.Popen, n: int = 2) -> list[int]:
    """The pids of ``parent``'s live children, once there are ``n`` of them (60 s at most)."""
    workers: list[int] = []
    deadline = time.time() + 60
    while time.time() < deadline and len(workers) < n:
        time.sleep(0.2)
        workers = [k for k in _children(parent.pid) if _alive(k)]
    assert len(workers) >= n, "the sweep never started its workers"
    return workers


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux's")
def test_workers_die_with_their_parent(tmp_path):
    cmd = [sys.executable, "-m", "sim", "sweep", str(SMALL), "--grid", "workload.users=20,40,60,80"]
    cmd += ["--jobs", "2", "--set", "run.duration_s=20000", "--set", "run.replications=2", "--max-memory", "8G"]
    parent = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        workers = _wait_for_workers(parent)
        time.sleep(0.5)  # let the initializers run
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 20
        while time.time() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.1)
        left = [w for w in workers if _alive(w)]
        assert not left, f"orphaned workers {left}"
    finally:
        if parent.poll() is None:
            parent.kill()
        for w in workers:  # do not leave them behind if the check failed
            if _alive(w):
                os.kill(w, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ctrl_c_sent_to_capsim_alone_ends_its_running_workers(tmp_path):
    """``kill -INT <capsim>`` (a script, a CI timeout) reaches the parent only, not its workers:
    capsim must not print "stopped" and then wait, at exit, for the replications still running."""
    cmd = [sys.executable, "-m", "sim", "sweep", str(SMALL), "--grid", "workload.users=20,40,60,80"]
    cmd += ["--jobs", "2", "--set", "run.duration_s=50000", "--max-memory", "64G", "--out", str(tmp_path / "o")]
    parent = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # not ignored, whoever started pytest
    )
    workers: list[int] = []
    try:
        workers = _wait_for_workers(parent)
        time.sleep(1.0)  # into their replications
        parent.send_signal(signal.SIGINT)
        code = parent.wait(timeout=30)
        assert code == 130, parent.stderr.read()
        assert "Traceback" not in parent.stderr.read()
        deadline = time.time() + 10
        while time.time() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.1)
        assert not [w for w in workers if _alive(w)]
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for w in workers:
            if _alive(w):
                os.kill(w, signal.SIGKILL)
