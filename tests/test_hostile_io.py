"""Ordinary I/O failures, as a table: a full disk, a file-size limit, a read-only file system,
a file where a folder goes, names and paths too long, point folders replaced behind capsim's
back.  Each is one line on stderr naming the path and the system's reason, exit 6 (never the
internal-error 4), and leaves the folder resumable: no lock file, no half-written point
folder, and the same command run again finishes.

Faults are injected (``tempfile.mkstemp`` as :mod:`sim.files` sees it raising the errno, or
``RLIMIT_FSIZE`` in a subprocess), never by filling the disk.

To extend: add a :class:`Case`: a function ``(tmp_path, monkeypatch) -> argv`` that builds
the folder and injects the fault, the exit code and a fragment of the line.
"""

from __future__ import annotations

import errno
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from sim.errors import EXIT_IO, IOFailure
from tests.helpers import exact_scenario, invoke

ROOT = Path(__file__).resolve().parent.parent


def _scenario(tmp: Path) -> Path:
    d = exact_scenario()
    d["run"].update(duration_s=10, warmup_s=1, replications=2)
    d["sla"] = {"e2e_ms": {"p95": 5000}}
    f = tmp / "s.yaml"
    f.write_text(yaml.safe_dump(d))
    return f


def _sweep(tmp: Path, out: Path) -> list:
    return ["sweep", _scenario(tmp), "--grid", "workload.users=1,2", "--out", out, "--jobs", "1"]


class _Full:
    """``tempfile`` as :mod:`sim.files` sees it: ``mkstemp`` fails with ``code`` from call ``after`` on."""

    def __init__(self, code: int, after: int = 0):
        self.code, self.after, self.calls = code, after, 0

    def mkstemp(self, *a, **k):
        self.calls += 1
        if self.calls > self.after:
            raise OSError(self.code, os.strerror(self.code), k.get("dir"))
        return tempfile.mkstemp(*a, **k)


def _fault(code: int, after: int = 0) -> Callable:
    def build(tmp: Path, mp: pytest.MonkeyPatch) -> list:
        import sim.files

        mp.setattr(sim.files, "tempfile", _Full(code, after))
        return _sweep(tmp, tmp / "out")

    return build


def _report_is_a_file(tmp: Path, mp: pytest.MonkeyPatch) -> list:
    out = tmp / "out"
    assert invoke(*_sweep(tmp, out)).exit_code in FINISHED
    (out / "report").write_text("a file where report/ goes")
    return ["report", out]


def _long_name(tmp: Path, mp: pytest.MonkeyPatch) -> list:
    return ["run", _scenario(tmp), "--out", tmp / ("n" * 300)]


def _deep_path(name: str) -> Callable:
    def build(tmp: Path, mp: pytest.MonkeyPatch) -> list:
        return ["run", _scenario(tmp), "--out", tmp.joinpath(*[name] * 1200)]

    return build


def _remove_deep(top: Path) -> None:
    """Remove a chain of single folders level by level (shutil.rmtree recurses once per level)."""
    chain = [top]
    while chain[-1].is_dir():
        subs = [p for p in chain[-1].iterdir() if p.is_dir() and not p.is_symlink()]
        if len(subs) != 1:
            break
        chain.append(subs[0])
    for d in reversed(chain):
        for f in d.iterdir():
            if f.is_dir() and not f.is_symlink():
                shutil.rmtree(f)
            else:
                f.unlink()
        d.rmdir()


def _point_replaced(kind: str) -> Callable:
    def build(tmp: Path, mp: pytest.MonkeyPatch) -> list:
        out = tmp / "out"
        assert invoke(*_sweep(tmp, out)).exit_code in FINISHED
        point = sorted((out / "points").iterdir())[0]
        elsewhere = tmp / "elsewhere"
        point.rename(elsewhere)
        if kind == "file":
            point.write_text("not a point")
        else:
            point.symlink_to(elsewhere)
        return _sweep(tmp, out)

    return build


DONE = -1  # the command finishes: exit 0, 1 or 3 (the tiny runs' verdicts are often undecided)
FINISHED = (0, 1, 3)


@dataclass(frozen=True)
class Case:
    id: str
    argv: Callable[[Path, pytest.MonkeyPatch], list]
    code: int
    says: str


CASES = [
    Case("disk-full-at-the-first-write", _fault(errno.ENOSPC), EXIT_IO, "No space left on device (ENOSPC)"),
    Case("disk-full-inside-a-point", _fault(errno.ENOSPC, after=1), EXIT_IO, "No space left on device (ENOSPC)"),
    Case("file-size-limit", _fault(errno.EFBIG, after=2), EXIT_IO, "File too large (EFBIG)"),
    Case("read-only-file-system", _fault(errno.EROFS), EXIT_IO, "Read-only file system (EROFS)"),
    Case("report-folder-is-a-file", _report_is_a_file, EXIT_IO, "report: File exists (EEXIST)"),
    Case("out-name-300-chars", _long_name, EXIT_IO, "File name too long (ENAMETOOLONG)"),
    Case("out-path-1200-deep-too-long", _deep_path("ddd"), EXIT_IO, "File name too long (ENAMETOOLONG)"),
    Case("out-path-1200-deep", _deep_path("d"), DONE, ""),  # no RecursionError: made level by level
    Case("point-folder-became-a-file", _point_replaced("file"), DONE, ""),
    Case("point-folder-became-a-symlink", _point_replaced("symlink"), DONE, ""),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_io_failure(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as mp:
        argv = case.argv(tmp_path, mp)
        try:
            r = invoke(*argv)
        finally:
            for deep in (tmp_path / "d", tmp_path / "ddd"):
                if deep.is_dir():
                    _remove_deep(deep)
    err = r.stderr.strip()
    assert r.exit_code in (FINISHED if case.code == DONE else (case.code,)), (r.exit_code, err, r.exception)
    assert "Traceback" not in r.stderr and "internal error" not in err
    if case.code != DONE:
        assert case.says in err and err.count("\n") == 0, err
    out = tmp_path / "out"
    if out.is_dir():  # resumable: no lock left, no half point, the same command finishes
        assert not (out / ".capsim.lock").exists()
        for p in (out / "points").glob("*"):
            assert p.is_dir() and not p.is_symlink() and (p / "hashes.json").is_file(), p
        if argv[0] == "sweep":
            again = invoke(*argv)
            assert again.exit_code in FINISHED, again.stderr
            assert "computed" in again.stderr


def test_a_real_file_size_limit_is_one_line_exit_6(tmp_path: Path) -> None:
    """RLIMIT_FSIZE in a subprocess: the write fails with EFBIG (SIGXFSZ ignored)."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "sim", *map(str, _sweep(tmp_path, out))]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, preexec_fn=limit, timeout=300)
    err = r.stderr.strip()
    assert r.returncode == EXIT_IO, (r.returncode, err)
    assert "File too large (EFBIG)" in err and err.count("\n") == 0, err
    assert not (out / ".capsim.lock").exists()
    again = invoke(*_sweep(tmp_path, out))
    assert again.exit_code in FINISHED, again.stderr


def test_the_io_exit_code_is_its_own_and_in_the_help() -> None:
    from sim.cli.app import EXIT_HELP
    from sim.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_WORKER_DIED

    assert IOFailure.exit_code == EXIT_IO == 6
    assert EXIT_IO not in (EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_WORKER_DIED, EXIT_INTERRUPTED)
    assert "6 an I/O failure" in EXIT_HELP


@pytest.mark.parametrize(
    "e, line",
    [
        (OSError(errno.ENOSPC, "No space left on device", "/o/points/x/summary.json"), "cannot write /o/points/x/"),
        (OSError(errno.EFBIG, "File too large", "/o/records.parquet"), "File too large (EFBIG); raise the file-size"),
        (OSError(errno.EIO, "Input/output error"), "input/output failure: Input/output error (EIO)"),
    ],
)
def test_io_failure_lines_by_hand(e: OSError, line: str) -> None:
    assert line in str(IOFailure.of(e))
